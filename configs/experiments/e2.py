"""E2 (paper Fig. 3): a single adapter on every edge of the stride-s node sub-grid, 3 seeds.

    python -m gga_jax.experiments --config=configs/experiments/e2.py:backbone=text \
        --workdir=/tmp/e2_text

Groups: the arm "single" on every edge (i, j), i and j in {0, s, 2s, ...},
every edge type included (stride 3 on 12 blocks: 9 x 9 = 81 edges; stride 3 on
the 6-block offline backbones: 5 x 5 = 25). E4 is this sweep plus the scores of
every aggregation and their correlations: run e4 to get both.
Arguments: gga_jax.experiments.offline_sweep. Results: docs/experiments.md.
"""

from gga_jax import experiments


def get_config(arg: str | None = None):
    c = experiments.offline_sweep("e2", arg)
    c.lock()
    return c
