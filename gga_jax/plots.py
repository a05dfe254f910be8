"""Figures of a run: the score matrix with the chosen edges (paper Fig. 14), training curves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def score_heatmap(scores, edges: Sequence[tuple[int, int]], path: str, title: str = "") -> None:
    """Writes the (n, n) score matrix as a PNG, chosen edges circled.

    Rows are source nodes i, columns target nodes j; -inf (non-candidates) is blank.
    """
    s = np.asarray(scores, np.float64)
    shown = np.ma.masked_invalid(np.where(np.isneginf(s), np.nan, s))
    fig, ax = plt.subplots(figsize=(6, 5))
    im = ax.imshow(shown, cmap="viridis", origin="upper")
    fig.colorbar(im, ax=ax, label="score")
    if edges:
        i, j = zip(*edges)
        ax.scatter(j, i, s=80, facecolors="none", edgecolors="red", linewidths=1.5, label="chosen")
        ax.legend(loc="upper right", fontsize=8)
    ax.set_xlabel("target node j")
    ax.set_ylabel("source node i")
    ax.set_title(title or f"edge scores, {len(edges)} chosen")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def training_curves(
    curves: Mapping[str, Sequence[tuple[int, float]]], path: str, ylabel="loss"
) -> None:
    """Writes one line per run name from (step, value) pairs as a PNG."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, points in curves.items():
        if points:
            steps, values = zip(*points)
            ax.plot(steps, values, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
