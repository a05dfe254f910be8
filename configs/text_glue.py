"""A BERT-style encoder on GLUE SST2 or MNLI (paper Appendix A, text recipe).

    python -m gga_jax.main --config=configs/text_glue.py:task=sst2,policy=gga \
        --workdir=/tmp/sst2_gga --config.model.checkpoint=/path/to/model.safetensors \
        --config.data.data_dir=/path/to/tensorflow_datasets

Arguments: task (sst2 or mnli), policy (an arm, as in vit_vtab1k.py), num (24),
lr (adapters: 1e-3; the paper searches 1e-4 ... 1e-1, and 1e-5 ... 1e-2 for
full fine-tuning), variant (minilm-l6, bert-base, bert-large, roberta-base;
default bert-base). The checkpoint is a Hugging Face BertModel/RobertaModel
safetensors file whose directory holds tokenizer.json. tfds `glue/sst2` and
`glue/mnli`: dev (MNLI matched) is the test set, 10% of train is held out as
val. Recipe (docs/spec.md §5): AdamW, weight decay 0.1, polynomial decay with 6%
warm-up, SST2 10 epochs, MNLI 3 epochs, batch 32, max length 128.
"""

import ml_collections

from gga_jax import defaults

TASKS = {"sst2": ("glue/sst2", 67_349, 10), "mnli": ("glue/mnli", 392_702, 3)}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    a = defaults.parse_arg(
        arg, {"task": "sst2", "policy": "gga", "num": "24", "lr": "1e-3", "variant": "bert-base"}
    )
    if a["task"] not in TASKS:
        raise ValueError(f"Unknown GLUE task {a['task']!r}; valid: {tuple(TASKS)}.")
    name, train_size, epochs = TASKS[a["task"]]
    c = defaults.base()
    c.arms = (a["policy"],)
    c.model.kind = "text"
    c.model.variant = a["variant"]
    c.model.pool_type = "cls"
    c.model.checkpoint = ""  # required: a model.safetensors path
    c.data.source = "tfds"
    c.data.name = name
    c.data.max_len = 128
    c.placement.num = int(a["num"])
    c.scoring.num_examples = 512
    c.scoring.micro_batch = 32
    c.train.optimizer = "adamw"
    c.train.weight_decay = 0.1
    c.train.schedule = "polynomial"
    c.train.warmup_steps = -1
    c.train.warmup_fraction = 0.06
    c.train.batch_size = 32
    c.train.steps = epochs * int(0.9 * train_size) // 32
    c.train.lr = float(a["lr"])
    c.train.log_every = 50
    c.train.checkpoint_every = 1000
    c.lock()
    return c
