"""The README's examples give what the README says they give."""

import importlib.util
import os
import re

import ml_collections
import pytest

from gga_jax import defaults, pipeline

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme_block(title: str) -> str:
    """The first ```python block after the heading `title` of README.md."""
    with open(os.path.join(REPO, "README.md")) as f:
        text = f.read()
    section = text[text.index(f"## {title}") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_api_example_places_the_edges_its_comment_promises():
    pytest.importorskip("sklearn")
    code = readme_block("The API in ten lines")
    promised = re.search(r"print\(edges\)  # (\[.*\])", code).group(1)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README's own code
    assert str(namespace["edges"]) == promised
    scores = namespace["scores"]
    assert scores.shape == (13, 13) and len(set(scores.ravel().tolist())) > 1
    assert set(namespace["adapted_params"]["adapters"]) == {
        f"edge_{i}_{j}" for i, j in namespace["edges"]
    }


def test_the_repository_cites_its_own_specification():
    """Docs and docstrings point at docs/spec.md, never at files outside the repository,
    and every "docs/spec.md §n" they cite is a section that exists."""
    import subprocess

    files = subprocess.run(
        ["git", "ls-files", "*.py", "*.md", "*.toml"], cwd=REPO, capture_output=True, text=True
    ).stdout.split()
    assert "docs/spec.md" in files
    spec = open(os.path.join(REPO, "docs", "spec.md")).read()
    sections = set(re.findall(r"^## (\d+)\.", spec, re.M))
    outside = re.compile(r"\.\./shared|SPEC\.md")
    this = "tests/test_readme.py"
    for name in files:
        text = open(os.path.join(REPO, name)).read()
        assert name == this or not outside.search(text), f"{name} cites a file outside the repo"
        cited = set(re.findall(r"docs/spec\.md §(\d+)", text))
        assert cited <= sections, f"{name} cites missing sections {sorted(cited - sections)}"


def _config_reference():
    spec = importlib.util.spec_from_file_location(
        "config_reference", os.path.join(REPO, "scripts", "config_reference.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_config_key_is_described_and_docs_config_md_is_current(capsys):
    reference = _config_reference()
    assert reference.main(["--check"]) == 0, capsys.readouterr().out
    page = open(os.path.join(REPO, "docs", "config.md")).read()
    for key in pipeline.flat_config(defaults.base()):
        assert f"| `{key}` |" in page, key


def test_a_config_key_without_a_description_is_reported():
    source = """
def base():
    c = ml_collections.ConfigDict()
    # Described above.
    c.a = 1
    c.b = 2  # described on its line
    c.c = 3

    c.d = 4
"""
    config = ml_collections.ConfigDict({"a": 1, "b": 2, "c": 3, "d": 4})
    reference = _config_reference()
    assert reference.missing(source, config) == ["c", "d"]
    assert reference.descriptions(source)["a"] == "Described above."
