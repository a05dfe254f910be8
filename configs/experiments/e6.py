"""E6 (paper Fig. 6c): ViT-g/14 on iNat18, GGA (N = 40) vs FFN-parallel at ranks 4, 8, 32, 128.

    python -m gga_jax.experiments --config=configs/experiments/e6.py --dry_run
    python -m gga_jax.experiments --config=configs/experiments/e6.py \
        --config.base.model.checkpoint=/path/to/ViT-g_14.npz \
        --config.base.data.data_dir=gs://your-bucket/tensorflow_datasets --workdir=/tmp/e6

The recipe of configs/vit_g14.py (gga_jax.defaults.vit_g14): 20000 steps at
batch 128, lr 0.01 (the paper's, a grid of one: no select runs), 3 seeds;
8 groups x 3 seeds = 24 runs of ViT-g/14. It cannot run on a CPU; --dry_run
prints the runs and the per-device memory plan of each (arm, rank) on the
config's mesh. Arguments: task (an image task of gga_jax.data.TFDS_TASKS,
default i_naturalist2018), steps.
"""

from gga_jax import defaults, experiments


def get_config(arg: str | None = None):
    a = defaults.parse_arg(arg, {"task": "i_naturalist2018", "steps": "20000"})
    c = experiments.base_sweep()
    c.experiment = "e6"
    c.base = defaults.vit_g14(a["task"], steps=int(a["steps"]))
    c.base.model.checkpoint = "random"  # replace with the ViT-g/14 .npz to run
    c.lrs = (0.01,)
    c.lock()
    return c
