"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import json
import os
from typing import Any

from c2f_vol.errors import UserError


class UnwritablePathError(UserError):
    """An output path that cannot be written, found before any work was done."""


def check_writable(path: str, flag: str, *, folder_output: bool = False) -> None:
    """Raise `UnwritablePathError` now if `path` (given as `flag`) cannot be written: a folder where a file
    is expected (unless `folder_output`: the output is a folder, replaced whole), a missing parent folder
    or a read-only one. Tools call it before any slow work, so a bad path costs nothing."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path) and not folder_output:
        raise UnwritablePathError(f"{flag}={path}: is a folder, expected a file name")
    if not os.path.isdir(folder):
        raise UnwritablePathError(f"{flag}={path}: folder {folder} does not exist (create it first)")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UnwritablePathError(f"{flag}={path}: folder {folder} is not writable")


def write_bytes(path: str, data: bytes) -> str:
    """Write `data` to `path` through a temporary file in the same folder and an atomic rename."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def write_text(path: str, text: str) -> str:
    """`text` as UTF-8, written atomically (`write_bytes`)."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str, obj: Any, **dump_kw) -> str:
    """`obj` as indented JSON (NumPy scalars and arrays as lists), written atomically."""
    dump_kw.setdefault("indent", 2)
    text = json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o), **dump_kw)
    return write_text(path, text + "\n")
