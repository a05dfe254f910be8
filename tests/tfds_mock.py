"""A small image dataset written as real TFDS files, for the streaming tests and benchmark.

`prepare(data_dir, num, file_format)` builds "gga_stream_mock/n<num>": `num`
train and num // 4 test examples of random uint8 RGB images of varying sizes
(stored as PNG, so every decoder gives the same pixels) and 5 classes, in
"tfrecord" or "array_record" files. `TASK` reads it like data.TFDS_TASKS's
entries: put it there under NAME (monkeypatch) and load it with source "tfds".
"""

import numpy as np
import tensorflow_datasets as tfds

from gga_jax import data

NAME = "gga_stream_mock"
CLASSES = 5


def task(num: int) -> data.TfdsTask:
    """The TfdsTask of the n<num> config: val is train's last fifth, test its own split."""
    cut = num * 4 // 5
    splits = {
        "train": f"train[:{cut}]",
        "val": f"train[{cut}:]",
        "trainval": "train",
        "test": "test",
    }
    return data.TfdsTask(f"{NAME}/n{num}", "image", CLASSES, splits, data._image_label)


class GgaStreamMock(tfds.core.GeneratorBasedBuilder):
    """Random images, 8 to 40 pixels a side; config "n<num>" has num train examples."""

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name=f"n{n}") for n in (60, 200, 2000, 10_000, 100_000)
    ]

    def _info(self):
        features = tfds.features.FeaturesDict(
            {
                "image": tfds.features.Image(shape=(None, None, 3)),
                "label": tfds.features.ClassLabel(num_classes=CLASSES),
            }
        )
        return tfds.core.DatasetInfo(builder=self, features=features)

    def _split_generators(self, dl_manager):
        num = int(self.builder_config.name[1:])
        return {
            "train": self._generate_examples(0, num),
            "test": self._generate_examples(1, num // 4),
        }

    def _generate_examples(self, seed, num):
        rng = np.random.default_rng(seed)
        for i in range(num):
            h, w = rng.integers(8, 41, 2)
            image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            yield i, {"image": image, "label": int(rng.integers(CLASSES))}


def prepare(data_dir: str, num: int, file_format: str) -> None:
    """Writes the n<num> config's files in `file_format` under data_dir (once)."""
    builder = GgaStreamMock(config=f"n{num}", data_dir=data_dir, file_format=file_format)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(
            download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS
        )
    )
