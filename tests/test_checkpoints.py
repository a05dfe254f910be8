"""Checkpoints: .npz round trips and errors, position-embedding resampling and the
[cls] row, and timm / Hugging Face ViT weights checked against the torch models."""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import importlib.util
import re
import sys
import types

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gga_jax import checkpoints
from gga_jax.models import vit

WIDTH, HEADS, MLP = 48, 3, 96


@functools.cache
def tiny(image_size: int = 32) -> tuple[vit._Model, dict]:
    """A 2-block ViT with 8x8 patches and its params for (image_size, image_size) images."""
    model = vit.Model(5, patch_size=8, width=WIDTH, depth=2, mlp_dim=MLP, num_heads=HEADS)
    images = jnp.zeros((1, image_size, image_size, 3))
    return model, jax.jit(model.init)(jax.random.PRNGKey(0), images)["params"]


def randomized(params, seed: int = 0) -> dict:
    """params with every leaf replaced by N(0, 0.1) noise (no zero heads, cls or biases)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: rng.normal(0, 0.1, np.shape(x)).astype(np.float32), params)


def flat(tree) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in flax.traverse_util.flatten_dict(tree, sep="/").items()}


def assert_trees_close(a, b, atol: float = 0.0) -> None:
    a, b = flat(a), flat(b)
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], atol=atol, rtol=0, err_msg=name)


def torch_bilinear(grid: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w, d) -> (*size, d) with torch's bilinear interpolation, align_corners=False."""
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(grid).permute(2, 0, 1)[None]
    x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return x[0].permute(1, 2, 0).numpy()


# --- .npz -------------------------------------------------------------------------------


def test_npz_round_trip_loads_all_but_the_head(tmp_path):
    model, init = tiny()
    params = randomized(init)
    path = tmp_path / "w.npz"
    checkpoints.save_npz(str(path), params)
    assert_trees_close(checkpoints.load_npz(path, init, skip=r"^adapters/"), params)
    loaded = checkpoints.load_npz(path, init)
    assert_trees_close(loaded["head"], init["head"])
    assert_trees_close({**loaded, "head": params["head"]}, params)
    assert_trees_close(checkpoints.load_vit(path, model, init), loaded)


def test_one_error_lists_wrong_shape_missing_and_unexpected(tmp_path):
    _, params = tiny()
    weights = flat(params)
    weights["embedding/kernel"] = np.zeros((4, 4, 3, WIDTH), np.float32)
    del weights["Transformer/encoder_norm/scale"]
    weights["extra/tensor"] = np.zeros((2, 7), np.float32)
    np.savez(tmp_path / "bad.npz", **weights)
    with pytest.raises(ValueError) as error:
        checkpoints.load_npz(tmp_path / "bad.npz", params)
    message = str(error.value)
    assert "bad.npz" in message
    assert "missing Transformer/encoder_norm/scale (48,)" in message
    assert "unexpected extra/tensor (2, 7)" in message
    assert "embedding/kernel: expected (8, 8, 3, 48), found (4, 4, 3, 48)" in message


def test_unreadable_files_give_a_value_error_naming_the_path(tmp_path):
    _, params = tiny()
    good = tmp_path / "good.npz"
    checkpoints.save_npz(str(good), params)
    truncated, garbage, single = tmp_path / "cut.npz", tmp_path / "text.npz", tmp_path / "one.npz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    garbage.write_text("not an npz file")
    with open(single, "wb") as f:
        np.save(f, np.zeros(3))
    for path in (truncated, garbage, single):
        with pytest.raises(ValueError, match=re.escape(f"{path} is not a readable .npz")):
            checkpoints.load_npz(path, params)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x10\x00\x00")
    with pytest.raises(ValueError, match=re.escape(f"{broken} is not a readable .safetensors")):
        checkpoints.read_weights(broken)


def test_posemb_resampled_from_2x2_to_4x4_and_cls_row_folded(tmp_path):
    _, small = tiny(16)  # 2x2 patch grid.
    _, large = tiny(32)  # 4x4 patch grid.
    weights = flat(randomized(small))
    cls_row = np.random.default_rng(1).normal(size=(1, 1, WIDTH)).astype(np.float32)
    grid = weights["pos_embedding"]
    weights["pos_embedding"] = np.concatenate([cls_row, grid], axis=1)  # (1, 1 + 4, d)
    np.savez(tmp_path / "w.npz", **weights)
    loaded = checkpoints.load_npz(tmp_path / "w.npz", large)
    expected = torch_bilinear(grid.reshape(2, 2, WIDTH), (4, 4)).reshape(1, 16, WIDTH)
    np.testing.assert_allclose(loaded["pos_embedding"], expected, atol=1e-6)
    np.testing.assert_allclose(loaded["cls"], weights["cls"] + cls_row, atol=1e-6)
    with pytest.raises(ValueError, match=r"pos_embedding: expected \(1, 16, 48\), found \(1, 4"):
        checkpoints.load_npz(tmp_path / "w.npz", large, resize_posemb=False)


def test_original_vit_names_load_to_the_same_params(tmp_path):
    """An AugReg-style file: pre-linen names, posemb with a [cls] row, pre_logits."""
    _, init = tiny()
    params = randomized(init)
    ours = flat(params)
    cls_row = np.random.default_rng(2).normal(size=(1, 1, WIDTH)).astype(np.float32)
    original = {
        "cls": ours["cls"] - cls_row,
        "Transformer/posembed_input/pos_embedding": np.concatenate(
            [cls_row, ours["pos_embedding"]], axis=1
        ),
        "pre_logits/kernel": np.zeros((WIDTH, WIDTH), np.float32),
        "pre_logits/bias": np.zeros((WIDTH,), np.float32),
    }
    renames = {
        "MultiHeadDotProductAttention_0": "MultiHeadDotProductAttention_1",
        "LayerNorm_1": "LayerNorm_2",
        "MlpBlock_0": "MlpBlock_3",
    }
    for name, value in ours.items():
        if name.startswith("Transformer/"):
            for new, old in renames.items():
                name = name.replace(f"/{new}/", f"/{old}/")
            original[name] = value
        elif name not in ("cls", "pos_embedding"):
            original[name] = value
    np.savez(tmp_path / "augreg.npz", **original)
    loaded = checkpoints.load_npz(tmp_path / "augreg.npz", init, skip=r"^(pre_logits|adapters)/")
    assert_trees_close(loaded, params, atol=1e-6)


# --- timm and Hugging Face ----------------------------------------------------------------


class _Anything(type):
    """A class whose every attribute is another such class."""

    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        sub = _Anything(name, (cls,), {})
        setattr(cls, name, sub)
        return sub


class _PlaceholderTorchvision(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves torchvision and its submodules as modules whose names are `_Anything`s."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] != "torchvision":
            return None
        return importlib.machinery.ModuleSpec(name, self, is_package=True)

    def create_module(self, spec):
        module, names = types.ModuleType(spec.name), _Anything(spec.name, (), {})
        module.__getattr__ = lambda name: getattr(names, name)  # The same class every time.
        return module

    def exec_module(self, module):
        module.__path__ = []


@pytest.fixture(scope="module")
def timm():
    """timm, imported with placeholder torchvision modules where torchvision is unusable.

    timm imports torchvision at import time for its data transforms and a frozen
    batch norm, none of which its ViT uses, and PyPI's torchvision does not import
    beside the CPU torch wheel the tests use. The placeholders are removed again
    once timm is imported.
    """
    pytest.importorskip("torch")
    if importlib.util.find_spec("timm") is None:
        pytest.skip("timm is not installed: pip install --no-deps timm==1.0.31")
    try:
        import torchvision  # noqa: F401

        return importlib.import_module("timm")
    except Exception:  # Missing, or 'operator torchvision::nms does not exist'.
        for name in [n for n in sys.modules if n.split(".")[0] == "torchvision"]:
            del sys.modules[name]
    finder = _PlaceholderTorchvision()
    sys.meta_path.insert(0, finder)
    try:
        return importlib.import_module("timm")
    finally:
        sys.meta_path.remove(finder)
        for name in [n for n in sys.modules if n.split(".")[0] == "torchvision"]:
            del sys.modules[name]


def perturb(module, seed: int) -> None:
    """Adds N(0, 0.02) noise to every torch parameter, so LayerNorms and biases are not 1 and 0."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=generator))


def ours(model, params, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(logits, pre_logits) of our ViT for NHWC images."""
    apply = jax.jit(functools.partial(model.apply, return_nodes=True))
    logits, out = apply({"params": params}, images)
    return np.asarray(logits), np.asarray(out["pre_logits"])


def nchw(images: np.ndarray):
    import torch

    return torch.from_numpy(images.transpose(0, 3, 1, 2).copy())


def images_of(size: int, n: int = 2) -> np.ndarray:
    return np.random.default_rng(3).normal(size=(n, size, size, 3)).astype(np.float32)


def tanh_gelu():
    import torch

    return functools.partial(torch.nn.GELU, approximate="tanh")


def timm_outputs(net, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import torch

    with torch.no_grad():
        pre_logits = net.forward_head(net.forward_features(nchw(images)), pre_logits=True)
        return net.head(pre_logits).numpy(), pre_logits.numpy()


def test_timm_vit_outputs_match(timm):
    from timm.models.vision_transformer import VisionTransformer

    net = VisionTransformer(
        img_size=32, patch_size=8, embed_dim=WIDTH, depth=2, num_heads=HEADS,
        mlp_ratio=MLP / WIDTH, num_classes=5, act_layer=tanh_gelu(),
    )  # fmt: skip
    perturb(net.eval(), seed=0)
    model, init = tiny()
    params = checkpoints.load_vit(net.state_dict(), model, init, skip=r"^adapters/")
    images = images_of(32)
    for a, b in zip(ours(model, params, images), timm_outputs(net, images)):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(
    "approximate_gelu" not in vit._Model.__dataclass_fields__,
    reason="vit.Model has no approximate_gelu option",
)
def test_timm_vit_with_exact_gelu_matches_approximate_gelu_false(timm):
    from timm.models.vision_transformer import VisionTransformer

    net = VisionTransformer(
        img_size=32, patch_size=8, embed_dim=WIDTH, depth=2, num_heads=HEADS,
        mlp_ratio=MLP / WIDTH, num_classes=5,
    )  # fmt: skip
    perturb(net.eval(), seed=4)
    model = vit.Model(
        5, patch_size=8, width=WIDTH, depth=2, mlp_dim=MLP, num_heads=HEADS, approximate_gelu=False
    )
    params = checkpoints.load_vit(net.state_dict(), model, tiny()[1], skip=r"^adapters/")
    images = images_of(32)
    for a, b in zip(ours(model, params, images), timm_outputs(net, images)):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)


def test_timm_vit_tiny_from_safetensors_matches(timm, tmp_path):
    from safetensors.torch import save_file

    net = timm.create_model("vit_tiny_patch16_224", pretrained=False, act_layer=tanh_gelu())
    perturb(net.eval(), seed=1)
    save_file(net.state_dict(), tmp_path / "ti.safetensors")
    model = vit.Model(1000, variant="Ti/16")
    # Every leaf is loaded, so shapes stand in for initialised params (no init to compile).
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 224, 224, 3)))
    params = checkpoints.load_vit(tmp_path / "ti.safetensors", model, shapes["params"], skip=None)
    images = images_of(224)
    for a, b in zip(ours(model, params, images), timm_outputs(net, images)):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)


def test_timm_tensors_without_counterpart_are_reported(timm):
    from timm.models.vision_transformer import VisionTransformer

    net = VisionTransformer(
        img_size=32, patch_size=8, embed_dim=WIDTH, depth=2, num_heads=HEADS,
        mlp_ratio=MLP / WIDTH, num_classes=5, init_values=0.1,
    )  # fmt: skip
    model, init = tiny()
    with pytest.raises(ValueError) as error:
        checkpoints.load_vit(net.state_dict(), model, init)
    assert "unexpected blocks.0.ls1.gamma (48,)" in str(error.value)
    assert "unexpected blocks.1.ls2.gamma (48,)" in str(error.value)


def hf_config(**kw):
    transformers = pytest.importorskip("transformers")
    return transformers.ViTConfig(
        hidden_size=WIDTH, num_hidden_layers=2, num_attention_heads=HEADS, intermediate_size=MLP,
        image_size=32, patch_size=8, num_labels=5, layer_norm_eps=1e-6,
        hidden_act="gelu_pytorch_tanh", **kw,
    )  # fmt: skip


def test_hf_vit_outputs_match(tmp_path):
    transformers = pytest.importorskip("transformers")
    import torch

    net = transformers.ViTForImageClassification(hf_config()).eval()
    perturb(net, seed=2)
    net.save_pretrained(tmp_path)
    model, init = tiny()
    params = checkpoints.load_vit(tmp_path, model, init, skip=r"^adapters/")
    images = images_of(32)
    with torch.no_grad():
        logits = net(pixel_values=nchw(images)).logits.numpy()
        pre_logits = net.vit(pixel_values=nchw(images)).last_hidden_state[:, 0].numpy()
    for a, b in zip(ours(model, params, images), (logits, pre_logits)):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)


def test_hf_vit_in_memory_names_and_pooler(tmp_path):
    """transformers >= 5 renames modules in memory; its ViTModel's pooler is pre_logits."""
    transformers = pytest.importorskip("transformers")
    import torch

    net = transformers.ViTModel(hf_config()).eval()
    perturb(net, seed=3)
    net.save_pretrained(tmp_path)
    from_file = checkpoints.params_from_hf_vit(checkpoints.read_weights(tmp_path), HEADS)
    from_memory = checkpoints.params_from_hf_vit(net.state_dict(), HEADS)
    assert_trees_close(from_memory, from_file)
    torch.save(net.state_dict(), tmp_path / "w.bin")
    from_bin = checkpoints.params_from_hf_vit(checkpoints.read_weights(tmp_path / "w.bin"), HEADS)
    assert_trees_close(from_bin, from_file)
    pooler = net.pooler.dense.weight.detach().numpy()
    np.testing.assert_array_equal(from_file["pre_logits"]["kernel"], pooler.T)
    model, init = tiny()
    loaded = checkpoints.load_vit(tmp_path, model, init)  # pre_logits skipped by default.
    assert_trees_close(loaded["head"], init["head"])
