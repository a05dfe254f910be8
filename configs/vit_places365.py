"""ViT-B/16 on Places365 (paper Appendix A, Fig. 6a/b).

    python -m gga_jax.main --config=configs/vit_places365.py:policy=gga,num=24 \
        --workdir=/tmp/places365_gga --config.model.checkpoint=/path/to/ViT-B_16.npz \
        --config.data.data_dir=gs://your-bucket/tensorflow_datasets

tfds `places365_small`: its validation split is the test set and 1% of train is
held out as val. Recipe (SPEC §5): SGD momentum 0.9, cosine, 500 warm-up steps,
batch 128, 20000 steps, lr 0.01, rank 128 for all-parallel, scoring on 512
examples after 500 head steps (2.5%). Arguments: policy, num, lr, rank.
Note: gga_jax.data materialises splits in host memory, which Places365 train
split at 224 px (about 270 GB) exceeds on most hosts.
"""

import ml_collections

from gga_jax import defaults


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    a = defaults.parse_arg(arg, {"policy": "gga", "num": "24", "lr": "0.01", "rank": "128"})
    c = defaults.base()
    c.arms = (a["policy"],)
    c.model.kind = "vit"
    c.model.variant = "B/16"
    c.data.source = "tfds"
    c.data.name = "places365_small"
    c.adapter.rank = int(a["rank"])
    c.placement.num = int(a["num"])
    c.scoring.num_examples = 512
    c.scoring.micro_batch = 64
    c.train.steps = 20_000
    c.train.batch_size = 128
    c.train.lr = float(a["lr"])
    c.train.warmup_steps = 500
    c.train.checkpoint_every = 1000
    c.train.log_every = 50
    c.lock()
    return c
