"""The ViT on the adapter graph: docs/spec.md §1 edge semantics and the two-pass forward.

The reference below is written independently of gga_jax: plain jnp functions
over the parameter tree and a loop over nodes that follows docs/spec.md §1 literally.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gga_jax import graph
from gga_jax.models import vit

WIDTH, DEPTH, HEADS, MLP = 32, 3, 4, 64
MIXED_EDGES = (
    (0, 1),  # parallel
    (2, 3),  # parallel into a node that also has a long-range edge
    (0, 3),  # long-range, shares target 3
    (1, 6),  # long-range into the last node
    (0, 0),  # sequential at the embedding
    (3, 3),  # sequential where parallel edges also land
    (5, 0),  # recurrent into node 0
    (4, 0),  # recurrent, shares target 0
    (6, 2),  # recurrent from the last node
)


def tiny(edges=(), **kw):
    return vit.Model(
        7, width=WIDTH, depth=DEPTH, num_heads=HEADS, mlp_dim=MLP, patch_size=4, edges=edges, **kw
    )


def images(batch=2, seed=0):
    return jax.random.normal(jax.random.PRNGKey(seed), (batch, 8, 12, 3))


def randomise(tree, seed):
    """Every leaf replaced by N(0, 0.3^2) noise, so that no adapter is zero."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    new = [0.3 * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)]
    return jax.tree_util.tree_unflatten(treedef, new)


def init_params(model, seed=0):
    params = jax.jit(model.init)(jax.random.PRNGKey(seed), images())["params"]
    params["head"] = randomise(params["head"], seed + 1)
    if "adapters" in params:
        params["adapters"] = randomise(params["adapters"], seed + 2)
    return params


# --- the independent reference --------------------------------------------------


def layer_norm(p, x, eps=1e-6):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / jnp.sqrt(var + eps) * p["scale"] + p["bias"]


def gelu(x):
    return 0.5 * x * (1 + jnp.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def attention(p, x):
    q, k, v = (
        jnp.einsum("btd,dhe->bthe", x, p[n]["kernel"]) + p[n]["bias"]
        for n in ("query", "key", "value")
    )
    logits = jnp.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(q.shape[-1])
    weights = jax.nn.softmax(logits, axis=-1)
    out = jnp.einsum("bhqk,bkhe->bqhe", weights, v)
    return jnp.einsum("bqhe,hed->bqd", out, p["out"]["kernel"]) + p["out"]["bias"]


def sub_block(params, k, x):
    """F_k with its residual: node k from node k - 1."""
    block = params["Transformer"][f"encoderblock_{(k - 1) // 2}"]
    if k % 2:
        return x + attention(
            block["MultiHeadDotProductAttention_0"], layer_norm(block["LayerNorm_0"], x)
        )
    mlp = block["MlpBlock_0"]
    h = gelu(
        layer_norm(block["LayerNorm_1"], x) @ mlp["Dense_0"]["kernel"] + mlp["Dense_0"]["bias"]
    )
    return x + h @ mlp["Dense_1"]["kernel"] + mlp["Dense_1"]["bias"]


def embed(params, image, patch=4):
    b, h, w, c = image.shape
    patches = image.reshape(b, h // patch, patch, w // patch, patch, c).transpose(0, 1, 3, 2, 4, 5)
    kernel = params["embedding"]["kernel"].reshape(-1, WIDTH)
    x = patches.reshape(b, -1, patch * patch * c) @ kernel + params["embedding"]["bias"]
    x = x + params["pos_embedding"]
    return jnp.concatenate([jnp.tile(params["cls"], (b, 1, 1)), x], axis=1)


def adapter(p, x):
    if "kernel" in p:
        return x @ p["kernel"]
    h = gelu(layer_norm(p["norm"], x) @ p["down"]["kernel"] + p["down"]["bias"])
    return p["alpha"] * (h @ p["up"]["kernel"] + p["up"]["bias"])


def reference_nodes(params, image, edges, z=None):
    """docs/spec.md §1 literally. z: pass-1 values (from the plain forward if None)."""
    n = 2 * DEPTH + 1
    if z is None and any(i > j for i, j in edges):
        z = reference_nodes({k: v for k, v in params.items() if k != "adapters"}, image, ())
    nodes = []
    for k in range(n):
        x = embed(params, image) if k == 0 else sub_block(params, k, nodes[k - 1])
        for i, j in edges:
            if j == k and i < j:
                x = x + adapter(params["adapters"][f"edge_{i}_{j}"], nodes[i])
        if (k, k) in edges:
            x = x + adapter(params["adapters"][f"edge_{k}_{k}"], x)
        for i, j in edges:
            if j == k and i > j:
                x = x + adapter(params["adapters"][f"edge_{i}_{j}"], z[i])
        nodes.append(x)
    return nodes


def reference_logits(params, image, edges, z=None):
    x = reference_nodes(params, image, edges, z)[-1]
    x = layer_norm(params["Transformer"]["encoder_norm"], x)[:, 0]
    return x @ params["head"]["kernel"] + params["head"]["bias"]


# --- tests ----------------------------------------------------------------------


def test_param_tree_uses_big_vision_names():
    params = init_params(tiny(MIXED_EDGES))
    assert set(params) == {"embedding", "cls", "pos_embedding", "Transformer", "adapters", "head"}
    assert set(params["Transformer"]) == {f"encoderblock_{b}" for b in range(DEPTH)} | {
        "encoder_norm"
    }
    block = params["Transformer"]["encoderblock_0"]
    assert set(block) == {
        "LayerNorm_0",
        "MultiHeadDotProductAttention_0",
        "LayerNorm_1",
        "MlpBlock_0",
    }
    assert set(params["adapters"]) == {f"edge_{i}_{j}" for i, j in MIXED_EDGES}


def test_variants_match_big_vision_table():
    assert vit.decode_variant("B/16") == dict(
        width=768, depth=12, mlp_dim=3072, num_heads=12, patch_size=(16, 16)
    )
    assert vit.decode_variant("g/14")["width"] == 1408 and vit.decode_variant("g/14")["depth"] == 40
    for bad in ("B", "Q/16", "B/x", None):
        with pytest.raises(ValueError, match="Unknown ViT variant"):
            vit.decode_variant(bad)


@pytest.mark.parametrize("kind", ["bottleneck", "linear"])
def test_zero_initialised_adapters_leave_logits_unchanged(kind):
    plain = tiny()
    adapted = tiny(MIXED_EDGES, adapter_kind=kind, adapter_rank=4)
    params = jax.jit(adapted.init)(jax.random.PRNGKey(0), images())["params"]
    params["head"] = randomise(params["head"], 1)
    backbone = {k: v for k, v in params.items() if k != "adapters"}
    np.testing.assert_allclose(
        adapted.apply({"params": params}, images()),
        plain.apply({"params": backbone}, images()),
        atol=1e-6,
    )


@pytest.mark.parametrize("kind", ["bottleneck", "linear"])
def test_edge_semantics_match_step_by_step_reference(kind):
    model = tiny(MIXED_EDGES, adapter_kind=kind, adapter_rank=5)
    params = init_params(model)
    logits, out = model.apply({"params": params}, images(), return_nodes=True)
    ref = reference_nodes(params, images(), MIXED_EDGES)
    assert len(out["nodes"]) == graph.num_nodes(DEPTH)
    for k, (got, want) in enumerate(zip(out["nodes"], ref)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=f"node {k}")
    np.testing.assert_allclose(
        logits, reference_logits(params, images(), MIXED_EDGES), rtol=1e-4, atol=1e-4
    )


def test_per_edge_ranks():
    edges = ((0, 1), (4, 2))
    params = init_params(tiny(edges, adapter_rank={(0, 1): 3, (4, 2): 6}))
    assert params["adapters"]["edge_0_1"]["down"]["kernel"].shape == (WIDTH, 3)
    assert params["adapters"]["edge_4_2"]["up"]["kernel"].shape == (6, WIDTH)
    with pytest.raises(ValueError, match=r"missing \[\(4, 2\)\]"):
        tiny(edges, adapter_rank={(0, 1): 3})


def test_pass1_carries_no_gradient():
    """Gradients equal those of pass 2 alone with the pass-1 values held constant."""
    model = tiny(MIXED_EDGES, adapter_rank=3)
    params = init_params(model)
    labels = jnp.array([1, 5])
    backbone = {k: v for k, v in params.items() if k != "adapters"}
    z = [np.asarray(x) for x in reference_nodes(backbone, images(), ())]

    def loss(logits):
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(2), labels])

    got = jax.grad(lambda p: loss(model.apply({"params": p}, images())))(params)
    want = jax.grad(lambda p: loss(reference_logits(p, images(), MIXED_EDGES, z)))(params)
    flat_got = jax.tree_util.tree_flatten_with_path(got)[0]
    flat_want = dict(jax.tree_util.tree_flatten_with_path(want)[0])
    assert len(flat_got) == len(flat_want)
    for path, g in flat_got:
        np.testing.assert_allclose(
            g, flat_want[path], rtol=2e-4, atol=2e-5, err_msg=jax.tree_util.keystr(path)
        )


def count_dot_generals(jaxpr) -> int:
    """dot_general equations in a jaxpr, including nested (pjit, custom_jvp) ones."""
    count = 0
    for eqn in jaxpr.eqns:
        count += eqn.primitive.name == "dot_general"
        for value in eqn.params.values():
            for sub in value if isinstance(value, (list, tuple)) else [value]:
                if isinstance(sub, jax.extend.core.ClosedJaxpr):
                    count += count_dot_generals(sub.jaxpr)
                elif isinstance(sub, jax.extend.core.Jaxpr):
                    count += count_dot_generals(sub)
    return count


@pytest.mark.parametrize("edge", [(1, 0), (2, 0), (3, 0), (5, 0), (6, 0), (5, 3), (6, 2), (4, 4)])
def test_pass1_is_truncated_after_ceil_imax_over_2_blocks(edge):
    """Counts matmuls in the traced forward: pass 1 adds exactly sub-blocks first..i_max.

    Nodes before the first adapter target are shared by both passes, so pass 1
    runs the sub-blocks k = max(j, 1) .. i_max of a recurrent edge (i_max, j):
    never a block after ceil(i_max / 2).
    """
    attn_dots, mlp_dots = 6, 2  # q, k, v, scores, values, out; two dense layers

    def dots(model):
        params = jax.jit(model.init)(jax.random.PRNGKey(0), images())["params"]
        return count_dot_generals(
            jax.make_jaxpr(lambda p: model.apply({"params": p}, images()))(params).jaxpr
        )

    plain = dots(tiny())
    assert plain == DEPTH * (attn_dots + mlp_dots) + 1  # + head
    pass1 = dots(tiny((edge,), adapter_kind="linear")) - plain - 1  # - the adapter's matmul
    i_max, first = edge
    sub_blocks = range(max(first, 1), i_max + 1) if i_max > first else ()
    assert pass1 == sum(attn_dots if k % 2 else mlp_dots for k in sub_blocks)
    assert max(sub_blocks, default=0) <= 2 * math.ceil(i_max / 2)


@pytest.mark.parametrize("mode", ["block", "dots"])
def test_remat_gives_the_same_gradients_and_is_really_applied(mode):
    """model.remat recomputes each sub-layer in the backward pass; the gradients of the
    backbone, adapters and head (every edge type) equal those without it."""
    x, labels = images(batch=3), jnp.array([0, 3, 6])
    params = init_params(tiny(MIXED_EDGES))

    def grads(model):
        def loss(p):
            logits = model.apply({"params": p}, x)
            return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(3), labels])

        return jax.jit(jax.grad(loss))(params), str(jax.make_jaxpr(jax.grad(loss))(params))

    (plain, plain_jaxpr), (remat, remat_jaxpr) = (
        grads(tiny(MIXED_EDGES)),
        grads(tiny(MIXED_EDGES, remat=mode)),
    )
    # Within 1e-6 of the largest gradient entry: float32 recomputation fuses differently,
    # and leaves whose gradient is analytically zero hold float32 noise.
    a, b = (
        np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(g)]) for g in (plain, remat)
    )
    assert np.max(np.abs(a - b)) <= 1e-6 * np.max(np.abs(a))
    assert "remat" not in plain_jaxpr
    # Two sub-layers per block, each under its own checkpoint.
    assert remat_jaxpr.count("remat") >= 2 * DEPTH


def test_remat_mode_is_checked():
    with pytest.raises(ValueError, match="Unknown remat 'all'"):
        tiny(remat="all").init(jax.random.PRNGKey(0), images())


def test_return_nodes_exposes_every_node():
    model = tiny()
    params = init_params(model)
    logits, out = model.apply({"params": params}, images(), return_nodes=True)
    ref = reference_nodes(params, images(), ())
    assert [x.shape for x in out["nodes"]] == [(2, 7, WIDTH)] * 7
    np.testing.assert_allclose(out["nodes"][0], ref[0], atol=1e-5)
    np.testing.assert_allclose(logits, model.apply({"params": params}, images()), atol=1e-6)


def test_gap_pool_and_sincos_posemb():
    model = tiny(pool_type="gap", posemb="sincos2d")
    params = jax.jit(model.init)(jax.random.PRNGKey(0), images())["params"]
    assert "cls" not in params and "pos_embedding" not in params
    assert model.apply({"params": params}, images()).shape == (2, 7)


def test_bad_model_arguments():
    with pytest.raises(ValueError, match="node 9 outside"):
        tiny(((0, 9),))
    with pytest.raises(ValueError, match="pool_type"):
        jax.jit(tiny(pool_type="max").init)(jax.random.PRNGKey(0), images())
    with pytest.raises(ValueError, match="adapter kind"):
        tiny(((0, 1),), adapter_kind="lora").init(jax.random.PRNGKey(0), images())
    with pytest.raises(ValueError, match="positive integers"):
        tiny(((0, 1),), adapter_rank=0)
