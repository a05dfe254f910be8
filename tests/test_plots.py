"""gga_jax.plots: figures that leave the caller's matplotlib backend alone, and the
edge-type borders of the score heatmap in the right cells."""

import subprocess
import sys

import numpy as np
from matplotlib.figure import Figure

from gga_jax import plots


def test_import_keeps_the_callers_backend():
    """A notebook's inline backend must survive `import gga_jax.plots` (it used to force Agg)."""
    code = (
        "import matplotlib; matplotlib.use('template'); import gga_jax.plots; "
        "print(matplotlib.get_backend())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "template"


def test_edge_type_borders_separate_j_below_i_plus_c():
    """Border c runs down the left of cell (i, i + c) in every row i, clipped to the matrix."""
    n = 5
    ax = Figure().subplots()
    plots._edge_types(ax, n)
    for c, line in enumerate(ax.lines):
        x, y = line.get_xdata(), line.get_ydata()
        vertical = {
            (float(y[k]), float(y[k + 1])): float(x[k])
            for k in range(len(x) - 1)
            if x[k] == x[k + 1] and y[k + 1] - y[k] == 1
        }
        for i in range(n):
            if -0.5 < i + c - 0.5 < n - 0.5:  # the border lies inside the matrix in row i
                assert vertical[(i - 0.5, i + 0.5)] == i + c - 0.5, (c, i)
    assert len(ax.lines) == 3


def test_score_heatmap_writes_a_png(tmp_path):
    scores = np.random.default_rng(0).random((7, 7))
    scores[0, 0] = -np.inf
    plots.score_heatmap(scores, [(1, 2), (4, 0)], str(tmp_path / "s.png"))
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
