"""Backbones on the adapter graph: ViT (vit.py), BERT/RoBERTa (text.py)."""

import flax.linen as nn


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
