"""Adapter modules of docs/spec.md §2 and the container that holds one adapter per edge.

A(x) = alpha * (sigma(LN(x) W_down + b_down) W_up + b_up), with W_up and b_up
zero-initialised so that inserting an adapter leaves the pre-trained function
unchanged. The "linear" adapter of the paper's Appendix D is x W with a
zero-initialised d x d matrix W; its gradient is what GGA scores.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gga_jax import graph

ACTIVATIONS = {"gelu": nn.gelu, "relu": nn.relu, "identity": lambda x: x}
KINDS = ("bottleneck", "linear")


class Bottleneck(nn.Module):
    """The bottleneck adapter of docs/spec.md §2 (paper Eq. 1) with hidden size `rank`."""

    rank: int
    activation: str = "gelu"
    layer_norm: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        d = x.shape[-1]
        h = nn.LayerNorm(name="norm")(x) if self.layer_norm else x
        h = nn.Dense(self.rank, dtype=self.dtype, name="down")(h)
        h = ACTIVATIONS[self.activation](h)
        # docs/spec.md §2: the up-projection starts at zero so A(x) = 0 at initialisation.
        h = nn.Dense(d, dtype=self.dtype, kernel_init=nn.initializers.zeros, name="up")(h)
        alpha = self.param("alpha", nn.initializers.ones, ())
        return (alpha * h).astype(x.dtype)


class Linear(nn.Module):
    """The d x d linear adapter x W of the paper's Appendix D, W = 0 at init."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        d = x.shape[-1]
        kernel = self.param("kernel", nn.initializers.zeros, (d, d))
        return jnp.einsum("...d,de->...e", x.astype(self.dtype), kernel.astype(self.dtype)).astype(
            x.dtype
        )


def _key(edge: graph.Edge) -> str:
    return f"{edge[0]}_{edge[1]}"


def edge_name(edge: graph.Edge) -> str:
    """Parameter name of an edge's adapter under `adapters/`, e.g. "edge_3_5"."""
    return "edge_" + _key(edge)


def resolve_ranks(edges: tuple[graph.Edge, ...], rank) -> tuple[int, ...]:
    """Per-edge ranks from an int, a sequence aligned with `edges`, or a {edge: rank} map."""
    if isinstance(rank, Mapping):
        extra = sorted(set(map(tuple, rank)) - set(edges))
        missing = [e for e in edges if e not in rank]
        if extra or missing:
            raise ValueError(
                f"adapter_rank map does not match the edges: missing {missing}, extra {extra}."
            )
        ranks = tuple(rank[e] for e in edges)
    elif isinstance(rank, (list, tuple)):
        if len(rank) != len(edges):
            raise ValueError(
                f"adapter_rank has {len(rank)} entries for {len(edges)} edges; give one per edge."
            )
        ranks = tuple(rank)
    else:
        ranks = (rank,) * len(edges)
    bad = [
        (e, r)
        for e, r in zip(edges, ranks)
        if isinstance(r, bool) or not isinstance(r, int) or r < 1
    ]
    if bad:
        raise ValueError(f"Adapter ranks must be positive integers; got (edge, rank) {bad}.")
    return ranks


class EdgeAdapters(nn.Module):
    """One adapter per edge, stored as `edge_{i}_{j}` under this module.

    Attributes:
      edges: canonical static edge list (see graph.validate_edges).
      kind: "bottleneck" (docs/spec.md §2) or "linear" (d x d, used for scoring).
      ranks: per-edge hidden size of bottleneck adapters, aligned with `edges`.
      activation, layer_norm: bottleneck settings of docs/spec.md §2.
      linear_edges: edges among `edges` whose adapter is a zero d x d Linear
        whatever `kind` says (the reference of adapted scoring: a linear
        adapter on top of trained bottlenecks).
    """

    edges: tuple[graph.Edge, ...]
    kind: str = "bottleneck"
    ranks: tuple[int, ...] = ()
    activation: str = "gelu"
    layer_norm: bool = True
    dtype: Any = jnp.float32
    linear_edges: tuple[graph.Edge, ...] = ()

    def setup(self):
        if self.kind not in KINDS:
            raise ValueError(f"Unknown adapter kind {self.kind!r}; valid: {KINDS}.")
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"Unknown adapter activation {self.activation!r}; valid: {tuple(ACTIVATIONS)}."
            )
        check_linear_edges(self.edges, self.linear_edges)
        ranks = self.ranks or (0,) * len(self.edges)
        # A dict attribute names its children "edge_" + key, i.e. edge_{i}_{j}.
        self.edge = {_key(e): self._make(e, r) for e, r in zip(self.edges, ranks)}

    def _make(self, edge: graph.Edge, rank: int) -> nn.Module:
        if self.kind == "linear" or edge in self.linear_edges:
            return Linear(dtype=self.dtype)
        return Bottleneck(rank, self.activation, self.layer_norm, self.dtype)

    def __call__(self, edge: graph.Edge, x):
        """Applies the adapter of `edge` to the node value x of shape (..., d)."""
        return self.edge[_key(edge)](x)


def init_adapters(model, rng, width: int) -> dict[str, Any]:
    """Fresh parameters of `model`'s adapters, {"edge_i_j": ...}, without the backbone.

    model.init would trace and compile the whole forward again for every edge
    list (seconds on a CPU, for each run of a sweep), while an adapter's
    parameters depend only on its kind, rank and the width d. So each adapter is
    initialised alone on a (1, d) input, the k-th edge's from fold_in(rng, k).
    """
    edges = graph.validate_edges(model.edges, model.depth)
    if not edges:
        return {}
    module = EdgeAdapters(
        edges,
        model.adapter_kind,
        resolve_ranks(edges, model.adapter_rank or 8),
        model.adapter_activation,
        model.adapter_layer_norm,
        model.dtype,
        model.linear_edges,
    )
    x = jnp.zeros((1, width), jnp.float32)
    out = {}
    for index, edge in enumerate(edges):
        out.update(module.init(jax.random.fold_in(rng, index), edge, x)["params"])
    return out


def check_linear_edges(edges: tuple[graph.Edge, ...], linear_edges) -> tuple[graph.Edge, ...]:
    """The edges of `edges` listed in `linear_edges`, in the order of `edges`.

    Raises ValueError naming any entry of `linear_edges` that is not an edge.
    """
    linear = [tuple(e) for e in linear_edges]
    extra = [e for e in linear if e not in edges]
    if extra:
        raise ValueError(f"linear_edges {extra} are not among the edges {edges}.")
    return tuple(e for e in edges if e in linear)


def run_graph(
    model,
    x0,
    steps,
    perturb_nodes: bool = False,
    pass1=None,
    inner_taps: bool = False,
    prefix=None,
) -> tuple:
    """graph.propagate with `model`'s adapters; call it inside the model's compact __call__.

    `model` carries the shared fields (edges, linear_edges, depth, adapter_kind,
    adapter_rank, adapter_activation, adapter_layer_norm, dtype); the adapters
    become its submodule `adapters`. With perturb_nodes, every node k gets a
    zero variable `node_{k}` of collection "perturbations", whose gradient is
    dL/dx_k (scoring). pass1 ({i: z_i}) replaces the gradient-free first pass
    (graph.propagate), prefix ({k: x_k}) the frozen nodes before the first
    target. inner_taps adds what adapted scoring reads inside a node's update
    (see `_inner_tap`).
    """
    edges = graph.validate_edges(model.edges, model.depth)
    adapt = None
    if edges:
        ranks = resolve_ranks(edges, model.adapter_rank or 8)
        adapt = EdgeAdapters(
            edges,
            model.adapter_kind,
            ranks,
            model.adapter_activation,
            model.adapter_layer_norm,
            model.dtype,
            model.linear_edges,
            name="adapters",
        )
    tap = (lambda k, x: model.perturb(f"node_{k}", x)) if perturb_nodes else None
    inner = _inner_tap(model, edges) if inner_taps else None
    return graph.propagate(x0, steps, edges, adapt, tap, pass1, inner, prefix)


def _inner_tap(model, edges: tuple[graph.Edge, ...]):
    """graph.propagate's inner_tap for adapted scoring, only where a node's update has stages.

    At a node k with a sequential adapter, a zero variable `pre_sequential_{k}`
    ("perturbations") is added to the value that adapter reads: its gradient is
    dL/d of that value, where a new parallel/long-range adapter into k would add.
    At a node k with recurrent adapters into it, its value before they add is
    sown as `pre_recurrent_{k}` ("intermediates"): what a new sequential adapter
    (k, k) would read.
    """
    sequential = {i for i, j in edges if i == j}
    recurrent = {j for i, j in edges if i > j}

    def tap(point: str, k: int, x):
        if point == "pre_sequential" and k in sequential:
            return model.perturb(f"pre_sequential_{k}", x)
        if point == "pre_recurrent" and k in recurrent:
            model.sow("intermediates", f"pre_recurrent_{k}", x)
        return x

    return tap
