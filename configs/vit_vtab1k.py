"""ViT-B/16 on a VTAB-1k task (paper Appendix A): GGA or a baseline placement.

    python -m gga_jax.main --config=configs/vit_vtab1k.py:task=clevr,policy=gga \
        --workdir=/tmp/vtab_clevr_gga --config.model.checkpoint=/path/to/ViT-B_16.npz \
        --config.data.data_dir=/path/to/tensorflow_datasets

Arguments (comma-separated key=value):
  task    clevr (Clevr-Count), dsprites (dSpr-Loc) or svhn_cropped; default clevr.
  policy  an arm: gga, top_k, random, first_k, last_k, all_parallel,
          ffn_parallel, all_sequential, linear_probe, full_finetune; default gga.
  num     adapters to place (default 24); steps (500 or 2000, default 500);
          lr (default 0.01); final (1: train on train800val200, test on test).
Recipe (docs/spec.md §5): SGD momentum 0.9, cosine schedule, 500 warm-up steps (capped
at the run length), batch 64, rank 8, scoring on the 800 training examples.
The paper reports means over 3 seeds (--config.seed). The real checkpoint and
prepared tfds data are needed; nothing is downloaded.
"""

import ml_collections

from gga_jax import defaults

TASKS = ("clevr", "dsprites", "svhn_cropped")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    a = defaults.parse_arg(
        arg,
        {"task": "clevr", "policy": "gga", "num": "24", "steps": "500", "lr": "0.01", "final": "0"},
    )
    if a["task"] not in TASKS:
        raise ValueError(f"Unknown VTAB-1k task {a['task']!r}; valid: {TASKS}.")
    c = defaults.base()
    c.arms = (a["policy"],)
    c.model.kind = "vit"
    c.model.variant = "B/16"
    c.model.pool_type = "tok"
    c.data.source = "tfds"
    c.data.name = a["task"]
    c.data.image_size = 224
    c.data.final = a["final"] == "1"
    c.adapter.rank = 8
    c.placement.num = int(a["num"])
    c.placement.gamma = 0.6
    c.scoring.num_examples = 800
    c.scoring.micro_batch = 32
    c.train.steps = int(a["steps"])
    c.train.batch_size = 64
    c.train.optimizer = "sgd"
    c.train.lr = float(a["lr"])
    c.train.schedule = "cosine"
    c.train.warmup_steps = 500
    c.lock()
    return c
