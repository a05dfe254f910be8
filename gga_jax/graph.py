"""The adapter graph of docs/spec.md §1: nodes are residual-stream states, edges are adapters.

A transformer with L blocks has n = 2L + 1 nodes: node 0 is the embedding
output, node 2l + 1 the residual output of block l's attention sub-block and
node 2l + 2 that of its MLP sub-block. An adapter is an edge (i, j) that reads
node i and writes into node j.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

Edge = tuple[int, int]
EDGE_TYPES = ("parallel", "long_range", "sequential", "recurrent")


def num_nodes(num_layers: int) -> int:
    """Number of nodes n = 2L + 1 of an encoder with `num_layers` blocks."""
    if (
        isinstance(num_layers, bool)
        or not isinstance(num_layers, numbers.Integral)
        or num_layers < 1
    ):
        raise ValueError(f"num_layers must be a positive integer, got {num_layers!r}.")
    return 2 * int(num_layers) + 1


def edge_type(edge: Edge) -> str:
    """The type of edge (i, j): "parallel" (j = i+1), "long_range" (j > i+1),
    "sequential" (j = i) or "recurrent" (j < i)."""
    i, j = edge
    if j == i + 1:
        return "parallel"
    if j > i + 1:
        return "long_range"
    if j == i:
        return "sequential"
    return "recurrent"


def _as_node(value, edge, n: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(
            f"Edge {edge!r} has a non-integer entry {value!r}; nodes are integers in [0, {n})."
        )
    if not 0 <= value < n:
        raise ValueError(
            f"Edge {edge!r} has node {value} outside [0, {n}) for a {(n - 1) // 2}-block encoder."
        )
    return int(value)


def validate_edges(edges: Iterable[Sequence[int]], num_layers: int) -> tuple[Edge, ...]:
    """Checks an edge list and returns it as a canonical tuple of (int, int).

    The order is kept (it is the order of the adapters' parameters). Raises
    ValueError naming the offending edge for a malformed pair, a non-integer or
    out-of-range node, or a duplicate.
    """
    n = num_nodes(num_layers)
    if isinstance(edges, (str, bytes)) or not isinstance(edges, Iterable):
        raise ValueError(f"edges must be a sequence of (i, j) pairs, got {edges!r}.")
    out, seen = [], set()
    for edge in edges:
        if isinstance(edge, (str, bytes)) or not isinstance(edge, Sequence) or len(edge) != 2:
            if not isinstance(edge, np.ndarray) or edge.shape != (2,):
                raise ValueError(f"Edge {edge!r} is not an (i, j) pair of node indices.")
        canon = (_as_node(edge[0], edge, n), _as_node(edge[1], edge, n))
        if canon in seen:
            raise ValueError(f"Edge {canon} appears more than once in the edge list.")
        seen.add(canon)
        out.append(canon)
    return tuple(out)


def candidates(num_layers: int, stride: int = 1, recurrent: bool = True) -> tuple[Edge, ...]:
    """The candidate edges of docs/spec.md §4 in row-major order.

    Args:
      num_layers: number of transformer blocks L (n = 2L + 1 nodes).
      stride: keep only i, j in {0, s, 2s, ...} (the paper's Figure 3 sub-grid).
      recurrent: whether edges with i > j are candidates.
    """
    n = num_nodes(num_layers)
    if isinstance(stride, bool) or not isinstance(stride, numbers.Integral) or stride < 1:
        raise ValueError(f"stride must be a positive integer, got {stride!r}.")
    nodes = range(0, n, stride)
    return tuple((i, j) for i in nodes for j in nodes if recurrent or i <= j)


def candidate_mask(edges: Iterable[Edge], num_layers: int) -> np.ndarray:
    """Boolean (n, n) matrix that is True exactly at the given edges."""
    n = num_nodes(num_layers)
    mask = np.zeros((n, n), bool)
    for i, j in validate_edges(edges, num_layers):
        mask[i, j] = True
    return mask


def recurrent_sources(edges: Iterable[Edge]) -> tuple[int, ...]:
    """Sorted source nodes i of the recurrent edges (i > j)."""
    return tuple(sorted({i for i, j in edges if i > j}))


def pass1_blocks(edges: Iterable[Edge]) -> int:
    """Blocks the gradient-free first pass computes: ceil(i_max / 2), 0 if none."""
    sources = recurrent_sources(edges)
    return math.ceil(sources[-1] / 2) if sources else 0


def first_target(edges: Iterable[Edge], n: int) -> int:
    """The smallest node an edge writes into (n without edges): every node before it
    equals the frozen backbone's, in both passes."""
    return min((j for _, j in edges), default=n)


def prefix_nodes(edges: Iterable[Edge], n: int) -> tuple[int, ...]:
    """The frozen nodes a forward with `edges` reads before its first target f.

    Node f - 1 (what node f's step starts from) and the sources i < f of forward
    edges. Given their plain values (`propagate`'s `prefix`), nothing before f
    is computed. Without edges (a linear probe) that is the last node n - 1.
    """
    edges = tuple(edges)
    first = first_target(edges, n)
    if first == 0:
        return ()
    return tuple(sorted({first - 1} | {i for i, _ in edges if i < first}))


def propagate(
    x0,
    steps: Sequence[Callable[[Any], Any]],
    edges: Sequence[Edge],
    adapt: Callable[[Edge, Any], Any] | None = None,
    tap: Callable[[int, Any], Any] | None = None,
    pass1: Mapping[int, Any] | None = None,
    inner_tap: Callable[[str, int, Any], Any] | None = None,
    prefix: Mapping[int, Any] | None = None,
) -> tuple[Any, ...]:
    """The adapted forward of docs/spec.md §1 over the nodes; returns all n node values.

    Args:
      x0: the embedding output (node 0 before any adapter).
      steps: n - 1 callables; steps[k - 1] maps x_{k-1} to the plain x_k
        (x_{k-1} + F_k(x_{k-1}) for a pre-LN block, the post-LN residual output
        for BERT). Adapters add to that value, so one rule serves both.
      edges: static edge list (validated).
      adapt: adapt(edge, x) applies the adapter of `edge` to a node value.
      tap: tap(k, x_k) may replace the final value of node k; scoring uses it to
        add a zero perturbation whose gradient is the cotangent dL/dx_k.
      pass1: {i: z_i} for every recurrent source i, precomputed plain node
        values of these same inputs; pass 1 is then not run. Pass 1 has no
        adapters, so z_i depends only on the input and can be cached across
        epochs (train.plain_values).
      inner_tap: inner_tap(point, k, x) may replace the value of node k at two
        points inside its update: "pre_sequential" (after the incoming
        parallel/long-range adapters, before the sequential one) and
        "pre_recurrent" (after the sequential adapter, before the recurrent
        ones). Adapted scoring (scoring.py) taps there: a new adapter adds at,
        or reads, these points.
      prefix: {k: x_k}, precomputed plain values of nodes before the first
        adapter target (see `prefix_nodes`); those nodes are then taken, not
        computed. Under jit, the embedding and the steps that only led to them
        are dead code, so a step costs only the nodes from the first target on
        (train.plain_values caches them across epochs and runs).

    Node k is computed as: the plain step from x_{k-1}; plus A(x_i) for every
    parallel/long-range edge (i, k) (x_i the final, adapted value of node i);
    then x_k = z_k + A(z_k) for a sequential edge (k, k); then, for every
    recurrent edge (i, k), x_k += A(z_i) with z_i from the gradient-free pass 1.
    Everything after node k reads this final value.
    """
    if edges and adapt is None:
        raise ValueError(f"Edges {tuple(edges)} were given but no adapt function.")
    n = len(steps) + 1
    # Nodes before the first adapter target are the same in both passes: pass 1
    # starts from them instead of recomputing them (its z values stay gradient-free).
    first = first_target(edges, n)
    prefix = _checked_prefix(prefix, first)
    incoming = {k: [e for e in edges if e[1] == k and e[0] < k] for k in range(n)}
    recurrent = {k: [e for e in edges if e[1] == k and e[0] > k] for k in range(n)}
    z, nodes = {}, []
    for k in range(n):
        if k == first:
            z = _pass1(nodes[-1] if nodes else x0, k, steps, edges, pass1)
        if k in prefix:
            nodes.append(tap(k, prefix[k]) if tap else prefix[k])
            continue
        x = x0 if k == 0 else steps[k - 1](nodes[k - 1])
        for e in incoming[k]:
            x = x + adapt(e, nodes[e[0]])
        x = inner_tap("pre_sequential", k, x) if inner_tap else x
        if (k, k) in edges:
            x = x + adapt((k, k), x)
        x = inner_tap("pre_recurrent", k, x) if inner_tap else x
        for e in recurrent[k]:
            x = x + adapt(e, z[e[0]])
        nodes.append(tap(k, x) if tap else x)
    return tuple(nodes)


def _checked_prefix(prefix, first: int) -> dict[int, Any]:
    """prefix as {int: value}; raises if it holds a node at or after the first target."""
    if not prefix:
        return {}
    late = sorted(int(k) for k in prefix if int(k) >= first)
    if late:
        raise ValueError(
            f"prefix holds nodes {late}, at or after the first adapter target {first}; "
            f"only nodes before it equal the frozen backbone's."
        )
    return {int(k): jax.lax.stop_gradient(v) for k, v in prefix.items()}


def _pass1(x_start, start: int, steps, edges, given=None) -> dict[int, Any]:
    """Pass 1 of the two-pass forward (paper Eq. 3): plain nodes z_i, no gradient.

    `x_start` is the plain value of node start - 1 (x0 when start is 0). Only the
    sub-blocks up to the largest recurrent source i_max run, i.e. at most
    ceil(i_max / 2) blocks; later blocks are never traced.
    """
    sources = recurrent_sources(edges)
    if given is not None:
        missing = sorted(set(sources) - {int(i) for i in given})
        if missing:
            raise ValueError(
                f"pass1 lacks the recurrent source nodes {missing}; it has {sorted(given)}."
            )
        return {int(i): jax.lax.stop_gradient(v) for i, v in given.items()}
    if not sources:
        return {}
    z, x, begin = {}, x_start, max(start - 1, 0)
    for k in range(begin, sources[-1] + 1):
        x = x if k == begin else steps[k - 1](x)
        if k in sources:
            z[k] = jax.lax.stop_gradient(x)
    return z
