"""Checkpoints: resumable orbax training state, and pre-trained ViT weights.

Only what training changes is saved (the trainable parameters and their
optimizer state); the frozen backbone comes from its own checkpoint. Restoring
checks that the saved tree has exactly the expected names and shapes, so a
checkpoint from another placement or recipe fails loudly instead of loading.

Pre-trained ViT weights are converted to the big_vision names of models/vit.py
from big_vision and original-ViT (AugReg) .npz files (`load_npz`), timm state
dicts (`params_from_timm`) and Hugging Face ViT state dicts
(`params_from_hf_vit`); `load_vit` reads any of them from a file. Beyond names,
two things are converted: the [cls] token's position embedding, which the
others have and ours does not, is added to `cls`; and a position-embedding grid
of another resolution is resampled to the model's. Loading then reports every
missing, unexpected and wrongly shaped tensor in one error.
"""

from __future__ import annotations

import functools
import math
import os
import pathlib
import re
import zipfile
import zlib
from collections.abc import Mapping
from typing import Any

import flax
import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging


def _name(path) -> str:
    """ "opt_state/0/trace/head/bias" for dict keys, sequence indices and attributes alike."""
    parts = (getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))) for k in path)
    return "/".join(str(p) for p in parts)


def _flat(tree) -> dict[str, Any]:
    """{"a/b/c": leaf} of a nested tree."""
    return {_name(path): x for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _shapes(tree) -> dict[str, tuple]:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {_name(path): tuple(np.shape(x)) for path, x in flat}


def tree_mismatch(expected, found) -> str:
    """Lists every missing, unexpected and wrongly shaped leaf ('' if none)."""
    want, got = _shapes(expected), _shapes(found)
    lines = [f"  missing {k} {want[k]}" for k in sorted(set(want) - set(got))]
    lines += [f"  unexpected {k} {got[k]}" for k in sorted(set(got) - set(want))]
    lines += [
        f"  shape of {k}: expected {want[k]}, found {got[k]}"
        for k in sorted(set(want) & set(got))
        if want[k] != got[k]
    ]
    return "\n".join(lines)


class Manager:
    """Saves every `every` steps (and when forced), restores the newest intact step."""

    def __init__(self, directory: str, every: int, keep: int = 2):
        self.directory = os.path.abspath(directory)
        self.options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, save_interval_steps=every, create=True
        )
        self.manager = self._open()

    def _open(self) -> ocp.CheckpointManager:
        return ocp.CheckpointManager(
            self.directory, options=self.options, item_handlers=ocp.StandardCheckpointHandler()
        )

    def save(self, step: int, state, force: bool = False) -> None:
        self.manager.save(step, args=ocp.args.StandardSave(state), force=force)

    def restore_latest(self, like) -> tuple[int, Any]:
        """(step, state) of the newest intact checkpoint, or (0, None) if there is none.

        A checkpoint that cannot be read (truncated or corrupt files, e.g. after
        the disk filled up or the machine died mid-write) is moved, whole, to
        `<directory>_damaged/<step>` with a warning naming it, and the next
        older one is tried: nothing is deleted. Raises ValueError listing every
        difference if a readable saved tree does not match `like` (e.g. a
        checkpoint written for another placement).
        """
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                saved = self.manager.item_metadata(step)
            except Exception as e:  # noqa: BLE001 - any read failure means damage
                self._set_aside(step, e)
                continue
            saved = getattr(saved, "tree", saved)
            problems = tree_mismatch(like, saved) if saved is not None else ""
            if problems:
                raise ValueError(
                    f"The checkpoint at step {step} in {self.directory} does not match this run "
                    f"(different placement, adapter sizes or optimizer?). Use another --workdir; "
                    f"nothing was overwritten.\n{problems}"
                )
            abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, like)
            try:
                return step, self.manager.restore(step, args=ocp.args.StandardRestore(abstract))
            except Exception as e:  # noqa: BLE001
                self._set_aside(step, e)
        return 0, None

    def _set_aside(self, step: int, error: BaseException) -> None:
        """Moves the damaged checkpoint of `step` out of the manager's way, and says so."""
        source = os.path.join(self.directory, str(step))
        target = os.path.join(self.directory + "_damaged", str(step))
        if os.path.exists(target):
            target += f".{len(os.listdir(os.path.dirname(target)))}"
        reason = " ".join(str(error).split())[:200]
        if jax.process_index() == 0:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.replace(source, target)
        logging.warning("checkpoint of step %d is damaged (%s): moved to %s", step, reason, target)
        print(
            f"warning: the checkpoint of step {step} in {self.directory} is damaged "
            f"({type(error).__name__}: {reason}); kept in {target}, resuming from an older step."
        )
        self.manager.close()
        self.manager = self._open()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


# --- Pre-trained ViT weights -----------------------------------------------------------

# Names a transfer run initialises itself: the head, the representation layer of the
# i21k checkpoints before it (`pre_logits`, Dense + tanh; HF's `pooler`), which our ViT
# does not have, and the adapters. Pass e.g. skip=r"^adapters/" to load the head too.
DEFAULT_SKIP = r"^(head|pre_logits|adapters)/"
FORMATS = ("auto", "big_vision", "timm", "hf")
_MAX_NAMED = 5  # Tensors named in one error about non-finite values.

# google-research/vision_transformer (incl. AugReg) names -> ours. Pre-linen flax numbered
# the sub-modules of a block in one sequence (LayerNorm_0, MultiHeadDotProductAttention_1,
# LayerNorm_2, MlpBlock_3); linen numbers each module type on its own.
_ORIGINAL_VIT_NAMES = (
    (r"^Transformer/posembed_input/pos_embedding$", "pos_embedding"),
    (r"^Transformer/pos_embedding$", "pos_embedding"),  # big_vision before 2022.
    (
        r"^(Transformer/encoderblock_\d+)/MultiHeadDotProductAttention_1/",
        r"\1/MultiHeadDotProductAttention_0/",
    ),
    (r"^(Transformer/encoderblock_\d+)/LayerNorm_2/", r"\1/LayerNorm_1/"),
    (r"^(Transformer/encoderblock_\d+)/MlpBlock_3/", r"\1/MlpBlock_0/"),
)
# Whole-checkpoint .npz files keep the parameters under a prefix: big_vision's train
# state ("params/"), the original ViT's flax.optim state ("opt/target/").
_NPZ_PREFIXES = ("params/", "opt/target/")

_BLOCK = r"Transformer/encoderblock_\1"
_MHA = _BLOCK + "/MultiHeadDotProductAttention_0"
# Torch modules -> (our path, kind); a kind says how weight/bias become our leaves (`_leaves`).
_TIMM_MODULES = (
    (r"patch_embed\.proj", "embedding", "conv"),
    (r"blocks\.(\d+)\.norm1", _BLOCK + "/LayerNorm_0", "norm"),
    (r"blocks\.(\d+)\.attn\.qkv", _MHA, "qkv"),
    (r"blocks\.(\d+)\.attn\.proj", _MHA + "/out", "out"),
    (r"blocks\.(\d+)\.norm2", _BLOCK + "/LayerNorm_1", "norm"),
    (r"blocks\.(\d+)\.mlp\.fc1", _BLOCK + "/MlpBlock_0/Dense_0", "dense"),
    (r"blocks\.(\d+)\.mlp\.fc2", _BLOCK + "/MlpBlock_0/Dense_1", "dense"),
    (r"norm", "Transformer/encoder_norm", "norm"),
    (r"head", "head", "dense"),
)
_TIMM_TENSORS = {"cls_token": "cls", "pos_embed": "pos_embedding"}
# HF ViT files name a block encoder.layer.{l}.*; transformers >= 5 renames the modules in
# memory (layers.{l}.attention.q_proj, mlp.fc1, ...), so state_dict() has the second form.
_HF_MODULES = (
    (r"embeddings\.patch_embeddings\.projection", "embedding", "conv"),
    (r"(?:encoder\.layer|layers)\.(\d+)\.layernorm_before", _BLOCK + "/LayerNorm_0", "norm"),
    *(
        (rf"encoder\.layer\.(\d+)\.attention\.attention\.{n}", f"{_MHA}/{n}", "query")
        for n in ("query", "key", "value")
    ),
    *(
        (rf"layers\.(\d+)\.attention\.{n[0]}_proj", f"{_MHA}/{n}", "query")
        for n in ("query", "key", "value")
    ),
    (r"encoder\.layer\.(\d+)\.attention\.output\.dense", _MHA + "/out", "out"),
    (r"layers\.(\d+)\.attention\.o_proj", _MHA + "/out", "out"),
    (r"(?:encoder\.layer|layers)\.(\d+)\.layernorm_after", _BLOCK + "/LayerNorm_1", "norm"),
    (r"encoder\.layer\.(\d+)\.intermediate\.dense", _BLOCK + "/MlpBlock_0/Dense_0", "dense"),
    (r"layers\.(\d+)\.mlp\.fc1", _BLOCK + "/MlpBlock_0/Dense_0", "dense"),
    (r"encoder\.layer\.(\d+)\.output\.dense", _BLOCK + "/MlpBlock_0/Dense_1", "dense"),
    (r"layers\.(\d+)\.mlp\.fc2", _BLOCK + "/MlpBlock_0/Dense_1", "dense"),
    (r"layernorm", "Transformer/encoder_norm", "norm"),
    (r"pooler\.dense", "pre_logits", "dense"),
    (r"classifier", "head", "dense"),
)
_HF_TENSORS = {"embeddings.cls_token": "cls", "embeddings.position_embeddings": "pos_embedding"}


def check_finite(source: str, flat: Mapping[str, Any]) -> None:
    """Raises ValueError naming every tensor of a loaded checkpoint that holds NaN or Inf."""
    bad = [
        f"{name} ({int(np.size(x) - np.isfinite(x).sum())} of {np.size(x)})"
        for name, x in sorted(flat.items())
        if np.issubdtype(np.asarray(x).dtype, np.floating) and not np.isfinite(x).all()
    ]
    if bad:
        shown = ", ".join(bad[:_MAX_NAMED]) + (" ..." if len(bad) > _MAX_NAMED else "")
        raise ValueError(
            f"{source} holds NaN or Inf in {len(bad)} tensors: {shown}; the file is damaged or "
            f"was saved from a diverged run."
        )


def save_npz(path: str, params) -> None:
    """Writes params as a big_vision-style .npz: one array per "a/b/c" name."""
    flat = {k: np.asarray(x) for k, x in _flat(params).items()}
    with open(path, "wb") as f:
        np.savez(f, **flat)


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """{"a/b/c": array} of an .npz file; a ValueError naming the path if it is not one."""
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single unnamed array (.npy), not named arrays")
        with data:
            return {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise ValueError(f"{path} is not a readable .npz checkpoint: {e}") from e


def load_npz(
    path: str | os.PathLike,
    params,
    skip: str | None = DEFAULT_SKIP,
    *,
    resize_posemb: bool = True,
) -> dict:
    """Loads a big_vision or original-ViT (AugReg) .npz into the tree of `params`.

    Names are "a/b/c"; the original ViT's (`Transformer/posembed_input/...`,
    `MultiHeadDotProductAttention_1`, `LayerNorm_2`, `MlpBlock_3`) are renamed to
    ours, and a "params/" or "opt/target/" prefix is dropped.

    Args:
      path: the .npz file.
      params: an initialised tree (model.init(...)["params"]).
      skip: regex; entries of `params` whose name it matches keep their values and
        matching file entries are ignored (default: head, pre_logits, adapters).
      resize_posemb: resample a (1, s*s, d) `pos_embedding` to the model's square
        grid (see `resample_posemb`); a leading [cls] row is folded into `cls`
        either way (see `fold_cls_posemb`).
    Returns:
      The parameter dict with every non-skipped entry taken from the file.
    Raises:
      ValueError if the file is not an .npz, or, in one message, listing every
      missing and unexpected name with its shape and every shape mismatch.
    """
    found = _rename_original_vit(_strip_npz_prefix(read_npz(path)))
    return _merge(str(path), found, params, skip, resize_posemb)


def _strip_npz_prefix(flat: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    for prefix in _NPZ_PREFIXES:
        if "embedding/kernel" not in flat and f"{prefix}embedding/kernel" in flat:
            return {k.removeprefix(prefix): v for k, v in flat.items() if k.startswith(prefix)}
    return flat


def _rename_original_vit(flat: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    renamed = {}
    for name, value in flat.items():
        for pattern, replacement in _ORIGINAL_VIT_NAMES:
            name = re.sub(pattern, replacement, name)
        if name in renamed:
            raise ValueError(f"The checkpoint holds {name} under both its old and its new name.")
        renamed[name] = value
    return renamed


# --- Position embeddings ---------------------------------------------------------------


def _side(n: int) -> int | None:
    """s if n == s * s > 0, else None."""
    side = math.isqrt(n)
    return side if n > 0 and side * side == n else None


def resample_posemb(posemb: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Resamples a square grid of position embeddings, (1, s*s, d) -> (1, h*w, d).

    Bilinear with half-pixel centres and no antialiasing, i.e. the same as torch's
    interpolate(mode="bilinear", align_corners=False) on the (s, s, d) grid
    (big_vision's scipy.ndimage.zoom(order=1) maps corner to corner instead).
    """
    posemb = np.asarray(posemb, np.float32)
    n, d = posemb.shape[1:]
    side = _side(n)
    if posemb.shape[0] != 1 or side is None:
        raise ValueError(f"Expected a (1, s*s, d) position embedding, got {posemb.shape}.")
    x = jax.image.resize(posemb.reshape(side, side, d), (*grid, d), "linear", antialias=False)
    return np.asarray(x).reshape(1, grid[0] * grid[1], d)


def fold_cls_posemb(flat: dict[str, Any], rows: int | None = None) -> dict[str, Any]:
    """Moves a leading [cls] row of `pos_embedding` (1, 1+N, d) into `cls` (1, 1, d).

    The original ViT, timm and HF add a position embedding to the [cls] token
    too; ours (like big_vision's ViT) adds it to the patches only, so
    cls + pos_embedding[:, :1] is the same first-block input. The first row is
    taken to be the [cls] row when the model has `rows` = N position rows, or
    when N is a square and 1 + N is not (a square patch grid).
    """
    pos, cls = flat.get("pos_embedding"), flat.get("cls")
    if pos is None or cls is None or np.ndim(pos) != 3:
        return flat
    n = pos.shape[1]
    square_plus_one = n > 1 and _side(n) is None and _side(n - 1) is not None
    if n == rows or not (n - 1 == rows or square_plus_one):
        return flat
    return {**flat, "cls": cls + pos[:, :1], "pos_embedding": pos[:, 1:]}


def _resize_posemb(got: dict[str, Any], want: dict[str, Any]) -> dict[str, Any]:
    """got with its pos_embedding resampled to want's square grid, where both are square."""
    old, new = got.get("pos_embedding"), want.get("pos_embedding")
    if old is None or new is None or np.shape(old) == np.shape(new):
        return got
    old_side, new_side = _side(np.shape(old)[1]), _side(np.shape(new)[1])
    if np.ndim(old) != 3 or np.shape(old)[2] != np.shape(new)[2] or not old_side or not new_side:
        return got  # Left to the mismatch report.
    logging.info("Resampling pos_embedding from %d^2 to %d^2 patches.", old_side, new_side)
    return {**got, "pos_embedding": resample_posemb(old, (new_side, new_side))}


# --- timm and Hugging Face state dicts ---------------------------------------------------


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # A torch tensor; float() as numpy has no bfloat16.
        x = x.detach().cpu()
        return (x.float() if x.is_floating_point() else x).numpy()
    return np.asarray(x)


def _heads(x: np.ndarray, num_heads: int, name: str) -> np.ndarray:
    """Splits the leading axis, (h*hd, ...) -> (h, hd, ...)."""
    if x.shape[0] % num_heads:
        raise ValueError(
            f"{name} {x.shape}: {x.shape[0]} is not divisible by num_heads={num_heads}."
        )
    return x.reshape(num_heads, -1, *x.shape[1:])


def _leaves(kind: str, path: str, leaf: str, x: np.ndarray, num_heads: int, name: str) -> dict:
    """Our leaves for torch tensor `name` (= module + "." + leaf) of a module of `kind`.

    Torch Linear weights are (out, in), ours (in, out); a Conv2d's (d, 3, p, p),
    ours (p, p, 3, d); flax attention splits the heads: query/key/value kernels
    (d, h, hd) and biases (h, hd), the out kernel (h, hd, d).
    """
    if kind == "qkv":  # timm's fused (3*d, d) projection: query, key, value stacked.
        if x.shape[0] % 3:
            return {name: x}
        parts = zip(("query", "key", "value"), np.split(x, 3))
        return {
            k: v
            for n, p in parts
            for k, v in _leaves("query", f"{path}/{n}", leaf, p, num_heads, name).items()
        }
    if leaf == "bias":
        return {f"{path}/bias": _heads(x, num_heads, name) if kind == "query" else x}
    if (kind, x.ndim) == ("norm", 1):
        return {f"{path}/scale": x}
    if (kind, x.ndim) == ("conv", 4):
        return {f"{path}/kernel": x.transpose(2, 3, 1, 0)}
    if (kind, x.ndim) == ("dense", 2):
        return {f"{path}/kernel": x.T}
    if (kind, x.ndim) == ("query", 2):
        return {f"{path}/kernel": _heads(x, num_heads, name).transpose(2, 0, 1)}
    if (kind, x.ndim) == ("out", 2):
        return {f"{path}/kernel": _heads(x.T, num_heads, name)}
    return {name: x}  # A rank we cannot convert: reported as unexpected under its own name.


def _convert(
    state_dict: Mapping[str, Any], modules, tensors, num_heads: int, prefix: str = ""
) -> dict:
    """Flat {our name: array}; names no rule matches are kept, to be reported as unexpected."""
    flat = {}
    for name, value in state_dict.items():
        x, short = _to_numpy(value), name.removeprefix(prefix)
        module, _, leaf = short.rpartition(".")
        if short in tensors:
            flat[tensors[short]] = x
            continue
        rule = next(
            (r for r in modules if leaf in ("weight", "bias") and re.fullmatch(r[0], module)), None
        )
        if rule is None:
            flat[name] = x
            continue
        pattern, path, kind = rule
        flat.update(
            _leaves(kind, re.fullmatch(pattern, module).expand(path), leaf, x, num_heads, name)
        )
    return fold_cls_posemb(flat)


def params_from_timm(state_dict: Mapping[str, Any], num_heads: int) -> dict:
    """Converts a timm `vit_*_patch*` state dict to our parameter tree.

    Args:
      state_dict: {name: array or torch tensor} with timm's names (`cls_token`
        (1, 1, d), `pos_embed` (1, 1+N, d), `patch_embed.proj.weight` (d, 3, p, p),
        `blocks.{l}.attn.qkv.weight` (3d, d), ..., `norm`, `head`).
      num_heads: the model's attention heads (splits the (d, d) projections).
    Returns:
      The nested tree, with pos_embed's [cls] row folded into `cls`
      (`fold_cls_posemb`); tensors without a counterpart (layer scale, fc_norm,
      register tokens, ...) stay under their own names, so loading reports them.
    """
    return flax.traverse_util.unflatten_dict(
        _convert(state_dict, _TIMM_MODULES, _TIMM_TENSORS, num_heads), sep="/"
    )


def params_from_hf_vit(state_dict: Mapping[str, Any], num_heads: int) -> dict:
    """Converts a Hugging Face ViTModel / ViTForImageClassification state dict to our tree.

    Args:
      state_dict: {name: array or torch tensor}, with or without the "vit."
        prefix; names as in HF files (`encoder.layer.{l}.attention.attention.query`)
        or as transformers >= 5 has them in memory (`layers.{l}.attention.q_proj`).
        `pooler.dense` becomes `pre_logits`, `classifier` the `head`.
      num_heads: the model's attention heads.
    Returns:
      The nested tree, with the [cls] row of the position embeddings folded into
      `cls` (`fold_cls_posemb`).
    """
    prefix = "vit." if any(k.startswith("vit.") for k in state_dict) else ""
    return flax.traverse_util.unflatten_dict(
        _convert(state_dict, _HF_MODULES, _HF_TENSORS, num_heads, prefix), sep="/"
    )


def read_weights(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """{name: array} of an .npz, .safetensors or torch .bin/.pt/.pth file.

    A directory is read through its model.safetensors or pytorch_model.bin.
    Torch files need torch and are read with weights_only=True (no code runs).
    """
    path = pathlib.Path(path)
    if path.is_dir():
        files = [
            path / f for f in ("model.safetensors", "pytorch_model.bin") if (path / f).exists()
        ]
        if not files:
            raise FileNotFoundError(
                f"{path} holds neither model.safetensors nor pytorch_model.bin."
            )
        path = files[0]
    if path.suffix == ".npz":
        return read_npz(path)
    if path.suffix not in (".safetensors", ".bin", ".pt", ".pth"):
        raise ValueError(
            f"Unknown weights file {path}; valid: .npz, .safetensors, .bin, .pt, .pth."
        )
    if not path.exists():
        raise FileNotFoundError(f"No weights file at {path}.")
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file as load
    else:
        import torch

        load = functools.partial(torch.load, map_location="cpu", weights_only=True)
    try:
        state = load(path)
    except Exception as e:  # safetensors and torch raise their own error types.
        raise ValueError(f"{path} is not a readable {path.suffix} checkpoint: {e}") from e
    for key in ("state_dict", "model"):  # Training checkpoints nest the weights.
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict.")
    return {k: _to_numpy(v) for k, v in state.items()}


def _format(names, source: str) -> str:
    if any("patch_embeddings.projection" in n for n in names):
        return "hf"
    if any(n.startswith("patch_embed.") for n in names):
        return "timm"
    if any("/" in n for n in names):
        return "big_vision"
    raise ValueError(
        f"Cannot tell the format of {source} from its names (e.g. {sorted(names)[:3]}); "
        f"pass fmt= one of {FORMATS[1:]}."
    )


def load_vit(
    source: str | os.PathLike | Mapping[str, Any],
    model,
    params,
    *,
    fmt: str = "auto",
    skip: str | None = DEFAULT_SKIP,
    resize_posemb: bool = True,
) -> dict:
    """Loads big_vision/AugReg, timm or HF ViT weights into the tree of `params`.

        params = model.init(rng, images)["params"]
        params = load_vit("vit_base_patch16_224.safetensors", model, params)

    Args:
      source: an .npz, .safetensors or torch file, an HF model directory, or a
        state dict ({name: array or torch tensor}).
      model: the vit `Model` (its num_heads splits the attention projections).
      params: an initialised tree; skipped entries keep their values.
      fmt: "big_vision", "timm", "hf", or "auto" (told apart by the names).
      skip, resize_posemb: as in `load_npz`.
    Returns:
      The parameter dict.
    Raises:
      ValueError for an unreadable file, or one listing every missing,
      unexpected and wrongly shaped tensor (under our names after conversion).
    """
    if fmt not in FORMATS:
        raise ValueError(f"Unknown fmt {fmt!r}; valid: {FORMATS}.")
    if isinstance(source, Mapping):
        name, state = "The state dict", {k: _to_numpy(v) for k, v in source.items()}
    else:
        name, state = str(source), read_weights(source)
    fmt = _format(state, name) if fmt == "auto" else fmt
    if fmt == "big_vision":
        found = _rename_original_vit(_strip_npz_prefix(state))
    else:
        convert = params_from_timm if fmt == "timm" else params_from_hf_vit
        found = _flat(convert(state, model.num_heads))
        if getattr(model, "approximate_gelu", True):
            logging.warning(
                "%s ViTs normally use the exact (erf) gelu, this model the tanh "
                "approximation: build it with approximate_gelu=False to reproduce them.",
                fmt,
            )
    return _merge(name, found, params, skip, resize_posemb)


def _merge(
    source: str, found: dict[str, Any], params, skip: str | None, resize_posemb: bool
) -> dict:
    """params with every non-skipped leaf replaced by found's (flat "a/b/c" names)."""
    flat = _flat(params)
    target = flat.get("pos_embedding")
    found = fold_cls_posemb(found, None if target is None else np.shape(target)[1])
    regex = re.compile(skip) if skip else None
    keep = lambda name: regex is None or not regex.search(name)  # noqa: E731
    want = {k: v for k, v in flat.items() if keep(k)}
    got = {k: v for k, v in found.items() if keep(k)}
    if resize_posemb:
        got = _resize_posemb(got, want)
    problems = tree_mismatch(want, got)
    if problems:
        raise ValueError(f"{source} does not match the model (skip={skip!r}):\n{problems}")
    check_finite(source, got)
    return flax.traverse_util.unflatten_dict(
        {k: (np.asarray(got[k], v.dtype) if k in got else v) for k, v in flat.items()}, sep="/"
    )
