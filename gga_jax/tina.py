"""TINA: iterative global neuron pruning of bottleneck adapters (docs/spec.md §8).

TINA ("Tiny Adapters for Vision Transformers", later MiMi) starts from wide
adapters, hidden size r = d / sigma0, trains them, then alternates (Algorithm 1):

1. score every hidden neuron m of every adapter a with Eq. 2,
   I_a,m = (sum_k |W_down[k, m]| + sum_k |W_up[m, k]|) / (r_a + d);
2. remove the lowest fraction rho of all neurons, across adapters ("global"),
   so some adapters lose every neuron and vanish;
3. fine-tune what is left,

until the mean compression d / r reaches sigma_target.

Design. The published MiMi code masks pruned neurons: the wide shapes stay, so
every step still computes and stores the wide adapters. Here a prune really
slices the parameter arrays and returns a new static edge list and per-edge
ranks; the caller rebuilds the model with them (`vit.Model(..., edges=edges,
adapter_rank=ranks)` or `text.Model`), so each cycle compiles smaller shapes,
and a vanished adapter costs nothing (its edge, and the recurrent first pass
if it was the last recurrent edge, disappear from the forward). Scoring and
selection run on the host in float64 NumPy between cycles: they are cheap, and
exact sums make ties and rankings the same on every device.

The pieces compose: `importance` (Eq. 2) -> `select` (which neurons stay) ->
`prune` (the smaller tree); `run` is Algorithm 1 around a caller-supplied
`train_cycle(params, edges, ranks, cycle) -> params`, and `one_shot` is the
non-iterative ablation of the paper's Table 3.

Optimizer state: the paper does not say what happens to it after a prune. Its
Sec. 4 trains every cycle for 100 epochs (20 warm-up + 80 cosine epochs, the
schedule of one whole run) and halves the adapters "at each 100 epochs", i.e.
each cycle restarts the schedule; the parameter shapes change too. So every
call of `train_cycle` starts a fresh optimizer state and schedule; only the
parameters (kept adapter neurons, head) carry over from one cycle to the next.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

from gga_jax import adapters as adapters_lib
from gga_jax import graph

Params = Mapping[str, Any]
TrainCycle = Callable[[Params, tuple[graph.Edge, ...], tuple[int, ...], int], Params]
SCOPES = ("global", "local")

_EDGE_NAME = re.compile(r"edge_(\d+)_(\d+)")


class Cycle(NamedTuple):
    """What one training cycle trained.

    ranks: {edge: hidden size} over the starting edges, 0 for a vanished adapter.
    adapter_params: number of adapter parameters (the trainable ones besides the head).
    compression: mean compression sum_a d / sum_a r_a over the starting adapters.
    """

    cycle: int
    ranks: dict[graph.Edge, int]
    adapter_params: int
    compression: float


class Result(NamedTuple):
    """The final adapters: params, their edges and ranks, and one `Cycle` per cycle."""

    params: dict[str, Any]
    edges: tuple[graph.Edge, ...]
    ranks: tuple[int, ...]
    history: list[Cycle]


def _floor(x: float) -> int:
    # A product such as 0.58 * 100 = 57.99999999999999 means 58 neurons.
    return math.floor(x + 1e-9)


def _check_rho(rho: float) -> None:
    if not 0 < rho < 1:
        raise ValueError(f"rho must be in (0, 1), got {rho!r}.")


def initial_rank(d: int, sigma0: float) -> int:
    """Hidden size of the wide starting adapters, floor(d / sigma0).

    The floor keeps the starting compression at least sigma0 (the paper's
    Sec. 3.2: every adapter starts at the same compression sigma0).
    """
    if not sigma0 > 0:
        raise ValueError(f"sigma0 must be positive, got {sigma0!r}.")
    rank = _floor(d / sigma0)
    if rank < 1:
        raise ValueError(
            f"sigma0={sigma0!r} leaves d / sigma0 = {d / sigma0:g} < 1 neuron for d={d}; "
            f"use sigma0 <= {d}."
        )
    return rank


def num_cycles(sigma0: float, sigma_target: float, rho: float) -> int:
    """Training cycles C of Algorithm 1: the first training plus one per prune.

    Each prune keeps a fraction 1 - rho of the neurons, so the mean compression
    grows as sigma0 / (1 - rho)^p and P = ceil(log(sigma0 / sigma_target) /
    log(1 - rho)) prunes reach sigma_target; C = P + 1. The paper's Sec. 3.2
    prints C = ceil((log sigma0 - log sigma_target) / log(rho) - 1). We read
    log(rho) as log(1 - rho): they agree at the paper's rho = 0.5, and only
    log(1 - rho) makes a smaller rho need more cycles (its A.3.1). We read the
    "- 1" as "+ 1": with "- 1", sigma 32 -> 64 (one halving, its Table 3)
    would get C = 0 cycles; and its one-shot ablation (Sec. 4.2, "prune once
    after the first cycle, training continues for C - 1 cycles" for a fair
    comparison) trains C times only if the iterative method also trains C times.
    """
    _check_rho(rho)
    if not sigma0 > 0:
        raise ValueError(f"sigma0 must be positive, got {sigma0!r}.")
    if not sigma_target > sigma0:
        raise ValueError(f"sigma_target must be above sigma0={sigma0!r}, got {sigma_target!r}.")
    prunes = math.log(sigma0 / sigma_target) / math.log(1 - rho)
    # Exact powers such as log(16) / log(2) may land a hair above the integer.
    return math.ceil(prunes - 1e-9) + 1


def _edge_of(name: str) -> graph.Edge:
    match = _EDGE_NAME.fullmatch(name)
    if not match:
        raise ValueError(f"Adapter name {name!r} is not of the form 'edge_{{i}}_{{j}}'.")
    return int(match.group(1)), int(match.group(2))


def _check_bottleneck(name: str, adapter: Mapping[str, Any]) -> None:
    if "kernel" in adapter:
        raise ValueError(
            f"Adapter {name} is linear (a d x d 'kernel'); TINA prunes the hidden neurons "
            "of bottleneck adapters ('down', 'up') only."
        )


def importance(
    adapters: Mapping[str, Any], normalize: bool = True, divide_by_max: bool = False
) -> dict[graph.Edge, np.ndarray]:
    """Eq. 2 score of every hidden neuron: {edge: (r_a,) float64}, edges ascending.

    Args:
      adapters: the params["adapters"] subtree, {"edge_{i}_{j}": {"down":
        {"kernel": (d, r_a), ...}, "up": {"kernel": (r_a, d), ...}, ...}}.
      normalize: divide by r_a + d (Eq. 2's I); False gives the paper's I_0.
      divide_by_max: also divide by the adapter's largest score (the published
        code's variant); an adapter whose scores are all zero keeps them.
    """
    scores = {}
    for name, adapter in adapters.items():
        _check_bottleneck(name, adapter)
        down = np.abs(np.asarray(adapter["down"]["kernel"], np.float64))
        up = np.abs(np.asarray(adapter["up"]["kernel"], np.float64))
        score = down.sum(axis=0) + up.sum(axis=1)
        if normalize:
            score = score / (down.shape[1] + down.shape[0])
        if divide_by_max and score.max(initial=0.0) > 0:
            score = score / score.max()
        scores[_edge_of(name)] = score
    return dict(sorted(scores.items()))


def _drop_lowest(scores: np.ndarray, count: int) -> np.ndarray:
    """Boolean keep-mask of (N,) scores without the `count` lowest; ties drop earlier positions."""
    keep = np.ones(scores.size, bool)
    keep[np.argsort(scores, kind="stable")[:count]] = False
    return keep


def select(
    importance: Mapping[graph.Edge, np.ndarray], rho: float, scope: str = "global"
) -> dict[graph.Edge, np.ndarray]:
    """The neurons that survive one prune: {edge: sorted int64 (k_a,) kept indices}.

    "global" removes the floor(rho * N) lowest of all N neurons, so an adapter
    may keep none (empty array); "local" removes floor(rho * r_a) of each
    adapter. Flooring the removed count keeps ceil((1 - rho) n) neurons, never
    none: globally at least one neuron survives, and locally every adapter
    survives, as the paper notes for local selection (Sec. 4.2). Ties are
    broken by (score, edge (i, j) ascending, neuron index ascending): of equal
    scores, the one that comes first in that order is removed first.
    """
    _check_rho(rho)
    if scope not in SCOPES:
        raise ValueError(f"Unknown scope {scope!r}; valid: {SCOPES}.")
    edges = sorted(importance)
    if not edges:
        raise ValueError("importance is empty; there are no adapters to select from.")
    scores = [np.asarray(importance[e], np.float64).reshape(-1) for e in edges]
    if scope == "local":
        masks = [_drop_lowest(s, _floor(rho * s.size)) for s in scores]
    else:
        flat = np.concatenate(scores)
        splits = np.cumsum([s.size for s in scores])[:-1]
        masks = np.split(_drop_lowest(flat, _floor(rho * flat.size)), splits)
    return {e: np.flatnonzero(mask) for e, mask in zip(edges, masks)}


def _costs(adapter: Mapping[str, Any]) -> tuple[int, int]:
    """(parameters of one hidden neuron, parameters the adapter has besides its neurons).

    A neuron is a W_down column, a b_down entry and a W_up row (2d + 1); the rest
    (LayerNorm, b_up, alpha) goes only when the adapter vanishes.
    """
    d_in, rank = np.shape(adapter["down"]["kernel"])
    per_neuron = d_in + 1 + np.shape(adapter["up"]["kernel"])[1]
    total = sum(int(np.size(x)) for x in jax.tree_util.tree_leaves(adapter))
    return per_neuron, total - rank * per_neuron


def adapter_size(rank: int, d: int, layer_norm: bool = True) -> int:
    """Parameters of one bottleneck adapter of hidden size `rank` on width d."""
    return rank * (2 * d + 1) + d + 1 + (2 * d if layer_norm else 0)


def rank_for_budget(
    budget: int, num_edges: int, d: int, head_params: int, layer_norm: bool = True
) -> int:
    """The largest uniform rank r whose `num_edges` adapters plus the head fit `budget`."""
    if budget <= head_params:
        raise ValueError(
            f"budget {budget} parameters is not above the head's own {head_params}: no room "
            f"for adapters."
        )
    fixed = adapter_size(0, d, layer_norm)
    rank = (budget - head_params - num_edges * fixed) // (num_edges * (2 * d + 1))
    if rank < 1:
        needed = head_params + num_edges * adapter_size(1, d, layer_norm)
        raise ValueError(
            f"budget {budget} parameters cannot hold {num_edges} adapters of rank 1 and the "
            f"head; it needs at least {needed}."
        )
    return int(rank)


def select_budget(
    adapters: Mapping[str, Any], importance: Mapping[graph.Edge, np.ndarray], max_params: int
) -> dict[graph.Edge, np.ndarray]:
    """The fewest globally lowest neurons removed so that the adapters fit max_params.

    Neurons go in the order of `select` (score, then edge, then index); an
    adapter whose last neuron goes frees its LayerNorm, b_up and alpha as well.
    Raises ValueError if even removing every adapter leaves more than max_params.
    """
    edges = sorted(importance)
    costs = [_costs(adapters[adapters_lib.edge_name(e)]) for e in edges]
    scores = [np.asarray(importance[e], np.float64).reshape(-1) for e in edges]
    owner = np.concatenate([np.full(s.size, k) for k, s in enumerate(scores)])
    order = np.argsort(np.concatenate(scores), kind="stable")
    left = np.array([s.size for s in scores])
    size = sum(r * per + fixed for r, (per, fixed) in zip(left, costs))
    removed = 0
    while size > max_params:
        if removed == order.size:
            raise ValueError(f"max_params={max_params} is negative; adapters need >= 0.")
        k = owner[order[removed]]
        left[k] -= 1
        size -= costs[k][0] + (costs[k][1] if left[k] == 0 else 0)
        removed += 1
    keep = np.ones(order.size, bool)
    keep[order[:removed]] = False
    splits = np.cumsum([s.size for s in scores])[:-1]
    return {e: np.flatnonzero(m) for e, m in zip(edges, np.split(keep, splits))}


def _adapter_tree(params: Params, edges: Sequence[graph.Edge]) -> Mapping[str, Any]:
    """params["adapters"] after checking it holds exactly one bottleneck per edge."""
    if not edges:
        raise ValueError("The edge list is empty; TINA needs at least one adapter edge.")
    tree = params.get("adapters", {})
    names = [adapters_lib.edge_name(e) for e in edges]
    missing = sorted(set(names) - set(tree))
    extra = sorted(set(tree) - set(names))
    if missing or extra:
        raise ValueError(
            f"params['adapters'] does not match the edges: missing {missing}, extra {extra}."
        )
    for name in names:
        _check_bottleneck(name, tree[name])
    return tree


def _indices(edge: graph.Edge, kept, rank: int) -> np.ndarray:
    idx = np.asarray(kept)
    if idx.size and not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"kept[{edge}] must hold integer neuron indices, got dtype {idx.dtype}.")
    idx = idx.astype(np.int64).reshape(-1)
    if np.any(np.diff(idx) <= 0) or (idx.size and (idx[0] < 0 or idx[-1] >= rank)):
        raise ValueError(
            f"kept[{edge}] = {idx.tolist()} must be strictly increasing indices in [0, {rank})."
        )
    return idx


def _slice(adapter: Mapping[str, Any], idx: np.ndarray) -> dict[str, Any]:
    """The adapter with only hidden neurons idx: W_down columns, b_down, W_up rows."""
    down, up = adapter["down"], adapter["up"]
    return {
        **adapter,
        "down": {**down, "kernel": down["kernel"][:, idx], "bias": down["bias"][idx]},
        "up": {**up, "kernel": up["kernel"][idx, :]},
    }


def prune(
    params: Params, kept: Mapping[graph.Edge, Any], edges: Sequence[graph.Edge]
) -> tuple[dict[str, Any], tuple[graph.Edge, ...], tuple[int, ...]]:
    """The smaller parameter tree that keeps only the `kept` neurons.

    Args:
      params: the model's params, bottleneck adapters under params["adapters"].
      kept: {edge: kept neuron indices} for every edge (as from `select`).
      edges: the model's edge list, the order of the result.

    Returns (params, edges, ranks): W_down (d, r) -> (d, k), b_down (r,) -> (k,),
    W_up (r, d) -> (k, d); LayerNorm, b_up and alpha kept; the backbone and head
    are the same arrays. An adapter with no neuron left is removed with all its
    parameters: what remains of it, the constant alpha * b_up, goes too (the
    paper removes such adapters completely, Fig. 1). Without any adapter left,
    the "adapters" key is removed. `edges` and `ranks` are the remaining edges
    in their original order and their hidden sizes, for `Model(edges=edges,
    adapter_rank=ranks)`.
    """
    edges = tuple((int(i), int(j)) for i, j in edges)
    tree = _adapter_tree(params, edges)
    keys = {(int(i), int(j)) for i, j in kept}
    if keys != set(edges):
        raise ValueError(
            f"kept does not match the adapters: missing {sorted(set(edges) - keys)}, "
            f"extra {sorted(keys - set(edges))}."
        )
    kept = {(int(i), int(j)): v for (i, j), v in kept.items()}
    smaller, remaining = {}, []
    for edge in edges:
        name = adapters_lib.edge_name(edge)
        idx = _indices(edge, kept[edge], tree[name]["down"]["kernel"].shape[1])
        if idx.size:
            smaller[name] = _slice(tree[name], idx)
            remaining.append((edge, int(idx.size)))
    out = {k: v for k, v in params.items() if k != "adapters"}
    if smaller:
        out["adapters"] = smaller
    return out, tuple(e for e, _ in remaining), tuple(r for _, r in remaining)


def _ranks(params: Params, edges: tuple[graph.Edge, ...]) -> tuple[int, ...]:
    tree = _adapter_tree(params, edges)
    return tuple(int(tree[adapters_lib.edge_name(e)]["down"]["kernel"].shape[1]) for e in edges)


def _record(
    cycle: int,
    params: Params,
    start: tuple[graph.Edge, ...],
    edges: tuple[graph.Edge, ...],
    ranks: tuple[int, ...],
    d: int,
) -> Cycle:
    by_edge = {e: 0 for e in start} | dict(zip(edges, ranks))
    size = sum(int(np.size(x)) for x in jax.tree_util.tree_leaves(params.get("adapters", {})))
    compression = len(start) * d / sum(ranks) if ranks else math.inf
    return Cycle(cycle, by_edge, size, compression)


_STOP = object()  # a plan's answer: no more cycles


def _cycles(train_cycle: TrainCycle, params: Params, edges, d: int, sigma0: float, plan) -> Result:
    """Trains cycles until `plan(cycle, params, edges)` says stop.

    The plan returns _STOP, None (train without pruning) or {edge: kept neurons}
    (prune to them, then train).
    """
    start = tuple((int(i), int(j)) for i, j in edges)
    ranks = _ranks(params, start)
    rank = initial_rank(d, sigma0)
    wrong = [(e, r) for e, r in zip(start, ranks) if r != rank]
    if wrong:
        raise ValueError(
            f"Adapters (edge, rank) {wrong} do not start at d / sigma0 = {rank} "
            f"(d={d}, sigma0={sigma0!r})."
        )
    edges, history = start, []
    for cycle in itertools.count():
        kept = plan(cycle, params, edges)
        if kept is _STOP:
            break
        if kept is not None:
            params, edges, ranks = prune(params, kept, edges)
        params = train_cycle(params, edges, ranks, cycle)
        history.append(_record(cycle, params, start, edges, ranks, d))
    return Result(dict(params), edges, ranks, history)


def run(
    train_cycle: TrainCycle,
    params: Params,
    edges: Sequence[graph.Edge],
    d: int,
    *,
    sigma0: float = 32,
    sigma_target: float = 512,
    rho: float = 0.5,
    scope: str = "global",
    normalize: bool = True,
    divide_by_max: bool = False,
    max_params: int | None = None,
) -> Result:
    """Algorithm 1: train, then C - 1 times prune a fraction rho and fine-tune.

    Args:
      train_cycle: train_cycle(params, edges, ranks, cycle) -> params trains one
        cycle (a fresh optimizer state each call, see the module docstring) of
        the model built with these edges and ranks; cycle counts from 0.
      params: the model's params with adapters of rank initial_rank(d, sigma0)
        on every edge (the head and backbone are passed through to train_cycle).
      edges: the model's edge list.
      d: the width of the nodes the adapters read (the model width).
      sigma0, sigma_target: starting and target mean compression d / r.
      rho: fraction of neurons removed per prune.
      scope, normalize, divide_by_max: the selection and score variants
        (`select`, `importance`) of the paper's ablations.
      max_params: beyond the paper, a budget of adapter parameters instead of
        sigma_target: prunes of rho (global) run until the adapters fit it, the
        last one removing only as many neurons as the budget needs
        (`select_budget`), and a cycle trains after each prune.

    Without a budget the loop runs C = num_cycles(sigma0, sigma_target, rho)
    training cycles: the paper computes C in advance, since the compression
    after p prunes is sigma0 / (1 - rho)^p. When the neuron counts are not
    divisible, keeping ceil((1 - rho) n) leaves the achieved compression
    (history) slightly below.
    """
    _check_rho(rho)
    if max_params is not None:
        return _cycles(
            train_cycle,
            params,
            edges,
            d,
            sigma0,
            _budget_plan(rho, max_params, normalize, divide_by_max),
        )
    c = num_cycles(sigma0, sigma_target, rho)

    def plan(cycle, params, edges):
        if cycle == 0 or cycle >= c:
            return None if cycle == 0 else _STOP
        return select(importance(params["adapters"], normalize, divide_by_max), rho, scope)

    return _cycles(train_cycle, params, edges, d, sigma0, plan)


def _budget_plan(rho: float, max_params: int, normalize: bool, divide_by_max: bool):
    """The plan of `run` with a budget of max_params adapter parameters."""
    if isinstance(max_params, bool) or not isinstance(max_params, int) or max_params < 0:
        raise ValueError(f"max_params must be an integer >= 0, got {max_params!r}.")

    def plan(cycle, params, edges):
        if cycle == 0:
            return None
        if _size(params) <= max_params:
            return _STOP
        scores = importance(params["adapters"], normalize, divide_by_max)
        kept = select(scores, rho, "global")
        if _size(prune(params, kept, edges)[0]) < max_params:
            kept = select_budget(params["adapters"], scores, max_params)
        return kept

    return plan


def _size(params: Params) -> int:
    """Number of adapter parameters in a model's params."""
    return sum(int(np.size(x)) for x in jax.tree_util.tree_leaves(params.get("adapters", {})))


def one_shot(
    train_cycle: TrainCycle,
    params: Params,
    edges: Sequence[graph.Edge],
    d: int,
    *,
    sigma0: float,
    sigma_target: float,
    cycles: int,
    scope: str = "global",
    normalize: bool = True,
    divide_by_max: bool = False,
) -> Result:
    """The non-iterative ablation (paper Table 3): one prune straight to sigma_target.

    Trains a cycle, removes a fraction 1 - sigma0 / sigma_target of the
    neurons once, then trains `cycles` - 1 more cycles. The paper starts it at
    sigma0 = sigma_target * (1 - rho) (its Sec. 4.2 writes sigma_target / (1 -
    rho), which would start above the target), so the one prune removes rho,
    and trains as many cycles as the iterative run, cycles = num_cycles(32,
    sigma_target, rho). Arguments as for `run`.
    """
    if isinstance(cycles, bool) or not isinstance(cycles, int) or cycles < 2:
        raise ValueError(f"cycles must be an integer >= 2 (train, prune, train), got {cycles!r}.")
    if not sigma_target > sigma0:
        raise ValueError(f"sigma_target must be above sigma0={sigma0!r}, got {sigma_target!r}.")

    def plan(cycle, params, edges):
        if cycle != 1:
            return None if cycle < cycles else _STOP
        scores = importance(params["adapters"], normalize, divide_by_max)
        return select(scores, 1 - sigma0 / sigma_target, scope)

    return _cycles(train_cycle, params, edges, d, sigma0, plan)
