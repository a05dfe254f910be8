"""Your own data: GGA vs linear probe vs all-parallel adapters on a folder, table, npz or TFDS set.

    python -m gga_jax.main --config=configs/own_data.py:source=folder \
        --config.data.path=/data/pets --workdir=/tmp/own_pets
    python -m gga_jax.main --config=configs/own_data.py:source=csv \
        --config.data.path="{'train': '/data/train.csv', 'test': '/data/test.csv'}" \
        --config.data.text_key=review --config.data.label_key=stars --workdir=/tmp/own_reviews
    python -m gga_jax.main --config=configs/own_data.py:source=tfds \
        --config.data.name=cifar10 --config.data.data_dir=/data/tfds --workdir=/tmp/own_cifar

Sources (gga_jax.data's docstring has the details: labels, splits, conversions):
  folder       one subfolder of images per class (ImageFolder's layout);
  csv, jsonl   a text column (data.text_key, and data.text_pair_key for pairs)
               and a label column (data.label_key);
  npz          uint8 images (data.image_key) or token ids ("input_ids"), and labels;
  tfds         any prepared TFDS dataset by data.name, with data.splits.
Val and test come from data.path = {"train": ..., "val": ..., "test": ...} or
data.splits, else are held out of train (data.val_fraction, default 0, and
data.test_fraction, default 0.2), seeded by data.seed.
Models: images go to the small ViT of configs/vit_transfer.py, pre-trained on
Fashion-MNIST at 28 x 28 px (so photos are shrunk to 28 px: for real images
set model.* and data.image_size to a ViT-B/16 checkpoint's, as
configs/vit_vtab1k.py does); text goes to all-MiniLM-L6-v2 (configs/default.py).
Arms, each trained for the same steps from the same backbone: gga (6 edges),
linear_probe, all_parallel.
Arguments (comma-separated key=value): source (folder, csv, jsonl, npz, tfds;
required); kind (image or text: which model an npz or tfds set goes to;
default image, text for csv and jsonl); steps (default 500); smoke=1 (a random
tiny model, 2 steps of linear probing at 8 px: the tests' end-to-end runs).
No results are recorded: they depend on your data.
"""

import ml_collections

from gga_jax import defaults

SOURCES = ("folder", "csv", "jsonl", "npz", "tfds")
SMALL_VIT = {"width": 192, "depth": 6, "num_heads": 3, "mlp_dim": 768, "patch_size": 4}
TINY = {"vit": {"patch_size": 4}, "text": {}}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    a = defaults.parse_arg(arg, {"source": "", "kind": "", "steps": "500", "smoke": ""})
    if a["source"] not in SOURCES:
        raise ValueError(
            f"configs/own_data.py needs source=<one of {SOURCES}>, got {a['source']!r}."
        )
    kind = a["kind"] or ("text" if a["source"] in ("csv", "jsonl") else "image")
    if kind not in ("image", "text"):
        raise ValueError(f"Unknown kind {kind!r} for configs/own_data.py; valid: image, text.")
    c = defaults.base()
    c.arms = ("gga", "linear_probe", "all_parallel")
    c.data.source = a["source"]
    if kind == "image":
        _small_vit(c)
    else:
        _minilm(c)
    c.train.steps = int(a["steps"])
    c.train.warmup_steps = -1
    c.train.warmup_fraction = 0.1
    c.train.log_every = 10
    c.train.checkpoint_every = 100
    if a["smoke"]:
        _smoke(c, "vit" if kind == "image" else "text")
    c.lock()
    return c


def _small_vit(c: ml_collections.ConfigDict) -> None:
    """configs/vit_transfer.py's backbone and recipe (docs/spec.md §5 vision)."""
    c.model.kind = "vit"
    c.model.variant = ""
    c.model.pool_type = "tok"
    c.model.checkpoint = "small_fmnist"
    c.model.overrides = SMALL_VIT
    c.data.image_size = 28
    c.adapter.rank = 8
    c.placement.num = 6
    c.scoring.num_examples = 512
    c.scoring.head_steps = 50
    c.train.batch_size = 64
    c.train.optimizer = "sgd"
    c.train.lr = 0.01


def _minilm(c: ml_collections.ConfigDict) -> None:
    """configs/default.py's backbone and recipe (docs/spec.md §5 text)."""
    c.model.kind = "text"
    c.model.variant = "minilm-l6"
    c.model.pool_type = "mean"
    c.model.checkpoint = "minilm"
    c.data.max_len = 64
    c.placement.num = 6
    c.scoring.num_examples = 256
    c.scoring.micro_batch = 32
    c.scoring.head_steps = 25
    c.scoring.head_lr = 1e-2
    c.train.optimizer = "adamw"
    c.train.weight_decay = 0.1
    c.train.schedule = "polynomial"
    c.train.batch_size = 32
    c.train.lr = 1e-3


def _smoke(c: ml_collections.ConfigDict, kind: str) -> None:
    """A random tiny model, 2 steps of the linear probe: an end-to-end test in seconds."""
    c.arms = ("linear_probe",)
    c.model.checkpoint = "random"
    c.model.overrides = {"width": 16, "depth": 1, "num_heads": 2, "mlp_dim": 32, **TINY[kind]}
    if kind == "text":
        c.data.tokenizer = "minilm"
        c.data.max_len = 16
    c.data.image_size = 8
    c.scoring.num_examples = 8
    c.scoring.micro_batch = 8
    c.scoring.head_steps = 1
    c.train.steps = 2
    c.train.batch_size = 4
    c.train.eval_batch_size = 8
    c.train.log_every = 1
    c.train.checkpoint_every = 2
