"""Human3.6M pose metrics: MPJPE (Protocol #1), PA-MPJPE (Protocol #2), N-MPJPE, PCK3D, AUC.

Shapes legend: N poses, J joints. Poses are (N, J, 3), errors are per pose (N,)
in the input's units (mm for Human3.6M). Everything is computed in float64
NumPy, so results do not depend on the accelerator's precision.
"""

from __future__ import annotations

import collections
from typing import Iterable, Mapping, Sequence

import numpy as np

PCK_THRESHOLD_MM = 150.0
AUC_THRESHOLDS_MM = np.linspace(0.0, 150.0, 31)  # 0, 5, ..., 150 mm


def _validate(pred, gt, check_finite: bool) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, np.float64)
    gt = np.asarray(gt, np.float64)
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt must have the same shape; got pred {pred.shape} and gt {gt.shape}")
    if pred.ndim != 3 or pred.shape[-1] != 3:
        raise ValueError(f"poses must have shape (N, J, 3); got pred {pred.shape} and gt {gt.shape}")
    if check_finite:
        for name, a in (("pred", pred), ("gt", gt)):
            if not np.all(np.isfinite(a)):
                bad = np.argwhere(~np.isfinite(a).all(axis=(1, 2)))[:5, 0].tolist()
                raise ValueError(f"{name} of shape {a.shape} holds NaN or inf (first poses: {bad})")
    return pred, gt


def _center_on_root(pred, gt, root_index):
    if root_index is None:
        return pred, gt
    if not -pred.shape[1] <= root_index < pred.shape[1]:
        raise ValueError(f"root_index {root_index} is out of range for {pred.shape[1]} joints")
    return pred - pred[:, root_index:root_index + 1], gt - gt[:, root_index:root_index + 1]


def joint_errors(pred, gt, root_index: int | None = 0, check_finite: bool = False) -> np.ndarray:
    """Euclidean error of every joint, (N, J), after optional root alignment."""
    pred, gt = _validate(pred, gt, check_finite)
    pred, gt = _center_on_root(pred, gt, root_index)
    return np.linalg.norm(pred - gt, axis=-1)


def mpjpe(pred, gt, root_index: int | None = 0, check_finite: bool = False) -> np.ndarray:
    """Protocol #1: mean per-joint position error per pose, (N,).

    With `root_index`, that joint is subtracted from both poses first; with
    None, the poses are compared as given.
    """
    return joint_errors(pred, gt, root_index, check_finite).mean(axis=-1)


def procrustes_align(pred, gt, check_finite: bool = False) -> np.ndarray:
    """Align every pred to its gt by a similarity transform, no reflection.

    Minimises ||s R p + t - g||^2 over scale s >= 0, rotation R (det +1) and
    translation t (Umeyama 1991). A degenerate pred (all joints coincide)
    gets s = 0, i.e. it is mapped to gt's centroid.

    Returns:
      (N, J, 3) aligned predictions.
    """
    pred, gt = _validate(pred, gt, check_finite)
    mu_p = pred.mean(axis=1, keepdims=True)
    mu_g = gt.mean(axis=1, keepdims=True)
    p0, g0 = pred - mu_p, gt - mu_g
    cov = np.einsum("nji,njk->nik", g0, p0)  # (N, 3, 3) = sum_j g_j p_j^T
    u, sing, vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(u @ vt))
    d = np.where(d == 0, 1.0, d)
    fix = np.ones_like(sing)
    fix[:, -1] = d
    rot = np.einsum("nik,nk,nkj->nij", u, fix, vt)  # R = U diag(1,1,d) V^T
    var_p = (p0 ** 2).sum(axis=(1, 2))
    trace = (sing * fix).sum(axis=-1)
    scale = np.divide(trace, var_p, out=np.zeros_like(trace), where=var_p > 0)
    return scale[:, None, None] * np.einsum("nij,nkj->nki", rot, p0) + mu_g


def pa_mpjpe(pred, gt, check_finite: bool = False) -> np.ndarray:
    """Protocol #2: MPJPE after similarity Procrustes alignment, (N,)."""
    aligned = procrustes_align(pred, gt, check_finite)
    return mpjpe(aligned, gt, root_index=None)


def n_mpjpe(pred, gt, root_index: int | None = 0, check_finite: bool = False) -> np.ndarray:
    """MPJPE after root alignment and the least-squares scale of pred onto gt, (N,)."""
    pred, gt = _validate(pred, gt, check_finite)
    pred, gt = _center_on_root(pred, gt, root_index)
    num = (pred * gt).sum(axis=(1, 2))
    den = (pred ** 2).sum(axis=(1, 2))
    scale = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    return mpjpe(scale[:, None, None] * pred, gt, root_index=None)


def pck3d(pred, gt, threshold_mm: float = PCK_THRESHOLD_MM, root_index: int | None = 0,
          check_finite: bool = False) -> np.ndarray:
    """Fraction of joints within `threshold_mm` of the truth, per pose, (N,)."""
    return (joint_errors(pred, gt, root_index, check_finite) <= threshold_mm).mean(axis=-1)


def auc(pred, gt, thresholds_mm: Sequence[float] = AUC_THRESHOLDS_MM, root_index: int | None = 0,
        check_finite: bool = False) -> np.ndarray:
    """Mean PCK3D over `thresholds_mm` (default 0..150 mm in 5 mm steps), per pose, (N,)."""
    err = joint_errors(pred, gt, root_index, check_finite)
    t = np.asarray(thresholds_mm, np.float64)
    return (err[:, :, None] <= t).mean(axis=(1, 2))


def aggregate(errors: Mapping[str, Iterable[float]], actions: Sequence[str]) -> dict:
    """Per-action table and both averages of per-frame metrics.

    Args:
      errors: metric name -> (N,) per-frame values (e.g. {"mpjpe_mm": ...}).
      actions: (N,) action name of every frame.
    Returns:
      {"per_action": {action: {metric: mean, "frames": n}},
       "action_mean": {metric: mean over actions of per-action means},
       "frame_mean": {metric: mean over all frames},
       "frames": N}
    """
    actions = [str(a) for a in actions]
    n = len(actions)
    arrays = {}
    for name, vals in errors.items():
        a = np.asarray(list(vals) if not hasattr(vals, "shape") else vals, np.float64)
        if a.shape != (n,):
            raise ValueError(f"metric {name!r} has shape {a.shape}; expected ({n},), one value per action label")
        arrays[name] = a
    if n == 0:
        raise ValueError("aggregate needs at least one frame; got none")
    index = collections.defaultdict(list)
    for i, act in enumerate(actions):
        index[act].append(i)
    per_action = {}
    for act in sorted(index):
        idx = np.asarray(index[act])
        per_action[act] = {name: float(a[idx].mean()) for name, a in arrays.items()}
        per_action[act]["frames"] = int(idx.size)
    return {
        "per_action": per_action,
        "action_mean": {name: float(np.mean([per_action[a][name] for a in per_action])) for name in arrays},
        "frame_mean": {name: float(a.mean()) for name, a in arrays.items()},
        "frames": n,
    }


def format_table(summary: Mapping, metrics: Sequence[str] | None = None) -> str:
    """Render `aggregate`'s result as a fixed-width text table."""
    metrics = list(metrics or summary["frame_mean"].keys())
    head = f"{'action':<16}" + "".join(f"{m:>14}" for m in metrics) + f"{'frames':>9}"
    lines = [head, "-" * len(head)]
    for act, row in summary["per_action"].items():
        lines.append(f"{act:<16}" + "".join(f"{row[m]:>14.2f}" for m in metrics) + f"{row['frames']:>9d}")
    lines.append("-" * len(head))
    lines.append(f"{'action mean':<16}" + "".join(f"{summary['action_mean'][m]:>14.2f}" for m in metrics)
                 + f"{summary['frames']:>9d}")
    lines.append(f"{'frame mean':<16}" + "".join(f"{summary['frame_mean'][m]:>14.2f}" for m in metrics)
                 + f"{summary['frames']:>9d}")
    return "\n".join(lines)
