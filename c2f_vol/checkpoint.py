"""Checkpoints through orbax: atomic saves every N steps, keep K, restore the latest.

orbax writes each checkpoint to a temporary folder and renames it when
complete, so a hard kill mid-save leaves the previous checkpoint as the latest
complete one; `latest_step` never returns a partial save.
"""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp


class Manager:
    """A thin wrapper over `ocp.CheckpointManager` for the train-state dict (a pytree of plain dicts and arrays)."""

    def __init__(self, directory: str, max_to_keep: int):
        self.directory = os.path.abspath(directory)
        self._mngr = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                                 enable_async_checkpointing=True))

    def latest_step(self) -> int | None:
        return self._mngr.latest_step()

    def save(self, step: int, state: dict, force: bool = False) -> None:
        self._mngr.save(step, args=ocp.args.StandardSave(state), force=force)

    def restore(self, step: int | None, template: dict) -> dict:
        """Restore `step` (latest when None) into the structure and shardings of `template`."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}; train first (tools/train.py --workdir=...)")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        try:
            return self._mngr.restore(step, args=ocp.args.StandardRestore(abstract))
        except ValueError as e:
            if "structure" not in str(e).lower():  # orbax words tree mismatches in several ways
                raise
            raise ValueError(
                f"the checkpoint at step {step} in {self.directory} has a different layout from this config's "
                "train state (another model or optimiser config, or a c2f_vol version before the optimiser "
                "state was flattened). Train in a new workdir, or move that checkpoints folder away. "
                f"orbax said: {str(e)[:300]}") from e

    def wait(self) -> None:
        self._mngr.wait_until_finished()

    def close(self) -> None:
        self._mngr.wait_until_finished()
        self._mngr.close()
