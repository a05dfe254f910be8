"""Backbones on the adapter graph: ViT (vit.py), BERT/RoBERTa (text.py)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# Rematerialisation of the backbone's sub-layers in the backward pass (model.remat):
# "none" keeps every activation; "block" keeps only each sub-layer's input (a node)
# and recomputes the rest; "dots" also keeps the outputs of its weight matmuls.
REMAT = ("none", "block", "dots")
_POLICIES = {"block": None, "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}


def remat(cls: type[nn.Module], mode: str, methods: tuple[str, ...]) -> type[nn.Module]:
    """cls with `methods` (its two residual sub-layers) under jax.checkpoint, per REMAT.

    The sub-layers are the graph's steps from node to node, so what is saved
    for the backward pass is the nodes (and, for "dots", the matmul outputs);
    adapters, between the steps, are not recomputed. Gradients are unchanged.
    """
    if mode not in REMAT:
        raise ValueError(f"Unknown remat {mode!r}; valid: {REMAT}.")
    if mode == "none":
        return cls
    return nn.remat(cls, policy=_POLICIES[mode], methods=list(methods))


def classify(model: nn.Module, pre_logits, nodes, return_nodes: bool):
    """The shared model tail: the `head` Dense (zero-init unless head_zeroinit is False).

    Call inside the model's compact __call__. Returns logits (B, num_classes), or
    pre_logits if num_classes is None; with return_nodes, (logits, {"nodes",
    "pre_logits"}).
    """
    logits = pre_logits
    if model.num_classes:
        init = nn.initializers.zeros if model.head_zeroinit else nn.initializers.lecun_normal()
        logits = nn.Dense(model.num_classes, kernel_init=init, name="head")(pre_logits)
    if return_nodes:
        return logits, {"nodes": nodes, "pre_logits": pre_logits}
    return logits


def array_range(x) -> tuple[float, float, bool]:
    """(min, max, all finite) of a NumPy or JAX array, computed where it lives.

    A NumPy array is reduced on the host; a JAX array (possibly sharded) on its
    devices, so nothing is gathered.
    """
    if isinstance(x, np.ndarray):
        if not x.size:
            return 0.0, 0.0, True
        finite = bool(np.isfinite(x).all()) if np.issubdtype(x.dtype, np.floating) else True
        return float(np.min(x)), float(np.max(x)), finite
    low, high, finite = jax.jit(lambda a: (jnp.min(a), jnp.max(a), jnp.isfinite(a).all()))(x)
    return float(low), float(high), bool(finite)


def check_batch(model, inputs, labels, where: str, values: bool = False) -> None:
    """Raises ValueError if labels or inputs cannot be what `model` takes.

    Labels must be integers in [0, model.num_classes); the inputs are checked by
    the model's own `check_inputs` (token ids within the vocabulary, images of
    finite values in the [-1, 1] convention when `values`, which reads every
    float: done once per scoring batch, skipped per training step).
    """
    labels = labels if isinstance(labels, jax.Array) else np.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"{where}: labels must be integer class ids, got dtype {labels.dtype}.")
    low, high, _ = array_range(labels)
    if model.num_classes and (low < 0 or high >= model.num_classes):
        bad = low if low < 0 else high
        raise ValueError(
            f"{where}: label {int(bad)} is outside [0, {model.num_classes}): the model has "
            f"{model.num_classes} classes."
        )
    model.check_inputs(inputs, where, values)
