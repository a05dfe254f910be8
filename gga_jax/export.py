"""Adapters to take home: a small artifact per task, loaded onto the backbone it was made for.

    python -m gga_jax.export --workdir=/tmp/gga_default --arm=gga --out=/tmp/gga_tweets
    model, params, meta = export.load("/tmp/gga_tweets")          # backbone from the artifact
    model, params, meta = export.load(DIR, checkpoint="ViT-B_16.npz")  # or another copy of it

An artifact is a directory, like an HF PEFT / AdapterHub adapter:
  adapter_config.json   format, backbone (kind, variant, pool type, overrides,
                        checkpoint as given, and `fingerprint`: SHA-256 of the
                        backbone weights as loaded), edges, per-edge ranks (TINA's
                        too), adapter settings, head size, preprocessing (image
                        size, or max_len and the tokenizer file) and class names;
  adapters.safetensors  the adapter and head parameters only, "a/b/c" names;
  tokenizer.json        text models only: the tokenizer the run used.
Loading rebuilds the model with the artifact's static edge list and ranks,
loads the backbone checkpoint, refuses it when its fingerprint differs (other
weights would silently give other predictions), and puts the adapters and head
in place. Only arms that train adapters or the head can be exported: a full
fine-tune is a whole new backbone, not an adapter.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from gga_jax import defaults, pipeline, validation
from gga_jax import train as train_lib

FORMAT = "gga_jax.adapter/1"
CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE = (
    "adapter_config.json",
    "adapters.safetensors",
    "tokenizer.json",
)
_OWN = ("adapters", "head")  # top-level parameter keys an artifact holds


def fingerprint(params) -> str:
    """SHA-256 over the sorted names, shapes and float32 bytes of the backbone weights."""
    digest = hashlib.sha256()
    flat = train_lib.flatten({k: v for k, v in params.items() if k not in _OWN})
    for name in sorted(flat):
        x = np.ascontiguousarray(np.asarray(flat[name], np.float32))
        digest.update(f"{name}:{x.shape};".encode())
        digest.update(x.tobytes())
    return digest.hexdigest()


def _run_config(workdir: str) -> ml_collections.ConfigDict:
    """The ConfigDict of a finished run, from its results.json."""
    results = validation.read_json(os.path.join(workdir, "results.json"), "results (run again)")
    config = ml_collections.ConfigDict(results["config"])
    return config, results


def _arm_row(results: dict, arm: str, workdir: str) -> dict:
    rows = {r["arm"]: r for r in results["arms"]}
    if arm not in rows:
        raise validation.ConfigError(
            f"--arm {arm!r} is not a finished arm of {workdir}; its arms: {sorted(rows)}."
        )
    if arm == "full_finetune":
        raise validation.ConfigError(
            "--arm 'full_finetune' trained every weight: that is a whole backbone, not an "
            "adapter to export; export an adapter arm or 'linear_probe'."
        )
    return rows[arm]


def _trained(arm_dir: str, row: dict) -> dict[str, np.ndarray]:
    """The final trainable parameters {"a/b/c": array} of an arm (a TINA arm's last cycle)."""
    if row.get("cycles"):
        arm_dir = os.path.join(arm_dir, f"cycle_{row['cycles'][-1]['cycle']}")
    manager = ocp.CheckpointManager(
        os.path.join(arm_dir, "checkpoints"), item_handlers=ocp.StandardCheckpointHandler()
    )
    step = manager.latest_step()
    if step is None:
        raise validation.ConfigError(f"{arm_dir} holds no checkpoint: is the arm finished?")
    state = manager.restore(step, args=ocp.args.StandardRestore())
    manager.close()
    return {k: np.asarray(v) for k, v in state["trainable"].items()}


def save(workdir: str, arm: str, out: str) -> dict[str, Any]:
    """Writes the artifact of `arm` of the finished run in `workdir` to `out`; its config."""
    from safetensors.numpy import save_file

    config, results = _run_config(workdir)
    row = _arm_row(results, arm, workdir)
    if os.path.exists(out) and os.listdir(out):
        raise validation.ConfigError(f"--out {out} exists and is not empty; choose another path.")
    trained = _trained(os.path.join(workdir, arm), row)
    model, params = _backbone(config, results["data"]["num_classes"], row)
    meta = {
        "format": FORMAT,
        "arm": arm,
        "backbone": {
            **{k: config.model[k] for k in ("kind", "variant", "pool_type", "checkpoint")},
            "overrides": dict(config.model.overrides or {}),
            "seed": config.seed,
            "fingerprint": fingerprint(params),
            "params": train_lib.count_params(train_lib.flatten(params)) - _own_size(params),
        },
        "edges": [list(e) for e in model.edges],
        "ranks": list(model.adapter_rank),
        "adapter": {k: config.adapter[k] for k in ("activation", "layer_norm")},
        "num_classes": results["data"]["num_classes"],
        "class_names": results["data"]["label_names"],
        "preprocessing": _preprocessing(config),
        "trainable_params": train_lib.count_params(trained),
    }
    os.makedirs(out, exist_ok=True)
    save_file(
        {k: np.ascontiguousarray(v) for k, v in trained.items()}, os.path.join(out, WEIGHTS_FILE)
    )
    if meta["backbone"]["kind"] == "text":
        tokenizer = pipeline.tokenizer_path(config)
        if os.path.isdir(tokenizer):
            tokenizer = os.path.join(tokenizer, TOKENIZER_FILE)
        shutil.copyfile(tokenizer, os.path.join(out, TOKENIZER_FILE))
    with open(os.path.join(out, CONFIG_FILE), "w") as f:
        json.dump(meta, f, indent=1)
    return meta


def _own_size(params) -> int:
    return train_lib.count_params(train_lib.flatten({k: params[k] for k in _OWN if k in params}))


def _preprocessing(config) -> dict[str, Any]:
    if config.model.kind == "text":
        return {"max_len": config.data.max_len, "tokenizer": TOKENIZER_FILE}
    return {"image_size": config.data.image_size, "value_range": [-1.0, 1.0]}


def _backbone(config, num_classes: int, row_or_meta: dict):
    """(model with the arm's edges and ranks, params with the backbone loaded)."""
    factory = pipeline.backbone_factory(config, num_classes)
    edges = tuple(tuple(e) for e in row_or_meta["edges"])
    model = factory(edges, tuple(row_or_meta.get("ranks") or ()) or None)
    example = validation.abstract_example(config)
    zeros = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), example)
    params = jax.jit(model.init)(jax.random.PRNGKey(config.seed), zeros)["params"]
    return model, pipeline.load_weights(config.model, model, params)


def _config_of(meta: dict, checkpoint: str | None) -> ml_collections.ConfigDict:
    """A run config rebuilt from an artifact's backbone, adapter and preprocessing."""
    config = defaults.base()
    b = meta["backbone"]
    config.seed = b["seed"]
    config.model.kind, config.model.variant = b["kind"], b["variant"]
    config.model.pool_type, config.model.overrides = b["pool_type"], b["overrides"]
    config.model.checkpoint = checkpoint or b["checkpoint"]
    config.adapter.activation = meta["adapter"]["activation"]
    config.adapter.layer_norm = meta["adapter"]["layer_norm"]
    p = meta["preprocessing"]
    config.data.image_size = p.get("image_size", config.data.image_size)
    config.data.max_len = p.get("max_len", config.data.max_len)
    return config


def load(artifact: str, checkpoint: str | None = None) -> tuple[Any, dict, dict]:
    """(model, params, meta) of an artifact on its backbone checkpoint (or `checkpoint`).

    Raises ValueError if the backbone's weights are not the ones the adapters
    were trained on (their fingerprints differ), or if a file is missing.
    """
    from safetensors.numpy import load_file

    path = os.path.join(artifact, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{artifact} is not an adapter artifact: {CONFIG_FILE} is missing.")
    meta = validation.read_json(path, "artifact (export it again)")
    if meta.get("format") != FORMAT:
        raise validation.ConfigError(
            f"{path} has format {meta.get('format')!r}; expected {FORMAT!r}."
        )
    config = _config_of(meta, checkpoint)
    model, params = _backbone(config, meta["num_classes"], meta)
    found = fingerprint(params)
    if found != meta["backbone"]["fingerprint"]:
        want = meta["backbone"]["fingerprint"][:12]
        raise validation.ConfigError(
            f"the backbone {config.model.checkpoint!r} is not the one these adapters were trained "
            f"on (weights fingerprint {found[:12]}, artifact {want})."
        )
    trained = load_file(os.path.join(artifact, WEIGHTS_FILE))
    flat = train_lib.flatten(params)
    missing = sorted(k for k in flat if k.startswith(_OWN) and k not in trained)
    extra = sorted(set(trained) - set(flat))
    wrong = sorted(k for k in set(trained) & set(flat) if trained[k].size != np.size(flat[k]))
    if missing or extra or wrong:
        raise validation.ConfigError(
            f"{artifact}/{WEIGHTS_FILE} does not fit its config: missing {missing}, extra "
            f"{extra}, wrong size {wrong}."
        )
    # safetensors keeps a scalar (alpha) as shape (1,): back to the model's shapes.
    trained = {k: v.reshape(np.shape(flat[k])) for k, v in trained.items()}
    return model, train_lib.unflatten({**flat, **trained}), meta


def sizes(artifact: str, meta: dict) -> str:
    """The artifact's size beside the backbone's, for the CLI."""
    files = sum(os.path.getsize(os.path.join(artifact, f)) for f in os.listdir(artifact))
    backbone_mb = 4 * meta["backbone"]["params"] / 1e6
    return (
        f"{artifact}: {files / 1e6:.3f} MB ({meta['trainable_params']:,} parameters) for a "
        f"backbone of {meta['backbone']['params']:,} parameters ({backbone_mb:.1f} MB as float32)"
    )


def main(argv: list[str] | None = None) -> None:
    """python -m gga_jax.export --workdir=W --arm=ARM --out=DIR."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="a finished run's workdir")
    parser.add_argument("--arm", required=True, help="the arm to export, e.g. gga")
    parser.add_argument("--out", required=True, help="the artifact directory to write")
    args = parser.parse_args(argv)
    try:
        meta = save(args.workdir, args.arm, args.out)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {' '.join(str(e).split())}")
    print(sizes(args.out, meta))


if __name__ == "__main__":
    main()
