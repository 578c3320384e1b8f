"""Makes chosen top-level packages look absent, to check that a code path runs without them.

Put this folder first on PYTHONPATH; Python's `site` imports it at start-up (in every child process
too, since PYTHONPATH is inherited). `C2F_BLOCK_IMPORTS` names the packages, comma-separated
(default: tensorflow, tensorflow_datasets, cv2: what the GPU benchmark host lacks or must not need).
As for a package that is not installed, importing one of them (or anything below it) raises
ModuleNotFoundError, here naming this shim, and `importlib.util.find_spec` returns None for them.
"""

import importlib.util
import os
import sys

BLOCKED = tuple(p.strip() for p in os.environ.get("C2F_BLOCK_IMPORTS", "tensorflow,tensorflow_datasets,cv2")
                .split(",") if p.strip())


def _blocked(name) -> bool:
    return isinstance(name, str) and name.split(".")[0] in BLOCKED


class _Blocker:
    def find_spec(self, name, path=None, target=None):
        if _blocked(name):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by benchmarks/blocked_imports/"
                                      f"sitecustomize.py; C2F_BLOCK_IMPORTS={','.join(BLOCKED)})", name=name)
        return None


_find_spec = importlib.util.find_spec


def _find_spec_unless_blocked(name, package=None):
    if _blocked(name):
        return None
    return _find_spec(name, package)


importlib.util.find_spec = _find_spec_unless_blocked
sys.meta_path.insert(0, _Blocker())
