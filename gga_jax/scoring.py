"""Scoring every edge at once (SPEC §3, paper Eq. 6-7).

With a zero-initialised linear adapter W_ij on edge (i, j) the forward is the
plain backbone, and the gradient of the mean loss w.r.t. W_ij is
G_ij = sum over examples and tokens of x_i^T dL/dx_j. One forward gives every
node value x_i, one backward every cotangent dL/dx_j, so all n^2 matrices come
from 2n tensors; no per-edge backward pass is ever run. A score s(i, j) is an
aggregation of G_ij, the stable rank (srank) by default.

All of it runs in float32 at "highest" matmul precision: many edges sit within
1e-4 of the srank threshold, so bf16 or TF32 would change the placement. On a
GPU srank's singular values come from float64 Gram eigenvalues instead of a
float32 SVD (see `srank`).

With a jax.sharding.Mesh the micro-batches run data-parallel and G is held
sharded over the edges, one block per device, then reduced to scores where it
lies (`score_edges`). A micro-batch's node values and cotangents stay sharded
over its rows: each device adds x_i^T g_j of its edges from the rows it holds,
then passes them on round a ring of all devices, so no device ever holds the
whole micro-batch's nodes. `scoring_memory` plans the per-device bytes of that.
"""

from __future__ import annotations

import functools
import math
import numbers
import warnings
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from gga_jax import graph, models

HIGHEST = jax.lax.Precision.HIGHEST
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
    """Stable rank of SPEC §3: smallest k with sum_{m<=k} s_m >= (1 - eta) sum_m s_m.

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
    mesh: Mesh | None = None,
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
      mesh: None computes on one device. With a mesh, each micro-batch (a
        multiple of mesh.size) runs data-parallel over all its devices, and G
        is accumulated sharded over the edge axis (all mesh axes flattened):
        each device holds one contiguous block of E_padded / mesh.size matrices.
        The node values and cotangents stay sharded over the micro-batch's
        rows; each device adds its edges' x_i^T g_j from the rows it holds and
        passes them round a ring of the mesh.size devices (mesh.size steps).
    Returns:
      float32 (n, n, d, d) for edges=None, else (E, d, d) in the order of `edges`.
      With a mesh: (E_padded, d, d) sharded over the edge axis, rows in the order
      of `edges` (or graph.candidates for None) and E_padded - E zero rows after.
    """
    edges = None if edges is None else graph.validate_edges(edges, model.depth)
    if mesh is None:
        return _edge_gradients(model, params, inputs, labels, edges, micro_batch, loss_fn)
    if edges == ():
        raise ValueError("edges is empty; give at least one edge (or None for all n^2 edges).")
    _check_mesh_batch(mesh, (inputs, labels), micro_batch)
    edges = graph.candidates(model.depth) if edges is None else edges
    return _sharded_edge_gradients(
        model, params, inputs, labels, edges, micro_batch, None, loss_fn, mesh
    )


@functools.partial(
    jax.jit,
    static_argnames=("model", "edges", "how", "eta", "method", "micro_batch", "chunk", "loss_fn"),
)
def _score_edges(
    model, params, inputs, labels, edges, how, eta, method, micro_batch, chunk, loss_fn
):
    n = graph.num_nodes(model.depth)
    if chunk is None:
        g = _edge_gradients(model, params, inputs, labels, edges, micro_batch, loss_fn)
        scores = aggregate(g.reshape(-1, *g.shape[-2:]), how, eta, method)
    else:
        with jax.default_matmul_precision("highest"):
            xs, gs = _all_nodes(model, params, inputs, labels, micro_batch, loss_fn)
        edges = edges or graph.candidates(model.depth)
        scores = _chunked_scores(xs, gs, edges, how, eta, method, chunk)
    src, dst = zip(*(edges or graph.candidates(model.depth)))
    matrix = jnp.full((n, n), -jnp.inf, jnp.float32)
    return matrix.at[np.array(src), np.array(dst)].set(scores.astype(jnp.float32))


def _chunked_scores(xs, gs, edges, how, eta, method, chunk):
    """Scores of `edges`, `chunk` matrices at a time: memory chunk * d^2, not E * d^2."""
    num = len(edges)
    pad = -num % chunk
    pairs = np.array(list(edges) + [edges[0]] * pad, np.int32).reshape(-1, chunk, 2)

    def one_edge(pair):
        return jnp.dot(xs[pair[0]].T, gs[pair[1]], precision=HIGHEST)

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
        With a mesh, G is always accumulated (sharded) and `chunk` bounds the
        edges whose x_i, g_j a device copies out of the rows it holds at once
        (2 chunk M T d / mesh.size floats, M the micro-batch); None means
        MESH_CHUNK edges.
      srank_method: one of METHODS (see `srank`).
      mesh: None scores on one device. With a mesh, G is accumulated sharded
        over the edge axis as in `edge_gradients`, then a separate jit reduces
        each device's block to scores in place, one matrix at a time; only the
        E_padded scores leave the devices. Params may come replicated or
        sharded (e.g. FSDP); they are used as they are.
    Returns:
      float32 (n, n) scores, -inf at non-candidates.
    """
    eta, method = _check_score_args(aggregation, eta, chunk, srank_method)
    edges = _canonical_candidates(model, candidates)
    # srank turns NaN gradients into rank 0, so bad inputs must be caught before.
    models.check_batch(model, inputs, labels, "score_edges", values=True)
    if mesh is not None:
        _check_mesh_batch(mesh, (inputs, labels), micro_batch)
        edges = edges or graph.candidates(model.depth)
        g = _sharded_edge_gradients(
            model, params, inputs, labels, edges, micro_batch, chunk, loss_fn, mesh
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
        )
    _warn_if_constant(scores)
    return scores


def _warn_if_constant(scores) -> None:
    """A loud warning when every candidate scores the same: no placement can follow from it.

    The usual cause is a zero (untrained) head: dL/dx_j is then zero at every
    node, so every G_ij and every score is 0 (SPEC §3 pre-trains the head first).
    """
    s = np.asarray(scores)
    finite = s[np.isfinite(s)]
    if finite.size and np.all(finite == finite[0]):
        message = (
            f"score_edges: all {finite.size} candidate scores equal {finite[0]:g}, so they rank "
            f"no edge above another. A zero or untrained head gives zero gradients at every "
            f"node: pre-train the head first (SPEC §3 step 1; train.fit_head)."
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


def _add_block(total, pairs, weights, xs, gs, chunk: int | None):
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
        g = jnp.einsum("emd,emf->edf", xs[src], gs[dst], precision=HIGHEST)
        old = jax.lax.dynamic_slice_in_dim(total, start, size)
        return jax.lax.dynamic_update_slice_in_dim(total, old + w[:, None, None] * g, start, 0)

    # A loop carry is updated in place, so the block is never copied.
    return jax.lax.fori_loop(0, -(-num // size), add_chunk, total)


def _add_block_ring(total, pairs, weights, xs, gs, chunk: int | None, axes: tuple[str, ...]):
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
        return _add_block(total, pairs, weights, *rows, chunk), incoming

    total, rows = jax.lax.fori_loop(0, num_devices - 1, step, (total, (xs, gs)))
    return _add_block(total, pairs, weights, *rows, chunk)


@functools.partial(
    jax.jit, static_argnames=("model", "edges", "micro_batch", "chunk", "loss_fn", "mesh")
)
def _sharded_edge_gradients(
    model, params, inputs, labels, edges, micro_batch, chunk, loss_fn, mesh
):
    """(E_padded, d, d) G of `edges`, accumulated over micro-batches sharded over the edges."""
    (inputs, labels), size = _micro_batches((inputs, labels), micro_batch)
    axes = tuple(mesh.axis_names)

    def shard(tree, spec):
        return jax.lax.with_sharding_constraint(tree, NamedSharding(mesh, spec))

    pairs, weights = _padded_edges(edges, mesh.size)
    add = jax.shard_map(
        functools.partial(_add_block_ring, chunk=chunk, axes=axes),
        mesh=mesh,
        in_specs=(P(axes), P(axes), P(axes), P(None, axes), P(None, axes)),
        out_specs=P(axes),
    )

    def accumulate(total, mb):
        xs, gs = node_values_and_cotangents(model, params, *shard(mb, P(axes)), loss_fn, 1 / size)
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
        incoming one, 2 * 2 n (micro_batch T / mesh.size) d * 4.
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
    edges = _canonical_candidates(model, candidates) or graph.candidates(model.depth)
    edge_axis = NamedSharding(mesh, _edge_spec(mesh))
    params = _abstract(params, NamedSharding(mesh, P()))
    inputs, labels = _abstract((inputs, labels), edge_axis)
    gradients = _sharded_edge_gradients.lower(
        model, params, inputs, labels, edges, micro_batch, chunk, loss_fn, mesh
    )
    g = jax.ShapeDtypeStruct(gradients.out_info.shape, jnp.float32, sharding=edge_axis)
    n = graph.num_nodes(model.depth)
    scores = _sharded_scores.lower(g, edges, n, aggregation, eta, method, mesh)
    nodes = _nodes_bytes(model, params, (inputs, labels), micro_batch, loss_fn)
    out = {
        "g_block": math.prod(g.shape) // mesh.size * 4,
        "nodes_local": 2 * nodes // mesh.size,  # the device's share and the incoming one
        **_memory_stats(gradients, "gradients"),
        **_memory_stats(scores, "scores"),
    }
    return {**out, "peak": _peak(out)}


def _nodes_bytes(model, params, batch, micro_batch, loss_fn) -> int:
    """Bytes of one micro-batch's node values and cotangents, 2 n M T d * 4."""
    _, mb = _batch_sizes(batch, micro_batch)
    one = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct((mb, *x.shape[1:]), x.dtype), batch)
    nodes = jax.eval_shape(
        lambda p, mb: node_values_and_cotangents(model, p, *mb, loss_fn), params, one
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
