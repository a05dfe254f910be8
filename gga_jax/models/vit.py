"""Vision Transformer with adapters on the edges of the docs/spec.md §1 graph.

The parameter tree uses big_vision's names (`embedding`, `cls`,
`pos_embedding`, `Transformer/encoderblock_{l}/...`, `Transformer/encoder_norm`,
`MAPHead_0/...` for pool_type "map", `head`), so its checkpoints map one to
one; all adapter parameters live under the single top-level key `adapters`.

    model = vit.Model(num_classes=10, variant="B/16", edges=((0, 5), (24, 3)))
    params = model.init(rng, images)["params"]
    logits = model.apply({"params": params}, images)
"""

from __future__ import annotations

import json
import math
import pathlib
import re
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gga_jax import adapters as adapters_lib
from gga_jax import graph, models

# uint8 pixel p -> p / 127.5 - 1 in float32, as data.Split holds images (127.5 is
# exact in float32): looked up on the device, so uint8 batches map to the same bits.
UINT8_VALUES = np.arange(256, dtype=np.uint8) / np.float32(127.5) - np.float32(1)

# width, depth, mlp_dim, num_heads (big_vision's table).
VARIANTS = {
    "mu": (32, 1, 128, 2),
    "Ti": (192, 12, 768, 3),
    "S": (384, 12, 1536, 6),
    "M": (512, 12, 2048, 8),
    "B": (768, 12, 3072, 12),
    "L": (1024, 24, 4096, 16),
    "H": (1280, 32, 5120, 16),
    "g": (1408, 40, 6144, 16),
    "G": (1664, 48, 8192, 16),
    "e": (1792, 56, 15360, 16),
}


def decode_variant(variant: str) -> dict[str, Any]:
    """ "B/16" -> dict(width=768, depth=12, mlp_dim=3072, num_heads=12, patch_size=(16, 16))."""
    match = re.fullmatch(r"(\w+)/(\d+)", variant or "")
    if not match or match.group(1) not in VARIANTS:
        raise ValueError(
            f"Unknown ViT variant {variant!r}; use '<size>/<patch>' with size in {tuple(VARIANTS)}."
        )
    width, depth, mlp_dim, num_heads = VARIANTS[match.group(1)]
    patch = int(match.group(2))
    return dict(
        width=width, depth=depth, mlp_dim=mlp_dim, num_heads=num_heads, patch_size=(patch, patch)
    )


def posemb_sincos_2d(h: int, w: int, width: int, temperature: float = 10_000.0) -> np.ndarray:
    """Fixed 2-D sine-cosine position embedding of shape (1, h * w, width)."""
    if width % 4:
        raise ValueError(f"sincos2d position embedding needs width divisible by 4, got {width}.")
    y, x = np.mgrid[:h, :w]
    omega = 1.0 / temperature ** (np.arange(width // 4) / (width // 4 - 1 or 1))
    y = y.reshape(-1)[:, None] * omega[None]
    x = x.reshape(-1)[:, None] * omega[None]
    return np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1)[None].astype(
        np.float32
    )


class MlpBlock(nn.Module):
    """Transformer MLP: Dense -> gelu -> Dense.

    approximate_gelu: True is flax's tanh approximation (big_vision's
    checkpoints were trained with it); False is the exact erf gelu of timm and
    Hugging Face ViTs.
    """

    mlp_dim: int
    dtype: Any = jnp.float32
    approximate_gelu: bool = True

    @nn.compact
    def __call__(self, x):
        d = x.shape[-1]
        init = dict(
            kernel_init=nn.initializers.xavier_uniform(), bias_init=nn.initializers.normal(1e-6)
        )
        x = nn.Dense(self.mlp_dim, dtype=self.dtype, **init)(x)
        x = nn.gelu(x, approximate=self.approximate_gelu)
        return nn.Dense(d, dtype=self.dtype, **init)(x)


class Encoder1DBlock(nn.Module):
    """A pre-LN block split into its two residual sub-blocks (two graph nodes)."""

    mlp_dim: int
    num_heads: int
    dtype: Any = jnp.float32
    approximate_gelu: bool = True

    def setup(self):
        self.LayerNorm_0 = nn.LayerNorm()
        self.MultiHeadDotProductAttention_0 = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads, kernel_init=nn.initializers.xavier_uniform(), dtype=self.dtype
        )
        self.LayerNorm_1 = nn.LayerNorm()
        self.MlpBlock_0 = MlpBlock(self.mlp_dim, self.dtype, self.approximate_gelu)

    def attention(self, x):
        """Node 2l + 1 from node 2l: x + MHSA(LN(x))."""
        y = self.LayerNorm_0(x)
        return x + self.MultiHeadDotProductAttention_0(y, y).astype(x.dtype)

    def mlp(self, x):
        """Node 2l + 2 from node 2l + 1: x + MLP(LN(x))."""
        return x + self.MlpBlock_0(self.LayerNorm_1(x)).astype(x.dtype)

    def __call__(self, x):
        return self.mlp(self.attention(x))


class MAPHead(nn.Module):
    """Multihead attention pooling (big_vision's "map" pool): (B, T, d) -> (B, d).

    A learned probe token attends over all tokens, then gets a pre-LN MLP
    residual like a transformer block's second half; the probe's output is the
    pooled representation. It sits after the encoder norm, off the graph: the
    nodes stay the 2L + 1 residual-stream values.
    """

    mlp_dim: int
    num_heads: int
    dtype: Any = jnp.float32
    approximate_gelu: bool = True

    @nn.compact
    def __call__(self, x):
        b, _, d = x.shape
        probe = self.param("probe", nn.initializers.xavier_uniform(), (1, 1, d))
        y = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads, kernel_init=nn.initializers.xavier_uniform(), dtype=self.dtype
        )(jnp.broadcast_to(probe, (b, 1, d)), x)
        mlp = MlpBlock(self.mlp_dim, self.dtype, self.approximate_gelu)
        y = y + mlp(nn.LayerNorm()(y)).astype(y.dtype)
        return y[:, 0]


class Encoder(nn.Module):
    """The stack of blocks, exposed as 2L residual steps plus the final norm."""

    depth: int
    mlp_dim: int
    num_heads: int
    dtype: Any = jnp.float32
    approximate_gelu: bool = True
    remat: str = "none"  # models.REMAT

    def setup(self):
        block = models.remat(Encoder1DBlock, self.remat, ("attention", "mlp"))
        # A dict attribute names its children encoderblock_{l}, as big_vision does.
        self.encoderblock = {
            str(layer): block(self.mlp_dim, self.num_heads, self.dtype, self.approximate_gelu)
            for layer in range(self.depth)
        }
        self.encoder_norm = nn.LayerNorm()

    def step(self, k: int, x):
        """The plain map from node k - 1 to node k (1 <= k <= 2L)."""
        block = self.encoderblock[str((k - 1) // 2)]
        return block.attention(x) if k % 2 else block.mlp(x)

    def norm(self, x):
        return self.encoder_norm(x)

    def __call__(self, x):
        for k in range(1, 2 * self.depth + 1):
            x = self.step(k, x)
        return self.norm(x)


class _Model(nn.Module):
    """ViT with a static edge list of adapters (see `Model` for the arguments)."""

    num_classes: int | None
    patch_size: Sequence[int] = (16, 16)
    width: int = 768
    depth: int = 12
    mlp_dim: int = 3072
    num_heads: int = 12
    posemb: str = "learn"
    pool_type: str = "tok"  # "tok" (cls token), "gap" (token mean), "map" (MAPHead_0, no cls)
    head_zeroinit: bool = True
    edges: tuple[graph.Edge, ...] = ()
    linear_edges: tuple[graph.Edge, ...] = ()  # among edges: a zero d x d Linear adapter
    adapter_kind: str = "bottleneck"
    adapter_rank: tuple[int, ...] = ()
    adapter_activation: str = "gelu"
    adapter_layer_norm: bool = True
    approximate_gelu: bool = True
    remat: str = "none"  # rematerialise each sub-layer in the backward pass (models.REMAT)
    dtype: Any = jnp.float32

    def check_inputs(self, images, where: str = "images", values: bool = False) -> None:
        """Raises ValueError for images the ViT cannot mean to take; shapes at trace time.

        With `values`, also reads them: NaN/Inf, or float pixel values in [0, 255]
        (min >= 0, max > 1.5) where this library's convention is [-1, 1].
        """
        self._check_image_type(images)
        if not values or images.dtype == jnp.uint8:  # every uint8 value is a valid pixel
            return
        low, high, finite = models.array_range(images)
        if not finite:
            raise ValueError(f"{where}: the images hold NaN or Inf values.")
        if low >= 0 and high > 1.5:
            raise ValueError(
                f"{where}: pixel values run from {low:g} to {high:g}, like [0, 255] images; "
                f"the ViT expects [-1, 1] (x / 127.5 - 1, as gga_jax.data does)."
            )

    def _check_image_type(self, image) -> None:
        """The dtype and shape of NHWC images, against the patch size."""
        shape, dtype = np.shape(image), getattr(image, "dtype", None)
        if len(shape) != 4:
            raise ValueError(f"images must be (B, H, W, C), got shape {shape}.")
        if dtype is None or not (jnp.issubdtype(dtype, jnp.floating) or dtype == jnp.uint8):
            raise ValueError(
                f"images are {dtype}; the ViT takes float images in [-1, 1] or uint8 pixels "
                f"in [0, 255]."
            )
        (h, w), (ph, pw) = shape[1:3], tuple(self.patch_size)
        if h % ph or w % pw:
            raise ValueError(
                f"images of {h} x {w} pixels do not divide into patches of {ph} x {pw}; "
                f"resize them to a multiple of the patch size "
                f"(e.g. {h // ph * ph} x {w // pw * pw})."
            )

    def _check_against_params(self, image) -> None:
        """Images against the shapes the parameters were made for, before Flax's shape error."""
        params = self.variables.get("params", {})
        kernel, pos = params.get("embedding", {}).get("kernel"), params.get("pos_embedding")
        (h, w, c), (ph, pw) = np.shape(image)[1:], tuple(self.patch_size)
        want_c = None if kernel is None else kernel.shape[2]
        want_tokens = None if pos is None else pos.shape[1]
        if (want_c is None or want_c == c) and (
            want_tokens is None or want_tokens == (h // ph) * (w // pw)
        ):
            return
        side = None if want_tokens is None else math.isqrt(want_tokens)
        expected = (
            f"{side * ph} x {side * pw}"
            if side and side * side == want_tokens
            else (f"{want_tokens} patches of {ph} x {pw}")
        )
        raise ValueError(
            f"images are {h} x {w} with {c} channels; this model's parameters expect "
            f"{expected if want_tokens else f'{h} x {w}'} images with {want_c or c} channels "
            f"(resize them, or set data.image_size; grey images need 3 channels)."
        )

    def _embed(self, image):
        self._check_image_type(image)
        self._check_against_params(image)
        if image.dtype == jnp.uint8:  # a table lookup: the float32 values data.Split holds
            image = jnp.asarray(UINT8_VALUES)[image]
        x = nn.Conv(
            self.width,
            tuple(self.patch_size),
            strides=tuple(self.patch_size),
            padding="VALID",
            dtype=self.dtype,
            name="embedding",
        )(image)
        b, h, w, c = x.shape
        x = x.reshape(b, h * w, c).astype(jnp.float32)
        if self.posemb == "learn":
            pos = self.param("pos_embedding", nn.initializers.normal(c**-0.5), (1, h * w, c))
        elif self.posemb == "sincos2d":
            pos = posemb_sincos_2d(h, w, c)
        else:
            raise ValueError(f"Unknown posemb {self.posemb!r}; valid: 'learn', 'sincos2d'.")
        x = x + pos
        if self.pool_type == "tok":
            cls = self.param("cls", nn.initializers.zeros, (1, 1, c))
            x = jnp.concatenate([jnp.tile(cls, (b, 1, 1)), x], axis=1)
        return x

    def _pool(self, x):
        if self.pool_type == "tok":
            return x[:, 0]
        if self.pool_type == "gap":
            return jnp.mean(x, axis=1)
        if self.pool_type == "map":
            head = MAPHead(
                self.mlp_dim, self.num_heads, self.dtype, self.approximate_gelu, name="MAPHead_0"
            )
            return head(x)
        raise ValueError(f"Unknown pool_type {self.pool_type!r}; valid: 'tok', 'gap', 'map'.")

    @nn.compact
    def __call__(
        self,
        image,
        *,
        return_nodes: bool = False,
        perturb_nodes: bool = False,
        pass1=None,
        inner_taps: bool = False,
        prefix=None,
    ):
        """Logits (B, num_classes) for NHWC images; with return_nodes, (logits, out).

        out["nodes"] is the tuple of the n = 2L + 1 node values, each (B, T, d);
        out["pre_logits"] the pooled representation. perturb_nodes adds a zero
        variable `node_{k}` of collection "perturbations" at every node, whose
        gradient is the cotangent dL/dx_k (used by scoring). pass1, {i: (B, T, d)}
        plain node values of these images at the recurrent sources, skips the
        first pass of the two-pass forward. inner_taps adds adapted scoring's
        taps inside the nodes' updates (adapters.run_graph). prefix, {k: (B, T, d)}
        plain values of the nodes before the first adapter target
        (graph.prefix_nodes), skips computing them: a step then costs only the
        nodes from that target on.
        """
        encoder = Encoder(
            self.depth,
            self.mlp_dim,
            self.num_heads,
            self.dtype,
            self.approximate_gelu,
            self.remat,
            name="Transformer",
        )
        steps = [lambda x, k=k: encoder.step(k, x) for k in range(1, 2 * self.depth + 1)]
        x0 = self._embed(image)
        nodes = adapters_lib.run_graph(self, x0, steps, perturb_nodes, pass1, inner_taps, prefix)
        pre_logits = self._pool(encoder.norm(nodes[-1]))
        return models.classify(self, pre_logits, nodes, return_nodes)


def Model(num_classes: int | None = None, *, variant: str | None = None, **kw) -> _Model:  # noqa: N802
    """A ViT factory in big_vision's style: `Model(10, variant="B/16", edges=...)`.

    Keyword arguments override the variant (e.g. `width=32, depth=3` for a tiny
    test model). `edges` is validated and canonicalised; `adapter_rank` is an
    int, a per-edge sequence or an {edge: rank} map; `linear_edges`, a subset
    of `edges`, get a zero d x d linear adapter instead (adapters.EdgeAdapters).
    """
    config = {**(decode_variant(variant) if variant else {}), **kw}
    if isinstance(config.get("patch_size"), int):
        config["patch_size"] = (config["patch_size"],) * 2
    config["patch_size"] = tuple(config.get("patch_size", (16, 16)))
    edges = graph.validate_edges(config.pop("edges", ()), config.get("depth", 12))
    rank = config.pop("adapter_rank", 8)
    ranks = adapters_lib.resolve_ranks(edges, rank) if edges else ()
    linear = adapters_lib.check_linear_edges(edges, config.pop("linear_edges", ()))
    return _Model(num_classes, edges=edges, linear_edges=linear, adapter_rank=ranks, **config)


# The ViT that scripts/pretrain_small_vit.py trains on Fashion-MNIST (gga_jax/assets/).
SMALL_FMNIST = pathlib.Path(__file__).resolve().parent.parent / "assets" / "vit_fmnist_s4.npz"


def load_small_fmnist(num_classes: int, **kw) -> tuple[_Model, dict]:
    """(model, params): the shipped ViT pre-trained on Fashion-MNIST, with a zero head.

    Width 192, depth 6, 3 heads, MLP 768, 4 x 4 patches, cls token, for 28 x 28
    RGB images in [-1, 1] (91.10% on Fashion-MNIST's test split; the recipe is in
    vit_fmnist_s4.json beside the weights). `kw` (edges, adapter_rank, ...) go to
    `Model`; adapters start at zero, so the function is the pre-trained one.
    """
    from gga_jax import checkpoints

    with open(SMALL_FMNIST.with_suffix(".json")) as f:
        sizes = json.load(f)["model"]
    image_size = sizes.pop("image_size")
    model = Model(num_classes, **sizes, **kw)
    example = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), example)["params"]
    return model, checkpoints.load_vit(SMALL_FMNIST, model, params)
