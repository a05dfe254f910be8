"""Predictions of an exported adapter artifact on new inputs, written as CSV.

    python -m gga_jax.predict --adapter=/tmp/gga_tweets --inputs=new_tweets.csv --out=pred.csv
    python -m gga_jax.predict --adapter=DIR --checkpoint=ViT-B_16.npz --inputs=images/ --out=p.csv

Inputs: a folder of image files (read, converted to RGB and resized as in
training, sorted by name), a CSV or JSONL of texts (column --text_key, and
--text_pair_key for pairs), or an .npz (key "image" / --image_key, or token ids
"input_ids" with optional "attention_mask" and "token_type_ids"). The model
runs jitted in batches of --batch_size, every batch of one shape (the last is
padded). Each output row is: id (file name or row number), class, class_name,
probability (of that class).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np

from gga_jax import data as data_lib
from gga_jax import export, validation


def read_inputs(path: str, meta: dict, artifact: str, keys: argparse.Namespace) -> tuple[Any, list]:
    """(model inputs with leading axis N, N ids) of a folder, CSV/JSONL or .npz."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"--inputs {path} does not exist.")
    p = meta["preprocessing"]
    if os.path.isdir(path):
        images, _, _, files = data_lib.read_image_folder(path, p["image_size"], labelled=False)
        return images, [os.path.basename(f) for f in files]
    if path.endswith(".npz"):
        if "image_size" in p:
            arrays = data_lib.read_arrays(path, [keys.image_key])
            return data_lib.npz_images(arrays[keys.image_key], p["image_size"], path), None
        present = data_lib.npz_keys(path)
        arrays = data_lib.read_arrays(path, [k for k in data_lib.TOKEN_KEYS if k in present])
        return data_lib.npz_tokens(arrays, path), None
    if "max_len" not in p:
        raise validation.ConfigError(f"--inputs {path}: an image model takes a folder or an .npz.")
    texts, pairs, _ = data_lib.read_table(path, keys.text_key, keys.text_pair_key)
    from gga_jax.models import text

    tokenizer = text.Tokenizer(os.path.join(artifact, p["tokenizer"]), max_len=p["max_len"])
    return tokenizer(texts, pairs), None


def batches(inputs, batch_size: int) -> Iterator[tuple[Any, int]]:
    """(batch, number of real rows) of one shape each: the last batch repeats its last row."""
    num = len(jax.tree_util.tree_leaves(inputs)[0])
    for start in range(0, num, batch_size):
        rows = np.minimum(np.arange(start, start + batch_size), num - 1)
        yield jax.tree_util.tree_map(lambda x, r=rows: x[r], inputs), min(batch_size, num - start)


def predict(model, params, inputs, batch_size: int = 256) -> np.ndarray:
    """(N, num_classes) softmax probabilities, jitted and batched, with a progress bar."""
    from tqdm import tqdm

    probabilities = jax.jit(lambda x: jax.nn.softmax(model.apply({"params": params}, x), -1))
    num = len(jax.tree_util.tree_leaves(inputs)[0])
    out = []
    with tqdm(total=num, desc="predict", mininterval=2) as bar:
        for batch, real in batches(inputs, batch_size):
            out.append(np.asarray(probabilities(batch))[:real])
            bar.update(real)
    return np.concatenate(out)


def write_csv(path: str, ids: list, probabilities: np.ndarray, class_names: list) -> None:
    """One row per input: id, class, class_name, probability."""
    classes = probabilities.argmax(-1)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "class", "class_name", "probability"])
        for i, (c, p) in enumerate(zip(classes, probabilities)):
            name = class_names[c] if c < len(class_names) else str(c)
            writer.writerow([ids[i] if ids else i, int(c), name, f"{p[c]:.6f}"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", required=True, help="an artifact from gga_jax.export")
    parser.add_argument("--checkpoint", default=None, help="the backbone (default: as exported)")
    parser.add_argument("--inputs", required=True, help="image folder, CSV/JSONL or .npz")
    parser.add_argument("--out", required=True, help="the CSV to write")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--text_key", default="text")
    parser.add_argument("--text_pair_key", default=None)
    parser.add_argument("--image_key", default="image")
    args = parser.parse_args(argv)
    try:
        if args.batch_size < 1:
            raise validation.ConfigError(f"--batch_size {args.batch_size}: must be >= 1.")
        model, params, meta = export.load(args.adapter, args.checkpoint)
        inputs, ids = read_inputs(args.inputs, meta, args.adapter, args)
        probabilities = predict(model, params, inputs, args.batch_size)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {' '.join(str(e).split())}")
    write_csv(args.out, ids, probabilities, meta["class_names"])
    print(f"wrote {len(probabilities)} predictions to {args.out}")


if __name__ == "__main__":
    main()
