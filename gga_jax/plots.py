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


def tina_neurons(
    cycles: Sequence[Mapping], edges: Sequence[tuple[int, int]], path: str, title=""
) -> None:
    """TINA's neurons per adapter per cycle (the TINA paper's Fig. 4) as a PNG heatmap.

    cycles: results rows with "cycle", "edges" and "ranks"; edges: the starting
    edge list (rows of the map). A vanished adapter shows 0.
    """
    edges = [tuple(e) for e in edges]
    grid = np.zeros((len(edges), len(cycles)))
    for c, row in enumerate(cycles):
        ranks = dict(zip(map(tuple, row["edges"]), row["ranks"]))
        grid[:, c] = [ranks.get(e, 0) for e in edges]
    fig, ax = plt.subplots(figsize=(1.2 + 0.6 * len(cycles), 1.5 + 0.3 * len(edges)))
    im = ax.imshow(grid, cmap="magma", aspect="auto", vmin=0)
    fig.colorbar(im, ax=ax, label="hidden neurons")
    ax.set_xticks(range(len(cycles)), [str(r["cycle"]) for r in cycles])
    ax.set_yticks(range(len(edges)), [str(e) for e in edges], fontsize=7)
    ax.set_xlabel("cycle")
    ax.set_ylabel("adapter (edge)")
    ax.set_title(title or "neurons per adapter")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def accuracy_vs_params(rows: Sequence[Mapping], path: str) -> None:
    """Test accuracy against trainable parameters: a point per arm, a line per TINA arm."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for row in rows:
        points = row.get("cycles") or [row]
        sizes = [p["trainable_params"] for p in points]
        accuracy = [100 * p["test_accuracy"] for p in points]
        ax.plot(sizes, accuracy, marker="o", label=row["arm"])
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
