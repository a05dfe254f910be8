"""E3 (paper Table 1): K random sets of N edges against PA, all-sequential, linear probe, FT.

    python -m gga_jax.experiments --config=configs/experiments/e3.py:backbone=text \
        --workdir=/tmp/e3_text

Groups: random_k (k < random_sets, placement.seed k, random_num candidate
edges of any type) and the baselines all_parallel, all_sequential,
linear_probe and full_finetune, each with its lr chosen on val (full
fine-tuning from a grid 100x lower, docs/spec.md §5). The figure is the distribution
of the random sets' mean accuracies with the baselines marked.
Arguments: gga_jax.experiments.offline_sweep. Results: docs/experiments.md.
"""

from gga_jax import experiments


def get_config(arg: str | None = None):
    c = experiments.offline_sweep("e3", arg)
    c.random_sets = 2 if arg == "smoke" else 20
    c.random_num = 3 if arg == "smoke" else 12
    c.arm_lrs = {"full_finetune": tuple(lr / 100 for lr in c.lrs)}
    c.lock()
    return c
