"""ViT-g/14 on iNaturalist 2018: GGA (N = 40) vs FFN-parallel adapters by rank (E6, Fig. 6c).

    python -m gga_jax.main --config=configs/vit_g14.py:policy=gga,rank=32 \
        --workdir=/tmp/g14_gga_r32 --config.model.checkpoint=/path/to/ViT-g_14.npz \
        --config.data.data_dir=gs://your-bucket/tensorflow_datasets

The paper (Appendix A.6) fine-tunes ViT-g/14 (Zhai et al. 2022: width 1408,
40 blocks, MLP 6144, 16 heads, MAP pooling, no cls token; 1,036,448,384
parameters at 224 px without a head) on iNat18. The baseline puts parallel
adapters only around the 40 FFN blocks (docs/spec.md §4 "ffn_parallel"); GGA picks the
same number, 40, from all 81^2 = 6561 edges with the stronger discount
gamma = 0.8. Both are run for r in {4, 8, 32, 128}; the paper reports the mean
over 3 seeds (--config.seed) and finds GGA ahead at every rank, most at small r.
Arguments (comma-separated key=value):
  policy  gga (default), ffn_parallel, or any other arm of docs/spec.md §4.
  rank    adapter rank r: 4, 8, 32 or 128 (default 32).
  task    an image task of gga_jax.data.TFDS_TASKS (default i_naturalist2018).
  num     adapters GGA places (default 40); lr (default 0.01); steps (default 20000).
Recipe as configs/vit_inat18.py (docs/spec.md §5): SGD momentum 0.9, cosine, 500
warm-up steps, batch 128, scoring on 512 examples after 2.5% head steps.
Memory: pure FSDP over every device (config.mesh); scoring holds G sharded
over the edges and passes the node rows round the devices, micro-batches of 64
(a multiple of any device count up to 64), chunks of 8 edges. The plan
(`--dry_run`, benchmarks/memory_plan.py; README "Running on TPU VMs") fits a
16 GiB device on 64 devices. Neither the run nor its memory use has been
measured on accelerators; the checkpoint and the prepared tfds data are
needed, nothing is downloaded.
"""

import ml_collections

from gga_jax import data, defaults

RANKS = (4, 8, 32, 128)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    a = defaults.parse_arg(
        arg,
        {
            "policy": "gga",
            "rank": "32",
            "task": "i_naturalist2018",
            "num": "40",
            "lr": "0.01",
            "steps": "20000",
        },
    )
    if int(a["rank"]) not in RANKS:
        raise ValueError(f"rank {a['rank']!r} is not one of the paper's ranks {RANKS}.")
    images = sorted(name for name, task in data.TFDS_TASKS.items() if task.kind == "image")
    if a["task"] not in images:
        raise ValueError(f"Unknown image task {a['task']!r}; valid: {images}.")
    c = defaults.vit_g14(a["task"], int(a["rank"]), int(a["num"]), int(a["steps"]))
    c.arms = (a["policy"],)
    c.train.lr = float(a["lr"])
    c.lock()
    return c
