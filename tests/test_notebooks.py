"""The notebooks in colabs/: committed without outputs, each opening as a Colab user
expects, linked from the README, and each run top to bottom at its small settings."""

import os
import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

ROOT = Path(__file__).resolve().parent.parent
NAMES = ("quickstart", "placement_explorer", "tina", "your_model_and_data")
# Figures each notebook draws when it runs (the heatmap and curves, the six
# aggregations, TINA's neurons and accuracy vs parameters).
FIGURES = {"quickstart": 2, "placement_explorer": 1, "tina": 2, "your_model_and_data": 0}


def notebook(name: str):
    return nbformat.read(ROOT / "colabs" / f"{name}.ipynb", as_version=4)


def repository_url() -> str:
    """setup.py's URL (read, not imported: importing it would run setup())."""
    return re.search(r'^URL = "([^"]+)"', (ROOT / "setup.py").read_text(), re.M).group(1)


def test_colabs_holds_exactly_the_four_notebooks():
    assert sorted(p.stem for p in (ROOT / "colabs").glob("*.ipynb")) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_committed_without_outputs(name):
    for k, cell in enumerate(notebook(name).cells):
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name} cell {k}"


@pytest.mark.parametrize("name", NAMES)
def test_opens_with_badge_description_and_install_cell(name):
    first, install = notebook(name).cells[:2]
    repo = repository_url().removeprefix("https://github.com/")
    badge = f"https://colab.research.google.com/github/{repo}/blob/main/colabs/{name}.ipynb"
    assert first.cell_type == "markdown" and badge in first.source
    assert "**How long**" in first.source and "GGA_JAX_NOTEBOOK_FAST=1" in first.source
    assert install.cell_type == "code"
    assert 'find_spec("gga_jax") is None' in install.source  # skipped where installed
    assert f"git+{repository_url()}" in install.source


def test_readme_links_every_notebook():
    readme = (ROOT / "README.md").read_text()
    for name in NAMES:
        assert f"(colabs/{name}.ipynb)" in readme, name


@pytest.mark.parametrize("name", NAMES)
def test_runs_top_to_bottom_at_fast_settings(name, tmp_path, monkeypatch):
    """Every cell runs without an error in a fresh kernel (nbclient raises on the first)."""
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("GGA_JAX_NOTEBOOK_FAST", "1")
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebooks' files go here
    nb = notebook(name)
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    outputs = [o for c in nb.cells for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(figures) == FIGURES[name]
    assert os.listdir(tmp_path), "the notebook wrote nothing under its temporary directory"
