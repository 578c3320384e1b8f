"""The person crop: the square box around the 2D joints, its affine, pixels and intrinsics.

Shared by the `human36m` builder (crops of the videos' frames) and the
benchmark's stand-ins (`c2f_vol.data.stand_ins`), so both cut crops the same way.
"""

from __future__ import annotations

import cv2
import numpy as np

from c2f_vol import camera

# The crop box never shrinks below this side (px), so a degenerate 2D pose cannot
# produce a singular affine.
_MIN_BOX_PX = 32.0


def crop_affines(joints2d_px: np.ndarray, crop_size: int, box_margin: float) -> np.ndarray:
    """Affines from frame pixels to the stored crop, one per frame.

    The box is the square around the joints' bounding box (same centre), its side the
    larger extent times `box_margin` (the meaning it has in the data config), at least
    `_MIN_BOX_PX`; no rotation.

    Args:
      joints2d_px: (N, J, 2) joints in frame pixels: the joints the pipeline boxes (the 17),
        so that its crops share the stored crop's centre.
    Returns:
      (N, 2, 3) float64, crop = A @ [u, v, 1].
    """
    lo, hi = joints2d_px.min(axis=1), joints2d_px.max(axis=1)
    side = np.maximum((hi - lo).max(axis=-1) * box_margin, _MIN_BOX_PX)
    return camera.crop_affine((lo + hi) / 2.0, side, crop_size)


def crop_geometry(joints2d_px: np.ndarray, intrinsics: np.ndarray, crop_size: int, box_margin: float):
    """Where the stored crops lie: (affines (N, 2, 3), joints (N, J, 2) in crop pixels, intrinsics (N, 4)).

    `crop_affines` boxes, the joints mapped through them and the crops' pinhole
    intrinsics (`crop_intrinsics`), for frames whose joints are (N, J, 2) pixels.
    """
    affines = crop_affines(joints2d_px, crop_size, box_margin)
    return affines, camera.apply_affine(affines, joints2d_px), crop_intrinsics(intrinsics, affines)


def crop_frame(frame: np.ndarray, affine: np.ndarray, crop_size: int) -> np.ndarray:
    """The stored crop of one frame: bilinear, black where the box leaves the frame.

    Any frame size works: the affine maps frame pixels (top-left origin) to the crop,
    so a frame a few rows larger or smaller than its camera's nominal size is cut
    where its own pixels lie.
    """
    return cv2.warpAffine(frame, affine, (crop_size, crop_size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def crop_intrinsics(intrinsics: np.ndarray, affines: np.ndarray) -> np.ndarray:
    """Pinhole intrinsics (fx, fy, cx, cy) of crops made by axis-aligned affines.

    fx' = a00 fx, cx' = a00 cx + a02, and likewise in y with a11, a12.

    Args:
      intrinsics: (4,) of the frame, pixels.
      affines: (N, 2, 3) without rotation (a01 = a10 = 0).
    Returns:
      (N, 4)
    """
    if np.any(np.abs(affines[:, 0, 1]) > 1e-9) or np.any(np.abs(affines[:, 1, 0]) > 1e-9):
        raise ValueError("crop_intrinsics needs affines without rotation")
    fx, fy, cx, cy = (float(v) for v in intrinsics)
    a00, a02, a11, a12 = affines[:, 0, 0], affines[:, 0, 2], affines[:, 1, 1], affines[:, 1, 2]
    return np.stack([a00 * fx, a11 * fy, a00 * cx + a02, a11 * cy + a12], axis=-1)
