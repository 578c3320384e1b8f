"""Checkpoints through orbax: atomic saves every N steps, keep K, restore the latest.

orbax writes each checkpoint to a temporary folder and renames it when
complete, so a hard kill mid-save leaves the previous checkpoint as the latest
complete one; `latest_step` never returns a partial save.
"""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp
from flax import nnx


def _is_state(x) -> bool:
    return isinstance(x, nnx.State)


def _to_pure(state):
    """Every nnx.State in the tree (also inside optax states) -> plain nested dicts for orbax."""
    return jax.tree.map(lambda v: nnx.to_pure_dict(v) if _is_state(v) else v, state, is_leaf=_is_state)


def _from_pure(template, pure):
    """Inverse of `_to_pure`, taking the nnx.State structure from `template`."""
    def fill(t, p):
        if not _is_state(t):
            return p
        new = jax.tree.map(lambda x: x, t)
        nnx.replace_by_pure_dict(new, p)
        return new

    return jax.tree.map(fill, template, pure, is_leaf=_is_state)


class Manager:
    """A thin wrapper over `ocp.CheckpointManager` for the train-state dict."""

    def __init__(self, directory: str, max_to_keep: int):
        self.directory = os.path.abspath(directory)
        self._mngr = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                                 enable_async_checkpointing=True))

    def latest_step(self) -> int | None:
        return self._mngr.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._mngr.all_steps())

    def save(self, step: int, state: dict, force: bool = False) -> None:
        self._mngr.save(step, args=ocp.args.StandardSave(_to_pure(state)), force=force)

    def restore(self, step: int | None, template: dict) -> dict:
        """Restore `step` (latest when None) into the structure and shardings of `template`."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}; train first (tools/train.py --workdir=...)")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _to_pure(template))
        pure = self._mngr.restore(step, args=ocp.args.StandardRestore(abstract))
        return _from_pure(template, pure)

    def wait(self) -> None:
        self._mngr.wait_until_finished()

    def close(self) -> None:
        self._mngr.wait_until_finished()
        self._mngr.close()
