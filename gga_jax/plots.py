"""Figures of a run: the score matrix with the chosen edges (paper Fig. 14), training curves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure


def score_heatmap(scores, edges: Sequence[tuple[int, int]], path: str, title: str = "") -> None:
    """Writes the (n, n) score matrix as a PNG, chosen edges circled, edge types marked.

    Rows are source nodes i, columns target nodes j; -inf (non-candidates) is blank.
    White steps separate the four edge types: recurrent (j < i, below the
    diagonal), sequential (j = i), parallel (j = i + 1) and long-range (j > i + 1).
    """
    s = np.asarray(scores, np.float64)
    shown = np.ma.masked_invalid(np.where(np.isneginf(s), np.nan, s))
    fig, ax = _subplots(figsize=(6, 5))
    im = ax.imshow(shown, cmap="viridis", origin="upper")
    fig.colorbar(im, ax=ax, label="score")
    _edge_types(ax, len(s))
    if edges:
        i, j = zip(*edges)
        ax.scatter(j, i, s=80, facecolors="none", edgecolors="red", linewidths=1.5, label="chosen")
        ax.legend(loc="upper right", fontsize=8)
    ax.set_xlabel("target node j (diagonal: sequential j = i; next: parallel j = i + 1)")
    ax.set_ylabel("source node i")
    ax.set_title(title or f"edge scores, {len(edges)} chosen")
    _save(fig, path)


def _edge_types(ax, n: int) -> None:
    """Draws the borders j = i + c - 1/2 (c = 0, 1, 2) between edge types and labels them."""
    for c in (0, 1, 2):
        # In row i the border runs down the left of column i + c, then under that cell.
        points = [
            (i + c + dx, i + dy)
            for i in range(n)
            for dx, dy in ((-0.5, -0.5), (-0.5, 0.5), (0.5, 0.5))
        ]
        x, y = np.clip(np.array(points), -0.5, n - 0.5).T
        ax.plot(x, y, color="white", linewidth=0.8)
    box = dict(boxstyle="round", facecolor="black", alpha=0.5, linewidth=0)
    style = dict(color="white", fontsize=8, ha="center", va="center", bbox=box)
    ax.text(0.25 * n, 0.8 * n, "recurrent\nj < i", **style)
    ax.text(0.75 * n, 0.2 * n, "long-range\nj > i + 1", **style)
    ax.set_xlim(-0.5, n - 0.5)
    ax.set_ylim(n - 0.5, -0.5)


def training_curves(
    curves: Mapping[str, Sequence[tuple[int, float]]], path: str, ylabel="loss"
) -> None:
    """Writes one line per run name from (step, value) pairs as a PNG."""
    fig, ax = _subplots(figsize=(6, 4))
    for name, points in curves.items():
        if points:
            steps, values = zip(*points)
            ax.plot(steps, values, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    _save(fig, path)


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
    fig, ax = _subplots(figsize=(1.2 + 0.6 * len(cycles), 1.5 + 0.3 * len(edges)))
    im = ax.imshow(grid, cmap="magma", aspect="auto", vmin=0)
    fig.colorbar(im, ax=ax, label="hidden neurons")
    ax.set_xticks(range(len(cycles)), [str(r["cycle"]) for r in cycles])
    ax.set_yticks(range(len(edges)), [str(e) for e in edges], fontsize=7)
    ax.set_xlabel("cycle")
    ax.set_ylabel("adapter (edge)")
    ax.set_title(title or "neurons per adapter")
    _save(fig, path)


def accuracy_vs_params(rows: Sequence[Mapping], path: str) -> None:
    """Test (else val) accuracy against trainable parameters: a point per arm, a TINA arm a line."""
    split = "test" if all("test_accuracy" in r for r in rows) else "val"
    fig, ax = _subplots(figsize=(6, 4))
    for row in rows:
        points = row.get("cycles") or [row]
        sizes = [p["trainable_params"] for p in points]
        accuracy = [100 * p.get(f"{split}_accuracy", np.nan) for p in points]
        ax.plot(sizes, accuracy, marker="o", label=row["arm"])
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters")
    ax.set_ylabel(f"{split} accuracy (%)")
    ax.legend(fontsize=7)
    _save(fig, path)


# --- experiments (gga_jax.experiments) ---------------------------------------------------------


def experiment_bars(rows: Sequence[Mapping], path: str, title: str) -> None:
    """E1 (paper Fig. 1): test accuracy (mean +- std over seeds) per group, as bars."""
    fig, ax = _subplots(figsize=(max(6, 0.45 * len(rows)), 4))
    x = np.arange(len(rows))
    std = _spread(rows)
    ax.bar(x, [r["test_mean"] for r in rows], yerr=std, capsize=3, color="tab:blue")
    low = min(r["test_mean"] - s for r, s in zip(rows, std))
    ax.set_ylim(max(0, low - 2), None)
    ax.set_xticks(x, [r["group"].removeprefix("parallel_") for r in rows], rotation=60, fontsize=7)
    ax.set_xlabel("edge (i, j)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=9)
    _save(fig, path)


def experiment_grid(rows: Sequence[Mapping], n: int, scores, path: str) -> None:
    """E2 (paper Fig. 3): single-edge test accuracy over the (i, j) grid, beside the srank map."""
    acc = np.full((n, n), np.nan)
    for r in rows:
        acc[tuple(r["edges"][0])] = r["test_mean"]
    used = sorted({k for r in rows for k in r["edges"][0]})
    panels = [("single-edge test accuracy (%)", acc[np.ix_(used, used)])]
    if scores is not None:
        s = np.where(np.isfinite(scores), scores, np.nan)
        panels.append(("srank of G_ij", s[np.ix_(used, used)]))
    fig, axes = _subplots(1, len(panels), figsize=(5 * len(panels), 4.2), squeeze=False)
    for ax, (title, matrix) in zip(axes[0], panels):
        image = ax.imshow(matrix, cmap="viridis")
        fig.colorbar(image, ax=ax, fraction=0.046)
        ax.set_xticks(range(len(used)), used, fontsize=7)
        ax.set_yticks(range(len(used)), used, fontsize=7)
        ax.set_xlabel("target node j")
        ax.set_ylabel("source node i")
        ax.set_title(title, fontsize=9)
    _save(fig, path)


def experiment_scatter(correlations, scores, rows: Sequence[Mapping], path: str) -> None:
    """E4 (paper Fig. 5): each aggregation's score against single-edge test accuracy.

    correlations: the test-accuracy rows of one head length; scores: {aggregation:
    (n, n) seed-mean scores}; rows: the single-edge groups.
    """
    cols = min(3, len(correlations))
    fig, axes = _subplots(
        (len(correlations) + cols - 1) // cols, cols, figsize=(4 * cols, 3.4), squeeze=False
    )
    edges = [tuple(r["edges"][0]) for r in rows]
    acc = [r["test_mean"] for r in rows]
    for ax, c in zip(axes.ravel(), correlations):
        score = scores[c["aggregation"]]
        ax.scatter([score[e] for e in edges], acc, s=12)
        ax.set_title(f"{c['aggregation']}: rho {c['rho']:.2f} (p {c['p']:.1g})", fontsize=9)
        ax.set_xlabel("score")
        ax.set_ylabel("test accuracy (%)")
    for ax in axes.ravel()[len(correlations) :]:
        ax.axis("off")
    _save(fig, path)


def experiment_random(rows: Sequence[Mapping], path: str) -> None:
    """E3 (paper Table 1): the random sets' mean accuracies, with the baselines marked."""
    sets = [r["test_mean"] for r in rows if r["arm"] == "random"]
    fig, ax = _subplots(figsize=(6, 4))
    if sets:
        ax.hist(sets, bins=min(20, max(5, len(sets) // 2)), color="tab:gray", label="random sets")
    for r, color in zip([r for r in rows if r["arm"] != "random"], colormaps["tab10"].colors):
        ax.axvline(r["test_mean"], color=color, linestyle="--", label=r["group"])
    ax.set_xlabel("test accuracy (%), mean over seeds")
    ax.set_ylabel("random sets")
    ax.legend(fontsize=7)
    _save(fig, path)


def experiment_lines(rows: Sequence[Mapping], path: str, title: str) -> None:
    """E5 (paper Fig. 6): test accuracy against N per policy, with error bars; E6 by rank."""
    fig, ax = _subplots(figsize=(6, 4))
    by_arm: dict[str, list] = {}
    for r in rows:
        by_arm.setdefault(r["arm"], []).append(r)
    for arm, points in by_arm.items():
        x = [len(r["edges"]) if title == "e5" else r["trainable_params"] for r in points]
        std = _spread(points)
        ax.errorbar(x, [r["test_mean"] for r in points], yerr=std, marker="o", capsize=3, label=arm)
    ax.set_xscale("log")
    ax.set_xlabel("adapters N" if title == "e5" else "trainable parameters")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title.upper(), fontsize=9)
    ax.legend(fontsize=7)
    _save(fig, path)


def _spread(rows: Sequence[Mapping]) -> list[float]:
    """Error-bar half-widths: each row's test std, 0 where one seed gives none."""
    return [0.0 if np.isnan(r["test_std"]) else r["test_std"] for r in rows]


def _subplots(*args, figsize, **kw):
    """(figure, axes) on a Figure of its own: no pyplot, so neither a display nor the
    caller's backend (a notebook's inline one) is touched, and nothing is left open."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*args, **kw)


def _save(fig, path: str) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
