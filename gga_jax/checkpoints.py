"""Checkpoints: orbax state of the trainable parameters and optimizer, resumable.

Only what training changes is saved (the trainable parameters and their
optimizer state); the frozen backbone comes from its own checkpoint. Restoring
checks that the saved tree has exactly the expected names and shapes, so a
checkpoint from another placement or recipe fails loudly instead of loading.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


def _name(path) -> str:
    """ "opt_state/0/trace/head/bias" for dict keys, sequence indices and attributes alike."""
    parts = (getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))) for k in path)
    return "/".join(str(p) for p in parts)


def _shapes(tree) -> dict[str, tuple]:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {_name(path): tuple(x.shape) for path, x in flat}


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
