"""Scoring every edge at once (SPEC §3, paper Eq. 6-7).

With a zero-initialised linear adapter W_ij on edge (i, j) the forward is the
plain backbone, and the gradient of the mean loss w.r.t. W_ij is
G_ij = sum over examples and tokens of x_i^T dL/dx_j. One forward gives every
node value x_i, one backward every cotangent dL/dx_j, so all n^2 matrices come
from 2n tensors; no per-edge backward pass is ever run. A score s(i, j) is an
aggregation of G_ij, the stable rank (srank) by default.

All of it runs in float32 at "highest" matmul precision: many edges sit within
1e-4 of the srank threshold, so bf16 or TF32 would change the placement.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gga_jax import graph

HIGHEST = jax.lax.Precision.HIGHEST
AGGREGATIONS = ("srank", "fro", "spectral", "nuclear", "min_col_sum", "max_col_sum")


def softmax_xent(logits, labels):
    """Per-example softmax cross-entropy with integer labels, shape (B,)."""
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def _check_eta(eta) -> float:
    if isinstance(eta, bool) or not isinstance(eta, numbers.Real) or not 0.0 < eta < 1.0:
        raise ValueError(f"eta must be a number in (0, 1), got {eta!r}.")
    return float(eta)


def srank(matrices, eta: float = 0.01):
    """Stable rank of SPEC §3: smallest k with sum_{m<=k} s_m >= (1 - eta) sum_m s_m.

    Args:
      matrices: (..., a, b) batch of matrices.
      eta: threshold in (0, 1).
    Returns:
      int32 (...,) ranks; a zero matrix has srank 0. Uses a float32 SVD: unlike
      eigenvalues of the Gram matrix it reproduces the float64 reference.
    """
    eta = _check_eta(eta)
    s = jnp.linalg.svd(matrices.astype(jnp.float32), compute_uv=False)
    return _srank_from_singular_values(s, eta)


def _srank_from_singular_values(s, eta):
    cum = jnp.cumsum(s, axis=-1)
    total = cum[..., -1:]
    k = jnp.sum(cum < (1.0 - eta) * total, axis=-1) + 1
    return jnp.where(total[..., 0] > 0, k, 0).astype(jnp.int32)


def aggregate(matrices, how: str = "srank", eta: float = 0.01):
    """Reduces (..., d, d) edge gradients to scores (...,) with one of AGGREGATIONS.

    "fro", "spectral" and "nuclear" are the matrix norms; "min_col_sum" and
    "max_col_sum" are min/max over output columns of the summed absolute
    entries (the paper's Table 4).
    """
    m = matrices.astype(jnp.float32)
    if how == "srank":
        return srank(m, eta)
    if how == "fro":
        return jnp.sqrt(jnp.sum(m * m, axis=(-2, -1)))
    if how in ("spectral", "nuclear"):
        s = jnp.linalg.svd(m, compute_uv=False)
        return s[..., 0] if how == "spectral" else jnp.sum(s, axis=-1)
    if how in ("min_col_sum", "max_col_sum"):
        col = jnp.sum(jnp.abs(m), axis=-2)
        return jnp.min(col, axis=-1) if how == "min_col_sum" else jnp.max(col, axis=-1)
    raise ValueError(f"Unknown aggregation {how!r}; valid: {AGGREGATIONS}.")


def _micro_batches(tree, micro_batch: int | None):
    """Reshapes every leaf (B, ...) to (B / micro_batch, micro_batch, ...)."""
    sizes = {x.shape[0] for x in jax.tree_util.tree_leaves(tree)}
    if len(sizes) != 1:
        raise ValueError(f"Inputs and labels disagree on the batch size: {sorted(sizes)}.")
    (size,) = sizes
    mb = size if micro_batch is None else micro_batch
    if isinstance(mb, bool) or not isinstance(mb, int) or mb < 1 or size % mb:
        raise ValueError(
            f"micro_batch={micro_batch!r} must be a positive divisor of the batch size {size}."
        )
    return jax.tree_util.tree_map(lambda x: x.reshape(size // mb, mb, *x.shape[1:]), tree), size


def node_values_and_cotangents(model, params, inputs, labels, loss_fn=softmax_xent, scale=None):
    """One forward and one backward of the plain backbone (no adapters).

    Returns (xs, gs), each float32 (n, B * T, d): the node values x_k and the
    cotangents dL/dx_k of L = sum of per-example losses * scale (default 1/B).
    """
    plain = model.clone(edges=())
    params = {k: v for k, v in params.items() if k != "adapters"}
    scale = 1.0 / jax.tree_util.tree_leaves(labels)[0].shape[0] if scale is None else scale

    def apply(perturbations):
        variables = {"params": params, "perturbations": perturbations}
        logits, out = plain.apply(variables, inputs, return_nodes=True, perturb_nodes=True)
        return jnp.sum(loss_fn(logits, labels)) * scale, out["nodes"]

    shapes = jax.eval_shape(lambda: plain.apply({"params": params}, inputs, return_nodes=True)[1])
    zeros = {f"node_{k}": jnp.zeros(x.shape, jnp.float32) for k, x in enumerate(shapes["nodes"])}
    (_, nodes), cot = jax.value_and_grad(apply, has_aux=True)(zeros)
    flat = lambda x: x.reshape(-1, x.shape[-1]).astype(jnp.float32)  # noqa: E731
    xs = jnp.stack([flat(x) for x in nodes])
    gs = jnp.stack([flat(cot[f"node_{k}"]) for k in range(len(nodes))])
    return xs, gs


def _pair_gradients(xs, gs, edges: tuple[graph.Edge, ...] | None):
    """G for all pairs as (n, n, d, d) when edges is None, else (E, d, d)."""
    if edges is None:
        return jnp.einsum("imd,jme->ijde", xs, gs, precision=HIGHEST)
    src, dst = (np.asarray(a, np.int32) for a in zip(*edges))
    return jnp.einsum("emd,emf->edf", xs[src], gs[dst], precision=HIGHEST)


def _all_nodes(model, params, inputs, labels, micro_batch, loss_fn):
    """(xs, gs) of the whole batch, computed one micro-batch at a time."""
    (inputs, labels), size = _micro_batches((inputs, labels), micro_batch)

    def one(_, mb):
        return None, node_values_and_cotangents(model, params, *mb, loss_fn, 1.0 / size)

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


@functools.partial(jax.jit, static_argnames=("model", "edges", "micro_batch", "loss_fn"))
def _edge_gradients(model, params, inputs, labels, edges, micro_batch, loss_fn):
    (inputs, labels), size = _micro_batches((inputs, labels), micro_batch)

    def accumulate(total, mb):
        xs, gs = node_values_and_cotangents(model, params, *mb, loss_fn, 1.0 / size)
        return total + _pair_gradients(xs, gs, edges), None

    shape = jax.eval_shape(
        lambda mb: _pair_gradients(*node_values_and_cotangents(model, params, *mb, loss_fn), edges),
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
):
    """The linear-adapter gradients G_ij of SPEC §3 for a batch.

    Args:
      model: a graph model (e.g. vit.Model); its own edges are ignored.
      params: its parameters (an `adapters` entry is ignored).
      inputs: the model's input pytree, leading axis B (images NHWC for a ViT).
      labels: (B,) integer labels.
      edges: None for all n^2 edges, else the edges to compute.
      micro_batch: examples per forward/backward; G is accumulated over the
        B / micro_batch micro-batches, exactly equal to one big batch.
      loss_fn: per-example loss(logits, labels) -> (B,); G is the gradient of its mean.
    Returns:
      float32 (n, n, d, d) for edges=None, else (E, d, d) in the order of `edges`.
    """
    edges = None if edges is None else graph.validate_edges(edges, model.depth)
    return _edge_gradients(model, params, inputs, labels, edges, micro_batch, loss_fn)


@functools.partial(
    jax.jit, static_argnames=("model", "edges", "how", "eta", "micro_batch", "chunk", "loss_fn")
)
def _score_edges(model, params, inputs, labels, edges, how, eta, micro_batch, chunk, loss_fn):
    n = graph.num_nodes(model.depth)
    if chunk is None:
        g = _edge_gradients(model, params, inputs, labels, edges, micro_batch, loss_fn)
        scores = aggregate(g.reshape(-1, *g.shape[-2:]), how, eta)
    else:
        with jax.default_matmul_precision("highest"):
            xs, gs = _all_nodes(model, params, inputs, labels, micro_batch, loss_fn)
        scores = _chunked_scores(xs, gs, edges or graph.candidates(model.depth), how, eta, chunk)
    src, dst = zip(*(edges or graph.candidates(model.depth)))
    matrix = jnp.full((n, n), -jnp.inf, jnp.float32)
    return matrix.at[np.array(src), np.array(dst)].set(scores.astype(jnp.float32))


def _chunked_scores(xs, gs, edges, how, eta, chunk):
    """Scores of `edges`, `chunk` matrices at a time: memory chunk * d^2, not E * d^2."""
    num = len(edges)
    pad = -num % chunk
    pairs = np.array(list(edges) + [edges[0]] * pad, np.int32).reshape(-1, chunk, 2)

    def one_edge(pair):
        return jnp.dot(xs[pair[0]].T, gs[pair[1]], precision=HIGHEST)

    def one_chunk(block):
        return aggregate(jax.lax.map(one_edge, block), how, eta)

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
):
    """Scores every candidate edge from one forward and one backward per micro-batch.

    Args:
      model, params, inputs, labels, micro_batch, loss_fn: as `edge_gradients`.
      candidates: edges to score (default all n^2); others get -inf.
      aggregation: one of AGGREGATIONS (SPEC §3), srank by default.
      eta: srank threshold in (0, 1).
      chunk: None holds all candidate G_ij at once (E * d^2 floats, accumulated
        over micro-batches). An int first keeps the node values and cotangents of
        the whole batch (2 n B T d floats) and then reduces `chunk` edges at a
        time to scores, so G memory is chunk * d^2, independent of n^2.
    Returns:
      float32 (n, n) scores, -inf at non-candidates.
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"Unknown aggregation {aggregation!r}; valid: {AGGREGATIONS}.")
    eta = _check_eta(eta)
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
        raise ValueError(f"chunk must be a positive integer or None, got {chunk!r}.")
    edges = _canonical_candidates(model, candidates)
    return _score_edges(
        model, params, inputs, labels, edges, aggregation, eta, micro_batch, chunk, loss_fn
    )


def scoring_flops(num_examples: int, seq_len: int, width: int, num_edges: int) -> dict[str, float]:
    """SPEC §7 cost of the scoring matmuls: D n^2 (2 T - 1) d^2 + (D n^2 d^2 + n^2 d^2).

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
