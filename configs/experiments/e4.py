"""E4 (paper Table 4, Fig. 5, Fig. 13): which score predicts single-adapter quality.

    python -m gga_jax.experiments --config=configs/experiments/e4.py:backbone=text \
        --workdir=/tmp/e4_text

E2's single-edge runs on the stride sub-grid, then every aggregation of docs/spec.md §3
(srank, fro, spectral, nuclear, min_col_sum, max_col_sum) of the edge
gradients after head pre-training of each length in head_steps (the base's
25 steps, and 100 and 400: Fig. 13), for every seed (its own head and scoring
examples). Spearman's rho (and p) of the seed-mean score with the seed-mean
single-edge test accuracy and final train loss, per aggregation and length.
Arguments: gga_jax.experiments.offline_sweep. Results: docs/experiments.md.
"""

from gga_jax import experiments


def get_config(arg: str | None = None):
    c = experiments.offline_sweep("e4", arg)
    c.head_steps = (-1, 4) if arg == "smoke" else (-1, 100, 400)
    c.lock()
    return c
