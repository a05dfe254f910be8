"""ViT-g/14 (docs/spec.md §6, E6) and the MAP head it pools with, checked by shapes only.

g/14 is never run here: jax.eval_shape traces it without allocating its
~4 GB of parameters. The parameter counts are computed independently from the
layer sizes; the MAP head is compared with plain jnp code over its parameters.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gga_jax import graph
from gga_jax.models import vit

# Exact counts from the closed forms below (pinned so that a change shows up here).
G14_PARAMS = 1_036_448_384  # g/14 at 224 px, pool "map", no head
B16_PARAMS = 86_566_888  # B/16 at 224 px, pool "tok", 1000-class head


def block_params(d: int, mlp: int) -> int:
    """One encoder block: LN, q/k/v/out (d x d + d each), LN, Dense d->mlp->d."""
    return 2 * d + 4 * (d * d + d) + 2 * d + (d * mlp + mlp) + (mlp * d + d)


def vit_params(variant: str, image_size: int, pool: str, num_classes: int = 0) -> int:
    size, patch = variant.split("/")
    d, depth, mlp, _ = vit.VARIANTS[size]
    patch = int(patch)
    tokens = (image_size // patch) ** 2
    count = patch * patch * 3 * d + d  # embedding conv
    count += tokens * d  # learned pos_embedding (no entry for the cls token)
    count += depth * block_params(d, mlp) + 2 * d  # blocks + encoder_norm
    if pool == "tok":
        count += d  # cls
    if pool == "map":
        count += d + 4 * (d * d + d) + 2 * d + (d * mlp + mlp) + (mlp * d + d)
    if num_classes:
        count += d * num_classes + num_classes
    return count


def abstract_params(model, image_size: int):
    images = jax.ShapeDtypeStruct((2, image_size, image_size, 3), jnp.float32)
    return jax.eval_shape(model.init, jax.random.PRNGKey(0), images)["params"]


def num_params(tree) -> int:
    return sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(tree))


def test_g14_parameter_count():
    params = abstract_params(vit.Model(None, variant="g/14", pool_type="map"), 224)
    assert vit_params("g/14", 224, "map") == G14_PARAMS
    assert num_params(params) == G14_PARAMS
    assert "cls" not in params and "head" not in params


def test_b16_parameter_count():
    params = abstract_params(vit.Model(1000, variant="B/16"), 224)
    assert vit_params("B/16", 224, "tok", 1000) == B16_PARAMS
    assert num_params(params) == B16_PARAMS


def test_g14_nodes_are_81_by_256_tokens():
    model = vit.Model(10, variant="g/14", pool_type="map")
    params = abstract_params(model, 224)
    images = jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)
    logits, out = jax.eval_shape(
        lambda p, x: model.apply({"params": p}, x, return_nodes=True), params, images
    )
    assert graph.num_nodes(40) == 81
    assert [x.shape for x in out["nodes"]] == [(2, 256, 1408)] * 81
    assert out["pre_logits"].shape == (2, 1408) and logits.shape == (2, 10)


# --- the MAP head against plain jnp -----------------------------------------------


def layer_norm(p, x, eps=1e-6):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / jnp.sqrt(var + eps) * p["scale"] + p["bias"]


def attention(p, q_in, kv_in):
    q = jnp.einsum("bqd,dhe->bqhe", q_in, p["query"]["kernel"]) + p["query"]["bias"]
    k = jnp.einsum("bkd,dhe->bkhe", kv_in, p["key"]["kernel"]) + p["key"]["bias"]
    v = jnp.einsum("bkd,dhe->bkhe", kv_in, p["value"]["kernel"]) + p["value"]["bias"]
    weights = jax.nn.softmax(jnp.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(q.shape[-1]))
    out = jnp.einsum("bhqk,bkhe->bqhe", weights, v)
    return jnp.einsum("bqhe,hed->bqd", out, p["out"]["kernel"]) + p["out"]["bias"]


def mlp(p, x, gelu):
    h = gelu(x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
    return h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]


def gelu_tanh(x):
    return 0.5 * x * (1 + jnp.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def gelu_erf(x):
    return 0.5 * x * (1 + jax.scipy.special.erf(x / math.sqrt(2)))


def tiny_map(**kw):
    return vit.Model(5, width=32, depth=2, num_heads=4, mlp_dim=48, patch_size=4, **kw)


def randomised(model, images):
    params = jax.jit(model.init)(jax.random.PRNGKey(0), images)["params"]
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    return jax.tree_util.tree_unflatten(
        treedef, [x + 0.3 * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)]
    )


def test_map_head_uses_big_vision_names_and_drops_cls():
    images = jnp.zeros((2, 8, 8, 3))
    params = jax.jit(tiny_map(pool_type="map").init)(jax.random.PRNGKey(0), images)["params"]
    assert set(params) == {"embedding", "pos_embedding", "Transformer", "MAPHead_0", "head"}
    assert set(params["MAPHead_0"]) == {
        "probe",
        "MultiHeadDotProductAttention_0",
        "LayerNorm_0",
        "MlpBlock_0",
    }
    assert params["MAPHead_0"]["probe"].shape == (1, 1, 32)


@pytest.mark.parametrize("approximate", [True, False])
def test_map_head_matches_reference(approximate):
    model = tiny_map(pool_type="map", approximate_gelu=approximate)
    images = jax.random.normal(jax.random.PRNGKey(2), (3, 8, 8, 3))
    params = randomised(model, images)
    logits, out = model.apply({"params": params}, images, return_nodes=True)
    gelu = gelu_tanh if approximate else gelu_erf
    p = params["MAPHead_0"]
    x = layer_norm(params["Transformer"]["encoder_norm"], out["nodes"][-1])
    probe = jnp.broadcast_to(p["probe"], (3, 1, 32))
    y = attention(p["MultiHeadDotProductAttention_0"], probe, x)
    y = (y + mlp(p["MlpBlock_0"], layer_norm(p["LayerNorm_0"], y), gelu))[:, 0]
    np.testing.assert_allclose(out["pre_logits"], y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        logits, y @ params["head"]["kernel"] + params["head"]["bias"], rtol=1e-5, atol=1e-5
    )


def test_exact_gelu_reaches_the_encoder_blocks():
    """approximate_gelu picks the gelu of every encoder MlpBlock (node 2 from node 1)."""
    images = jax.random.normal(jax.random.PRNGKey(3), (2, 8, 8, 3))
    params = randomised(tiny_map(), images)
    block = params["Transformer"]["encoderblock_0"]
    for approximate, gelu in ((True, gelu_tanh), (False, gelu_erf)):
        model = tiny_map(approximate_gelu=approximate)
        _, out = model.apply({"params": params}, images, return_nodes=True)
        x1 = out["nodes"][1]
        want = x1 + mlp(block["MlpBlock_0"], layer_norm(block["LayerNorm_1"], x1), gelu)
        np.testing.assert_allclose(out["nodes"][2], want, rtol=1e-5, atol=1e-5)
