"""docs/spec.md §9: adapted scoring, G_ij of a new zero linear adapter on top of trained ones.

The reference is jax.grad through real zero linear adapters (the models'
`linear_edges`) inserted into the adapted model's forward: on every edge at
once (the zero adapters do not change the forward, so each one's gradient at
W = 0 is the one it has alone) and on single edges one at a time.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_sharding import run_on_8_devices

from gga_jax import graph, scoring
from gga_jax.models import text, vit

DEPTH = 2
N = graph.num_nodes(DEPTH)
# Parallel, long-range, sequential and recurrent, chosen so that new adapters meet every
# stage of graph.propagate: (1, 3) and (0, 3) write before node 3's sequential adapter,
# (4, 3) after it; (1, 1) reads node 1 before its recurrent adapter adds; (3, 0) and (1, 0)
# read plain pass-1 values that differ from the adapted ones.
OWN = ((2, 3), (0, 3), (3, 3), (4, 1))
FREE = tuple(e for e in graph.candidates(DEPTH) if e not in OWN)


def tiny(edges=OWN, **kw):
    return vit.Model(
        5, width=16, depth=DEPTH, num_heads=2, mlp_dim=32, patch_size=4, edges=edges, **kw
    )


def perturbed(tree, key, scale):
    """Every leaf plus scale * N(0, 1): trained-looking, non-zero adapters (W_up != 0)."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(key, len(leaves))
    noisy = [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
    return jax.tree_util.tree_unflatten(treedef, noisy)


@pytest.fixture(scope="module")
def setup():
    model = tiny(adapter_rank=4)
    images = jax.random.normal(jax.random.PRNGKey(1), (8, 8, 8, 3))
    labels = jnp.arange(8) % 5
    params = jax.jit(model.init)(jax.random.PRNGKey(0), images)["params"]
    params["head"]["kernel"] = jax.random.normal(jax.random.PRNGKey(2), (16, 5))
    params["cls"] = jax.random.normal(jax.random.PRNGKey(3), params["cls"].shape)
    params["adapters"] = perturbed(params["adapters"], jax.random.PRNGKey(4), 0.5)
    return model, params, images, labels


def reference(make, params, inputs, labels, new):
    """{edge: dL/dW} of zero linear adapters on the edges `new`, added to the model's own."""
    model = make(OWN + tuple(new), linear_edges=new, adapter_rank=4)
    d = params["head"]["kernel"].shape[0]
    zeros = {f"edge_{i}_{j}": {"kernel": jnp.zeros((d, d))} for i, j in new}

    def loss(added):
        p = {**params, "adapters": {**params["adapters"], **added}}
        return jnp.mean(scoring.softmax_xent(model.apply({"params": p}, inputs), labels))

    with jax.default_matmul_precision("highest"):
        grads = jax.jit(jax.grad(loss))(zeros)
    return {(i, j): grads[f"edge_{i}_{j}"]["kernel"] for i, j in new}


def assert_close(got, want, edge):
    scale = float(jnp.max(jnp.abs(want)))
    assert scale > 0, edge
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * scale, err_msg=f"edge {edge}")


def test_every_free_edge_equals_jax_grad_of_a_real_linear_adapter(setup):
    model, params, images, labels = setup
    g = scoring.edge_gradients(model, params, images, labels, adapted=True)
    assert g.shape == (N, N, 16, 16) and len(FREE) == N * N - len(OWN)
    want = reference(tiny, params, images, labels, FREE)
    for edge in FREE:
        assert_close(g[edge], want[edge], edge)
    for edge in OWN:
        assert not np.any(np.asarray(g[edge])), edge


@pytest.mark.parametrize("edge", [(1, 3), (1, 1), (3, 0)])
def test_one_new_adapter_alone(setup, edge):
    model, params, images, labels = setup
    (got,) = scoring.edge_gradients(model, params, images, labels, edges=(edge,), adapted=True)
    assert_close(got, reference(tiny, params, images, labels, (edge,))[edge], edge)


def test_adapted_differs_from_plain_where_the_adapters_act(setup):
    model, params, images, labels = setup
    adapted = scoring.edge_gradients(model, params, images, labels, adapted=True)
    plain = scoring.edge_gradients(model, params, images, labels)
    for edge in ((1, 3), (1, 1), (3, 0), (4, 3), (0, 1)):
        assert not np.allclose(adapted[edge], plain[edge], rtol=1e-3), edge


def test_zero_initialised_adapters_give_the_plain_gradients(setup):
    # W_up = 0: the forward and every cotangent are the backbone's, so G is the plain one.
    model, params, images, labels = setup
    fresh = jax.jit(model.init)(jax.random.PRNGKey(5), images)["params"]["adapters"]
    adapted = scoring.edge_gradients(
        model, {**params, "adapters": fresh}, images, labels, adapted=True
    )
    plain = scoring.edge_gradients(model, params, images, labels)
    for edge in FREE:
        np.testing.assert_allclose(adapted[edge], plain[edge], rtol=1e-5, atol=1e-7)


def test_no_adapters_is_exactly_the_plain_scorer(setup):
    _, params, images, labels = setup
    model, params = tiny(()), {k: v for k, v in params.items() if k != "adapters"}
    for kw in ({}, {"chunk": 3, "candidates": ((4, 1), (0, 0), (2, 3))}):
        np.testing.assert_array_equal(
            scoring.score_edges(model, params, images, labels, adapted=True, **kw),
            scoring.score_edges(model, params, images, labels, **kw),
        )
    np.testing.assert_array_equal(
        scoring.edge_gradients(model, params, images, labels, adapted=True),
        scoring.edge_gradients(model, params, images, labels),
    )


def test_adapted_scores_are_the_aggregation_and_minus_inf_at_own_edges(setup):
    model, params, images, labels = setup
    g = np.asarray(scoring.edge_gradients(model, params, images, labels, adapted=True))
    want = np.full((N, N), -np.inf, np.float32)
    for edge in FREE:
        want[edge] = np.linalg.norm(g[edge])
    for chunk, micro_batch in ((None, None), (4, 2)):
        got = scoring.score_edges(
            model,
            params,
            images,
            labels,
            aggregation="fro",
            adapted=True,
            chunk=chunk,
            micro_batch=micro_batch,
        )
        np.testing.assert_allclose(got, want, rtol=1e-5, err_msg=f"chunk {chunk}")


def test_adapted_candidates_and_micro_batches(setup):
    model, params, images, labels = setup
    full = scoring.edge_gradients(model, params, images, labels, adapted=True)
    edges = ((4, 3), (1, 1), (0, 2))
    for micro_batch in (None, 2):
        sub = scoring.edge_gradients(
            model, params, images, labels, edges=edges, micro_batch=micro_batch, adapted=True
        )
        np.testing.assert_allclose(sub, np.stack([full[e] for e in edges]), rtol=1e-5, atol=1e-6)


def test_own_edges_are_refused_as_candidates(setup):
    model, params, images, labels = setup
    with pytest.raises(ValueError, match=r"Candidates \[\(3, 3\)\] already hold"):
        scoring.score_edges(
            model, params, images, labels, candidates=((0, 1), (3, 3)), adapted=True
        )
    with pytest.raises(ValueError, match=r"Candidates \[\(4, 1\)\] already hold"):
        scoring.edge_gradients(model, params, images, labels, edges=((4, 1),), adapted=True)
    with pytest.raises(ValueError, match="adapted must be True or False, got 1"):
        scoring.score_edges(model, params, images, labels, adapted=1)


def test_linear_edges_must_be_edges_of_the_model():
    with pytest.raises(ValueError, match=r"linear_edges \[\(1, 2\)\] are not among the edges"):
        tiny(((0, 1),), linear_edges=((1, 2),))
    with pytest.raises(ValueError, match=r"linear_edges \[\(0, 0\)\] are not among"):
        text.Model(2, width=16, depth=DEPTH, num_heads=2, mlp_dim=32, linear_edges=((0, 0),))
    assert tiny(OWN, linear_edges=[[3, 3], (0, 3)]).linear_edges == ((0, 3), (3, 3))


def test_text_model_new_adapters_on_top_of_trained_ones():
    kw = dict(width=16, depth=DEPTH, num_heads=2, mlp_dim=32, vocab_size=50, max_len=12)
    make = lambda edges, **more: text.Model(4, **kw, edges=edges, head_zeroinit=False, **more)  # noqa: E731
    model = make(OWN, adapter_rank=4)
    rng = np.random.default_rng(0)
    keep = (np.arange(10)[None] < np.array([10, 7, 4])[:, None]).astype(np.int32)
    inputs = {"input_ids": rng.integers(3, 50, (3, 10)).astype(np.int32) * keep}
    inputs["attention_mask"] = keep
    labels = jnp.array([0, 3, 1])
    params = jax.jit(model.init)(jax.random.PRNGKey(0), inputs)["params"]
    params["adapters"] = perturbed(params["adapters"], jax.random.PRNGKey(1), 0.5)
    edges = ((1, 3), (1, 1), (4, 3), (3, 0))  # forward, sequential, two recurrent
    got = scoring.edge_gradients(model, params, inputs, labels, edges=edges, adapted=True)
    want = reference(make, params, inputs, labels, edges)
    for edge, g in zip(edges, got):
        assert_close(g, want[edge], edge)


# Runs in a fresh process with 8 CPU devices: the adapted scores on the mesh (ring, edge
# chunks of 3) and on one device.
SHARDED_SCRIPT = """
import json

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType

from gga_jax import scoring
from gga_jax.models import vit

model = vit.Model(5, width=16, depth=2, num_heads=2, mlp_dim=32, patch_size=4,
                  edges=((2, 3), (0, 3), (3, 3), (4, 1)), adapter_rank=4)
images = jax.random.normal(jax.random.PRNGKey(1), (16, 8, 8, 3))
labels = jnp.arange(16) % 5
params = jax.jit(model.init)(jax.random.PRNGKey(0), images)["params"]
params["head"]["kernel"] = jax.random.normal(jax.random.PRNGKey(2), (16, 5))
leaves, treedef = jax.tree_util.tree_flatten(params["adapters"])
keys = jax.random.split(jax.random.PRNGKey(4), len(leaves))
noisy = [x + 0.5 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
params["adapters"] = jax.tree_util.tree_unflatten(treedef, noisy)
mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
kw = dict(micro_batch=8, aggregation="fro", adapted=True)
want = np.asarray(scoring.score_edges(model, params, images, labels, **kw))
got = np.asarray(scoring.score_edges(model, params, images, labels, mesh=mesh, chunk=3, **kw))
print(json.dumps({"got": got.tolist(), "want": want.tolist()}))
"""


def test_sharded_adapted_scoring_equals_one_device():
    out = run_on_8_devices(SHARDED_SCRIPT)
    assert np.all(np.isneginf(np.asarray(out["want"])) == graph.candidate_mask(OWN, DEPTH))
    np.testing.assert_allclose(out["got"], out["want"], rtol=1e-5)
