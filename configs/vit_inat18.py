"""ViT-B/16 on iNaturalist 2018 (paper Appendix A, Fig. 6a/b).

    python -m gga_jax.main --config=configs/vit_inat18.py:policy=gga,num=24 \
        --workdir=/tmp/inat18_gga --config.model.checkpoint=/path/to/ViT-B_16.npz \
        --config.data.data_dir=gs://your-bucket/tensorflow_datasets

tfds `i_naturalist2018`: its validation split is the test set and 1% of train is
held out as val. Recipe (docs/spec.md §5): SGD momentum 0.9, cosine, 500 warm-up steps,
batch 128, 20000 steps, lr 0.01, rank 128 for all-parallel, scoring on 512
examples after 500 head steps (2.5%). Arguments: policy, num, lr, rank.
Note: gga_jax.data materialises splits in host memory, which iNat18's train
split at 224 px (about 66 GB) exceeds on most hosts.
"""

import ml_collections

from gga_jax import defaults


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return defaults.large_scale_vit("i_naturalist2018", arg)
