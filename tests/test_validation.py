"""Bad input is refused before any work, in one line that names the value and what is valid.

`CASES` is the table of bad inputs: each runs through the Python API (a config
through pipeline.run, arrays through the models, score_edges, placement and fit)
and must raise (or warn) with a message matching its pattern, leaving its
workdir as it was. scripts/error_table.py writes docs/errors.md from the same
table, and a test here checks that file is current. The CLI tests at the end
run `python -m gga_jax.main` in a subprocess.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from gga_jax import checkpoints, data, pipeline, placement, scoring, train, validation
from gga_jax.models import text, vit

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(REPO, "docs", "errors.md")


def repo_config(name: str, arg: str | None = None, **changes) -> ml_collections.ConfigDict:
    """configs/<name>.py's get_config(arg), unlocked, with dotted keys changed."""
    sys.path.insert(0, REPO)
    try:
        module = __import__(f"configs.{name}", fromlist=["get_config"])
    finally:
        sys.path.remove(REPO)
    config = module.get_config(arg)
    config.unlock()
    for key, value in changes.items():
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            node = node[part]
        node[leaf] = value
    return config


def smoke(**changes):
    return repo_config("default", "smoke", **changes)


def tina_smoke(**changes):
    return repo_config("tina", "smoke", **changes)


def snapshot(path) -> list | None:
    """Every file under path with its size and mtime (None if path does not exist)."""
    if not os.path.exists(path):
        return None
    if os.path.isfile(path):
        return [(path, os.path.getsize(path), os.path.getmtime(path))]
    return sorted(
        (
            os.path.join(d, f),
            os.path.getsize(os.path.join(d, f)),
            os.path.getmtime(os.path.join(d, f)),
        )
        for d, _, files in os.walk(path)
        for f in files
    )


# --- the table of bad inputs -----------------------------------------------------------


@dataclasses.dataclass
class Case:
    """One bad input: `run(tmp)` must raise ValueError (or warn) matching `expect`.

    `prepare(tmp)` makes what the case needs first (a file, an earlier run); a
    config case (`refused`) must then leave everything under tmp as it was.
    """

    input: str
    run: Callable[[str], object]
    expect: str
    warns: type[Warning] | None = None
    prepare: Callable[[str], object] | None = None
    refused: bool = False


def config_case(input_, expect, config=None, workdir="run", prepare=None, **changes):
    """pipeline.run on a config (the smoke default with `changes`), which must refuse it."""

    def run(tmp):
        cfg = config() if config else smoke(**changes)
        return pipeline.run(cfg, os.path.join(tmp, workdir))

    return Case(input_, run, expect, prepare=prepare, refused=True)


def tiny_vit(**kw):
    return vit.Model(10, width=16, depth=2, num_heads=2, mlp_dim=32, patch_size=4, **kw)


def vit_and_params(size=16, channels=3, **kw):
    model = tiny_vit(**kw)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, channels)))["params"]
    params["head"]["kernel"] = 0.1 * jax.random.normal(
        jax.random.PRNGKey(1), params["head"]["kernel"].shape
    )
    return model, params


def images(n=4, size=16, channels=3, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, size, size, channels)).astype(np.float32)


LABELS = np.arange(4) % 10


def score_with(images_=None, labels=None, zero_head=False):
    def run(tmp):
        model, params = vit_and_params()
        if zero_head:
            params["head"]["kernel"] = jnp.zeros_like(params["head"]["kernel"])
        x = images() if images_ is None else images_()
        return scoring.score_edges(model, params, x, LABELS if labels is None else labels)

    return run


def nan_images():
    x = images()
    x[1, 2, 3, 0] = np.nan
    return x


def score_text_ids(tmp):
    model = text.Model(3, width=16, depth=2, num_heads=2, mlp_dim=32, vocab_size=50, max_len=16)
    ids = np.ones((4, 8), np.int32)
    params = model.init(jax.random.PRNGKey(0), {"input_ids": ids})["params"]
    ids[2, 5] = 50
    return scoring.score_edges(model, params, {"input_ids": ids}, np.arange(4) % 3)


def apply_on(size=16, channels=3, dtype=np.float32, init_size=16):
    def run(tmp):
        model, params = vit_and_params(init_size)
        x = images(size=size, channels=channels).astype(dtype)
        return model.apply({"params": params}, x)

    return run


def init_on(size):
    return lambda tmp: tiny_vit().init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3)))


def nan_checkpoint(tmp):
    model, params = vit_and_params()
    flat = {k: np.array(v) for k, v in train.flatten(params).items()}
    flat["Transformer/encoderblock_1/MlpBlock_0/Dense_0/kernel"][0, 0] = np.inf
    path = os.path.join(tmp, "bad.npz")
    checkpoints.save_npz(path, train.unflatten(flat))
    return checkpoints.load_vit(path, model, params)


def nan_text_checkpoint(tmp):
    model = text.Model(3, width=16, depth=1, num_heads=2, mlp_dim=32, vocab_size=50, max_len=16)
    params = model.init(jax.random.PRNGKey(0), {"input_ids": np.ones((1, 4), np.int32)})["params"]
    flat = train.flatten(params)
    state = {
        hf: np.array(flat["/".join(path)].T if transpose else flat["/".join(path)])
        for hf, (path, transpose) in text.hf_names(model).items()
    }
    state["embeddings.word_embeddings.weight"][3, 1] = np.nan
    return text.load_hf(state, model, params)


def fit_with(train_changes=None, labels=None):
    """train.fit of the tiny ViT's head for 2 steps, with a bad train config or labels."""

    def run(tmp):
        model, params = vit_and_params()
        config = ml_collections.ConfigDict(dict(defaults_train(), **(train_changes or {})))
        batch = {"inputs": images(), "labels": LABELS if labels is None else labels}
        return train.fit(
            model, params, r"^head/", lambda start: iter([batch] * 2), config, tmp + "/fit"
        )

    return run


def defaults_train():
    from gga_jax import defaults

    t = defaults.base().train.to_dict()
    t.update(steps=2, batch_size=4, warmup_steps=0)
    return t


def damaged_file(name, content):
    """A smoke run whose gga arm finds a damaged scores.npy or placement.json."""

    def run(tmp):
        arm = os.path.join(tmp, "run", "gga")
        os.makedirs(arm, exist_ok=True)
        with open(os.path.join(arm, name), "wb") as f:
            f.write(content)
        return pipeline.run(smoke(arms=("gga",)), os.path.join(tmp, "run"))

    return run


def a_file(tmp):
    with open(os.path.join(tmp, "a_file"), "w") as f:
        f.write("x")


def other_run(tmp):
    pipeline.record_config(smoke(**{"placement.num": 2}), os.path.join(tmp, "run"))


# Your own data: "<tmp>" in a path stands for the case's tmp directory.


def in_tmp(value, tmp: str):
    if isinstance(value, dict):
        return {k: in_tmp(v, tmp) for k, v in value.items()}
    return value.replace("<tmp>", tmp) if isinstance(value, str) else value


def own_case(input_, expect, source, prepare=None, **changes):
    """pipeline.run of configs/own_data.py:source=<source>,smoke=1, which must refuse it."""

    def run(tmp):
        config = repo_config("own_data", f"source={source},smoke=1", **in_tmp(changes, tmp))
        return pipeline.run(config, os.path.join(tmp, "run"))

    return Case(input_, run, expect, prepare=prepare, refused=True)


def load_own(**config):
    """data.load of your own data, texts tokenized by a stand-in."""

    def tokenizer(texts, pairs=None):
        return {"input_ids": np.zeros((len(texts), 2), np.int32)}

    return lambda tmp: data.load(in_tmp(config, tmp), tokenizer=tokenizer)


def image_folder(*classes, broken=False):
    """prepare: <tmp>/imgs/<class>/<i>.png, 4 images per class, and a file that is no PNG."""

    def prepare(tmp):
        from PIL import Image

        for c, name in enumerate(classes):
            os.makedirs(os.path.join(tmp, "imgs", name))
            for i in range(4):
                Image.new("RGB", (8, 8), (60 * c, i, 0)).save(f"{tmp}/imgs/{name}/{i}.png")
        if broken:
            with open(f"{tmp}/imgs/{classes[0]}/broken.png", "wb") as f:
                f.write(b"not a PNG")

    return prepare


def files(contents: dict[str, str]):
    """prepare: a file <tmp>/<name> holding each content."""

    def prepare(tmp):
        for name, content in contents.items():
            with open(os.path.join(tmp, name), "w") as f:
                f.write(content)

    return prepare


def npz(**arrays):
    return lambda tmp: np.savez(os.path.join(tmp, "a.npz"), **arrays)


PETS = "text,label\n" + "".join(f"t{i},{'cat' if i % 2 else 'dog'}\n" for i in range(10))


CASES = [
    config_case(
        "train.lr = -0.1", r"train.lr = -0.1: must be a positive real number", **{"train.lr": -0.1}
    ),
    config_case(
        "train.lr = 0 (every arm trains)", r"train.lr = 0.0: must be a positive", **{"train.lr": 0}
    ),
    config_case(
        "train.steps = 0", r"train.steps = 0: must be an integer >= 1", **{"train.steps": 0}
    ),
    config_case(
        "scoring.head_steps = 0 with a scored arm",
        r"scoring.head_steps = 0: arm 'gga' scores edges, and a zero head gives every edge "
        r"the score 0",
        **{"scoring.head_steps": 0},
    ),
    config_case(
        "train.head_init = 'random'",
        r"train.head_init = 'random': must be one of \('pretrained', 'zero'\)",
        **{"train.head_init": "random"},
    ),
    config_case(
        "train.eval_splits = ('train',)",
        r"train.eval_splits = \('train',\): must be a non-empty tuple of distinct names in "
        r"\('val', 'test'\)",
        **{"train.eval_splits": ("train",)},
    ),
    config_case(
        "train.batch_size = 0",
        r"train.batch_size = 0: must be an integer >= 1",
        **{"train.batch_size": 0},
    ),
    config_case(
        "train.optimizer = 'adam'",
        r"train.optimizer = 'adam': must be one of \('sgd', 'adamw'\)",
        **{"train.optimizer": "adam"},
    ),
    config_case(
        "train.schedule = 'linear'",
        r"train.schedule = 'linear': must be one of \('cosine'",
        **{"train.schedule": "linear"},
    ),
    config_case(
        "train.momentum = 1.5",
        r"train.momentum = 1.5: must be a real number in \[0, 1\)",
        **{"train.momentum": 1.5},
    ),
    config_case(
        "placement.num = 99 (25 candidates)",
        r"placement.num = 99: must be an integer in \[1, 25\] for arm 'gga'",
        **{"placement.num": 99},
    ),
    config_case(
        "placement.gamma = 1.0",
        r"placement.gamma = 1.0: must be a real number in \[0, 1\)",
        **{"placement.gamma": 1.0},
    ),
    config_case(
        "scoring.eta = 0",
        r"scoring.eta = 0.0: must be a real number in \(0, 1\)",
        **{"scoring.eta": 0},
    ),
    config_case(
        "scoring.aggregation = 'mean'",
        r"scoring.aggregation = 'mean': must be one of \('srank'",
        **{"scoring.aggregation": "mean"},
    ),
    config_case(
        "scoring.products = 'fp8'",
        r"scoring.products = 'fp8': must be one of \('highest', 'bf16_6x'",
        **{"scoring.products": "fp8"},
    ),
    config_case(
        "model.remat = 'all'",
        r"model.remat = 'all': must be one of \('none', 'block', 'dots'\)",
        **{"model.remat": "all"},
    ),
    config_case(
        "adapter.rank = 0", r"adapter.rank = 0: must be an integer >= 1", **{"adapter.rank": 0}
    ),
    config_case(
        "two bad keys at once",
        r"2 config problems: scoring.eta = 2.0.*; train.steps = 0",
        **{"scoring.eta": 2.0, "train.steps": 0},
    ),
    config_case(
        "arms = ('gga', 'gpa')",
        r"unknown arm 'gpa'; valid arms: \('gga', 'top_k', 'random', 'first_k', 'last_k', "
        r"'all_parallel', 'ffn_parallel', 'all_sequential', 'single', 'iterative_gga', "
        r"'fixed', 'linear_probe', 'full_finetune'\)",
        arms=("gga", "gpa"),
    ),
    config_case(
        "overrides set an unknown key",
        r"overrides\['linear_probe'\] sets unknown key 'train.lrr'",
        overrides={"linear_probe": {"train": {"lrr": 0.1}}},
    ),
    config_case(
        "an override with a bad value",
        r"train.lr = -1.0: must be a positive",
        overrides={"linear_probe": {"train": {"lr": -1.0}}},
    ),
    config_case(
        "data.name = 'tweetz'",
        r"data.name = 'tweetz': no offline dataset of that name; valid: \['bbc_news', 'digits'",
        **{"data.name": "tweetz"},
    ),
    config_case(
        "an image dataset for a text model",
        r"data.name = 'digits' is an image dataset, but model.kind = 'text'",
        **{"data.name": "digits"},
    ),
    own_case(
        "data.path does not exist",
        r"data.path = '<tmp>/nope': no such file or directory",
        "folder",
        **{"data.path": "<tmp>/nope"},
    ),
    own_case(
        "an image folder with one class subfolder",
        r"data.path = '<tmp>/imgs': image folder <tmp>/imgs has 1 class subfolder \['cat'\]; "
        r"it needs one subfolder of images per class, at least 2",
        "folder",
        image_folder("cat"),
        **{"data.path": "<tmp>/imgs"},
    ),
    own_case(
        "a CSV without the data.text_key column",
        r"data.text_key = 'text': <tmp>/t.csv has no such column; its header has "
        r"\['sentence', 'label'\]",
        "csv",
        files({"t.csv": "sentence,label\na,x\n"}),
        **{"data.path": "<tmp>/t.csv"},
    ),
    own_case(
        "a JSONL file whose first row lacks data.label_key",
        r"data.label_key = 'label': <tmp>/t.jsonl has no such column; its first row has "
        r"\['text', 'y'\]",
        "jsonl",
        files({"t.jsonl": '{"text": "a", "y": 1}\n'}),
        **{"data.path": "<tmp>/t.jsonl"},
    ),
    own_case(
        "an npz without data.label_key",
        r"data.label_key = 'label': <tmp>/a.npz has no array 'label'; its arrays: "
        r"\['image', 'labels'\]",
        "npz",
        npz(image=np.zeros((4, 8, 8), np.uint8), labels=np.arange(4)),
        **{"data.path": "<tmp>/a.npz"},
    ),
    own_case(
        "data.val_fraction and data.test_fraction hold out all of train",
        r"data.val_fraction = 0.5, data.test_fraction = 0.5: val_fraction 0.5 and test_fraction "
        r"0.5 hold out all of train",
        "folder",
        image_folder("cat", "dog"),
        **{"data.path": "<tmp>/imgs", "data.val_fraction": 0.5, "data.test_fraction": 0.5},
    ),
    own_case(
        "data.val_fraction = 1.5",
        r"data.val_fraction = 1.5: must be a real number in \[0, 1\)",
        "folder",
        **{"data.path": "<tmp>", "data.val_fraction": 1.5},
    ),
    config_case(
        "data.path for an offline dataset",
        r"data config fields \['path'\] apply to 'csv', 'folder', 'jsonl', 'npz' only, not to "
        r"source 'offline'",
        **{"data.path": "/data/pets"},
    ),
    own_case(
        "an image that does not decode",
        r"<tmp>/imgs/cat/broken.png cannot be read as an image \(cannot identify image file",
        "folder",
        prepare=image_folder("cat", "dog", broken=True),
        **{"data.path": "<tmp>/imgs"},
    ),
    Case(
        "an npz label outside data.num_classes",
        load_own(source="npz", path="<tmp>/a.npz", num_classes=5),
        r"<tmp>/a.npz label\[2\]: label 7 is outside the 5 classes \[0, 5\) \(num_classes 5\)",
        prepare=npz(input_ids=np.ones((4, 3), np.int32), label=np.array([0, 1, 7, 2])),
    ),
    Case(
        "a table of one class only",
        load_own(source="csv", path="<tmp>/t.csv"),
        r"<tmp>/t.csv less the held-out test holds examples of one class only \('x'\)",
        prepare=files({"t.csv": "text,label\n" + "a,x\n" * 10}),
    ),
    Case(
        "a test label outside train's classes",
        load_own(source="csv", path={"train": "<tmp>/train.csv", "test": "<tmp>/test.csv"}),
        r"<tmp>/test.csv line 3: label 'emu' is outside the 2 classes \['cat', 'dog'\] \(the "
        r"labels of <tmp>/train.csv\)",
        prepare=files({"train.csv": PETS, "test.csv": "text,label\na,cat\nb,emu\n"}),
    ),
    Case(
        "a JSONL row without data.text_key",
        load_own(source="jsonl", path="<tmp>/t.jsonl"),
        r"<tmp>/t.jsonl line 2 has no key 'text'; its keys: \['label'\]",
        prepare=files({"t.jsonl": '{"text": "a", "label": 0}\n{"label": 1}\n'}),
    ),
    Case(
        "an empty split: data.val_fraction of too few examples",
        load_own(source="folder", path="<tmp>/imgs", image_size=4, val_fraction=0.05),
        r"val held out of image folder <tmp>/imgs \(val_fraction 0.05 of 8 examples\) has no "
        r"examples",
        prepare=image_folder("cat", "dog"),
    ),
    Case(
        "an empty test file",
        load_own(source="csv", path={"train": "<tmp>/train.csv", "test": "<tmp>/test.csv"}),
        r"<tmp>/test.csv has no examples",
        prepare=files({"train.csv": PETS, "test.csv": "text,label\n"}),
    ),
    config_case(
        "model.checkpoint is a missing file",
        r"model.checkpoint = '/nonexistent/w.npz': no such file",
        **{"model.checkpoint": "/nonexistent/w.npz"},
    ),
    config_case(
        "placement.edges of the 'fixed' arm off the graph",
        r"placement.edges = \(\(0, 9\),\)",
        arms=("fixed",),
        **{"placement.edges": ((0, 9),)},
    ),
    config_case(
        "data.image_size = 30, patches of 4",
        r"images of 30 x 30 pixels do not divide into patches of 4 x 4",
        config=lambda: repo_config("vit_transfer", "task=digits", **{"data.image_size": 30}),
    ),
    config_case(
        "--workdir is a file",
        r"--workdir .*a_file is a file, not a directory",
        workdir="a_file",
        prepare=a_file,
    ),
    config_case(
        "--workdir below a file",
        r"--workdir .*a_file/sub cannot be written",
        workdir="a_file/sub",
        prepare=a_file,
    ),
    config_case(
        "--workdir holds a run with another config",
        r"holds a run with another config \(placement.num: 2 there, 3 now\)",
        prepare=other_run,
    ),
    config_case(
        "tina.rho = 1.0",
        r"tina.rho = 1.0: must be a real number in \(0, 1\)",
        config=lambda: tina_smoke(**{"tina.rho": 1.0}),
    ),
    config_case(
        "tina.sigma_target = 4 below tina.sigma0 = 8",
        r"tina.sigma_target = 4.0: must be above tina.sigma0 = 8.0",
        config=lambda: tina_smoke(**{"tina.sigma_target": 4.0}),
    ),
    config_case(
        "tina.sigma0 = 64 on width 32",
        r"tina.sigma0 = 64.0: d / sigma0 = 0.5 leaves fewer than one neuron per adapter",
        config=lambda: tina_smoke(**{"tina.sigma0": 64.0, "tina.sigma_target": 128.0}),
    ),
    config_case(
        "tina.budget below the head",
        r"tina.budget = 50: must be above the head's own 99 parameters",
        config=lambda: tina_smoke(arms=("tina:all_parallel",), **{"tina.budget": 50}),
    ),
    config_case(
        "adapter.budget too small for all-parallel at rank 1",
        r"adapter.budget = 500: budget 500 parameters cannot hold 4 adapters of rank 1",
        config=lambda: tina_smoke(arms=("all_parallel",), **{"adapter.budget": 500}),
    ),
    config_case(
        "a TINA arm on a placement with no edges",
        r"placement.edges = \(\): the 'fixed' arm needs at least one edge",
        config=lambda: tina_smoke(arms=("tina:fixed",)),
    ),
    config_case(
        "a TINA arm on linear adapters",
        r"arm 'tina:all_parallel': TINA prunes bottleneck adapters, not 'linear' ones",
        config=lambda: tina_smoke(
            arms=("tina:all_parallel",),
            **{
                "model.overrides": {
                    "width": 32,
                    "depth": 2,
                    "num_heads": 2,
                    "mlp_dim": 64,
                    "adapter_kind": "linear",
                }
            },
        ),
    ),
    config_case(
        "arms = ('tina:bogus',)",
        r"unknown arm 'tina:bogus'; .* or 'tina:<base>\[:<label>\]' with a base in",
        config=lambda: tina_smoke(arms=("tina:bogus",)),
    ),
    Case(
        "score_edges: NaN in the images",
        score_with(nan_images),
        r"score_edges: the images hold NaN or Inf",
    ),
    Case(
        "score_edges: labels outside [0, num_classes)",
        score_with(labels=np.array([0, 1, 10, 2])),
        r"score_edges: label 10 is outside \[0, 10\)",
    ),
    Case(
        "score_edges: token ids beyond the vocabulary",
        score_text_ids,
        r"input_ids holds 50, outside \[0, 50\)",
    ),
    Case(
        "score_edges: float images in [0, 255]",
        score_with(lambda: (images() + 1) * 127.5),
        r"pixel values run from .* like \[0, 255\] images; the ViT expects \[-1, 1\]",
    ),
    Case(
        "score_edges: a zero head (all scores 0)",
        score_with(zero_head=True),
        r"all 25 candidate scores equal 0.*pre-train the head",
        warns=scoring.ConstantScoresWarning,
    ),
    Case(
        "gga on an all-zero score matrix",
        lambda t: placement.gga(np.zeros((5, 5)), 6),
        r"all 25 candidate scores equal 0, so picking 6 of them would follow tie-breaking alone",
    ),
    Case(
        "ViT: int32 images",
        apply_on(dtype=np.int32),
        r"images are int32; the ViT takes float images in \[-1, 1\] or uint8 pixels",
    ),
    Case(
        "ViT: images not a multiple of the patch size",
        init_on(18),
        r"images of 18 x 18 pixels do not divide into patches of 4 x 4",
    ),
    Case(
        "ViT: images of another size than the parameters",
        apply_on(size=32),
        r"images are 32 x 32 with 3 channels; this model's parameters expect 16 x 16 images "
        r"with 3 channels",
    ),
    Case(
        "ViT: grey images for an RGB model",
        apply_on(channels=1),
        r"images are 16 x 16 with 1 channels; .* expect 16 x 16 images with 3 channels",
    ),
    Case(
        "load_vit: Inf in a checkpoint tensor",
        nan_checkpoint,
        r"bad.npz holds NaN or Inf in 1 tensors: "
        r"Transformer/encoderblock_1/MlpBlock_0/Dense_0/kernel \(1 of 512\)",
    ),
    Case(
        "load_hf: NaN in a checkpoint tensor",
        nan_text_checkpoint,
        r"The state dict holds NaN or Inf in 1 tensors: embeddings/word_embeddings/embedding",
    ),
    Case(
        "train.fit: steps = 0", fit_with({"steps": 0}), r"train.steps = 0: must be an integer >= 1"
    ),
    Case(
        "train.fit: lr = -1",
        fit_with({"lr": -1.0}),
        r"train.lr = -1.0: must be a positive real number",
    ),
    Case(
        "train.fit: a batch with label 12 of 10 classes",
        fit_with(labels=np.array([0, 12, 1, 2])),
        r"a training batch: label 12 is outside \[0, 10\)",
    ),
    Case(
        "a truncated scores.npy",
        damaged_file("scores.npy", b"\x93NUMPY\x01\x00v\x00{'descr'"),
        r"run/gga/scores.npy is damaged .*delete it to score again",
    ),
    Case(
        "a truncated placement.json",
        damaged_file("placement.json", b'{"policy": "gga", "ed'),
        r"run/gga/placement.json is damaged .*delete it to recompute the placement",
    ),
]


def message_of(case: Case, tmp: str) -> str:
    """The one-line message `case` raises (or warns), with tmp written as <tmp>."""
    if case.warns:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            case.run(tmp)
        found = [w for w in caught if issubclass(w.category, case.warns)]
        assert found, f"{case.input}: no {case.warns.__name__}"
        message = str(found[0].message)
    else:
        with pytest.raises(ValueError) as info:
            case.run(tmp)
        message = str(info.value)
    return message.replace(tmp, "<tmp>")


def error_table(messages: list[tuple[str, str]]) -> str:
    """docs/errors.md: the bad inputs and what the library says to each."""
    lines = [
        "# What bad input gets",
        "",
        "Generated by `PYTHONPATH=. python scripts/error_table.py` from the cases of",
        "`tests/test_validation.py`, which fail if a message changes and this file does not.",
        "Each is one line; the workdir of a refused run is left as it was. On the CLI",
        "(`python -m gga_jax.main`) the same line is printed after `error: `, with exit status 2.",
        "",
        "| input | message |",
        "| --- | --- |",
    ]
    for input_, message in messages:
        lines.append(f"| {input_} | {message.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def read_error_table() -> dict[str, str]:
    """{input: message} of docs/errors.md."""
    with open(DOC) as f:
        rows = [line for line in f.read().splitlines() if line.startswith("| ")][2:]
    return dict(row[2:-2].split(" | ", 1) for row in rows)


@pytest.mark.parametrize("case", CASES, ids=[c.input for c in CASES])
def test_bad_input_is_refused_in_one_line_naming_it(case, tmp_path):
    tmp = str(tmp_path)
    if case.prepare:
        case.prepare(tmp)
    before = snapshot(tmp)
    message = message_of(case, tmp)
    assert "\n" not in message, message
    assert re.search(case.expect, message), message
    if case.refused:
        assert snapshot(tmp) == before, "a refused run changed its workdir"
    documented = read_error_table().get(case.input)
    assert documented == message.replace("|", "/"), (
        "docs/errors.md is stale: run `PYTHONPATH=. python scripts/error_table.py`"
    )


def test_docs_error_table_lists_exactly_the_cases():
    assert list(read_error_table()) == [c.input for c in CASES]


# --- the CLI ---------------------------------------------------------------------------


def cli(*args, timeout=300):
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    env.pop("GGA_JAX_TRACEBACK", None)
    cmd = [sys.executable, "-m", "gga_jax.main", *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def error_lines(result) -> list[str]:
    """stderr without progress bars and absl's log lines."""
    return [
        line
        for line in result.stderr.splitlines()
        if line.startswith("error")
        or (line.strip() and "it/s" not in line and line[:1] not in "IWE")
    ]


def test_cli_help_exits_zero_and_says_how_to_list_things():
    result = cli("--help")
    assert result.returncode == 0, result.stderr
    for listing in ("--list=configs", "--list=arms", "--list=keys", "--traceback"):
        assert listing in result.stdout, listing


def test_cli_lists_configs_arms_and_keys():
    arms = cli("--list=arms")
    assert arms.returncode == 0
    names = [line.split(":")[0] for line in arms.stdout.splitlines()]
    assert names == [*validation.ARMS, "tina"]
    configs = cli("--list=configs")
    assert "default: The offline default job" in configs.stdout
    assert "experiments/e1" in configs.stdout and "experiments/e1:" not in configs.stdout
    keys = cli("--list=keys", "--config=configs/default.py:smoke")
    assert "train.lr = 0.001" in keys.stdout and "placement.num = 3" in keys.stdout


@pytest.mark.parametrize(
    "args, expect",
    [
        (["--config.train.lr=-1"], "error: train.lr = -1.0: must be a positive real number."),
        (
            ["--config.arms=('gga', 'gpa')"],
            "error: arms has unknown arm 'gpa'; valid arms: ('gga', 'top_k', 'random', "
            "'first_k', 'last_k', 'all_parallel', 'ffn_parallel', 'all_sequential', 'single', "
            "'iterative_gga', 'fixed', 'linear_probe', 'full_finetune'), or "
            "'tina:<base>[:<label>]' with a base in ('gga', 'top_k', 'random', 'first_k', "
            "'last_k', 'all_parallel', 'ffn_parallel', 'all_sequential', 'single', "
            "'iterative_gga', 'fixed').",
        ),
        (
            ["--config.train.lr=abc"],
            "error: flag --config.train.lr=abc: could not convert string to float: 'abc'",
        ),
    ],
    ids=["bad value", "unknown arm", "unparsable value"],
)
def test_cli_user_error_is_one_line_exit_2_and_writes_nothing(args, expect, tmp_path):
    workdir = tmp_path / "w"
    result = cli("--config=configs/default.py:smoke", *args, f"--workdir={workdir}")
    assert result.returncode == 2, result.stderr
    lines = error_lines(result)
    assert lines[0] == expect and len(lines) == 2, lines  # the error, then where help is
    assert "Traceback" not in result.stderr
    assert not workdir.exists()


@pytest.mark.parametrize(
    "config, expect",
    [
        ("configs/default.py:bogus", "Unknown argument 'bogus' for configs/default.py"),
        ("configs/nope.py", "no file 'configs/nope.py', and no packaged config of that name"),
    ],
)
def test_cli_bad_config_file_is_one_line(config, expect, tmp_path):
    result = cli(f"--config={config}", f"--workdir={tmp_path / 'w'}")
    assert result.returncode == 2
    lines = error_lines(result)
    assert len(lines) == 2 and lines[0].startswith("error: ") and expect in lines[0], lines


def test_cli_traceback_flag_shows_the_trace(tmp_path):
    result = cli(
        "--config=configs/default.py:smoke",
        "--config.train.steps=0",
        "--traceback",
        f"--workdir={tmp_path / 'w'}",
    )
    assert result.returncode != 0
    assert "Traceback (most recent call last)" in result.stderr
    assert "ConfigError: train.steps = 0" in result.stderr


def test_cli_ctrl_c_prints_the_command_that_resumes(tmp_path):
    workdir = tmp_path / "w"
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    args = [
        "--config=configs/default.py:smoke",
        "--config.train.steps=2000",
        f"--workdir={workdir}",
    ]
    process = subprocess.Popen(
        [sys.executable, "-m", "gga_jax.main", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 240
    while not (workdir / "gga" / "checkpoints").exists():
        assert process.poll() is None and time.time() < deadline, process.stderr.read()[-2000:]
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    assert "interrupted; resume with:" in stderr
    resume = stderr.rsplit("resume with:", 1)[1].strip().splitlines()[0]
    assert resume.endswith(" ".join(args)) and "-m gga_jax.main" in resume, resume
    assert json.loads((workdir / "config.json").read_text())["train.steps"] == 2000
