"""Pinhole cameras with Human3.6M-style distortion, and the person-crop transform.

Every function is pure and works on NumPy arrays, JAX arrays and TensorFlow
tensors (through `tf.experimental.numpy`), with any leading batch shape, so the
same conventions serve the tf.data pipeline, the jitted model and the tools.

Conventions
  * Points are (..., N, 3) in the camera frame, millimetres, +Z forward, +X right,
    +Y down (image rows grow downwards).
  * Pixels are (..., N, 2) as (u, v) = (column, row), with pixel centres at
    integer coordinates (OpenCV's convention, as used by `cv2.warpAffine`).
  * A camera is `intrinsics` (..., 4) = (fx, fy, cx, cy) in pixels, and optional
    `distortion` (..., 5) = (k1, k2, k3, p1, p2). Their leading shape `...`
    broadcasts against the points' leading shape; the point axis N is shared.
  * Distortion follows the Human3.6M release's own model (its MATLAB
    `ProjectPointRadial`), which is *not* OpenCV's tangential formula.
  * World to camera follows Human3.6M: X_cam = R (X_world - T), with T the
    camera centre in world coordinates.
"""

from __future__ import annotations

import dataclasses
import types

import numpy as np


def array_module(*arrays) -> types.ModuleType:
    """The NumPy-like namespace matching the arrays: numpy, jax.numpy or tf.experimental.numpy."""
    for a in arrays:
        mod = type(a).__module__
        if mod.startswith(("jax", "jaxlib")):
            import jax.numpy as jnp
            return jnp
        if mod.startswith("tensorflow"):
            import tensorflow.experimental.numpy as tnp
            return tnp
    return np


def _check_last(x, size: int, name: str) -> None:
    if x.shape[-1] != size:
        raise ValueError(f"{name} must have last dimension {size}; got shape {tuple(x.shape)}")


def _as_array(x, xp, dtype=None):
    """`x` as an array of `xp`; with `dtype`, cast (TF refuses mixed float widths)."""
    if dtype is not None:
        return xp.asarray(x, dtype=dtype)
    return x if hasattr(x, "shape") else xp.asarray(x)


def _split_intrinsics(intrinsics):
    """(..., 4) -> four (..., 1) arrays broadcastable against (..., N)."""
    return tuple(intrinsics[..., None, i] for i in range(4))


def distort_normalized(xy, distortion):
    """Apply Human3.6M radial/tangential distortion to normalised image coords.

    Args:
      xy: (..., N, 2) normalised coordinates (X/Z, Y/Z).
      distortion: (..., 5) = (k1, k2, k3, p1, p2).
    Returns:
      (..., N, 2) distorted normalised coordinates.
    """
    xp = array_module(xy, distortion)
    k1, k2, k3, p1, p2 = (distortion[..., None, i] for i in range(5))
    x, y = xy[..., 0], xy[..., 1]
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2 * r2 + k3 * r2 * r2 * r2
    tan = p1 * y + p2 * x
    return xp.stack([x * (radial + tan) + p2 * r2, y * (radial + tan) + p1 * r2], axis=-1)


def undistort_normalized(xy_distorted, distortion, iterations: int = 20):
    """Invert `distort_normalized` by fixed-point iteration.

    Converges for Human3.6M's mild distortion over the whole frame (residual
    well under 1e-6 normalised units after 20 iterations).
    """
    xy = xy_distorted
    for _ in range(iterations):
        xy = xy - (distort_normalized(xy, distortion) - xy_distorted)
    return xy


def project(points_cam, intrinsics, distortion=None):
    """Project camera-frame points to pixels.

    Args:
      points_cam: (..., N, 3), Z > 0.
      intrinsics: (..., 4) = (fx, fy, cx, cy).
      distortion: optional (..., 5) = (k1, k2, k3, p1, p2).
    Returns:
      (..., N, 2) pixels (u, v).
    """
    xp = array_module(points_cam, intrinsics)
    points_cam = _as_array(points_cam, xp)
    intrinsics = _as_array(intrinsics, xp)
    _check_last(points_cam, 3, "points_cam")
    _check_last(intrinsics, 4, "intrinsics")
    xy = points_cam[..., :2] / points_cam[..., 2:3]
    if distortion is not None:
        distortion = _as_array(distortion, xp)
        _check_last(distortion, 5, "distortion")
        xy = distort_normalized(xy, distortion)
    fx, fy, cx, cy = _split_intrinsics(intrinsics)
    return xp.stack([xy[..., 0] * fx + cx, xy[..., 1] * fy + cy], axis=-1)


def back_project(pixels, depth, intrinsics, distortion=None):
    """Lift pixels to camera-frame points at the given depth (Z).

    Args:
      pixels: (..., N, 2) pixels (u, v).
      depth: (..., N) depth Z of every point, same units as the result.
      intrinsics: (..., 4).
      distortion: optional (..., 5); when given, pixels are undistorted first.
    Returns:
      (..., N, 3) points with the given Z.
    """
    xp = array_module(pixels, depth, intrinsics)
    pixels = _as_array(pixels, xp)
    depth = _as_array(depth, xp)
    intrinsics = _as_array(intrinsics, xp)
    _check_last(pixels, 2, "pixels")
    _check_last(intrinsics, 4, "intrinsics")
    fx, fy, cx, cy = _split_intrinsics(intrinsics)
    xy = xp.stack([(pixels[..., 0] - cx) / fx, (pixels[..., 1] - cy) / fy], axis=-1)
    if distortion is not None:
        distortion = _as_array(distortion, xp)
        _check_last(distortion, 5, "distortion")
        xy = undistort_normalized(xy, distortion)
    return xp.stack([xy[..., 0] * depth, xy[..., 1] * depth, depth], axis=-1)


def undistort_pixels(pixels, intrinsics, distortion):
    """Where a pinhole camera with these intrinsics would have imaged what the lens put at `pixels`.

    Args:
      pixels: (..., N, 2) pixels (u, v) as the lens images them.
      intrinsics: (..., 4); any crop's intrinsics of the frame work, as distortion acts in
        normalised coordinates.
      distortion: (..., 5) = (k1, k2, k3, p1, p2); zeros leave `pixels` as they are.
    Returns:
      (..., N, 2) pixels.
    """
    xp = array_module(pixels, intrinsics, distortion)
    pixels, intrinsics, distortion = (_as_array(x, xp) for x in (pixels, intrinsics, distortion))
    _check_last(pixels, 2, "pixels")
    _check_last(distortion, 5, "distortion")
    fx, fy, cx, cy = _split_intrinsics(intrinsics)
    xy = undistort_normalized(xp.stack([(pixels[..., 0] - cx) / fx, (pixels[..., 1] - cy) / fy], axis=-1),
                              distortion)
    return xp.stack([xy[..., 0] * fx + cx, xy[..., 1] * fy + cy], axis=-1)


def world_to_camera(points_world, rotation, translation):
    """X_cam = R (X_world - T).

    Args:
      points_world: (..., N, 3).
      rotation: (..., 3, 3) world-to-camera rotation R.
      translation: (..., 3) camera centre T in world coordinates.
    """
    xp = array_module(points_world, rotation, translation)
    d = points_world - translation[..., None, :]
    return xp.matmul(d, xp.swapaxes(rotation, -1, -2))


def camera_to_world(points_cam, rotation, translation):
    """X_world = R^T X_cam + T; inverse of `world_to_camera`."""
    xp = array_module(points_cam, rotation, translation)
    return xp.matmul(points_cam, rotation) + translation[..., None, :]


# ---------------------------------------------------------------------------
# Person crop.


def crop_affine(center, scale, output_size: int, rotation_deg=0.0, flip=False):
    """The 2x3 affine from image pixels to crop pixels.

    The square box of side `scale` pixels centred on `center` maps onto an
    `output_size` x `output_size` crop (box edges onto the crop's outer pixel
    edges), rotated by `rotation_deg` counter-clockwise as displayed, then
    mirrored left-right when `flip` is set (a flipped crop needs its joints
    re-labelled with `skeleton.FLIP_PERMUTATION`).

    Args:
      center: (..., 2) box centre (u, v) in image pixels.
      scale: (...) box side in image pixels.
      output_size: crop side S in pixels.
      rotation_deg: (...) or scalar.
      flip: (...) bool or scalar.
    Returns:
      (..., 2, 3) affine A with crop = A @ [u, v, 1].
    """
    xp = array_module(center, scale, rotation_deg, flip)
    center = _as_array(center, xp)
    _check_last(center, 2, "center")
    dtype = center.dtype if np.issubdtype(np.dtype(getattr(center.dtype, "as_numpy_dtype", center.dtype)),
                                          np.floating) else np.float64
    center = _as_array(center, xp, dtype)
    scale = _as_array(scale, xp, dtype)
    theta = _as_array(rotation_deg, xp, dtype) * (np.pi / 180.0)
    one = scale * 0 + 1
    sign = xp.where(_as_array(flip, xp), -one, one)
    k = output_size / scale
    cos, sin = xp.cos(theta) * k, xp.sin(theta) * k
    # Broadcast every entry to the common batch shape before stacking.
    zero = center[..., 0] * 0
    a00, a01 = sign * cos + zero, sign * sin + zero
    a10, a11 = -sin + zero, cos + zero
    half = (output_size - 1) / 2.0
    cu, cv = center[..., 0], center[..., 1]
    t0 = half - (a00 * cu + a01 * cv)
    t1 = half - (a10 * cu + a11 * cv)
    row0 = xp.stack([a00, a01, t0], axis=-1)
    row1 = xp.stack([a10, a11, t1], axis=-1)
    return xp.stack([row0, row1], axis=-2)


def invert_affine(affine):
    """Inverse of a (..., 2, 3) affine, as (..., 2, 3)."""
    xp = array_module(affine)
    a, b, c = affine[..., 0, 0], affine[..., 0, 1], affine[..., 0, 2]
    d, e, f = affine[..., 1, 0], affine[..., 1, 1], affine[..., 1, 2]
    det = a * e - b * d
    ia, ib, id_, ie = e / det, -b / det, -d / det, a / det
    row0 = xp.stack([ia, ib, -(ia * c + ib * f)], axis=-1)
    row1 = xp.stack([id_, ie, -(id_ * c + ie * f)], axis=-1)
    return xp.stack([row0, row1], axis=-2)


def apply_affine(affine, points):
    """Map (..., N, 2) points through a (..., 2, 3) affine."""
    xp = array_module(affine, points)
    points = _as_array(points, xp)
    _check_last(points, 2, "points")
    if tuple(affine.shape[-2:]) != (2, 3):
        raise ValueError(f"affine must have shape (..., 2, 3); got {tuple(affine.shape)}")
    a = affine[..., None, :, :]
    u, v = points[..., 0], points[..., 1]
    return xp.stack(
        [a[..., 0, 0] * u + a[..., 0, 1] * v + a[..., 0, 2],
         a[..., 1, 0] * u + a[..., 1, 1] * v + a[..., 1, 2]],
        axis=-1,
    )


def crop_to_camera(joints_crop, affine, intrinsics, root_depth_mm, distortion=None):
    """Crop predictions -> camera-frame joints: the one crop-to-camera mapping.

    Args:
      joints_crop: (..., J, 3) crop pixels (u, v) and depth relative to the root (mm).
      affine: (..., 2, 3) image-to-crop affine (`crop_affine`).
      intrinsics: (..., 4) of the image the affine was taken from.
      root_depth_mm: (...) absolute depth Z of the root joint.
      distortion: optional (..., 5) lens distortion of that image (`crop_to_pinhole`).
    Returns:
      (..., J, 3) camera-frame joints, mm.
    """
    return back_project(crop_to_pinhole(joints_crop[..., :2], affine, intrinsics, distortion),
                        joints_crop[..., 2] + root_depth_mm[..., None], intrinsics)


def crop_to_pinhole(uv_crop, affine, intrinsics, distortion=None):
    """(..., J, 2) crop pixels -> where a pinhole camera with `intrinsics` images those joints.

    The predicted pixels are where the lens put the joints (as in the training labels), so with
    `distortion` (..., 5) they are undistorted; without it they are taken as a pinhole's. A caller that
    needs them twice (the root search, then the lifting) computes them once here.
    """
    image_uv = crop_to_image(uv_crop, affine)
    return image_uv if distortion is None else undistort_pixels(image_uv, intrinsics, distortion)


def crop_to_image(uv_crop, affine):
    """(..., J, 2) crop pixels -> pixels of the image the (..., 2, 3) image-to-crop `affine` was taken from."""
    return apply_affine(invert_affine(affine), uv_crop)


# ---------------------------------------------------------------------------
# Human3.6M cameras (intrinsics are shared by all subjects).


@dataclasses.dataclass(frozen=True)
class CameraIntrinsics:
    """One camera's intrinsics in pixels, with Human3.6M-style distortion."""

    name: str
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    k: tuple[float, float, float]
    p: tuple[float, float]

    @property
    def intrinsics(self) -> np.ndarray:
        """(4,) float32 = (fx, fy, cx, cy)."""
        return np.array([self.fx, self.fy, self.cx, self.cy], np.float32)

    @property
    def distortion(self) -> np.ndarray:
        """(5,) float32 = (k1, k2, k3, p1, p2)."""
        return np.array([*self.k, *self.p], np.float32)


H36M_CAMERAS: dict[str, CameraIntrinsics] = {
    c.name: c
    for c in (
        CameraIntrinsics("54138969", 1145.049, 1143.781, 512.542, 515.451, 1000, 1002,
                         (-0.20710, 0.24778, -0.00308), (-0.00098, -0.00142)),
        CameraIntrinsics("55011271", 1149.676, 1147.592, 508.849, 508.065, 1000, 1000,
                         (-0.19421, 0.24041, 0.00682), (-0.00162, -0.00274)),
        CameraIntrinsics("58860488", 1149.141, 1148.799, 519.816, 501.403, 1000, 1000,
                         (-0.20834, 0.25549, -0.00246), (0.00148, -0.00076)),
        CameraIntrinsics("60457274", 1145.511, 1144.774, 514.968, 501.882, 1000, 1002,
                         (-0.19838, 0.21832, -0.00895), (-0.00059, -0.00181)),
    )
}
