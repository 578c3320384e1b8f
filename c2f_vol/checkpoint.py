"""Checkpoints through orbax: atomic saves every N steps, keep K, restore the newest readable one.

orbax writes each checkpoint to a temporary folder and renames it when
complete, so a hard kill mid-save leaves the previous checkpoint as the latest
complete one; `latest_step` never returns a partial save.

A complete checkpoint can still be damaged afterwards (a truncated or deleted
file). `restore_newest` then reports the step in one line, tries the one
before, and once an older step has restored moves the damaged ones aside to
`<directory>.damaged/<step>` (never deleting them). When no step can be read
nothing is moved and the error lists every step's cause.
"""

from __future__ import annotations

import os
import shutil
import time

import jax
import orbax.checkpoint as ocp
from absl import logging

from c2f_vol.errors import UserError


class CheckpointReadError(UserError, RuntimeError):
    """No checkpoint of a directory (or not the one asked for) could be read."""


def read_error_cause(error: BaseException) -> str:
    """The innermost cause of a failed read, in one line (orbax wraps TensorStore's status in several layers)."""
    while (error.__cause__ or error.__context__) is not None:
        error = error.__cause__ or error.__context__
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:300]}{'...' if len(text) > 300 else ''}"


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

    def steps(self) -> list[int]:
        """Every complete step, newest first."""
        return sorted(self._mngr.all_steps(), reverse=True)

    def restore_newest(self, template: dict, step: int | None = None) -> tuple[int, dict]:
        """(step, state) of `step`, or of the newest step that can be read (module docstring).

        With `step` given there is no fallback: a step that fails to read is an error.
        """
        if step is not None:
            if step not in self.steps():
                raise CheckpointReadError(f"no checkpoint of step {step} in {self.directory}; steps there: "
                                          f"{self.steps() or 'none'}")
            try:
                return step, self.restore(step, template)
            except Exception as e:  # noqa: BLE001 -- reported with its cause, not swallowed
                raise CheckpointReadError(f"checkpoint step {step} in {self.directory} cannot be read: "
                                          f"{read_error_cause(e)}") from e
        failed: list[tuple[int, str]] = []
        for s in self.steps():
            try:
                state = self.restore(s, template)
            except Exception as e:  # noqa: BLE001 -- reported, and the step before is tried
                failed.append((s, read_error_cause(e)))
                logging.warning("checkpoint step %d in %s cannot be read (%s); trying the step before", s,
                                self.directory, failed[-1][1])
                continue
            for bad, _ in failed:
                self._move_aside(bad)
            return s, state
        if not failed:
            raise FileNotFoundError(f"no checkpoint in {self.directory}; train first (tools/train.py --workdir=...)")
        raise CheckpointReadError(
            f"no checkpoint in {self.directory} can be read; nothing was moved or deleted. "
            + "; ".join(f"step {s}: {cause}" for s, cause in failed)
            + ". If every step reports a different layout, the workdir was written by another config or c2f_vol "
              "version: train in a new workdir.")

    def _move_aside(self, step: int) -> None:
        src = os.path.join(self.directory, str(step))
        dest_dir = self.directory + ".damaged"
        os.makedirs(dest_dir, exist_ok=True)
        dest = os.path.join(dest_dir, str(step))
        if os.path.exists(dest):
            dest = f"{dest}.{time.strftime('%Y%m%d-%H%M%S')}"
        shutil.move(src, dest)
        self._mngr.reload()
        logging.warning("moved the damaged checkpoint step %d to %s (not deleted)", step, dest)

    def save(self, step: int, state: dict, force: bool = False) -> None:
        self._mngr.save(step, args=ocp.args.StandardSave(state), force=force)

    def restore(self, step: int, template: dict) -> dict:
        """Restore `step` into the structure and shardings of `template` (`restore_newest` picks the step)."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        try:
            return self._mngr.restore(step, args=ocp.args.StandardRestore(abstract))
        except ValueError as e:
            if "structure" not in str(e).lower():  # orbax words tree mismatches in several ways
                raise
            raise ValueError(
                f"the checkpoint at step {step} in {self.directory} has a different layout from this config's "
                "train state: its metadata is damaged, or it was written by another model or optimiser config "
                "or c2f_vol version (then train in a new workdir). "
                f"orbax said: {' '.join(str(e).split())[:300]}") from None

    def wait(self) -> None:
        self._mngr.wait_until_finished()

    def close(self) -> None:
        self._mngr.wait_until_finished()
        self._mngr.close()
