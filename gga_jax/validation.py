"""The whole run config checked before any work: data, weights, devices or the workdir.

A run that fails after its head pre-training or scoring has wasted that work,
and one that fails after writing `config.json` blocks its own corrected rerun
in the same workdir. So `check_config` reads every key of a config against what
the pipeline accepts, builds the model abstractly (`jax.eval_shape`: no
parameters are allocated, no weights read) to check the input shapes and the
placement against the graph, and checks the workdir, all before `pipeline.run`
touches anything. Every problem found is reported at once, in one line, as

    <key> = <value>: <what is valid>

    validation.check_config(config, workdir)  # raises ConfigError, or returns None
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
from collections.abc import Callable
from typing import Any

import ml_collections

from gga_jax import adapters, data, graph, models, placement, scoring, tina, train

# The arms a run may list: placement policies of docs/spec.md §4, "fixed" (config.placement.edges)
# and the training modes without adapters.
ARMS = (*placement.POLICIES, "iterative_gga", "fixed", *train.MODES)
# Arms whose policy picks config.placement.num edges, and from which candidates.
HEAD_INITS = ("pretrained", "zero")
EVAL_SPLITS = ("val", "test")
SCORED_POLICIES = ("gga", "top_k", "iterative_gga")
NUM_POLICIES = ("gga", "top_k", "iterative_gga", "random", "first_k", "last_k")
CANDIDATE_POLICIES = ("gga", "top_k", "iterative_gga", "random")
SOURCES = data.SOURCES  # "tfds", "offline", and your own data: "folder", "csv", "jsonl", "npz"
# TINA arms: "tina:<base>" or "tina:<base>:<label>", base a placement arm (config.tina).
TINA_ARM = re.compile(r"tina:(?P<base>\w+)(?::[\w.-]+)?")
TINA_SCHEDULES = ("iterative", "one_shot")
CHECKPOINT_ALIASES = ("random", "minilm", "small_fmnist")


class ConfigError(ValueError):
    """A config, input or workdir the run refuses; its message is one line."""


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _int_at_least(minimum: int) -> Callable[[Any], str | None]:
    return lambda v: None if _is_int(v) and v >= minimum else f"an integer >= {minimum}"


def _real_in(low: float, high: float, low_open=False, high_open=True):
    """A check for a finite real in [low, high), with either end open or closed."""
    left, right = "(" if low_open else "[", ")" if high_open else "]"

    def check(v):
        ok = _is_real(v) and (v > low if low_open else v >= low)
        ok = ok and (v < high if high_open else v <= high)
        return None if ok else f"a real number in {left}{low}, {high}{right}"

    return check


def _one_of(valid) -> Callable[[Any], str | None]:
    return lambda v: None if v in valid else f"one of {tuple(valid)}"


_BOOL = lambda v: None if isinstance(v, bool) else "True or False"  # noqa: E731
_POSITIVE = lambda v: None if _is_real(v) and v > 0 else "a positive real number"  # noqa: E731
_NON_NEGATIVE = lambda v: None if _is_real(v) and v >= 0 else "a real number >= 0"  # noqa: E731
_OPTIONAL_INT = lambda v: (  # noqa: E731
    None if v is None or (_is_int(v) and v >= 1) else "None or an integer >= 1"
)
_NAME = lambda v: None if isinstance(v, str) and v else "a non-empty string"  # noqa: E731


def _optional(check: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
    """check, with None valid too."""
    return lambda v: None if v is None or check(v) is None else f"None or {check(v)}"


def _by_role(v) -> str | None:
    """data.path / data.splits: None, a non-empty string, or {"train": s, "val"?: s, "test"?: s}."""
    v = _shown(v)
    if v is None or (isinstance(v, str) and v):
        return None
    if isinstance(v, dict) and "train" in v and set(v) <= set(data.ROLES):
        if all(isinstance(x, str) and x for x in v.values()):
            return None
    return "None, a path, or a mapping {'train': ..., 'val': ..., 'test': ...} (val, test optional)"


def _eval_splits(v) -> str | None:
    """train.eval_splits: a non-empty tuple of distinct names in ("val", "test")."""
    v = _shown(v)
    ok = isinstance(v, (tuple, list)) and v and len(set(v)) == len(v)
    ok = ok and all(isinstance(x, str) and x in EVAL_SPLITS for x in v)
    return None if ok else f"a non-empty tuple of distinct names in {EVAL_SPLITS}"


def _shown(value):
    """A config value as plain Python (a ConfigDict's repr spans lines)."""
    return value.to_dict() if hasattr(value, "to_dict") else value


# key -> check(value) returning None if valid, else what would be valid.
CHECKS: dict[str, Callable[[Any], str | None]] = {
    "seed": _int_at_least(0),
    "model.kind": _one_of(("vit", "text")),
    "model.remat": _one_of(models.REMAT),
    "data.source": _one_of(SOURCES),
    "data.image_size": _int_at_least(1),
    "data.max_len": _int_at_least(1),
    "data.seed": _int_at_least(0),
    "data.val_size": _int_at_least(0),
    "data.train_size": _OPTIONAL_INT,
    "data.test_size": _OPTIONAL_INT,
    "data.path": _by_role,
    "data.splits": _by_role,
    "data.image_key": _NAME,
    "data.text_key": _NAME,
    "data.text_pair_key": _optional(_NAME),
    "data.label_key": _NAME,
    "data.num_classes": _optional(_int_at_least(2)),
    "data.val_fraction": _real_in(0, 1),
    "data.test_fraction": _optional(_real_in(0, 1)),
    "data.stream": _one_of(data.STREAM_MODES),
    "data.stream_above_gib": _POSITIVE,
    "data.prefetch": _int_at_least(0),
    "adapter.rank": _int_at_least(1),
    "adapter.activation": _one_of(tuple(adapters.ACTIVATIONS)),
    "adapter.layer_norm": _BOOL,
    "adapter.budget": _int_at_least(0),
    "tina.sigma0": _POSITIVE,
    "tina.sigma_target": _POSITIVE,
    "tina.rho": _real_in(0, 1, low_open=True),
    "tina.scope": _one_of(tina.SCOPES),
    "tina.normalize": _BOOL,
    "tina.divide_by_max": _BOOL,
    "tina.schedule": _one_of(TINA_SCHEDULES),
    "tina.cycle_steps": _int_at_least(1),
    "tina.budget": _int_at_least(0),
    "placement.gamma": _real_in(0, 1),
    "placement.seed": _int_at_least(0),
    "placement.stride": _int_at_least(1),
    "scoring.num_examples": _int_at_least(1),
    "scoring.micro_batch": _int_at_least(0),
    "scoring.chunk": _OPTIONAL_INT,
    "scoring.aggregation": _one_of(scoring.AGGREGATIONS),
    "scoring.srank_method": _one_of(scoring.METHODS),
    "scoring.products": _one_of(tuple(scoring.PRODUCTS)),
    "scoring.eta": _real_in(0, 1, low_open=True),
    "scoring.head_steps": _int_at_least(-1),
    "placement.iterative_rounds": _int_at_least(1),
    "placement.iterative_steps": _int_at_least(-1),
    "placement.rescore": _BOOL,
    "scoring.head_lr": _NON_NEGATIVE,
    "train.steps": _int_at_least(1),
    "train.batch_size": _int_at_least(1),
    "train.eval_batch_size": _int_at_least(1),
    "train.optimizer": _one_of(train.OPTIMIZERS),
    "train.lr": _POSITIVE,
    "train.momentum": _real_in(0, 1),
    "train.weight_decay": _NON_NEGATIVE,
    "train.schedule": _one_of(train.SCHEDULES),
    "train.warmup_steps": _int_at_least(-1),
    "train.warmup_fraction": _real_in(0, 1),
    "train.grad_clip_norm": _NON_NEGATIVE,
    "train.label_smoothing": _real_in(0, 1),
    "train.pass1_cache_gib": _NON_NEGATIVE,
    "train.prefix_cache_gib": _NON_NEGATIVE,
    "train.log_every": _int_at_least(1),
    "train.checkpoint_every": _int_at_least(1),
    "train.head_init": _one_of(HEAD_INITS),
    "train.eval_splits": _eval_splits,
}
# The keys train.fit reads, checked there too for callers of the Python API.
FIT_KEYS = (
    "steps",
    "optimizer",
    "lr",
    "momentum",
    "weight_decay",
    "schedule",
    "warmup_steps",
    "warmup_fraction",
    "grad_clip_norm",
    "label_smoothing",
    "log_every",
    "checkpoint_every",
)


def _get(config, key: str):
    node = config
    for part in key.split("."):
        node = node[part]
    return node


def _problems_of_keys(config, keys) -> list[str]:
    problems = []
    for key in keys:
        try:
            value = _get(config, key)
        except (KeyError, AttributeError):
            problems.append(f"{key} is missing: build the config on gga_jax.defaults.base()")
            continue
        want = CHECKS[key](value)
        if want:
            problems.append(f"{key} = {_shown(value)!r}: must be {want}")
    return problems


def tina_base(arm: str) -> str | None:
    """The base placement of a TINA arm ("tina:gga:local" -> "gga"), None for other arms."""
    match = TINA_ARM.fullmatch(arm)
    return match.group("base") if match else None


def _raise(problems: list[str], what: str = "config") -> None:
    if len(problems) == 1:
        raise ConfigError(problems[0] + ".")
    if problems:
        raise ConfigError(f"{len(problems)} {what} problems: " + "; ".join(problems) + ".")


def check_train_config(config, prefix: str = "train.") -> None:
    """Raises ConfigError unless every key train.fit reads of `config` is valid."""
    problems = []
    for key in FIT_KEYS:
        value = config.get(key) if hasattr(config, "get") else getattr(config, key, None)
        want = CHECKS["train." + key](value)
        if want:
            problems.append(f"{prefix}{key} = {value!r}: must be {want}")
    _raise(problems, "training config")


def arm_config(config, arm: str) -> ml_collections.ConfigDict:
    """config with config.overrides[arm] (e.g. {"train": {"lr": 0.01}}) merged in."""
    arm_cfg = ml_collections.ConfigDict(config.to_dict())

    def merge(node, changes, prefix):
        for key, value in changes.items():
            if key not in node:
                raise ConfigError(f"overrides[{arm!r}] sets unknown key '{prefix}{key}'.")
            if isinstance(value, (dict, ml_collections.ConfigDict)):
                merge(node[key], value, f"{prefix}{key}.")
            else:
                node[key] = value

    merge(arm_cfg, dict((config.overrides or {}).get(arm, {})), "")
    return arm_cfg


def check_config(config, workdir: str | None = None, *, model_factory=None) -> None:
    """Raises ConfigError naming every invalid key of a run config (and its workdir).

    Checks, in this order, all before any data or weights are read: the arms and
    their overrides; every numeric and named key (`CHECKS`) of every arm's
    merged config; the data source, name, and for your own data its paths,
    columns or arrays (gga_jax.data reads only headers and listings here); the
    checkpoint path; the model
    (built abstractly from `model_factory(edges)`, pipeline.backbone_factory),
    images against its patch size; the placement keys against its graph; the
    batch sizes against the mesh; and the workdir (see `check_workdir`).
    """
    problems = _check_arms(config)
    if problems:
        _raise(problems)
    for arm in config.arms:
        problems += _problems_of_keys(arm_config(config, arm), CHECKS)
    problems = list(dict.fromkeys(problems))  # an arm without overrides repeats the top level
    problems += _check_data(config) + _check_checkpoint(config) + _check_head(config)
    if not problems and model_factory is not None:
        problems += _check_model(config, model_factory)
    if not problems:
        problems += _check_mesh(config)
    _raise(problems)
    if workdir is not None:
        check_workdir(workdir)


def _check_arms(config) -> list[str]:
    arms = tuple(config.arms)
    if not arms:
        return [f"arms = (): list at least one arm; valid: {ARMS}"]
    bases = (*placement.POLICIES, "iterative_gga", "fixed")
    problems = [
        f"arms has unknown arm {a!r}; valid arms: {ARMS}, or 'tina:<base>[:<label>]' with a "
        f"base in {bases}"
        for a in arms
        if a not in ARMS and tina_base(a) not in bases
    ]
    if len(set(arms)) < len(arms):
        problems.append(f"arms = {arms}: an arm is listed twice (each writes workdir/<arm>/)")
    for arm in arms:
        try:
            arm_config(config, arm)
        except ConfigError as e:
            problems.append(str(e).rstrip("."))
    return problems


def _check_data(config) -> list[str]:
    d = config.data
    if _problems_of_keys(config, [k for k in CHECKS if k.startswith("data.")]):
        return []  # reported by CHECKS
    misplaced = data.misplaced_fields(d)
    if misplaced:
        return [misplaced.rstrip(".")]
    if d.source == "offline" or d.name in data.TFDS_TASKS:
        return _check_registered(config)
    return _check_own_data(config)


def _check_registered(config) -> list[str]:
    """An offline set or one of the paper's TFDS tasks."""
    d = config.data
    registry = data.TFDS_TASKS if d.source == "tfds" else data.OFFLINE_DATASETS
    if d.name not in registry:
        valid = sorted(registry)
        return [f"data.name = {d.name!r}: no {d.source} dataset of that name; valid: {valid}"]
    spec = registry[d.name]
    problems = _check_kind(config, "data.name", d.name, spec.kind)
    if problems or d.source == "tfds":
        return problems
    train_size = d.train_size or spec.train_size
    if _is_int(d.val_size) and d.val_size >= train_size:
        return [f"data.val_size = {d.val_size}: must be below the train size {train_size}"]
    missing = data.offline_missing(d.name)
    return [f"data.name = {d.name!r}: {missing}"] if missing else []


def _check_kind(config, key: str, value, kind: str) -> list[str]:
    """The data's kind ("image" or "text") against model.kind."""
    if kind == ("text" if config.model.kind == "text" else "image"):
        return []
    article = "an" if kind == "image" else "a"
    return [
        f"{key} = {value!r} is {article} {kind} dataset, but model.kind = {config.model.kind!r}"
    ]


def _check_own_data(config) -> list[str]:
    """Your own data: its paths or TFDS name and splits, held-out shares, columns or arrays.

    Reads only what is cheap: folder listings, a table's header, an npz's
    names, TFDS metadata; bad contents (an undecodable image, a label outside
    the classes) are found when data.load reads them.
    """
    d = config.data
    if d.source == "tfds":
        try:
            features = data.tfds_builder(d).info.features
            kind, _ = data.tfds_fields(features, d)
        except (ValueError, ImportError) as e:
            return [f"data.name = {d.name!r}: {_one_line(e)}"]
    key = "data.splits" if d.source == "tfds" else "data.path"
    shown = _shown(_get(config, key))
    try:
        roles = data.own_roles(d)
    except ValueError as e:
        return [f"{key} = {shown!r}: {_one_line(e)}"]
    try:
        data.held_out_fractions(d, roles)
    except ValueError as e:
        shares = f"data.val_fraction = {d.val_fraction!r}, data.test_fraction = {d.test_fraction!r}"
        return [f"{shares}: {_one_line(e)}"]
    if d.source == "tfds":
        return _check_kind(config, "data.name", d.name, kind)
    missing = [p for p in roles.values() if not os.path.exists(p)]
    if missing:
        what = "no such file or directory" if len(roles) == 1 else f"{missing[0]} does not exist"
        return [f"data.path = {shown!r}: {what}"]
    check = {"folder": _check_folder, "csv": _check_table, "jsonl": _check_table, "npz": _check_npz}
    return check[d.source](config, roles, shown)


def _check_folder(config, roles: dict[str, str], shown) -> list[str]:
    """At least 2 class subfolders in train; val and test folders hold only train's classes."""
    try:
        names = data.folder_classes(roles["train"])
        for role in ("val", "test"):
            if role in roles:
                data.folder_classes(roles[role], names)
    except ValueError as e:
        return [f"data.path = {shown!r}: {_one_line(e)}"]
    return _check_kind(config, "data.path", shown, "image")


def _check_table(config, roles: dict[str, str], shown) -> list[str]:
    """Every named column in each table's header (CSV) or first row (JSONL)."""
    d = config.data
    problems = []
    for path in roles.values():
        try:
            columns = data.table_columns(path, d.source)
        except (ValueError, OSError) as e:
            return [f"data.path = {shown!r}: {_one_line(e)}"]
        where = "header" if d.source == "csv" else "first row"
        for key in ("text_key", "text_pair_key", "label_key"):
            if d[key] is not None and d[key] not in columns:
                problems.append(
                    f"data.{key} = {d[key]!r}: {path} has no such column; its {where} has {columns}"
                )
    return problems or _check_kind(config, "data.path", shown, "text")


def _check_npz(config, roles: dict[str, str], shown) -> list[str]:
    """The images (data.image_key) or token ids, and the labels, in every archive."""
    d = config.data
    try:
        kind = data.npz_kind(roles["train"], d.image_key)
        keys = {path: data.npz_keys(path) for path in roles.values()}
    except (ValueError, OSError) as e:
        return [f"data.path = {shown!r}: {_one_line(e)}"]
    inputs = ("data.image_key", d.image_key) if kind == "image" else ("data.path", "input_ids")
    for path, present in keys.items():
        for key, name in (inputs, ("data.label_key", d.label_key)):
            if name not in present:
                value = shown if key == "data.path" else name
                return [f"{key} = {value!r}: {path} has no array {name!r}; its arrays: {present}"]
    return _check_kind(config, "data.path", shown, kind)


def _check_head(config) -> list[str]:
    """A scored policy needs head pre-training: a zero head scores every edge 0."""
    scored = [a for a in config.arms if (tina_base(a) or a) in SCORED_POLICIES]
    if scored and config.scoring.head_steps == 0:
        return [
            f"scoring.head_steps = 0: arm {scored[0]!r} scores edges, and a zero head gives "
            f"every edge the score 0 (docs/spec.md §3 step 1); use -1 (2.5% of train.steps) or > 0"
        ]
    return []


def _check_checkpoint(config) -> list[str]:
    source = config.model.checkpoint
    if not source:
        return [
            "model.checkpoint = '': give a weights file, 'minilm' (text), 'small_fmnist' (ViT) "
            "or 'random'"
        ]
    if source == "minilm":
        try:
            from gga_jax.models import text

            text.minilm_path()
        except (FileNotFoundError, ValueError) as e:
            return [f"model.checkpoint = 'minilm': {str(e).rstrip('.')}"]
        return []
    if source == "small_fmnist":
        return [] if config.model.kind == "vit" else ["model.checkpoint = 'small_fmnist' is a ViT"]
    if source != "random" and not os.path.exists(source):
        return [f"model.checkpoint = {source!r}: no such file or directory"]
    return []


def _check_model(config, factory) -> list[str]:
    """Builds the model abstractly; checks image size, tokens and the placement keys."""
    import jax

    try:
        model = factory(())
        example = abstract_example(config)
        jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), example)
    except (ValueError, TypeError) as e:
        images = config.model.kind == "vit" and "images" in str(e)
        key = "data.image_size" if images else "model.variant"
        value = config.data.image_size if images else config.model.variant
        return [f"{key} = {value!r}: {_one_line(e)}"]
    problems = []
    depth = model.depth
    for arm in config.arms:
        arm_cfg = arm_config(config, arm)
        problems += _check_placement(arm_cfg, tina_base(arm) or arm, depth)
        if tina_base(arm):
            problems += _check_tina(arm_cfg, arm, model)
        elif arm_cfg.adapter.budget and arm not in train.MODES:
            problems += _check_budget(
                arm_cfg, "adapter.budget", model, _num_edges(arm_cfg, arm, depth)
            )
    return list(dict.fromkeys(problems))


def _check_tina(config, arm: str, model) -> list[str]:
    """TINA's settings against each other and the model (gga_jax.tina)."""
    t = config.tina
    if t.sigma_target <= t.sigma0:
        return [f"tina.sigma_target = {t.sigma_target!r}: must be above tina.sigma0 = {t.sigma0!r}"]
    if model.width / t.sigma0 < 1:
        return [
            f"tina.sigma0 = {t.sigma0!r}: d / sigma0 = {model.width / t.sigma0:g} leaves fewer "
            f"than one neuron per adapter (width {model.width}); use sigma0 <= {model.width}"
        ]
    if getattr(model, "adapter_kind", "bottleneck") != "bottleneck":
        return [f"arm {arm!r}: TINA prunes bottleneck adapters, not {model.adapter_kind!r} ones"]
    if t.budget and t.scope != "global":
        return [f"tina.scope = {t.scope!r}: a tina.budget is met by global selection only"]
    return _check_budget(config, "tina.budget", model) if t.budget else []


def _check_budget(config, key: str, model, num_edges: int | None = None) -> list[str]:
    """A budget must leave room beyond the head (width x classes + classes) for the adapters.

    With num_edges (a plain arm at a uniform rank), it must hold num_edges adapters of rank 1.
    """
    budget = _get(config, key)
    head = model.num_classes * (model.width + 1)
    if budget <= head:
        return [f"{key} = {budget}: must be above the head's own {head} parameters"]
    if num_edges:
        try:
            tina.rank_for_budget(budget, num_edges, model.width, head, config.adapter.layer_norm)
        except ValueError as e:
            return [f"{key} = {budget}: {_one_line(e)}"]
    return []


def _num_edges(config, arm: str, depth: int) -> int:
    """How many edges a plain arm places (its policy's count)."""
    counts = {"all_parallel": 2 * depth, "ffn_parallel": depth, "all_sequential": 2 * depth + 1}
    if arm == "fixed":
        return len(config.placement.edges)
    return counts.get(arm, 1 if arm == "single" else config.placement.num)


def abstract_example(config):
    """One example of config's input as ShapeDtypeStructs (leading axis 1)."""
    import jax
    import numpy as np

    if config.model.kind == "text":
        ids = jax.ShapeDtypeStruct((1, config.data.max_len), np.int32)
        return {"input_ids": ids, "attention_mask": ids}
    size = config.data.image_size
    return jax.ShapeDtypeStruct((1, size, size, 3), np.float32)


def _check_placement(config, arm: str, depth: int) -> list[str]:
    p = config.placement
    if arm == "fixed":
        try:
            edges = graph.validate_edges(p.edges, depth)
        except ValueError as e:
            return [f"placement.edges = {p.edges!r}: {_one_line(e)}"]
        return [] if edges else ["placement.edges = (): the 'fixed' arm needs at least one edge"]
    if arm == "single":
        try:
            placement.single(tuple(p.edge), depth)
        except (ValueError, TypeError) as e:
            return [f"placement.edge = {p.edge!r}: {_one_line(e)}"]
        return []
    if arm not in NUM_POLICIES:
        return []
    if arm in CANDIDATE_POLICIES:
        available = len(graph.candidates(depth, p.stride, p.recurrent))
        what = f"candidate edges for placement.stride {p.stride}, recurrent {p.recurrent}"
    else:
        available, what = 2 * depth, "parallel edges"
    if not _is_int(p.num) or not 1 <= p.num <= available:
        return [
            f"placement.num = {p.num!r}: must be an integer in [1, {available}] for arm "
            f"{arm!r} (the {depth}-block model has {available} {what})"
        ]
    return []


def _check_mesh(config) -> list[str]:
    from gga_jax import sharding

    try:
        partitioner = sharding.Partitioner.from_config(config)
        for arm in config.arms:
            t = arm_config(config, arm).train
            partitioner.check_batch_size(t.batch_size, "train.batch_size")
            partitioner.check_batch_size(t.eval_batch_size, "train.eval_batch_size")
    except ValueError as e:
        return [_one_line(e).rstrip(".")]
    return []


def check_workdir(workdir: str) -> None:
    """Raises ConfigError if `workdir` is a file, or cannot be created or written."""
    if not workdir:
        raise ConfigError("--workdir is empty: give a directory for checkpoints and results.")
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ConfigError(f"--workdir {workdir} is a file, not a directory; choose another path.")
    existing = workdir
    while not os.path.exists(existing):
        existing = os.path.dirname(os.path.abspath(existing))
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(
            f"--workdir {workdir} cannot be written ({existing} is not a writable directory)."
        )


def read_json(path: str, what: str) -> Any:
    """json.load(path), or a ConfigError naming the damaged file and what to do."""
    try:
        with open(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(
            f"{path} is damaged ({e}); delete it to recompute the {what}, or use another --workdir."
        ) from e


def _one_line(error: BaseException) -> str:
    """An exception's message with its lines joined and no final period, for a report."""
    return " ".join(str(error).split()).rstrip(".")
