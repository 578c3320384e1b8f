"""Evaluation: crop-space predictions -> camera-frame mm -> Protocol #1/#2 and friends.

One path serves a training checkpoint (JAX) and an exported SavedModel (TF):
both are a `predict_fn(images uint8 (B, S, S, 3)) -> (B, J, 3)` giving crop
pixels (u, v) and root-relative depth in mm (`inference.Network.predict_fn`,
`export.ServedModel.predict_fn`), and batches come from
`data.pipeline.eval_batches`. This module imports neither the model nor the
data: it maps predictions to the camera frame and scores them.
Shapes legend: B batch, J joints.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from c2f_vol import camera, metrics, rootdepth, skeleton

ROOT_DEPTH_MODES = ("gt", "limbs")
PredictFn = Callable[[np.ndarray], np.ndarray]


def predict_with_flip(predict_fn: PredictFn, images: np.ndarray, flip_test: bool) -> np.ndarray:
    """(B, J, 3) crop predictions, averaged with those of the mirrored crops when `flip_test`."""
    pred = np.asarray(predict_fn(images), np.float64)
    if not flip_test:
        return pred
    mirrored = np.asarray(predict_fn(np.ascontiguousarray(images[:, :, ::-1])), np.float64)
    mirrored = mirrored[:, list(skeleton.FLIP_PERMUTATION)]
    mirrored[..., 0] = images.shape[2] - 1 - mirrored[..., 0]
    return (pred + mirrored) / 2


def collect(predict_fn: PredictFn, batches: Iterable[dict], *, flip_test: bool = False,
            root_depth: str = "gt", bone_lengths_mm=None, progress=None) -> dict:
    """Run over eval batches (padding dropped); returns numpy arrays and metadata lists.

    `pred_3d` uses the ground-truth root depth; with root_depth='limbs' also
    `pred_3d_limbs` and `root_depth_mm_limbs` from the limb-length search.
    """
    if root_depth not in ROOT_DEPTH_MODES:
        raise ValueError(f"root_depth must be one of {ROOT_DEPTH_MODES}; got {root_depth!r}")
    if root_depth == "limbs" and bone_lengths_mm is None:
        raise ValueError("root_depth='limbs' needs the mean bone lengths stored with the model")
    out = {k: [] for k in ("pred_3d", "gt_3d", "pred_3d_limbs", "root_depth_mm_limbs", "frame")}
    out.update(action=[], subject=[], camera=[], sequence=[])
    for batch in batches:
        keep = np.asarray(batch["mask"]) > 0
        if "has_3d" in batch and np.any(np.asarray(batch["has_3d"])[keep] == 0):
            raise ValueError("evaluation needs 3D labels, and these batches hold 2D-only examples (has_3d 0, e.g. "
                             "MPII); evaluate on a dataset with 3D poses (data.name, or --dataset=human36m)")
        images = np.asarray(batch["image"])
        joints = predict_with_flip(predict_fn, images, flip_test)[keep]
        affine = np.asarray(batch["affine"], np.float64)[keep]
        intr = np.asarray(batch["intrinsics"], np.float64)[keep]
        # The labels are where the lens put the joints, so predictions are too: undistorted before lifting.
        dist = np.asarray(batch["distortion"], np.float64)[keep] if "distortion" in batch else None
        gt = np.asarray(batch["joints_3d"], np.float64)[keep]
        pinhole_uv = camera.crop_to_pinhole(joints[..., :2], affine, intr, dist)  # once, for both roots
        gt_root = np.asarray(batch["root_depth_mm"], np.float64)[keep]
        out["pred_3d"].append(camera.back_project(pinhole_uv, joints[..., 2] + gt_root[:, None], intr))
        out["gt_3d"].append(gt)
        if root_depth == "limbs":
            z = np.asarray(rootdepth.estimate_root_depth(pinhole_uv.astype(np.float32), joints[..., 2].astype(np.float32),
                                                         intr.astype(np.float32), bone_lengths_mm), np.float64)
            out["root_depth_mm_limbs"].append(z)
            out["pred_3d_limbs"].append(camera.back_project(pinhole_uv, joints[..., 2] + z[:, None], intr))
        # The take ('Eating 2'); a batch without takes has one per action.
        for k in ("action", "subject", "camera", "sequence"):
            out[k].extend(_texts(batch[k if k in batch else "action"], keep))
        out["frame"].append(np.asarray(batch["frame"])[keep])
        if progress is not None:
            progress.update(int(keep.sum()))
    for k in ("pred_3d", "gt_3d", "pred_3d_limbs", "root_depth_mm_limbs", "frame"):
        out[k] = np.concatenate(out[k]) if out[k] else None
    return out


def _texts(values, keep) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(values)[keep]]


def takes(subjects, sequences) -> list[str]:
    """'S9/Eating 2': one recording of one subject (its cameras together), the per-take key."""
    return [f"{s}/{q}" for s, q in zip(subjects, sequences)]


def summarize(pred_3d: np.ndarray, gt_3d: np.ndarray, actions, take_keys=None) -> dict:
    """Protocol #1/#2 per frame, aggregated per action (takes merged, as the literature tabulates), plus
    per-joint errors, PCK3D and AUC; with `take_keys` (one per frame, `takes`) also `per_take`."""
    if pred_3d is None or len(pred_3d) == 0:
        raise ValueError("no frames were evaluated: the evaluation split is empty or fully filtered out")
    per_frame = {"mpjpe_mm": metrics.mpjpe(pred_3d, gt_3d, check_finite=True),
                 "pa_mpjpe_mm": metrics.pa_mpjpe(pred_3d, gt_3d),
                 "n_mpjpe_mm": metrics.n_mpjpe(pred_3d, gt_3d)}
    table = metrics.aggregate(per_frame, actions)
    joint_err = metrics.joint_errors(pred_3d, gt_3d).mean(axis=0)
    return {
        "mpjpe_mm": table["action_mean"]["mpjpe_mm"],
        "pa_mpjpe_mm": table["action_mean"]["pa_mpjpe_mm"],
        "n_mpjpe_mm": table["action_mean"]["n_mpjpe_mm"],
        "action_mean": table["action_mean"],
        "frame_mean": table["frame_mean"],
        "per_action": table["per_action"],
        "per_joint": {name: float(e) for name, e in zip(skeleton.JOINT_NAMES, joint_err)},
        "pck3d_150mm": float(metrics.pck3d(pred_3d, gt_3d).mean()),
        "auc": float(metrics.auc(pred_3d, gt_3d).mean()),
        "frames": int(len(pred_3d)),
        **({"per_take": metrics.aggregate(per_frame, take_keys)["per_action"]} if take_keys is not None else {}),
    }


def evaluate(predict_fn: PredictFn, batches: Iterable[dict], *, flip_test=False, root_depth="gt",
             bone_lengths_mm=None, progress=None) -> dict:
    """The full report. With root_depth='limbs' the top level is the limb-search result and
    `gt_root_depth` holds the ground-truth-root result beside it."""
    res = collect(predict_fn, batches, flip_test=flip_test, root_depth=root_depth,
                  bone_lengths_mm=bone_lengths_mm, progress=progress)
    take_keys = takes(res["subject"], res["sequence"])
    gt_summary = summarize(res["pred_3d"], res["gt_3d"], res["action"], take_keys)
    if root_depth == "gt":
        return dict(gt_summary, root_depth="gt")
    summary = summarize(res["pred_3d_limbs"], res["gt_3d"], res["action"], take_keys)
    root_err = np.abs(res["root_depth_mm_limbs"] - res["gt_3d"][:, skeleton.ROOT, 2])
    summary.update(
        root_depth="limbs",
        root_depth_error_mm={"mean": float(root_err.mean()), "median": float(np.median(root_err))},
        mpjpe_absolute_mm=float(metrics.mpjpe(res["pred_3d_limbs"], res["gt_3d"], root_index=None).mean()),
        gt_root_depth={k: gt_summary[k] for k in ("mpjpe_mm", "pa_mpjpe_mm", "n_mpjpe_mm", "frame_mean")},
    )
    return summary


def mean_pose_baseline(train_poses: np.ndarray, test_poses: np.ndarray, actions) -> dict:
    """The error on `test_poses` (N, J, 3) of always predicting the mean root-relative training pose."""
    mean = (train_poses - train_poses[:, :1]).mean(axis=0)
    return summarize(mean[None] + test_poses[:, :1], test_poses, actions)
