"""E1 (paper Fig. 1): a single parallel adapter at each of the 2L positions, 3 seeds.

    python -m gga_jax.experiments --config=configs/experiments/e1.py:backbone=text \
        --workdir=/tmp/e1_text

Every group is the arm "single" on edge (k, k + 1), k = 0 .. 2L - 1 (12 groups
for the 6-block offline backbones). Learning rate chosen per group on the val
split (select_seeds), then 3 seeds on train + val, reported on test.
Arguments: gga_jax.experiments.offline_sweep (backbone text or vit, seeds, lrs,
steps, train_size, val_size, test_size; `smoke` for the tests).
Results: docs/results.md (ViT: the position effect holds, range 6.00 points,
pooled seed std 0.93, ANOVA p = 7.2e-08; cost docs/experiments.md).
"""

from gga_jax import experiments


def get_config(arg: str | None = None):
    c = experiments.offline_sweep("e1", arg)
    c.lock()
    return c
