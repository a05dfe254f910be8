"""E5 (paper Fig. 6a/b): GGA, top-k, random, first-k, last-k and iterative GGA by N.

    python -m gga_jax.experiments --config=configs/experiments/e5.py:backbone=text \
        --workdir=/tmp/e5_text

Groups: every policy at every N in {1, 3, 6, 12, 24}, N capped at what the
policy can place (first-k / last-k: the 2L parallel edges; the others: every
candidate edge); gamma 0.6. Random draws its own set per seed. Every arm
starts from the same pre-trained head (scored with it) and trains the same steps.
Arguments: gga_jax.experiments.offline_sweep. Results: docs/experiments.md.
"""

from gga_jax import experiments


def get_config(arg: str | None = None):
    c = experiments.offline_sweep("e5", arg)
    c.lock()
    return c
