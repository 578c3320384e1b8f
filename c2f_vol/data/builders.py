"""The dataset registry (family name -> TFDS builder class) and building a dataset by name, offline.

Importing this module imports every builder module, which registers their names
with `tfds.builder`. `pipeline.load_builder` reads prepared datasets through it;
`build` (tools/build_dataset.py) prepares them.
"""

from __future__ import annotations

import os
import shutil
import time

import tensorflow_datasets as tfds
from absl import logging

from c2f_vol import cli
from c2f_vol.errors import UserError
from c2f_vol.data.human36m import Human36m
from c2f_vol.data.mpii import Mpii
from c2f_vol.data.synthetic.builder import C2fSynthetic

class UnknownDatasetError(UserError, ValueError):
    """A dataset name whose family is not in the registry."""


# Dataset family (the TFDS name before any '/config') -> its builder class.
BUILDERS = {"c2f_synthetic": C2fSynthetic, "human36m": Human36m, "mpii": Mpii}
# Families whose examples have 2D poses only (has_3d False): trained on only inside data.mix.
TWO_D_ONLY = ("mpii",)
# Datasets built from user files: the --manual_dir part of their build command.
_MANUAL_DIRS = {"human36m": "/path/to/h36m", "mpii": "/path/to/mpii", "c2f_synthetic/mocap": "../shared/data/mocap"}


def family(name: str) -> str:
    """The registry key of a TFDS name: 'human36m/stride5:1.0.0' -> 'human36m'."""
    return name.split("/")[0].split(":")[0]


def build_command(name: str, data_dir: str = "DIR") -> str:
    """The shell command that builds dataset `name` into `data_dir` (with its --manual_dir, if it reads files)."""
    manual = next((f" --manual_dir={d}" for k, d in _MANUAL_DIRS.items() if name.startswith(k)), "")
    return f"python tools/build_dataset.py --dataset={name} --data_dir={data_dir}{manual}"


def build(name: str, data_dir: str, manual_dir: str | None = None) -> dict[str, int]:
    """Prepare dataset `name` (e.g. 'c2f_synthetic/procedural') in `data_dir`; returns examples per split.

    A dataset already complete in `data_dir` is not rebuilt, and nothing is shown.
    Otherwise TFDS's own progress bars are turned off and one bar (a line now and
    then without a terminal) counts the examples of all splits as they are
    generated. TFDS writes into a temporary folder and renames it when done, so an
    interrupted build never leaves a half-written dataset that looks complete.
    """
    if family(name) not in BUILDERS:
        raise UnknownDatasetError(f"no dataset family {family(name)!r} (from {name!r}); known families: "
                                  f"{sorted(BUILDERS)}")
    data_dir = os.path.abspath(os.path.expanduser(data_dir))
    if manual_dir is not None:
        manual_dir = os.path.abspath(os.path.expanduser(manual_dir))
        if not os.path.isdir(manual_dir):
            raise FileNotFoundError(f"--manual_dir {manual_dir} is not a folder")
    builder = tfds.builder(name, data_dir=data_dir, try_gcs=False)
    download_config = tfds.download.DownloadConfig(
        manual_dir=manual_dir, download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
    t0 = time.time()
    # TFDS reuses whatever folder exists: it renames a build's folder into place only when complete.
    if os.path.exists(builder.data_dir):
        builder.download_and_prepare(download_config=download_config)
    else:
        _remove_stale_builds(builder.data_dir)
        tfds.disable_progress_bar()
        config = builder.builder_config
        with cli.Progress(f"building {builder.name}" + (f"/{config.name}" if config else ""),
                          _expected_examples(builder), unit="examples") as progress:
            _count_examples(builder, progress)
            builder.download_and_prepare(download_config=download_config)
    logging.info("%s ready in %s after %.1f s", name, builder.data_dir, time.time() - t0)
    return {split: info.num_examples for split, info in builder.info.splits.items()}


def _remove_stale_builds(version_dir: str) -> None:
    """Delete what killed builds of this dataset version left: TFDS's `incomplete.XXXXXX_<version>` folders.

    TFDS removes its temporary folder when a build fails, but not when the process is killed. A build of
    the same dataset into the same data_dir running at the same time is not supported (it would be one).
    """
    parent, version = os.path.split(os.path.normpath(version_dir))
    if not os.path.isdir(parent):
        return
    prefix = tfds.core.constants.INCOMPLETE_PREFIX
    for name in sorted(os.listdir(parent)):
        path = os.path.join(parent, name)
        if name.startswith(prefix) and name.endswith(f"_{version}") and os.path.isdir(path):
            size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
            shutil.rmtree(path)
            logging.warning("removed %s (%.1f MB), left by an interrupted build", path, size / 2**20)


# ---------------------------------------------------------------------------
# Progress.


def _expected_examples(builder) -> int | None:
    """How many examples the build generates, where its config says (train_size + test_size); else None."""
    sizes = [getattr(builder.builder_config, f"{split}_size", None) for split in ("train", "test")]
    return None if None in sizes else int(sum(sizes))


def _count_examples(builder, progress: cli.Progress) -> None:
    """Make every split generator of `builder` advance `progress` by one per example it yields.

    The one place that wraps them: TFDS iterates what `_split_generators` returns
    (a dict split -> generator of (key, example) for both of this project's builders).
    """
    split_generators = builder._split_generators

    def counted(dl_manager):
        return {split: progress.count(examples) for split, examples in split_generators(dl_manager).items()}

    builder._split_generators = counted
