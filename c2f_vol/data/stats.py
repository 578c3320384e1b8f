"""Statistics of a dataset split that a model keeps: mean bone lengths and the mean pose."""

from __future__ import annotations

import json
import os

import numpy as np

from c2f_vol import fileio, skeleton

BONE_LENGTHS_FILE = "bone_lengths_mm.json"


def load_poses(builder, split: str, max_examples: int = 0) -> tuple[np.ndarray, list[str]]:
    """(N, 17, 3) camera-frame joints (mm) and the N action names of a split, images not decoded."""
    import tensorflow_datasets as tfds

    ds = builder.as_dataset(split=split, decoders={"image": tfds.decode.SkipDecoding()}, shuffle_files=False)
    if max_examples:
        ds = ds.take(max_examples)
    poses, actions = [], []
    for ex in ds.as_numpy_iterator():
        poses.append(ex["joints_3d"])
        actions.append(ex["action"].decode())
    if not poses:
        raise ValueError(f"split {split!r} of {builder.info.full_name} in {builder.data_dir} has no examples")
    return np.asarray(poses, np.float64), actions


def mean_bone_lengths(poses: np.ndarray) -> np.ndarray:
    """(16,) mean length of every bone in `skeleton.BONES` order, mm."""
    return skeleton.bone_lengths(poses).mean(axis=0)


def write_bone_lengths(workdir: str, lengths_mm: np.ndarray, source: str) -> str:
    path = os.path.join(workdir, BONE_LENGTHS_FILE)
    payload = {"bones": [list(b) for b in skeleton.BONES],
               "names": [f"{skeleton.JOINT_NAMES[p]}-{skeleton.JOINT_NAMES[c]}" for p, c in skeleton.BONES],
               "mean_bone_lengths_mm": [float(v) for v in lengths_mm], "source": source}
    return fileio.write_json(path, payload)


def read_bone_lengths(workdir: str) -> np.ndarray:
    path = os.path.join(workdir, BONE_LENGTHS_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: it is written when training starts (tools/train.py); "
                                "re-run training in that workdir to create it")
    with open(path) as f:
        lengths = np.asarray(json.load(f)["mean_bone_lengths_mm"], np.float32)
    if lengths.shape != (len(skeleton.BONES),):
        raise ValueError(f"{path}: expected {len(skeleton.BONES)} bone lengths; found {lengths.shape}")
    return lengths
