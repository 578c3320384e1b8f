"""Pictures of a prediction: the 2D skeleton over the image, the 3D skeleton from two
viewpoints, and a slice of the predicted volume. OpenCV only; images are RGB uint8."""

from __future__ import annotations

import cv2
import numpy as np

from c2f_vol import skeleton

LEFT_RGB = (40, 120, 255)    # blue: the person's left
RIGHT_RGB = (255, 80, 40)    # red: the person's right
CENTRE_RGB = (60, 200, 60)


def _joint_colour(j: int) -> tuple[int, int, int]:
    if j in skeleton.LEFT_JOINTS:
        return LEFT_RGB
    if j in skeleton.RIGHT_JOINTS:
        return RIGHT_RGB
    return CENTRE_RGB


def _draw(canvas: np.ndarray, pts: np.ndarray, thickness: int, order=None) -> None:
    order = range(len(skeleton.BONES)) if order is None else order
    for b in order:
        p, c = skeleton.BONES[b]
        cv2.line(canvas, tuple(int(round(v)) for v in pts[p]), tuple(int(round(v)) for v in pts[c]),
                 _joint_colour(c), thickness, cv2.LINE_AA)
    for j, q in enumerate(pts):
        cv2.circle(canvas, (int(round(q[0])), int(round(q[1]))), thickness + 1, _joint_colour(j), -1, cv2.LINE_AA)


def draw_skeleton_2d(image: np.ndarray, joints_2d: np.ndarray) -> np.ndarray:
    """A copy of `image` (H, W, 3) with the (17, 2) pixel skeleton drawn on it."""
    out = np.ascontiguousarray(image.copy())
    _draw(out, joints_2d, max(2, int(round(max(image.shape[:2]) / 250))))
    return out


def render_3d_views(joints_mm: np.ndarray, size: int) -> np.ndarray:
    """Two orthographic views of a (17, 3) pose (camera frame, +Y down): front (X, Y) and side (Z, Y).

    Returns (size, 2 * size, 3). Both views share one scale so proportions compare.
    """
    pose = joints_mm - joints_mm[skeleton.ROOT]
    extent = max(float(np.abs(pose).max()), 1.0) * 1.15
    scale = (size / 2) / extent
    panels = []
    for title, axes in (("front (x, y)", (0, 1)), ("side (z, y)", (2, 1))):
        canvas = np.full((size, size, 3), 245, np.uint8)
        pts = np.stack([pose[:, axes[0]] * scale + size / 2, pose[:, axes[1]] * scale + size / 2], -1)
        depth = pose[:, 2] if axes[0] == 0 else -pose[:, 0]
        order = np.argsort([-(depth[p] + depth[c]) for p, c in skeleton.BONES])  # far bones first
        _draw(canvas, pts, max(2, size // 120), order)
        cv2.putText(canvas, title, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (40, 40, 40), 1, cv2.LINE_AA)
        panels.append(canvas)
    return np.concatenate(panels, axis=1)


def volume_panel(prob_hw: np.ndarray, size: int, title: str) -> np.ndarray:
    """A (H, W) probability slice as a (size, size, 3) heat map."""
    p = prob_hw / max(float(prob_hw.max()), 1e-12)
    heat = cv2.applyColorMap((p * 255).astype(np.uint8), cv2.COLORMAP_INFERNO)[..., ::-1]
    heat = cv2.resize(heat, (size, size), interpolation=cv2.INTER_NEAREST)
    cv2.putText(heat, title, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return heat


def compose(overlay: np.ndarray, views: np.ndarray, extra: np.ndarray | None = None) -> np.ndarray:
    """Side by side at one height: the overlay, the 3D views and an optional panel."""
    h = views.shape[0]
    scale = h / overlay.shape[0]
    left = cv2.resize(overlay, (max(1, int(round(overlay.shape[1] * scale))), h), interpolation=cv2.INTER_AREA)
    parts = [left, views] + ([cv2.resize(extra, (h, h))] if extra is not None else [])
    return np.concatenate(parts, axis=1)
