"""evaluation: crop predictions -> camera mm -> the per-action and per-take report."""

import numpy as np
import pytest

from c2f_vol import camera, evaluation, skeleton
from conftest import random_poses


def _batch(rng, n, distortion, sequences):
    poses = random_poses(rng, n, depth_mm=4500.0)
    intr = np.array([1145.0, 1144.0, 512.0, 515.0])
    uv = camera.project(poses, intr, distortion)  # labels where the lens put the joints
    centre = uv.mean(axis=1)
    affine = camera.crop_affine(centre, np.full(n, 600.0), 64)
    crop_uv = camera.apply_affine(affine, uv)
    rel = poses[..., 2] - poses[:, :1, 2]
    return {
        "image": np.zeros((n, 64, 64, 3), np.uint8), "mask": np.ones(n, np.float32),
        "affine": affine.astype(np.float32), "intrinsics": np.tile(intr, (n, 1)).astype(np.float32),
        "distortion": np.tile(distortion, (n, 1)).astype(np.float32),
        "root_depth_mm": poses[:, 0, 2].astype(np.float32), "joints_3d": poses.astype(np.float32),
        "subject": np.array([b"S9"] * n), "action": np.array([b"Eating"] * n),
        "sequence": np.array(sequences), "camera": np.array([b"c"] * n), "frame": np.arange(n, dtype=np.int32),
    }, np.concatenate([crop_uv, rel[..., None]], -1).astype(np.float32)


def test_report_undistorts_and_lists_takes_beside_the_merged_action(rng):
    lens = camera.H36M_CAMERAS["54138969"].distortion
    batch, exact = _batch(rng, 6, lens, [b"Eating", b"Eating 2"] * 3)
    predict = lambda images: exact  # noqa: E731  (the labels themselves)
    report = evaluation.evaluate(predict, [batch])
    assert report["mpjpe_mm"] < 0.05  # the lens undone: the labels lift to their 3D exactly
    assert set(report["per_action"]) == {"Eating"} and report["per_action"]["Eating"]["frames"] == 6
    assert set(report["per_take"]) == {"S9/Eating", "S9/Eating 2"}
    assert report["per_take"]["S9/Eating 2"]["frames"] == 3
    # A batch without distortion is lifted as a pinhole: these labels then miss by the lens's bend.
    pinhole = evaluation.evaluate(predict, [{k: v for k, v in batch.items() if k != "distortion"}])
    assert pinhole["mpjpe_mm"] > 0.5
    # A batch without takes has one per action.
    merged = evaluation.evaluate(predict, [{k: v for k, v in batch.items() if k != "sequence"}])
    assert set(merged["per_take"]) == {"S9/Eating"}
    assert skeleton.NUM_JOINTS == exact.shape[1]
    with pytest.raises(ValueError, match="2D-only"):
        evaluation.evaluate(predict, [dict(batch, has_3d=np.array([1, 0, 1, 1, 1, 1], np.float32))])
