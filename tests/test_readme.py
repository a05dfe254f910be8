"""The README's examples give what the README says they give."""

import os
import re

import pytest

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
