"""Registers every dataset builder with TFDS and builds one by name, offline."""

from __future__ import annotations

import os
import time

import tensorflow_datasets as tfds
from absl import logging


def register() -> None:
    """Import the builder modules so that their names are known to `tfds.builder`."""
    from c2f_vol.data import human36m  # noqa: F401
    from c2f_vol.data.synthetic import builder  # noqa: F401


def build(name: str, data_dir: str, manual_dir: str | None = None) -> dict[str, int]:
    """Prepare dataset `name` (e.g. 'c2f_synthetic/procedural') in `data_dir`; returns examples per split.

    A dataset already complete in `data_dir` is not rebuilt. TFDS writes into a
    temporary folder and renames it when done, so an interrupted build never
    leaves a half-written dataset that looks complete.
    """
    register()
    data_dir = os.path.abspath(os.path.expanduser(data_dir))
    if manual_dir is not None:
        manual_dir = os.path.abspath(os.path.expanduser(manual_dir))
        if not os.path.isdir(manual_dir):
            raise FileNotFoundError(f"--manual_dir {manual_dir} is not a folder")
    builder = tfds.builder(name, data_dir=data_dir, try_gcs=False)
    t0 = time.time()
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=manual_dir, download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS))
    logging.info("%s ready in %s after %.1f s", name, builder.data_dir, time.time() - t0)
    return {split: info.num_examples for split, info in builder.info.splits.items()}
