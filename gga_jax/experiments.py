"""The paper's experiments (docs/experiments.md, E1-E6) as resumable sweeps of pipeline runs.

    python -m gga_jax.experiments --config=configs/experiments/e5.py:backbone=text \
        --workdir=/tmp/e5_text [--shard=1/2] [--dry_run] [--summary_only]

An experiment config (configs/experiments/*.py) holds a complete pipeline
config, `base`, and what to sweep. It expands into groups (one placement
each: a single edge, a policy at N edges, a random set, a baseline) and every
group into runs, each one `pipeline.run` of one arm in its own sub-workdir:

  select runs  (only with more than one learning rate): every lr of the grid
               on `select_seeds`, trained on train and evaluated on val alone;
  final runs   every seed of `seeds` at the lr with the best mean val accuracy
               (ties: the first in the grid), trained on train + val
               (data.final) and evaluated on test.

The test split never chooses anything: select runs do not evaluate it. A run
whose results.json exists is skipped, and one that was interrupted resumes from
its checkpoints, so the same command finishes a killed sweep with the table an
uninterrupted one gives. --shard=k/K runs the groups g with g % K == k - 1 (a
group's select and final runs stay together, so shards never wait for each
other); shards share the workdir. Runs of one process share the data, the
backbone, the pre-trained head and the scores (pipeline's cache), which are
functions of the config values they are keyed by, so sharing changes nothing.
The summary (summary.json, table.csv, table.md and the experiment's figure) is
written after every run, from the runs finished so far.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import io
import json
import math
import numbers
import os
import time
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np

from gga_jax import cli, defaults, graph, pipeline, plots, scoring, sharding, validation

EXPERIMENTS = ("e1", "e2", "e3", "e4", "e5", "e6")
# E5's policies: the number-of-edges policies of docs/spec.md §4 and iterative GGA.
E5_POLICIES = ("gga", "top_k", "random", "first_k", "last_k", "iterative_gga")
E3_BASELINES = ("all_parallel", "all_sequential", "linear_probe", "full_finetune")


def base_sweep() -> ml_collections.ConfigDict:
    """Every key an experiment config has (configs/experiments/* change what they need)."""
    c = ml_collections.ConfigDict()
    c.experiment = "e5"
    c.base = ml_collections.ConfigDict()  # a complete pipeline config (gga_jax.defaults.base())
    c.seeds = (0, 1, 2)  # final runs: mean and standard deviation over these
    c.lrs = (1e-3, 1e-2)  # the grid; one value skips the select runs
    # Per-arm grids replacing lrs, e.g. {"full_finetune": (1e-5, 1e-4)} (docs/spec.md §5).
    c.arm_lrs = ml_collections.ConfigDict()
    c.select_seeds = (0,)  # seeds of the select runs
    c.nums = (1, 3, 6, 12, 24)  # E5: N, capped at what each policy can place
    c.policies = E5_POLICIES  # E5
    c.stride = 3  # E2 / E4: the sub-grid {0, s, 2s, ...} of nodes
    c.random_sets = 10  # E3: K random sets ...
    c.random_num = 24  # ... of N edges each
    c.baselines = E3_BASELINES  # E3
    # E4: head pre-training lengths whose scores are correlated (-1: the base's own).
    c.head_steps = (-1,)
    c.aggregations = scoring.AGGREGATIONS  # E4
    c.ranks = (4, 8, 32, 128)  # E6
    c.e6_policies = ("gga", "ffn_parallel")  # E6
    return c


def offline_sweep(experiment: str, arg: str | None) -> ml_collections.ConfigDict:
    """An experiment on an offline real backbone (defaults.offline_backbone), unlocked.

    arg (comma-separated key=value): backbone ("text" or "vit"), seeds (how
    many, 3), lrs (the grid, "/"-separated), steps (per run), train_size (train +
    val), val_size, test_size; or `smoke` alone: a random tiny text encoder,
    2 seeds, 2 lrs and 3 steps, for the tests.
    """
    smoke = arg == "smoke"
    a = defaults.parse_arg(
        None if smoke else arg,
        {
            "backbone": "text",
            "seeds": "3",
            "lrs": "",
            "steps": "100",
            "train_size": "2400",
            "val_size": "400",
            "test_size": "1000",
        },
    )
    c = base_sweep()
    c.experiment = experiment
    b = defaults.base()
    defaults.offline_backbone(b, a["backbone"])
    b.data.train_size, b.data.val_size = int(a["train_size"]), int(a["val_size"])
    b.data.test_size = int(a["test_size"])
    b.train.steps = int(a["steps"])
    b.scoring.num_examples, b.scoring.micro_batch = 256, 32
    b.scoring.head_steps, b.scoring.head_lr = 25, 1e-2
    default_lrs = (1e-4, 1e-3, 1e-2) if a["backbone"] == "text" else (1e-3, 1e-2, 1e-1)
    c.lrs = tuple(float(x) for x in a["lrs"].split("/")) if a["lrs"] else default_lrs
    c.seeds = tuple(range(int(a["seeds"])))
    if smoke:
        defaults.smoke_model(b)
        b.data.val_size = 16
        b.train.steps = 3
        c.seeds, c.lrs, c.stride = (0, 1), (1e-3, 1e-2), 2
        c.nums, c.random_sets, c.random_num = (1, 3, 6), 2, 3
    c.base = b
    return c


@dataclasses.dataclass(frozen=True)
class Group:
    """One placement of an experiment: an arm and the config values it sets."""

    name: str
    arm: str
    settings: tuple[tuple[str, Any], ...] = ()


@dataclasses.dataclass(frozen=True)
class Run:
    """One pipeline run: a group's arm at one lr (None: chosen on val) and seed."""

    group: Group
    phase: str  # "select" or "final"
    seed: int
    lr: float | None

    @property
    def name(self) -> str:
        if self.phase == "select":
            return f"{self.group.name}/select_lr{self.lr:g}_s{self.seed}"
        return f"{self.group.name}/final_s{self.seed}"


# --- expansion ---------------------------------------------------------------------------


def depth_of(config) -> int:
    """Blocks L of the base config's model, built abstractly."""
    return pipeline.validation_factory(config.base)(()).depth


def groups(config) -> list[Group]:
    """The groups of config.experiment, in a fixed order."""
    depth = depth_of(config)
    make = {"e1": _e1, "e2": _e2, "e3": _e3, "e4": _e2, "e5": _e5, "e6": _e6}
    return make[config.experiment](config, depth)


def _e1(config, depth: int) -> list[Group]:
    """A single parallel adapter at each of the 2L positions (paper Fig. 1)."""
    return [
        Group(f"parallel_{k}_{k + 1}", "single", (("placement.edge", (k, k + 1)),))
        for k in range(2 * depth)
    ]


def _e2(config, depth: int) -> list[Group]:
    """A single adapter on every edge of the stride sub-grid (paper Fig. 3)."""
    return [
        Group(f"edge_{i}_{j}", "single", (("placement.edge", (i, j)),))
        for i, j in graph.candidates(depth, config.stride)
    ]


def _e3(config, depth: int) -> list[Group]:
    """K random sets of N candidate edges, and the baselines (paper Table 1)."""
    sets = [
        Group(
            f"random_{k}",
            "random",
            (("placement.num", config.random_num), ("placement.seed", k)),
        )
        for k in range(config.random_sets)
    ]
    return sets + [Group(b, b) for b in config.baselines]


def num_cap(config, policy: str, depth: int) -> int:
    """The most edges `policy` can place: its candidates, or the 2L parallel edges."""
    if policy in ("first_k", "last_k"):
        return 2 * depth
    p = config.base.placement
    return len(graph.candidates(depth, p.stride, p.recurrent))


def _e5(config, depth: int) -> list[Group]:
    """Each policy at each N of config.nums, N capped at the policy's maximum (paper Fig. 6)."""
    out = []
    for policy in config.policies:
        for num in dict.fromkeys(min(n, num_cap(config, policy, depth)) for n in config.nums):
            out.append(Group(f"{policy}_N{num}", policy, (("placement.num", num),)))
    return out


def _e6(config, depth: int) -> list[Group]:
    """ViT-g/14: N = base placement.num GGA vs FFN-parallel at each rank (paper Fig. 6c)."""
    return [
        Group(f"{policy}_r{rank}", policy, (("adapter.rank", rank),))
        for rank in config.ranks
        for policy in config.e6_policies
    ]


def lr_grid(config, group: Group) -> tuple[float, ...]:
    """The learning rates a group chooses from: arm_lrs[arm], else lrs."""
    grid = config.arm_lrs.get(group.arm)
    return tuple(grid if grid is not None else config.lrs)


def expand(config) -> list[Run]:
    """Every run of the experiment, group by group: its select runs, then its final runs."""
    runs = []
    for group in groups(config):
        grid = lr_grid(config, group)
        if len(grid) > 1:
            runs += [Run(group, "select", s, lr) for lr in grid for s in config.select_seeds]
        fixed = grid[0] if len(grid) == 1 else None
        runs += [Run(group, "final", s, fixed) for s in config.seeds]
    return runs


def shard(runs: Sequence[Run], spec: str) -> list[Run]:
    """The runs of shard k of K ("k/K", 1-based): those of the groups g with g % K == k - 1."""
    k, total = parse_shard(spec)
    order = list(dict.fromkeys(r.group.name for r in runs))
    mine = {g for index, g in enumerate(order) if index % total == k - 1}
    return [r for r in runs if r.group.name in mine]


def parse_shard(spec: str) -> tuple[int, int]:
    """ "k/K" -> (k, K) with 1 <= k <= K, else a one-line ConfigError."""
    parts = str(spec).split("/")
    if len(parts) == 2 and all(p.isdigit() for p in parts):
        k, total = int(parts[0]), int(parts[1])
        if 1 <= k <= total:
            return k, total
    raise validation.ConfigError(
        f"--shard = {spec!r}: must be k/K with integers 1 <= k <= K, e.g. 1/2 and 2/2."
    )


# --- a run's pipeline config ---------------------------------------------------------------


def run_config(config, run: Run, lr: float) -> ml_collections.ConfigDict:
    """The pipeline config of `run` at learning rate lr."""
    c = ml_collections.ConfigDict(copy.deepcopy(config.base.to_dict()))
    c.arms = (run.group.arm,)
    c.seed = run.seed
    c.train.lr = float(lr)
    if run.group.arm == "random" and "placement.seed" not in dict(run.group.settings):
        c.placement.seed = run.seed  # each seed draws its own set
    for key, value in run.group.settings:
        node = c
        *path, last = key.split(".")
        for part in path:
            node = node[part]
        node[last] = value
    c.data.final = run.phase == "final"
    c.train.eval_splits = ("test",) if run.phase == "final" else ("val",)
    c.lock()
    return c


def choose_lr(select_rows: Sequence[dict], grid: Sequence[float]) -> float:
    """The lr of `grid` with the best mean val accuracy over its select runs.

    select_rows: {"lr", "val_accuracy"} per select run; ties go to the first lr
    of the grid. Only val accuracy is read: test accuracy plays no part.
    """
    means = {}
    for lr in grid:
        values = [r["val_accuracy"] for r in select_rows if math.isclose(r["lr"], lr)]
        if not values:
            raise ValueError(f"no finished select run at lr {lr:g}; select runs: {select_rows}")
        means[lr] = float(np.mean(values))
    best = max(means.values())
    return next(lr for lr in grid if means[lr] == best)


# --- checking ------------------------------------------------------------------------------


def check(config, workdir: str | None) -> None:
    """One ConfigError naming every bad value, before any data, weights or runs."""
    problems = _check_sweep(config)
    if not problems:
        problems += _check_groups(config)
    if problems:
        raise validation.ConfigError("; ".join(problems) + ".")
    if workdir is not None:
        check_workdir(config, workdir)


def _ints(values, minimum: int) -> bool:
    return (
        isinstance(values, (tuple, list))
        and len(values) > 0
        and len(set(values)) == len(values)
        and all(validation._is_int(v) and v >= minimum for v in values)
    )


def _lrs(values) -> bool:
    return (
        isinstance(values, (tuple, list))
        and len(values) > 0
        and all(isinstance(v, numbers.Real) and not isinstance(v, bool) and v > 0 for v in values)
    )


def _check_sweep(config) -> list[str]:
    """The sweep's own keys."""
    if config.experiment not in EXPERIMENTS:
        return [f"experiment = {config.experiment!r}: must be one of {EXPERIMENTS}"]
    problems = []
    for key, ok, want in (
        ("seeds", _ints(config.seeds, 0), "a non-empty tuple of distinct integers >= 0"),
        ("select_seeds", _ints(config.select_seeds, 0), "a non-empty tuple of distinct integers"),
        ("lrs", _lrs(config.lrs), "a non-empty tuple of positive learning rates"),
        ("nums", _ints(config.nums, 1), "a non-empty tuple of distinct integers >= 1"),
        ("ranks", _ints(config.ranks, 1), "a non-empty tuple of distinct integers >= 1"),
        ("head_steps", _ints(config.head_steps, -1), "a non-empty tuple of integers >= -1"),
    ):
        if not ok:
            problems.append(f"{key} = {tuple(config[key])!r}: must be {want}")
    for arm, grid in config.arm_lrs.items():
        if not _lrs(grid):
            problems.append(f"arm_lrs[{arm!r}] = {grid!r}: must be a non-empty tuple of lrs")
    if not validation._is_int(config.stride) or config.stride < 1:
        problems.append(f"stride = {config.stride!r}: must be an integer >= 1")
    if not validation._is_int(config.random_sets) or config.random_sets < 0:
        problems.append(
            f"random_sets = {config.random_sets!r}: must be an integer >= 0 (0: baselines only)"
        )
    elif config.experiment == "e3" and not (config.random_sets or config.baselines):
        problems.append("random_sets = 0 and baselines = (): E3 would have no runs")
    bad = [a for a in config.aggregations if a not in scoring.AGGREGATIONS]
    if bad or not config.aggregations:
        problems.append(
            f"aggregations = {tuple(config.aggregations)!r}: each of {scoring.AGGREGATIONS}"
        )
    for key, valid in (("policies", E5_POLICIES), ("baselines", E3_BASELINES)):
        bad = [p for p in config[key] if p not in valid]
        if bad or not config[key]:
            problems.append(f"{key} = {tuple(config[key])!r}: a non-empty tuple of {valid}")
    return problems


def _check_groups(config) -> list[str]:
    """N against the candidates, a val split for lr selection, and every group's pipeline config."""
    depth = depth_of(config)
    problems = []
    if config.experiment == "e5":
        cap = max(num_cap(config, p, depth) for p in config.policies)
        problems += [
            f"nums has N = {n}: above the {cap} candidate edges of the {depth}-block model"
            for n in config.nums
            if n > cap
        ]
    if config.experiment == "e3" and config.random_num > num_cap(config, "random", depth):
        problems.append(
            f"random_num = {config.random_num}: above the "
            f"{num_cap(config, 'random', depth)} candidate edges of the {depth}-block model"
        )
    if problems:
        return problems
    all_groups = groups(config)
    if any(len(lr_grid(config, g)) > 1 for g in all_groups):
        problems += _check_val_split(config.base)
    factory = pipeline.validation_factory(config.base)
    seen = set()
    for group in all_groups:
        kind = (group.arm, tuple(k for k, _ in group.settings))
        run = Run(group, "final", config.seeds[0], None)
        try:
            cfg = run_config(config, run, lr_grid(config, group)[0])
            # Keys and the data are checked once per kind of group; placements every time.
            if kind in seen:
                validation._raise(validation._check_model(cfg, factory))
            else:
                validation.check_config(cfg, None, model_factory=factory)
        except validation.ConfigError as e:
            problems.append(f"group {group.name}: {str(e).rstrip('.')}")
            break
        seen.add(kind)
    return problems


def _check_val_split(base) -> list[str]:
    """Choosing the lr on validation needs a val split that is not the test split."""
    d = base.data
    if d.source == "offline" and not d.val_size:
        return [
            "lrs has several values, chosen on validation, but base.data.val_size = 0 holds "
            "out no val split; set it (e.g. 20% of data.train_size) or give one lr"
        ]
    own = d.source in ("folder", "csv", "jsonl", "npz")
    has_val = isinstance(d.path, (dict, ml_collections.ConfigDict)) and "val" in d.path
    if own and not has_val and not d.val_fraction:
        return [
            "lrs has several values, chosen on validation, but base.data has no val path and "
            "val_fraction = 0; set one or give one lr"
        ]
    return []


def flat(config) -> dict[str, Any]:
    """The experiment config flattened, "base.train.lr" and so on (experiment.json)."""
    return pipeline.flat_config(config)


def check_workdir(config, workdir: str) -> None:
    """Refuses a workdir holding another experiment (experiment.json differs); writes nothing."""
    validation.check_workdir(workdir)
    path = os.path.join(workdir, "experiment.json")
    if not os.path.exists(path):
        return
    saved = validation.read_json(path, "recorded experiment")
    diff = pipeline.config_diff(saved, json.loads(json.dumps(flat(config))), prefix="base.")
    if diff:
        shown = "; ".join(diff[:4]) + ("; ..." if len(diff) > 4 else "")
        raise validation.ConfigError(
            f"{workdir} holds another experiment ({shown}); use another --workdir "
            f"(nothing was changed)."
        )


# --- running -----------------------------------------------------------------------------


def run_dir(workdir: str, run: Run) -> str:
    return os.path.join(workdir, "runs", run.name)


def load_row(workdir: str, run: Run) -> dict | None:
    """The finished run's results row (its one arm), or None if it has not finished."""
    path = os.path.join(run_dir(workdir, run), "results.json")
    if not os.path.exists(path):
        return None
    results = validation.read_json(path, "run results")
    return {**results["arms"][0], "lr": results["config"]["train"]["lr"], "seed": run.seed}


def final_lr(config, workdir: str, run: Run, runs: Sequence[Run]) -> float:
    """A final run's lr: the grid's only one, or chosen from its group's select runs.

    The select runs come before the final runs of their group in every shard,
    so they have finished when a final run starts.
    """
    if run.lr is not None:
        return run.lr
    selects = [r for r in runs if r.group == run.group and r.phase == "select"]
    rows = [load_row(workdir, r) for r in selects]
    missing = [r.name for r, row in zip(selects, rows) if row is None]
    if missing:
        raise ValueError(f"{run.name} needs the select runs {missing}, which have not finished.")
    return choose_lr(rows, lr_grid(config, run.group))


def execute(config, workdir: str, shard_spec: str = "1/1") -> dict[str, Any]:
    """Runs the shard's unfinished runs in order, then writes the summary; returns it."""
    check(config, workdir)
    parse_shard(shard_spec)
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "experiment.json"), "w") as f:
        json.dump(flat(config), f, indent=1, sort_keys=True)
    every = expand(config)
    mine = shard(every, shard_spec)
    todo = [r for r in mine if load_row(workdir, r) is None]
    print(
        f"{config.experiment}: {len(every)} runs in {len(groups(config))} groups; shard "
        f"{shard_spec}: {len(mine)} runs, {len(mine) - len(todo)} already done"
    )
    cache, times = {}, []
    for index, run in enumerate(todo, 1):
        lr = final_lr(config, workdir, run, every)
        start = time.perf_counter()
        pipeline.run(run_config(config, run, lr), run_dir(workdir, run), cache)
        times.append(time.perf_counter() - start)
        left = np.mean(times) * (len(todo) - index)
        line = (
            f"[{len(mine) - len(todo) + index}/{len(mine)}] {run.name}: {times[-1]:.0f} s "
            f"(mean {np.mean(times):.0f} s/run, about {left / 60:.0f} min left)"
        )
        print(line, flush=True)
        with open(os.path.join(workdir, "progress.jsonl"), "a") as f:
            f.write(json.dumps({"run": run.name, "seconds": times[-1], "lr": lr}) + "\n")
    if config.experiment == "e4":
        score_all(config, workdir, cache)
    return summarize(config, workdir)


def score_all(config, workdir: str, cache: dict) -> None:
    """E4: the scores of every aggregation for every head length and seed, in workdir/scores/."""
    group = groups(config)[0]
    for steps in config.head_steps:
        for seed in config.seeds:
            folder = os.path.join(workdir, "scores", f"head{steps}_s{seed}")
            if all(os.path.exists(os.path.join(folder, f"{a}.npy")) for a in config.aggregations):
                continue
            os.makedirs(folder, exist_ok=True)
            c = run_config(config, Run(group, "final", seed, None), lr_grid(config, group)[0])
            c.unlock()
            c.placement.stride = config.stride
            for aggregation in config.aggregations:
                c.scoring.aggregation = aggregation
                if steps != -1:
                    c.scoring.head_steps = steps
                np.save(os.path.join(folder, f"{aggregation}.npy"), score_only(c, folder, cache))


def score_only(config, workdir: str, cache: dict) -> np.ndarray:
    """The run's score matrix (pre-trained head, scoring.*), without training anything."""
    partitioner = sharding.Partitioner.from_config(config)
    splits = pipeline.shared_data(config, cache)
    factory, params = pipeline.shared_backbone(config, splits, partitioner, cache)
    head = pipeline.pretrained_head(config, factory, params, splits, workdir, partitioner, cache)
    return pipeline.compute_scores(config, factory(()), head, splits["train"], partitioner)


# --- the summary -------------------------------------------------------------------------


def summarize(config, workdir: str) -> dict[str, Any]:
    """summary.json, table.csv, table.md and the figure, from the finished final runs."""
    every = expand(config)
    rows = []
    for group in groups(config):
        finals = [r for r in every if r.group == group and r.phase == "final"]
        done = [row for row in (load_row(workdir, r) for r in finals) if row is not None]
        selects = [r for r in every if r.group == group and r.phase == "select"]
        select_rows = [row for row in (load_row(workdir, r) for r in selects) if row is not None]
        rows.append(group_row(group, done, select_rows, len(finals)))
    summary = {"experiment": config.experiment, "groups": rows}
    if config.experiment == "e4":
        summary["correlations"] = correlations(config, workdir, rows)
    if config.experiment in ("e1", "e2"):
        summary["placement_effect"] = placement_effect(rows)
    with open(os.path.join(workdir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    with open(os.path.join(workdir, "table.csv"), "w") as f:
        f.write(table_csv(rows))
    with open(os.path.join(workdir, "table.md"), "w") as f:
        f.write(table_markdown(summary) + "\n")
    figure(config, workdir, summary)
    return summary


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; NaN for fewer than 2 values)."""
    a = np.asarray(values, np.float64)
    if a.size == 0:
        return float("nan"), float("nan")
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else float("nan")


def group_row(group: Group, done: list[dict], select_rows: list[dict], expected: int) -> dict:
    """A group's line of the table: test accuracy and train loss over its finished seeds."""
    acc = [100 * r["test_accuracy"] for r in done]
    loss = [r["final_train_loss"] for r in done]
    row = {
        "group": group.name,
        "arm": group.arm,
        "seeds_done": len(done),
        "seeds": expected,
        "lr": done[0]["lr"] if done else None,
        "edges": done[0]["edges"] if done else None,
        "trainable_params": done[0]["trainable_params"] if done else None,
        "test_accuracy": acc,
        "train_loss": loss,
        "seconds": float(sum(r["wall_time_s"] for r in done)),
        "select": [
            {"lr": r["lr"], "seed": r["seed"], "val_accuracy": r["val_accuracy"]}
            for r in select_rows
        ],
    }
    row["test_mean"], row["test_std"] = mean_std(acc)
    row["loss_mean"], row["loss_std"] = mean_std(loss)
    return row


def table_csv(rows: Sequence[dict]) -> str:
    out = io.StringIO()
    fields = [
        "group",
        "arm",
        "seeds_done",
        "lr",
        "trainable_params",
        "test_mean",
        "test_std",
        "loss_mean",
        "loss_std",
        "test_accuracy",
        "edges",
    ]
    writer = csv.DictWriter(out, fields, extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow(
            {
                **r,
                "test_accuracy": " ".join(f"{a:.2f}" for a in r["test_accuracy"]),
                "edges": json.dumps(r["edges"]),
            }
        )
    return out.getvalue()


def table_markdown(summary: dict) -> str:
    """The groups (and E4's correlations) as Markdown."""
    lines = [
        "| group | arm | seeds | lr | trainable params | test accuracy % (mean +- std) "
        "| train loss (mean +- std) | per seed |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in summary["groups"]:
        lr = "-" if r["lr"] is None else f"{r['lr']:g}"
        size = "-" if r["trainable_params"] is None else f"{r['trainable_params']:,}"
        lines.append(
            f"| {r['group']} | {r['arm']} | {r['seeds_done']}/{r['seeds']} | {lr} | {size} "
            f"| {r['test_mean']:.2f} +- {r['test_std']:.2f} | {r['loss_mean']:.4f} +- "
            f"{r['loss_std']:.4f} | {', '.join(f'{a:.1f}' for a in r['test_accuracy'])} |"
        )
    effect = summary.get("placement_effect")
    if effect:
        lines += [
            "",
            f"Placement effect over {effect['groups']} groups: range of the means "
            f"{effect['range']:.2f} points, pooled seed std {effect['pooled_std']:.2f}, "
            f"one-way ANOVA F = {effect['f']:.2f}, p = {effect['p']:.2g}.",
        ]
    for c in summary.get("correlations", ()):
        if c is summary["correlations"][0]:
            lines += [
                "",
                "| aggregation | head steps | target | Spearman rho | p | edges |",
                "| --- | --- | --- | --- | --- | --- |",
            ]
        lines.append(
            f"| {c['aggregation']} | {c['head_steps']} | {c['target']} | {c['rho']:.3f} "
            f"| {c['p']:.2g} | {c['n']} |"
        )
    return "\n".join(lines)


# --- E4: correlations --------------------------------------------------------------------


def ranks(values) -> np.ndarray:
    """Ranks 1..n of `values`, ties sharing their mean rank."""
    a = np.asarray(values, np.float64)
    order = np.argsort(a, kind="stable")
    out = np.empty(a.size)
    out[order] = np.arange(1, a.size + 1)
    for value in np.unique(a):
        tied = a == value
        out[tied] = out[tied].mean()
    return out


def placement_effect(rows: Sequence[dict]) -> dict[str, float]:
    """Does test accuracy depend on the group (the adapter's position) beyond seed noise?

    One-way ANOVA over the groups with at least 2 finished seeds: F = (between-
    group mean square) / (within-group mean square), p its upper tail under
    F(k - 1, N - k); also the range of the group means and the pooled seed
    standard deviation, in accuracy points. NaN where fewer than 2 groups qualify.
    """
    from scipy import special

    groups = [np.asarray(r["test_accuracy"], np.float64) for r in rows]
    groups = [g for g in groups if g.size >= 2]
    k, total = len(groups), sum(g.size for g in groups)
    if k < 2:
        nan = float("nan")
        return {"groups": k, "f": nan, "p": nan, "range": nan, "pooled_std": nan}
    grand = np.concatenate(groups).mean()
    between = sum(g.size * (g.mean() - grand) ** 2 for g in groups) / (k - 1)
    within = sum(((g - g.mean()) ** 2).sum() for g in groups) / (total - k)
    f = float(between / within) if within > 0 else float("inf")
    means = [g.mean() for g in groups]
    return {
        "groups": k,
        "f": f,
        "p": float(special.fdtrc(k - 1, total - k, f)),
        "range": float(max(means) - min(means)),
        "pooled_std": float(np.sqrt(within)),
    }


def spearman(x, y) -> tuple[float, float]:
    """Spearman's rho of x and y and its two-sided p-value (t-distribution, n - 2 dof)."""
    from scipy import special

    rx, ry = ranks(x), ranks(y)
    n = rx.size
    if n < 3 or rx.std() == 0 or ry.std() == 0:
        return float("nan"), float("nan")
    rho = float(np.corrcoef(rx, ry)[0, 1])
    if abs(rho) >= 1:
        return rho, 0.0
    dof = n - 2
    t2 = rho * rho * dof / (1 - rho * rho)
    return rho, float(special.betainc(dof / 2, 0.5, dof / (dof + t2)))


def mean_scores(config, workdir: str, steps: int, aggregation: str):
    """E4: (the seed mean of an aggregation's score matrices after `steps` head steps, seeds)."""
    paths = [
        os.path.join(workdir, "scores", f"head{steps}_s{s}", f"{aggregation}.npy")
        for s in config.seeds
    ]
    paths = [p for p in paths if os.path.exists(p)]
    return (np.mean([np.load(p) for p in paths], axis=0) if paths else None), len(paths)


def correlations(config, workdir: str, rows: Sequence[dict]) -> list[dict]:
    """Spearman of every aggregation's score (mean over seeds) with E2's accuracy and loss."""
    done = [r for r in rows if r["seeds_done"]]
    edges = [tuple(r["edges"][0]) for r in done]
    out = []
    for steps in config.head_steps:
        for aggregation in config.aggregations:
            score, seeds = mean_scores(config, workdir, steps, aggregation)
            if score is None or len(done) < 3:
                continue
            x = [score[i, j] for i, j in edges]
            for target, key in (("test accuracy", "test_mean"), ("train loss", "loss_mean")):
                rho, p = spearman(x, [r[key] for r in done])
                out.append(
                    {
                        "aggregation": aggregation,
                        "head_steps": steps,
                        "target": target,
                        "rho": rho,
                        "p": p,
                        "n": len(done),
                        "seeds": seeds,
                    }
                )
    return out


def figure(config, workdir: str, summary: dict) -> None:
    """The experiment's figure (plots.experiment_*) as workdir/<experiment>.png."""
    path = os.path.join(workdir, f"{config.experiment}.png")
    rows = [r for r in summary["groups"] if r["seeds_done"]]
    if not rows:
        return
    if config.experiment == "e1":
        plots.experiment_bars(rows, path, "E1: a single parallel adapter at each position")
    elif config.experiment in ("e2", "e4"):
        n = graph.num_nodes(depth_of(config))
        scores = os.path.join(
            workdir, "scores", f"head{config.head_steps[0]}_s{config.seeds[0]}", "srank.npy"
        )
        plots.experiment_grid(rows, n, np.load(scores) if os.path.exists(scores) else None, path)
        if summary.get("correlations"):
            first = [c for c in summary["correlations"] if c["target"] == "test accuracy"]
            first = [c for c in first if c["head_steps"] == first[0]["head_steps"]]
            scores = {
                c["aggregation"]: mean_scores(config, workdir, c["head_steps"], c["aggregation"])[0]
                for c in first
            }
            plots.experiment_scatter(first, scores, rows, path.replace(".png", "_scatter.png"))
    elif config.experiment == "e3":
        plots.experiment_random(rows, path)
    else:
        plots.experiment_lines(rows, path, config.experiment)


# --- the command line --------------------------------------------------------------------


def dry_run(config) -> str:
    """The plan: runs per group and, for each distinct arm and rank, the memory plan."""
    check(config, None)
    every = expand(config)
    lines = [f"{config.experiment}: {len(every)} runs in {len(groups(config))} groups"]
    planned = set()
    for group in groups(config):
        count = sum(r.group == group for r in every)
        lines.append(f"  {group.name}: {group.arm}, {dict(group.settings)}, {count} runs")
        key = (group.arm, dict(group.settings).get("adapter.rank"))
        if config.experiment == "e6" and key not in planned:
            planned.add(key)
            cfg = run_config(
                config, Run(group, "final", config.seeds[0], None), lr_grid(config, group)[0]
            )
            lines.append(pipeline.memory_report(pipeline.memory_plan(cfg)))
    return "\n".join(lines)


def use_compilation_cache(path: str) -> None:
    """JAX's persistent compilation cache in `path`: a run whose programs an earlier run
    compiled (same edges and recipe: another seed, or the final run at the chosen lr)
    loads them instead of compiling again, also after a restart."""
    import jax

    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def main(argv) -> None:
    del argv
    cli.guarded(_main)


def _main() -> None:
    config = FLAGS.config
    if config is None or (FLAGS.workdir is None and not FLAGS.dry_run):
        raise validation.ConfigError(
            "--config and --workdir are both required (only --config with --dry_run); "
            "the experiment configs are in configs/experiments/."
        )
    if FLAGS.dry_run:
        print(dry_run(config))
        return
    cli.stop_on_interrupt("gga_jax.experiments")
    use_compilation_cache(FLAGS.compilation_cache or os.path.join(FLAGS.workdir, "xla_cache"))
    if FLAGS.summary_only:
        check(config, FLAGS.workdir)
        print(table_markdown(summarize(config, FLAGS.workdir)))
        return
    print(table_markdown(execute(config, FLAGS.workdir, FLAGS.shard)))


if __name__ == "__main__":  # flags only here: gga_jax.main defines --config too
    from absl import flags
    from ml_collections import config_flags

    FLAGS = flags.FLAGS
    config_flags.DEFINE_config_file(
        "config",
        None,
        "Experiment config: a file or a packaged name, e.g. experiments/e5:backbone=text.",
    )
    flags.DEFINE_string("workdir", None, "The sweep's directory (one sub-workdir per run).")
    flags.DEFINE_string("shard", "1/1", "Run only shard k of K (k/K) of the groups.")
    flags.DEFINE_bool("dry_run", False, "Print the runs (and E6's memory plans), then exit.")
    flags.DEFINE_bool("summary_only", False, "Write the summary of the finished runs, then exit.")
    flags.DEFINE_string(
        "compilation_cache", "", "JAX's compilation cache (default workdir/xla_cache)."
    )
    cli.define_traceback_flag()
    cli.run(main, "(see --help; the experiment configs are in configs/experiments/)")
