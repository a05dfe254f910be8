"""Meshes, regex partition rules, and sharded training equal to one device.

The multi-device claims run in a subprocess with 8 forced CPU devices (the test
process itself has already initialised one).
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import jax
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from gga_jax import sharding

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_env(devices: int, **extra: str) -> dict:
    """The environment of a subprocess with `devices` forced CPU devices."""
    return dict(
        os.environ,
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        OPENBLAS_NUM_THREADS="1",
        JAX_PLATFORMS="cpu",
        PYTHONPATH=ROOT,
        **extra,
    )


def run_on_8_devices(script: str, timeout: int = 900) -> dict:
    """Runs `script` with 8 CPU devices; it prints one JSON line, returned as a dict."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        env=cpu_env(8),
        cwd=ROOT,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- single process: meshes and rules ----------------------------------------------------


def test_mesh_takes_the_rest_for_minus_one():
    mesh = sharding.make_mesh((("data", -1),))
    assert dict(mesh.shape) == {"data": jax.device_count()}
    assert mesh.axis_types == (jax.sharding.AxisType.Auto,)


@pytest.mark.parametrize(
    "axes, match",
    [
        ((), "at least one axis"),
        ((("data", -1), ("fsdp", -1)), "at most one -1"),
        ((("data", 0),), "positive"),
        ((("data", 2),), "needs 2 devices"),
        ((("data", 1), ("data", 1)), "unique"),
    ],
)
def test_bad_meshes_are_refused(axes, match):
    with pytest.raises(ValueError, match=match):
        sharding.make_mesh(axes)


def fake_mesh(shape: dict):
    """An abstract mesh of that shape: rules only need axis names and sizes."""
    return jax.sharding.AbstractMesh(tuple(shape.values()), tuple(shape))


RULES = (
    (r"^head/", "replicate"),
    (r"/explicit$", (None, "fsdp")),
    (r".*", "fsdp"),
)


@pytest.mark.parametrize(
    "name, shape, spec",
    [
        ("head/kernel", (768, 1000), P()),  # the first matching rule wins
        ("enc/explicit", (16, 8), P(None, "fsdp")),
        ("enc/mlp/kernel", (768, 3072), P(None, "fsdp")),  # the largest dimension
        ("enc/qkv/kernel", (768, 12, 64), P("fsdp", None, None)),
        ("enc/odd/kernel", (3, 5, 4096), P(None, None, "fsdp")),
        ("enc/bias", (64,), P()),  # below fsdp_min_size: replicated
        ("enc/indivisible", (1001, 33), P()),  # no dimension divisible by 4
    ],
)
def test_partition_rules(name, shape, spec):
    mesh = fake_mesh({"data": 2, "fsdp": 4})
    got = sharding.spec_for(name, shape, RULES, mesh, fsdp_min_size=1024)
    assert got == spec


def test_fsdp_without_an_fsdp_axis_replicates():
    mesh = fake_mesh({"data": 8})
    assert sharding.spec_for("w", (1024, 1024), ((".*", "fsdp"),), mesh) == P()


@pytest.mark.parametrize(
    "rules, match",
    [
        (((r"^head/", "replicate"),), "No partition rule matches 'enc/w'"),
        (((".*", "shard"),), "Unknown partition rule 'shard'"),
        (((".*", (None,)),), "has 1 entries, but the tensor has shape"),
        (((".*", ("fsdp", None)),), "dimension 6 of .* not divisible by the 4 devices"),
    ],
)
def test_bad_rules_name_the_parameter(rules, match):
    mesh = fake_mesh({"data": 2, "fsdp": 4})
    with pytest.raises(ValueError, match=match):
        sharding.spec_for("enc/w", (6, 8), rules, mesh)


def test_optimizer_state_is_sharded_like_its_parameter():
    import optax

    mesh = sharding.make_mesh((("fsdp", -1),))
    params = {"a/w": np.zeros((4, 8), np.float32), "b/v": np.zeros((3,), np.float32)}
    rules = ((r"^a/", (None, "fsdp")), (".*", "replicate"))
    shardings = sharding.tree_shardings(params, mesh, rules)
    state = jax.eval_shape(optax.adamw(1e-3).init, params)
    got = sharding.state_shardings(state, params, shardings, mesh)
    mu = got[0].mu
    assert mu["a/w"].spec == P(None, "fsdp") and mu["b/v"].spec == P()
    assert got[0].count.spec == P()


def test_partitioner_from_a_json_round_tripped_config():
    c = ml_collections.ConfigDict()
    c.mesh = [["data", -1]]
    c.sharding = dict(
        rules=[["^head/", "replicate"], [".*", [None, "fsdp"]]],
        batch_axes=["data", "fsdp"],
        fsdp_axis="fsdp",
        fsdp_min_size=16,
    )
    p = sharding.Partitioner.from_config(c)
    assert p.rules == (("^head/", "replicate"), (".*", (None, "fsdp")))
    assert p.batch.spec == P(("data",))


def test_batch_axes_and_sizes_are_checked():
    p = sharding.Partitioner(fake_mesh({"data": 2, "fsdp": 4}))
    p.check_batch_size(16, "train.batch_size")
    with pytest.raises(ValueError, match="train.batch_size=12 must be a multiple of the 8"):
        p.check_batch_size(12, "train.batch_size")
    with pytest.raises(ValueError, match="None of the batch axes"):
        sharding.batch_spec(fake_mesh({"model": 2}), ("data", "fsdp"))


def test_bytes_per_device_of_abstract_trees():
    mesh = fake_mesh({"data": 2, "fsdp": 4})
    tree = {"w": jax.ShapeDtypeStruct((8, 16), np.float32)}
    shard = {"w": jax.sharding.NamedSharding(mesh, P(None, "fsdp"))}
    assert sharding.bytes_per_device(tree, shard) == 8 * 4 * 4


# --- 8 devices: sharded training equals one device --------------------------------------

TRAIN_SCRIPT = """
import functools, itertools, json, sys, tempfile
import jax, ml_collections, numpy as np
sys.path.insert(0, "tests")
import test_train
from gga_jax import sharding, train
from gga_jax.models import vit

model = vit.Model(4, width=32, depth=2, num_heads=2, mlp_dim=64, patch_size=4,
                  edges=((0, 1), (2, 4), (3, 3), (4, 0)), adapter_rank=4)

batches = functools.partial(test_train.batches, batch=16)

params = jax.jit(model.init)(jax.random.PRNGKey(0), next(batches(0))["inputs"])["params"]
params = jax.tree_util.tree_map(np.asarray, params)
config = test_train.train_config(steps=6, batch_size=16, warmup_fraction=0.0,
                                  grad_clip_norm=1.0, checkpoint_every=100)
PATTERN = {"adapters": train.TRAINABLE["adapters"], "full": train.TRAINABLE["full_finetune"]}

def losses(workdir):
    return [r["loss"] for r in train.MetricWriter(workdir).read()]

def run(mode, axes, steps=6):
    workdir = tempfile.mkdtemp()
    p = None if axes is None else sharding.Partitioner(
        sharding.make_mesh(axes), fsdp_min_size=256)
    out, _ = train.fit(model, params, PATTERN[mode], batches, config, workdir, partitioner=p)
    return out, losses(workdir), workdir, p

result = {}
for mode in ("adapters", "full"):
    ref, ref_losses, _, _ = run(mode, None)
    ref_flat = train.flatten(ref)
    for axes in ([("data", 8)], [("data", 4), ("fsdp", 2)], [("data", 2), ("fsdp", 4)]):
        out, got_losses, _, p = run(mode, axes)
        flat = train.flatten(out)
        key = f"{mode} {axes}"
        result[key] = {
            "loss_diff": float(np.max(np.abs(np.array(got_losses) - ref_losses))),
            "param_diff": max(float(np.max(np.abs(np.asarray(flat[k]) - ref_flat[k])))
                              for k in ref_flat),
            "steps": len(got_losses),
            "mlp_shard": list(flat["Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel"]
                              .addressable_shards[0].data.shape),
            "mlp_spec": str(flat["Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel"]
                            .sharding.spec),
            "devices": len(flat["Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel"]
                           .sharding.device_set),
        }
# Resumption on a mesh: a run cut after its step-3 checkpoint, then the same command again.
axes = [("data", 2), ("fsdp", 4)]
p = sharding.Partitioner(sharding.make_mesh(axes), fsdp_min_size=256)
workdir = tempfile.mkdtemp()
cut = ml_collections.ConfigDict(config.to_dict()); cut.checkpoint_every = 3
first3 = lambda start: itertools.islice(batches(start), 3)
train.fit(model, params, PATTERN["full"], first3, cut, workdir, partitioner=p)
resumed, summary = train.fit(model, params, PATTERN["full"], batches, config, workdir,
                             partitioner=p)
ref, _, _, _ = run("full", None)
result["resumed"] = {
    "from": summary["resumed_from_step"],
    "param_diff": max(float(np.max(np.abs(np.asarray(v) - train.flatten(ref)[k])))
                      for k, v in train.flatten(resumed).items()),
}
print(json.dumps(result))
"""


@pytest.fixture(scope="module")
def sharded_training():
    return run_on_8_devices(TRAIN_SCRIPT)


@pytest.mark.parametrize("mode", ["adapters", "full"])
@pytest.mark.parametrize(
    "axes", ["[('data', 8)]", "[('data', 4), ('fsdp', 2)]", "[('data', 2), ('fsdp', 4)]"]
)
def test_sharded_training_matches_one_device(sharded_training, mode, axes):
    r = sharded_training[f"{mode} {axes}"]
    assert r["steps"] == 6
    assert r["loss_diff"] < 1e-5, r
    assert r["param_diff"] < 1e-5, r


@pytest.mark.parametrize(
    "axes, shard, spec",
    [
        ("[('data', 8)]", [32, 64], "P()"),
        ("[('data', 4), ('fsdp', 2)]", [32, 32], "P(None, 'fsdp')"),
        ("[('data', 2), ('fsdp', 4)]", [32, 16], "P(None, 'fsdp')"),
    ],
)
def test_live_parameters_really_are_sharded(sharded_training, axes, shard, spec):
    """The frozen backbone (adapters mode) and trained weights (full) live split over fsdp."""
    for mode in ("adapters", "full"):
        r = sharded_training[f"{mode} {axes}"]
        assert r["mlp_shard"] == shard and r["mlp_spec"] == spec and r["devices"] == 8, r


def test_sharded_checkpoint_resumes_exactly(sharded_training):
    r = sharded_training["resumed"]
    assert r["from"] == 3
    assert r["param_diff"] < 1e-5, r


# --- 2 processes x 2 devices: multi-host training -----------------------------------------


def multihost_model():
    from gga_jax.models import vit

    return vit.Model(
        4,
        width=32,
        depth=2,
        num_heads=2,
        mlp_dim=64,
        patch_size=4,
        edges=((0, 1), (2, 4), (4, 0)),
        adapter_rank=4,
    )


def multihost_batches(start):
    """This process's rows of each global batch of 16 (all of them on one process)."""
    from test_train import batches

    from gga_jax import sharding

    rows = sharding.host_rows(16)
    for batch in batches(start, batch=16):
        yield jax.tree_util.tree_map(lambda x: x[rows], batch)


def multihost_config():
    from test_train import train_config

    return train_config(steps=4, batch_size=16, warmup_fraction=0.0, checkpoint_every=2)


MULTIHOST_SCRIPT = """
import json, os, sys
from gga_jax import sharding
assert sharding.initialize_distributed()
import jax, numpy as np
from jax.experimental import multihost_utils
from gga_jax import train
sys.path.insert(0, "tests")
from test_sharding import multihost_batches, multihost_config, multihost_model

model = multihost_model()
params = jax.jit(model.init)(jax.random.PRNGKey(0), next(multihost_batches(0))["inputs"])
p = sharding.Partitioner(sharding.make_mesh([("data", 2), ("fsdp", 2)]), fsdp_min_size=256)
out, _ = train.fit(model, params["params"], train.TRAINABLE["full_finetune"],
                   multihost_batches, multihost_config(), sys.argv[1], partitioner=p)
flat = train.flatten(out)
kernel = flat["Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel"]
gathered = {k: np.asarray(multihost_utils.process_allgather(v, tiled=True))
            for k, v in flat.items()}
if jax.process_index() == 0:
    np.savez(os.path.join(sys.argv[1], "final.npz"), **gathered)
print(json.dumps({"process": jax.process_index(), "devices": jax.device_count(),
                  "local_devices": jax.local_device_count(),
                  "fully_addressable": kernel.is_fully_addressable,
                  "local_shard": list(kernel.addressable_shards[0].data.shape)}))
"""


def two_processes(script: str, args: list[str], local_devices: int) -> list[str]:
    """The stdouts of `python -c script *args` run as processes 0 and 1 of jax.distributed.

    Each process has `local_devices` CPU devices; both must exit 0.
    """
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    procs = []
    for pid in range(2):
        env = cpu_env(
            local_devices,
            GGA_JAX_DISTRIBUTED="1",
            JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
            GGA_JAX_NUM_PROCESSES="2",
            GGA_JAX_PROCESS_ID=str(pid),
        )
        cmd = [sys.executable, "-c", script, *args]
        procs.append(
            subprocess.Popen(
                cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-4000:]
    return [out for out, _ in outputs]


def test_two_processes_train_like_one_device(tmp_path):
    """jax.distributed over 2 CPU processes (gloo), each feeding its own rows of the batch."""
    outputs = two_processes(MULTIHOST_SCRIPT, [str(tmp_path / "run")], local_devices=2)
    for pid, out in enumerate(outputs):
        assert json.loads(out.strip().splitlines()[-1]) == {
            "process": pid,
            "devices": 4,
            "local_devices": 2,
            "fully_addressable": False,
            "local_shard": [32, 32],
        }
    from gga_jax import train

    model = multihost_model()
    params = jax.jit(model.init)(jax.random.PRNGKey(0), next(multihost_batches(0))["inputs"])
    ref, _ = train.fit(
        model,
        params["params"],
        train.TRAINABLE["full_finetune"],
        multihost_batches,
        multihost_config(),
        str(tmp_path / "ref"),
    )
    got = np.load(tmp_path / "run" / "final.npz")
    ref = train.flatten(ref)
    assert sorted(got.files) == sorted(ref)
    for name, value in ref.items():
        np.testing.assert_allclose(got[name], value, atol=1e-5, err_msg=name)
