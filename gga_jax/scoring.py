"""Scoring every edge at once (docs/spec.md §3, paper Eq. 6-7).

With a zero-initialised linear adapter W_ij on edge (i, j) the forward is the
plain backbone, and the gradient of the mean loss w.r.t. W_ij is
G_ij = sum over examples and tokens of x_i^T dL/dx_j. One forward gives every
node value x_i, one backward every cotangent dL/dx_j, so all n^2 matrices come
from 2n tensors; no per-edge backward pass is ever run. A score s(i, j) is an
aggregation of G_ij, the stable rank (srank) by default.

All of it runs in float32 at "highest" matmul precision by default: many edges sit
within 1e-4 of the srank threshold, so plain bf16 or TF32 would change the placement.
`products` picks a faster dot algorithm for the x_i^T g_j products (PRODUCTS). On a
GPU srank's singular values come from float64 Gram eigenvalues instead of a
float32 SVD (see `srank`).

With a jax.sharding.Mesh the micro-batches run data-parallel and G is held
sharded over the edges, one block per device, then reduced to scores where it
lies (`score_edges`). A micro-batch's node values and cotangents stay sharded
over its rows: each device adds x_i^T g_j of its edges from the rows it holds,
then passes them on round a ring of all devices, so no device ever holds the
whole micro-batch's nodes. `scoring_memory` plans the per-device bytes of that.

With `adapted=True` (docs/spec.md §9, iterative GGA) the model's own adapters stay in
place, trained, and G_ij is the gradient at W = 0 of a zero linear adapter
newly added on candidate (i, j) of that adapted model. Where such an adapter
reads and writes follows graph.propagate's order at a node: a forward edge
(i < j) reads the final x_i and adds before node j's sequential adapter; a
sequential edge (k, k) reads node k before its recurrent adapters add, and its
output reaches the final x_k additively; a recurrent edge (i > j) reads the
plain pass-1 value z_i and adds after node j's sequential adapter. So one
forward and one backward of the adapted model (and a plain forward for z)
still give every G_ij: `_adapted_rows` maps each edge to a row of source values
and a row of cotangents, and the products run as in the plain case.
"""

from __future__ import annotations

import functools
import math
import numbers
import warnings
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from gga_jax import graph, models

HIGHEST = jax.lax.Precision.HIGHEST
_PRESET = jax.lax.DotAlgorithmPreset
# The products x_i^T g_j (the scorer's matmuls besides the forward/backward): "highest"
# float32 is the reference; the others are XLA's dot algorithms that emulate float32 with
# several bf16 or TF32 passes (3x, 6x) or take one (bf16, tf32), for tensor cores. A fast
# path is judged by whether the placement and every srank equal the float64 reference
# (benchmarks/score_gpu.py), not by matrix error. CPUs run highest, bf16*, not tf32*.
PRODUCTS = {
    "highest": HIGHEST,
    "bf16_6x": _PRESET.BF16_BF16_F32_X6,
    "bf16_3x": _PRESET.BF16_BF16_F32_X3,
    "bf16": _PRESET.BF16_BF16_F32,
    "tf32_3x": _PRESET.TF32_TF32_F32_X3,
    "tf32": _PRESET.TF32_TF32_F32,
}
AGGREGATIONS = ("srank", "fro", "spectral", "nuclear", "min_col_sum", "max_col_sum")
METHODS = ("auto", "svd", "gram64")
# Edges a device adds at once on a mesh when chunk is None: its whole block would copy
# 2 x block x (rows it holds) x d floats out of the node values (46 GiB for ViT-B/16's
# 625 edges on one device at a micro-batch of 64), while a few edges already make each
# product a large batched matmul.
MESH_CHUNK = 8


def softmax_xent(logits, labels):
    """Per-example softmax cross-entropy with integer labels, shape (B,)."""
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def _check_eta(eta) -> float:
    if isinstance(eta, bool) or not isinstance(eta, numbers.Real) or not 0.0 < eta < 1.0:
        raise ValueError(f"eta must be a number in (0, 1), got {eta!r}.")
    return float(eta)


def _check_method(method) -> str:
    """Validates an srank method and resolves "auto" for the default backend."""
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"Unknown srank method {method!r}; valid: {METHODS}.")
    if method == "auto":
        return "gram64" if jax.default_backend() == "gpu" else "svd"
    return method


def srank(matrices, eta: float = 0.01, method: str = "auto"):
    """Stable rank of docs/spec.md §3: smallest k with sum_{m<=k} s_m >= (1 - eta) sum_m s_m.

    Args:
      matrices: (..., a, b) batch of matrices.
      eta: threshold in (0, 1).
      method: one of METHODS, how the singular values s_m are found.
        "svd": a float32 SVD; it reproduces the float64 reference, unlike the
          eigenvalues of a float32 Gram matrix. Exact and fast enough on CPU,
          but slow on a GPU (25.8 s for 625 matrices of 768 x 768 on an H100).
        "gram64": sqrt of the eigenvalues of the smaller Gram matrix (G^T G or
          G G^T), cast to float64 and formed in float64 (0.65 s for the same 625
          on an H100, every srank equal to the float64 reference). The square
          root halves the relative precision, hence float64: in float32 it
          changed 490 of those 625 sranks.
        "auto": "gram64" when the default backend is a GPU, else "svd": on CPU
          the SVD is exact and fast enough, and on TPU float64 is emulated and
          a float64 eigh is slow or unsupported.
    Returns:
      int32 (...,) ranks; a zero matrix has srank 0.
    """
    eta = _check_eta(eta)
    if _check_method(method) == "gram64":
        return _srank_gram64(matrices, eta)
    s = jnp.linalg.svd(matrices.astype(jnp.float32), compute_uv=False)
    return _srank_from_singular_values(s, eta)


def _srank_gram64(matrices, eta: float):
    """srank from float64 eigenvalues of the Gram matrix, whatever jax_enable_x64 says."""
    # Traced inside the context, so every op below is float64 even under an outer jit.
    with jax.enable_x64(True):
        m = jnp.asarray(matrices).astype(jnp.float64)
        tall = m.shape[-2] >= m.shape[-1]
        spec = "...ki,...kj->...ij" if tall else "...ik,...jk->...ij"
        gram = jnp.einsum(spec, m, m, precision=HIGHEST)
        s = jnp.sqrt(jnp.clip(jnp.linalg.eigvalsh(gram), 0.0))
        # eigvalsh is ascending; the cumulative sum needs the largest first.
        return _srank_from_singular_values(s[..., ::-1], eta)


def _srank_from_singular_values(s, eta):
    cum = jnp.cumsum(s, axis=-1)
    total = cum[..., -1:]
    k = jnp.sum(cum < (1.0 - eta) * total, axis=-1) + 1
    return jnp.where(total[..., 0] > 0, k, 0).astype(jnp.int32)


def aggregate(matrices, how: str = "srank", eta: float = 0.01, method: str = "auto"):
    """Reduces (..., d, d) edge gradients to scores (...,) with one of AGGREGATIONS.

    "fro", "spectral" and "nuclear" are the matrix norms; "min_col_sum" and
    "max_col_sum" are min/max over output columns of the summed absolute
    entries (the paper's Table 4). `method` is srank's (one of METHODS).
    """
    method = _check_method(method)
    m = matrices.astype(jnp.float32)
    if how == "srank":
        return srank(m, eta, method)
    if how == "fro":
        return jnp.sqrt(jnp.sum(m * m, axis=(-2, -1)))
    if how in ("spectral", "nuclear"):
        s = jnp.linalg.svd(m, compute_uv=False)
        return s[..., 0] if how == "spectral" else jnp.sum(s, axis=-1)
    if how in ("min_col_sum", "max_col_sum"):
        col = jnp.sum(jnp.abs(m), axis=-2)
        return jnp.min(col, axis=-1) if how == "min_col_sum" else jnp.max(col, axis=-1)
    raise ValueError(f"Unknown aggregation {how!r}; valid: {AGGREGATIONS}.")


def _batch_sizes(tree, micro_batch: int | None) -> tuple[int, int]:
    """(B, micro-batch size) of a pytree of (B, ...) leaves (arrays or ShapeDtypeStructs)."""
    sizes = {x.shape[0] for x in jax.tree_util.tree_leaves(tree)}
    if len(sizes) != 1:
        raise ValueError(f"Inputs and labels disagree on the batch size: {sorted(sizes)}.")
    (size,) = sizes
    mb = size if micro_batch is None else micro_batch
    if isinstance(mb, bool) or not isinstance(mb, int) or mb < 1 or size % mb:
        raise ValueError(
            f"micro_batch={micro_batch!r} must be a positive divisor of the batch size {size}."
        )
    return size, mb


def _micro_batches(tree, micro_batch: int | None):
    """Reshapes every leaf (B, ...) to (B / micro_batch, micro_batch, ...)."""
    size, mb = _batch_sizes(tree, micro_batch)
    return jax.tree_util.tree_map(lambda x: x.reshape(size // mb, mb, *x.shape[1:]), tree), size


def _plain(model, params):
    """The backbone without adapters: (model with no edges, params without `adapters`)."""
    plain = model.clone(edges=(), linear_edges=())
    return plain, {k: v for k, v in params.items() if k != "adapters"}


def _flat(x):
    """(B, T, d) -> float32 (B * T, d)."""
    return x.reshape(-1, x.shape[-1]).astype(jnp.float32)


def node_values_and_cotangents(model, params, inputs, labels, loss_fn=softmax_xent, scale=None):
    """One forward and one backward of the plain backbone (no adapters).

    Returns (xs, gs), each float32 (n, B * T, d): the node values x_k and the
    cotangents dL/dx_k of L = sum of per-example losses * scale (default 1/B).
    """
    plain, params = _plain(model, params)
    scale = 1.0 / jax.tree_util.tree_leaves(labels)[0].shape[0] if scale is None else scale

    def apply(perturbations):
        variables = {"params": params, "perturbations": perturbations}
        logits, out = plain.apply(variables, inputs, return_nodes=True, perturb_nodes=True)
        return jnp.sum(loss_fn(logits, labels)) * scale, out["nodes"]

    shapes = jax.eval_shape(lambda: plain.apply({"params": params}, inputs, return_nodes=True)[1])
    zeros = {f"node_{k}": jnp.zeros(x.shape, jnp.float32) for k, x in enumerate(shapes["nodes"])}
    (_, nodes), cot = jax.value_and_grad(apply, has_aux=True)(zeros)
    xs = jnp.stack([_flat(x) for x in nodes])
    gs = jnp.stack([_flat(cot[f"node_{k}"]) for k in range(len(nodes))])
    return xs, gs


# --- Adapted scoring: new linear adapters on top of the model's own ---------------------


class _Rows(NamedTuple):
    """Which values and cotangents adapted scoring stacks, and which pair each edge reads.

    sources: (kind, k) per row of xs; kind "final" (x_k after all of node k's
      adapters), "pre_recurrent" (node k before its recurrent adapters add) or
      "plain" (z_k of the backbone without adapters, no gradient).
    cotangents: (kind, k) per row of gs; "final" (dL/dx_k) or "pre_sequential"
      (dL/d of the value node k's sequential adapter reads).
    pairs: (source row, cotangent row) per candidate edge, in its order.
    """

    sources: tuple[tuple[str, int], ...]
    cotangents: tuple[tuple[str, int], ...]
    pairs: tuple[tuple[int, int], ...]


def _adapted_rows(own: tuple[graph.Edge, ...], edges: tuple[graph.Edge, ...]) -> _Rows:
    """The `_Rows` of candidate `edges` on a model with adapters on the edges `own`.

    A value that provably equals the final x_k (no recurrent adapter into k; a
    node before the first adapter target, untouched by any adapter) or a
    cotangent that equals dL/dx_k (no sequential adapter at k) uses that row, so
    only the rows that differ are computed and stacked.
    """
    sequential = {i for i, j in own if i == j}
    recurrent = {j for i, j in own if i > j}
    first = min(j for _, j in own)

    def source(i: int, j: int) -> tuple[str, int]:
        if i == j and i in recurrent:
            return ("pre_recurrent", i)
        if i > j and i >= first:
            return ("plain", i)
        return ("final", i)

    def cotangent(i: int, j: int) -> tuple[str, int]:
        return ("pre_sequential", j) if i < j and j in sequential else ("final", j)

    sources = tuple(sorted({source(*e) for e in edges}))
    cotangents = tuple(sorted({cotangent(*e) for e in edges}))
    pairs = tuple((sources.index(source(*e)), cotangents.index(cotangent(*e))) for e in edges)
    return _Rows(sources, cotangents, pairs)


def _adapted_candidates(model, candidates) -> tuple[graph.Edge, ...]:
    """Adapted scoring's edges: `candidates`, by default all n^2 minus the model's own."""
    own = set(model.edges)
    if candidates is None:
        edges = tuple(e for e in graph.candidates(model.depth) if e not in own)
    else:
        edges = graph.validate_edges(candidates, model.depth)
    taken = [e for e in edges if e in own]
    if taken:
        raise ValueError(
            f"Candidates {taken} already hold the model's adapters; adapted=True "
            f"scores a new adapter on an edge without one."
        )
    if not edges:
        raise ValueError(f"No candidate edge is left: the model has adapters on {len(own)} edges.")
    return edges


def _adapted_values_and_cotangents(model, params, inputs, labels, loss_fn, scale, rows: _Rows):
    """One forward and one backward of the adapted model, plus a plain forward for z.

    Returns (xs, gs): float32 (len(rows.sources), B * T, d) and
    (len(rows.cotangents), B * T, d), the rows `rows` names, of L = sum of
    per-example losses * scale. The plain nodes (only run when some row needs
    them) also replace the model's own pass 1, so z is computed once.
    """
    plain = None
    if any(kind == "plain" for kind, _ in rows.sources):
        bare, bare_params = _plain(model, params)
        plain = bare.apply({"params": bare_params}, inputs, return_nodes=True)[1]["nodes"]
        plain = jax.lax.stop_gradient(plain)
    recurrent = graph.recurrent_sources(model.edges)
    pass1 = {i: plain[i] for i in recurrent} if plain is not None and recurrent else None

    def apply(perturbations):
        (logits, out), state = model.apply(
            {"params": params, "perturbations": perturbations},
            inputs,
            return_nodes=True,
            perturb_nodes=True,
            pass1=pass1,
            inner_taps=True,
            mutable=["intermediates"],
        )
        loss = jnp.sum(loss_fn(logits, labels)) * scale
        return loss, (out["nodes"], state.get("intermediates", {}))

    (_, (nodes, inner)), cot = jax.value_and_grad(apply, has_aux=True)(
        _adapted_zeros(model, params, inputs)
    )
    values = {
        "final": lambda k: nodes[k],
        "pre_recurrent": lambda k: inner[f"pre_recurrent_{k}"][0],
        "plain": lambda k: plain[k],
    }
    cotangents = {"final": "node_{}", "pre_sequential": "pre_sequential_{}"}
    xs = jnp.stack([_flat(values[kind](k)) for kind, k in rows.sources])
    gs = jnp.stack([_flat(cot[cotangents[kind].format(k)]) for kind, k in rows.cotangents])
    return xs, gs


def _adapted_zeros(model, params, inputs) -> dict:
    """Zero perturbations of the adapted forward: `node_{k}` at every node and
    `pre_sequential_{k}` at every node with a sequential adapter (adapters.run_graph)."""
    bare, bare_params = _plain(model, params)
    nodes = jax.eval_shape(
        lambda: bare.apply({"params": bare_params}, inputs, return_nodes=True)[1]["nodes"]
    )
    zeros = {f"node_{k}": jnp.zeros(x.shape, jnp.float32) for k, x in enumerate(nodes)}
    for k in sorted({i for i, j in model.edges if i == j}):
        zeros[f"pre_sequential_{k}"] = jnp.zeros(nodes[k].shape, jnp.float32)
    return zeros


def _values_and_cotangents(model, params, inputs, labels, loss_fn, scale, rows: _Rows | None):
    """The plain (xs, gs) of `node_values_and_cotangents` when rows is None, else adapted."""
    if rows is None:
        return node_values_and_cotangents(model, params, inputs, labels, loss_fn, scale)
    return _adapted_values_and_cotangents(model, params, inputs, labels, loss_fn, scale, rows)


def _pairs(edges, rows: _Rows | None):
    """(row of xs, row of gs) per edge: the edge itself when plain, else rows.pairs."""
    return edges if rows is None else rows.pairs


def _check_adapted(adapted) -> bool:
    if not isinstance(adapted, bool):
        raise ValueError(f"adapted must be True or False, got {adapted!r}.")
    return adapted


def _targets(model, candidates, adapted) -> tuple[tuple[graph.Edge, ...] | None, _Rows | None]:
    """(edges, rows) to score: the plain candidates and None, or the adapted ones and rows.

    adapted=True on a model without adapters is the plain scorer, exactly.
    """
    if not (_check_adapted(adapted) and model.edges):
        return _canonical_candidates(model, candidates), None
    edges = _adapted_candidates(model, candidates)
    return edges, _adapted_rows(model.edges, edges)


def _pair_gradients(xs, gs, edges: tuple[graph.Edge, ...] | None, products: str = "highest"):
    """G for all pairs as (n, n, d, d) when edges is None, else (E, d, d)."""
    precision = PRODUCTS[products]
    if edges is None:
        return jnp.einsum("imd,jme->ijde", xs, gs, precision=precision)
    src, dst = (np.asarray(a, np.int32) for a in zip(*edges))
    return jnp.einsum("emd,emf->edf", xs[src], gs[dst], precision=precision)


def _all_nodes(model, params, inputs, labels, micro_batch, loss_fn, rows=None):
    """(xs, gs) of the whole batch, computed one micro-batch at a time."""
    (inputs, labels), size = _micro_batches((inputs, labels), micro_batch)

    def one(_, mb):
        return None, _values_and_cotangents(model, params, *mb, loss_fn, 1.0 / size, rows)

    _, (xs, gs) = jax.lax.scan(one, None, (inputs, labels))
    merge = lambda a: jnp.moveaxis(a, 0, 1).reshape(a.shape[1], -1, a.shape[-1])  # noqa: E731
    return merge(xs), merge(gs)


def _canonical_candidates(model, candidates) -> tuple[graph.Edge, ...] | None:
    """None means all n^2 edges (computed with one matmul)."""
    if candidates is None:
        return None
    edges = graph.validate_edges(candidates, model.depth)
    if not edges:
        raise ValueError("candidates is empty; give at least one edge (or None for all n^2 edges).")
    return None if set(edges) == set(graph.candidates(model.depth)) else edges


@functools.partial(
    jax.jit, static_argnames=("model", "edges", "micro_batch", "loss_fn", "rows", "products")
)
def _edge_gradients(
    model, params, inputs, labels, edges, micro_batch, loss_fn, rows=None, products="highest"
):
    (inputs, labels), size = _micro_batches((inputs, labels), micro_batch)
    pairs = _pairs(edges, rows)

    def accumulate(total, mb):
        xs, gs = _values_and_cotangents(model, params, *mb, loss_fn, 1.0 / size, rows)
        return total + _pair_gradients(xs, gs, pairs, products), None

    shape = jax.eval_shape(
        lambda mb: _pair_gradients(
            *_values_and_cotangents(model, params, *mb, loss_fn, 1, rows), pairs
        ),
        jax.tree_util.tree_map(lambda x: x[0], (inputs, labels)),
    )
    with jax.default_matmul_precision("highest"):
        total, _ = jax.lax.scan(accumulate, jnp.zeros(shape.shape, jnp.float32), (inputs, labels))
    return total


def edge_gradients(
    model,
    params,
    inputs,
    labels,
    *,
    edges: Sequence[graph.Edge] | None = None,
    micro_batch: int | None = None,
    loss_fn: Callable = softmax_xent,
    mesh: Mesh | None = None,
    adapted: bool = False,
    products: str = "highest",
):
    """The linear-adapter gradients G_ij of docs/spec.md §3 for a batch.

    Args:
      model: a graph model (e.g. vit.Model); its own edges are ignored unless
        `adapted`.
      params: its parameters (an `adapters` entry is ignored unless `adapted`).
      inputs: the model's input pytree, leading axis B (images NHWC for a ViT).
      labels: (B,) integer labels.
      edges: None for all n^2 edges, else the edges to compute. With
        `adapted`, None means every edge without one of the model's adapters,
        and an edge with one is refused.
      micro_batch: examples per forward/backward; G is accumulated over the
        B / micro_batch micro-batches, exactly equal to one big batch.
      loss_fn: per-example loss(logits, labels) -> (B,); G is the gradient of its mean.
      mesh: None computes on one device. With a mesh, each micro-batch (a
        multiple of mesh.size) runs data-parallel over all its devices, and G
        is accumulated sharded over the edge axis (all mesh axes flattened):
        each device holds one contiguous block of E_padded / mesh.size matrices.
        The node values and cotangents stay sharded over the micro-batch's
        rows; each device adds its edges' x_i^T g_j from the rows it holds and
        passes them round a ring of the mesh.size devices (mesh.size steps).
      adapted: False scores the plain backbone (docs/spec.md §3). True keeps the
        model's own adapters, trained, in place, and G_ij is the gradient at
        W = 0 of a zero linear adapter newly added on (i, j) of that adapted
        model (docs/spec.md §9; see the module docstring); on a model without
        adapters it is the plain G exactly.
      products: the precision of the products x_i^T g_j, a key of PRODUCTS
        ("highest" float32 by default; the forward and backward stay "highest").
    Returns:
      float32 (n, n, d, d) for edges=None (zero at the model's own edges when
      `adapted`), else (E, d, d) in the order of `edges`.
      With a mesh: (E_padded, d, d) sharded over the edge axis, rows in the order
      of `edges` (or of the default edges for None) and E_padded - E zero rows after.
    """
    everything, rows = edges is None, None
    _check_products(products)
    if _check_adapted(adapted) and model.edges:
        edges = _adapted_candidates(model, edges)
        rows = _adapted_rows(model.edges, edges)
    elif edges is not None:
        edges = graph.validate_edges(edges, model.depth)
    if mesh is None:
        g = _edge_gradients(
            model, params, inputs, labels, edges, micro_batch, loss_fn, rows, products
        )
        return _scatter(g, edges, graph.num_nodes(model.depth)) if everything and rows else g
    if edges == ():
        raise ValueError("edges is empty; give at least one edge (or None for all n^2 edges).")
    _check_mesh_batch(mesh, (inputs, labels), micro_batch)
    edges = graph.candidates(model.depth) if edges is None else edges
    return _sharded_edge_gradients(
        model, params, inputs, labels, edges, micro_batch, None, loss_fn, mesh, rows, products
    )


@functools.partial(jax.jit, static_argnames=("edges", "n"))
def _scatter(g, edges: tuple[graph.Edge, ...], n: int):
    """(E, d, d) gradients of `edges` into a zero (n, n, d, d) array."""
    src, dst = np.array(edges, np.int32).T
    return jnp.zeros((n, n, *g.shape[1:]), g.dtype).at[src, dst].set(g)


@functools.partial(
    jax.jit,
    static_argnames=(
        "model",
        "edges",
        "how",
        "eta",
        "method",
        "micro_batch",
        "chunk",
        "loss_fn",
        "rows",
        "products",
    ),
)
def _score_edges(
    model, params, inputs, labels, edges, how, eta, method, micro_batch, chunk, loss_fn, rows,
    products,
):  # fmt: skip
    n = graph.num_nodes(model.depth)
    if chunk is None:
        g = _edge_gradients(
            model, params, inputs, labels, edges, micro_batch, loss_fn, rows, products
        )
        scores = aggregate(g.reshape(-1, *g.shape[-2:]), how, eta, method)
    else:
        with jax.default_matmul_precision("highest"):
            xs, gs = _all_nodes(model, params, inputs, labels, micro_batch, loss_fn, rows)
        edges = edges or graph.candidates(model.depth)
        pairs = _pairs(edges, rows)
        scores = _chunked_scores(xs, gs, pairs, how, eta, method, chunk, products)
    src, dst = zip(*(edges or graph.candidates(model.depth)))
    matrix = jnp.full((n, n), -jnp.inf, jnp.float32)
    return matrix.at[np.array(src), np.array(dst)].set(scores.astype(jnp.float32))


def _chunked_scores(xs, gs, edges, how, eta, method, chunk, products):
    """Scores of `edges`, `chunk` matrices at a time: memory chunk * d^2, not E * d^2."""
    num = len(edges)
    pad = -num % chunk
    pairs = np.array(list(edges) + [edges[0]] * pad, np.int32).reshape(-1, chunk, 2)

    def one_edge(pair):
        return jnp.dot(xs[pair[0]].T, gs[pair[1]], precision=PRODUCTS[products])

    def one_chunk(block):
        return aggregate(jax.lax.map(one_edge, block), how, eta, method)

    return jax.lax.map(one_chunk, pairs).reshape(-1)[:num]


def score_edges(
    model,
    params,
    inputs,
    labels,
    *,
    candidates: Sequence[graph.Edge] | None = None,
    aggregation: str = "srank",
    eta: float = 0.01,
    micro_batch: int | None = None,
    chunk: int | None = None,
    loss_fn: Callable = softmax_xent,
    srank_method: str = "auto",
    mesh: Mesh | None = None,
    adapted: bool = False,
    products: str = "highest",
):
    """Scores every candidate edge from one forward and one backward per micro-batch.

    Args:
      model, params, inputs, labels, micro_batch, loss_fn, adapted: as
        `edge_gradients` (adapted=True scores new adapters on top of the
        model's trained ones).
      candidates: edges to score (default all n^2; with `adapted`, all n^2
        minus the model's own edges, which may not be candidates); others get -inf.
      aggregation: one of AGGREGATIONS (docs/spec.md §3), srank by default.
      eta: srank threshold in (0, 1).
      chunk: None holds all candidate G_ij at once (E * d^2 floats, accumulated
        over micro-batches). An int first keeps the node values and cotangents of
        the whole batch (2 n B T d floats; with `adapted`, up to 5 n: the rows
        of `_adapted_rows`) and then reduces `chunk` edges at a time to
        scores, so G memory is chunk * d^2, independent of n^2.
        With a mesh, G is always accumulated (sharded) and `chunk` bounds the
        edges whose x_i, g_j a device copies out of the rows it holds at once
        (2 chunk M T d / mesh.size floats, M the micro-batch); None means
        MESH_CHUNK edges.
      srank_method: one of METHODS (see `srank`).
      products: the precision of the products x_i^T g_j, a key of PRODUCTS.
      mesh: None scores on one device. With a mesh, G is accumulated sharded
        over the edge axis as in `edge_gradients`, then a separate jit reduces
        each device's block to scores in place, one matrix at a time; only the
        E_padded scores leave the devices. Params may come replicated or
        sharded (e.g. FSDP); they are used as they are.
    Returns:
      float32 (n, n) scores, -inf at non-candidates.
    """
    eta, method = _check_score_args(aggregation, eta, chunk, srank_method)
    _check_products(products)
    edges, rows = _targets(model, candidates, adapted)
    # srank turns NaN gradients into rank 0, so bad inputs must be caught before.
    models.check_batch(model, inputs, labels, "score_edges", values=True)
    if mesh is not None:
        _check_mesh_batch(mesh, (inputs, labels), micro_batch)
        edges = edges or graph.candidates(model.depth)
        g = _sharded_edge_gradients(
            model, params, inputs, labels, edges, micro_batch, chunk, loss_fn, mesh, rows, products
        )
        n = graph.num_nodes(model.depth)
        scores = _sharded_scores(g, edges, n, aggregation, eta, method, mesh)
    else:
        scores = _score_edges(
            model,
            params,
            inputs,
            labels,
            edges,
            aggregation,
            eta,
            method,
            micro_batch,
            chunk,
            loss_fn,
            rows,
            products,
        )
    _warn_if_constant(scores)
    return scores


def _check_products(products) -> None:
    if products not in PRODUCTS:
        raise ValueError(f"Unknown products precision {products!r}; valid: {tuple(PRODUCTS)}.")


def _warn_if_constant(scores) -> None:
    """A loud warning when every candidate scores the same: no placement can follow from it.

    The usual cause is a zero (untrained) head: dL/dx_j is then zero at every
    node, so every G_ij and every score is 0 (docs/spec.md §3 pre-trains the head first).
    """
    s = np.asarray(scores)
    finite = s[np.isfinite(s)]
    if finite.size and np.all(finite == finite[0]):
        message = (
            f"score_edges: all {finite.size} candidate scores equal {finite[0]:g}, so they rank "
            f"no edge above another. A zero or untrained head gives zero gradients at every "
            f"node: pre-train the head first (docs/spec.md §3 step 1; train.fit_head)."
        )
        warnings.warn(message, ConstantScoresWarning, stacklevel=3)


class ConstantScoresWarning(UserWarning):
    """score_edges found every candidate's score equal (see `_warn_if_constant`)."""


def _check_score_args(aggregation, eta, chunk, srank_method) -> tuple[float, str]:
    """Validates score_edges' options; returns eta and the resolved srank method."""
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"Unknown aggregation {aggregation!r}; valid: {AGGREGATIONS}.")
    eta = _check_eta(eta)
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
        raise ValueError(f"chunk must be a positive integer or None, got {chunk!r}.")
    return eta, _check_method(srank_method)


# --- Sharded over the edge axis of a mesh ---------------------------------------------


def _edge_spec(mesh: Mesh) -> P:
    """The edge axis: all mesh axes flattened, one contiguous block of edges per device."""
    return P(tuple(mesh.axis_names))


def _check_mesh_batch(mesh: Mesh, batch, micro_batch: int | None) -> None:
    _, mb = _batch_sizes(batch, micro_batch)
    if mb % mesh.size:
        raise ValueError(
            f"The micro-batch of {mb} examples must be divisible by the {mesh.size} devices of "
            f"the mesh {dict(mesh.shape)}: each micro-batch is split over all of them."
        )


def _padded_edges(edges, num_devices: int) -> tuple[np.ndarray, np.ndarray]:
    """(E_padded, 2) int32 pairs, E_padded a multiple of num_devices, and (E_padded,) weights.

    The padding repeats the first edge with weight 0, so its rows of G stay zero.
    """
    pad = -len(edges) % num_devices
    pairs = np.array(list(edges) + [edges[0]] * pad, np.int32)
    weights = np.array([1.0] * len(edges) + [0.0] * pad, np.float32)
    return pairs, weights


def _add_block(total, pairs, weights, xs, gs, chunk: int | None, products: str = "highest"):
    """Adds x_i^T g_j to one device's (E_local, d, d) block of G, `chunk` edges at a time.

    pairs (E_local, 2) and weights (E_local,) are the device's edges; xs and gs
    (n, M_local, d) node values and cotangents of some rows of the micro-batch.
    """
    num = total.shape[0]
    size = min(chunk or MESH_CHUNK, num)

    def add_chunk(c, total):
        # The last chunk is shifted back to fit; rows an earlier chunk added get weight 0.
        start = jnp.minimum(c * size, num - size)
        fresh = start + jnp.arange(size) >= c * size
        w = jnp.where(fresh, jax.lax.dynamic_slice_in_dim(weights, start, size), 0.0)
        src, dst = jax.lax.dynamic_slice_in_dim(pairs, start, size).T
        g = jnp.einsum("emd,emf->edf", xs[src], gs[dst], precision=PRODUCTS[products])
        old = jax.lax.dynamic_slice_in_dim(total, start, size)
        return jax.lax.dynamic_update_slice_in_dim(total, old + w[:, None, None] * g, start, 0)

    # A loop carry is updated in place, so the block is never copied.
    return jax.lax.fori_loop(0, -(-num // size), add_chunk, total)


def _add_block_ring(
    total, pairs, weights, xs, gs, chunk: int | None, axes: tuple[str, ...], products: str
):
    """Adds x_i^T g_j over all rows of the micro-batch to one device's block of G.

    Inside a shard_map over all mesh `axes`, D devices: xs and gs are the
    device's own (n, M / D, d) rows of the micro-batch. Each step adds the rows
    the device holds (`_add_block`) while they are sent on to the next device
    of a ring, so after D steps every device has added every row once; only
    two row blocks (the held and the incoming) are alive at a time.
    """
    num_devices = jax.lax.axis_size(axes)
    ring = [(k, (k + 1) % num_devices) for k in range(num_devices)]

    def step(_, carry):
        total, rows = carry
        # Independent of the add, so the transfer can overlap it.
        incoming = jax.lax.ppermute(rows, axes, ring)
        return _add_block(total, pairs, weights, *rows, chunk, products), incoming

    total, rows = jax.lax.fori_loop(0, num_devices - 1, step, (total, (xs, gs)))
    return _add_block(total, pairs, weights, *rows, chunk, products)


@functools.partial(
    jax.jit,
    static_argnames=(
        "model",
        "edges",
        "micro_batch",
        "chunk",
        "loss_fn",
        "mesh",
        "rows",
        "products",
    ),
)
def _sharded_edge_gradients(
    model, params, inputs, labels, edges, micro_batch, chunk, loss_fn, mesh, rows=None,
    products="highest",
):  # fmt: skip
    """(E_padded, d, d) G of `edges`, accumulated over micro-batches sharded over the edges."""
    (inputs, labels), size = _micro_batches((inputs, labels), micro_batch)
    axes = tuple(mesh.axis_names)

    def shard(tree, spec):
        return jax.lax.with_sharding_constraint(tree, NamedSharding(mesh, spec))

    pairs, weights = _padded_edges(_pairs(edges, rows), mesh.size)
    add = jax.shard_map(
        functools.partial(_add_block_ring, chunk=chunk, axes=axes, products=products),
        mesh=mesh,
        in_specs=(P(axes), P(axes), P(axes), P(None, axes), P(None, axes)),
        out_specs=P(axes),
    )

    def accumulate(total, mb):
        mb = shard(mb, P(axes))
        xs, gs = _values_and_cotangents(model, params, *mb, loss_fn, 1 / size, rows)
        # Rows are (example, token) flattened example-major, so splitting them over the
        # devices as the examples are split leaves each device's rows where they were made.
        return add(total, pairs, weights, *shard((xs, gs), P(None, axes))), None

    first = jax.tree_util.tree_map(lambda x: x[0], (inputs, labels))
    xs = jax.eval_shape(lambda mb: node_values_and_cotangents(model, params, *mb)[0], first)
    total = shard(jnp.zeros((len(pairs), xs.shape[-1], xs.shape[-1]), jnp.float32), P(axes))
    with jax.default_matmul_precision("highest"):
        total, _ = jax.lax.scan(accumulate, total, shard((inputs, labels), P(None, axes)))
    return total


@functools.partial(jax.jit, static_argnames=("edges", "n", "how", "eta", "method", "mesh"))
def _sharded_scores(g, edges, n, how, eta, method, mesh):
    """(n, n) scores of the edge-sharded (E_padded, d, d) G; each device reduces its block."""
    one = functools.partial(aggregate, how=how, eta=eta, method=method)
    spec = _edge_spec(mesh)
    # One matrix at a time, in a jit of its own: a batched SVD in the same jit as the
    # batch-sharded forward/backward deadlocked on 8 CPU devices.
    scores = jax.shard_map(
        lambda block: jax.lax.map(one, block), mesh=mesh, in_specs=spec, out_specs=spec
    )(g)
    src, dst = np.array(edges, np.int32).T
    matrix = jnp.full((n, n), -jnp.inf, jnp.float32)
    matrix = matrix.at[src, dst].set(scores[: len(edges)].astype(jnp.float32))
    # Replicated, so every process of a multi-host run can read the whole matrix.
    return jax.lax.with_sharding_constraint(matrix, NamedSharding(mesh, P()))


def _abstract(tree, sharding: NamedSharding):
    """ShapeDtypeStructs of a pytree; a leaf without a NamedSharding gets `sharding`."""

    def one(x):
        own = getattr(x, "sharding", None)
        own = own if isinstance(own, NamedSharding) else sharding
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=own)

    return jax.tree_util.tree_map(one, tree)


def _memory_stats(lowered, prefix: str) -> dict[str, int | None]:
    """Per-device argument/output/temp bytes of a compiled jit (None if not reported)."""
    stats = lowered.compile().memory_analysis()
    fields = {"args": "argument", "output": "output", "temp": "temp"}
    return {
        f"{prefix}_{key}": getattr(stats, f"{name}_size_in_bytes", None)
        for key, name in fields.items()
    }


def scoring_memory(
    model,
    params,
    inputs,
    labels,
    *,
    mesh: Mesh,
    candidates: Sequence[graph.Edge] | None = None,
    micro_batch: int | None = None,
    chunk: int | None = None,
    srank_method: str = "auto",
    aggregation: str = "srank",
    eta: float = 0.01,
    loss_fn: Callable = softmax_xent,
    adapted: bool = False,
) -> dict[str, int | None]:
    """Per-device bytes of `score_edges(..., mesh=mesh)`, from its compiled jits.

    Nothing is allocated: params, inputs and labels may be jax.ShapeDtypeStruct
    trees. A leaf without a NamedSharding counts as replicated (params) or
    sharded over the batch on all mesh axes (inputs, labels).

    Returns:
      bytes per device:
      g_block: the device's block of G, E_padded / mesh.size * d * d * 4.
      nodes_local: the rows of a micro-batch's node values and cotangents that
        a device holds while they go round the ring: its own share and the
        incoming one, 2 * 2 n (micro_batch T / mesh.size) d * 4 (with
        `adapted`, the stacked rows of `_adapted_rows` instead of 2 n).
      gradients_{args,output,temp}, scores_{args,output,temp}: memory_analysis()
        of the two compiled jits (None where the backend reports none).
      peak: the larger live set of the two jits: gradients args + output + temp
        while G is accumulated; gradients args + scores args + output + temp
        while it is reduced (the caller still holds params and inputs, and G is
        the scores jit's argument). At least g_block + nodes_local, which the
        first jit holds at once; missing entries count 0.
    """
    eta, method = _check_score_args(aggregation, eta, chunk, srank_method)
    _check_mesh_batch(mesh, (inputs, labels), micro_batch)
    edges, rows = _targets(model, candidates, adapted)
    edges = edges or graph.candidates(model.depth)
    edge_axis = NamedSharding(mesh, _edge_spec(mesh))
    params = _abstract(params, NamedSharding(mesh, P()))
    inputs, labels = _abstract((inputs, labels), edge_axis)
    gradients = _sharded_edge_gradients.lower(
        model, params, inputs, labels, edges, micro_batch, chunk, loss_fn, mesh, rows
    )
    g = jax.ShapeDtypeStruct(gradients.out_info.shape, jnp.float32, sharding=edge_axis)
    n = graph.num_nodes(model.depth)
    scores = _sharded_scores.lower(g, edges, n, aggregation, eta, method, mesh)
    nodes = _nodes_bytes(model, params, (inputs, labels), micro_batch, loss_fn, rows)
    out = {
        "g_block": math.prod(g.shape) // mesh.size * 4,
        "nodes_local": 2 * nodes // mesh.size,  # the device's share and the incoming one
        **_memory_stats(gradients, "gradients"),
        **_memory_stats(scores, "scores"),
    }
    return {**out, "peak": _peak(out)}


def _nodes_bytes(model, params, batch, micro_batch, loss_fn, rows=None) -> int:
    """Bytes of one micro-batch's node values and cotangents, 2 n M T d * 4 when plain."""
    _, mb = _batch_sizes(batch, micro_batch)
    one = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct((mb, *x.shape[1:]), x.dtype), batch)
    nodes = jax.eval_shape(
        lambda p, mb: _values_and_cotangents(model, p, *mb, loss_fn, 1, rows), params, one
    )
    return sum(math.prod(x.shape) * 4 for x in nodes)


def _peak(memory: dict[str, int | None]) -> int:
    """scoring_memory's peak; see its docstring."""
    m = {k: v or 0 for k, v in memory.items()}
    held = m["gradients_args"]  # params and inputs, alive across both jits
    return max(
        held + m["gradients_output"] + m["gradients_temp"],
        held + m["scores_args"] + m["scores_output"] + m["scores_temp"],
        m["g_block"] + m["nodes_local"],
    )


def scoring_flops(num_examples: int, seq_len: int, width: int, num_edges: int) -> dict[str, float]:
    """docs/spec.md §7 cost of the scoring matmuls: D n^2 (2 T - 1) d^2 + (D n^2 d^2 + n^2 d^2).

    `num_edges` plays n^2. The first term is the products x_i^T g_j, the second
    the paper's accumulation over examples.
    """
    products = num_examples * num_edges * (2 * seq_len - 1) * width**2
    accumulate = num_examples * num_edges * width**2 + num_edges * width**2
    return {
        "products": float(products),
        "accumulate": float(accumulate),
        "total": float(products + accumulate),
    }


def srank_reference(matrix: np.ndarray, eta: float = 0.01) -> int:
    """Float64 NumPy srank of one matrix (the reference the tests compare against)."""
    s = np.linalg.svd(np.asarray(matrix, np.float64), compute_uv=False)
    if s.sum() == 0:
        return 0
    return (
        int(np.searchsorted(np.cumsum(s), (1 - eta) * s.sum()) + 1)
        if math.isfinite(s.sum())
        else -1
    )
