"""Checkpoints: resumable orbax training state, and big_vision-style .npz weights.

Only what training changes is saved (the trainable parameters and their
optimizer state); the frozen backbone comes from its own checkpoint. Restoring
checks that the saved tree has exactly the expected names and shapes, so a
checkpoint from another placement or recipe fails loudly instead of loading.
"""

from __future__ import annotations

import os
import re
from typing import Any

import flax
import jax
import numpy as np
import orbax.checkpoint as ocp


def _name(path) -> str:
    """ "opt_state/0/trace/head/bias" for dict keys, sequence indices and attributes alike."""
    parts = (getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))) for k in path)
    return "/".join(str(p) for p in parts)


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
    """Saves every `every` steps (and when forced), restores the latest step."""

    def __init__(self, directory: str, every: int, keep: int = 2):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, save_interval_steps=every, create=True
        )
        self.manager = ocp.CheckpointManager(
            self.directory, options=options, item_handlers=ocp.StandardCheckpointHandler()
        )

    def save(self, step: int, state, force: bool = False) -> None:
        self.manager.save(step, args=ocp.args.StandardSave(state), force=force)

    def restore_latest(self, like) -> tuple[int, Any]:
        """(step, state) of the latest checkpoint, or (0, None) if there is none.

        Raises ValueError listing every difference if the saved tree does not
        match `like` (e.g. a checkpoint written for another placement).
        """
        step = self.manager.latest_step()
        if step is None:
            return 0, None
        saved = self.manager.item_metadata(step)
        saved = getattr(saved, "tree", saved)
        problems = tree_mismatch(like, saved)
        if problems:
            raise ValueError(
                f"The checkpoint at step {step} in {self.directory} does not match this run "
                f"(different placement, adapter sizes or optimizer?). Use another --workdir; "
                f"nothing was overwritten.\n{problems}"
            )
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, like)
        return step, self.manager.restore(step, args=ocp.args.StandardRestore(abstract))

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def save_npz(path: str, params) -> None:
    """Writes params as a big_vision-style .npz: one array per "a/b/c" name."""
    flat = {_name(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}
    with open(path, "wb") as f:
        np.savez(f, **flat)


def load_npz(path: str, params, skip: str | None = r"^(head|adapters)/") -> dict:
    """Loads a big_vision-style .npz into the tree of `params` (names "a/b/c").

    Entries of `params` whose name matches `skip` (default: the head and the
    adapters, which a transfer run initialises itself) keep their values, and
    matching file entries are ignored. Every other name must be in the file with
    the same shape: one ValueError lists all that are missing, unexpected or
    wrongly shaped.
    """
    try:
        with np.load(path, allow_pickle=False) as f:
            found = {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError) as e:
        raise ValueError(f"{path} is not a readable .npz checkpoint: {e}") from e
    regex = re.compile(skip) if skip else None
    keep = lambda name: regex is None or not regex.search(name)  # noqa: E731
    flat = {_name(p): x for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}
    want = {k: v for k, v in flat.items() if keep(k)}
    got = {k: v for k, v in found.items() if keep(k)}
    problems = tree_mismatch(want, got)
    if problems:
        raise ValueError(f"{path} does not match the model:\n{problems}")
    return flax.traverse_util.unflatten_dict(
        {k: (np.asarray(got[k], v.dtype) if k in got else v) for k, v in flat.items()}, sep="/"
    )
