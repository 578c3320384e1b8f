"""Absolute root depth without ground truth: a 1-D search on limb lengths.

Back-projecting image joints with root depth Z gives bones whose lengths grow
with Z; the search picks the Z whose bone lengths best match the training
subjects' mean bone lengths (least squares over the 16 bones). JAX, jittable
and exportable; shapes legend: ... batch, J joints.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from c2f_vol import skeleton

_PARENTS = np.asarray(skeleton.BONE_PARENTS)
_CHILDREN = np.asarray(skeleton.BONE_CHILDREN)


def bone_lengths_at(image_uv, depth_rel_mm, intrinsics, root_depth_mm):
    """Bone lengths (..., K, 16) of the poses back-projected at K candidate root depths (..., K)."""
    fx, fy, cx, cy = (intrinsics[..., None, None, i] for i in range(4))
    rays = jnp.stack([(image_uv[..., 0] - cx[..., 0]) / fx[..., 0], (image_uv[..., 1] - cy[..., 0]) / fy[..., 0],
                      jnp.ones_like(image_uv[..., 0])], axis=-1)  # (..., J, 3)
    depth = root_depth_mm[..., :, None] + depth_rel_mm[..., None, :]  # (..., K, J)
    pts = rays[..., None, :, :] * depth[..., None]  # (..., K, J, 3)
    return jnp.linalg.norm(pts[..., _CHILDREN, :] - pts[..., _PARENTS, :], axis=-1)


def search_root_depth(image_uv, depth_rel_mm, intrinsics, bone_lengths_mm, *, min_mm: float = 500.0,
                      max_mm: float = 15000.0, num: int = 64, rounds: int = 4):
    """The root depth Z (...,) minimising sum_b (|bone_b(Z)| - L_b)^2.

    Args:
      image_uv: (..., J, 2) joints in image pixels.
      depth_rel_mm: (..., J) depth relative to the root.
      intrinsics: (..., 4) of that image.
      bone_lengths_mm: (16,) mean bone lengths in `skeleton.BONES` order.
    A grid of `num` depths over [min_mm, max_mm] is refined `rounds` times to
    +-2 grid steps around its best point; with the defaults the first step is
    230 mm and the last about 0.004 mm.
    """
    target = jnp.asarray(bone_lengths_mm, jnp.float32)
    batch = image_uv.shape[:-2]
    lo = jnp.full(batch, min_mm, jnp.float32)
    hi = jnp.full(batch, max_mm, jnp.float32)
    t = jnp.linspace(0.0, 1.0, num)
    best = (lo + hi) / 2
    for _ in range(rounds + 1):
        cand = lo[..., None] + (hi - lo)[..., None] * t  # (..., K)
        err = jnp.sum((bone_lengths_at(image_uv, depth_rel_mm, intrinsics, cand) - target) ** 2, axis=-1)
        idx = jnp.argmin(err, axis=-1)
        best = jnp.take_along_axis(cand, idx[..., None], axis=-1)[..., 0]
        step = (hi - lo) / (num - 1)
        lo, hi = jnp.maximum(best - 2 * step, min_mm), jnp.minimum(best + 2 * step, max_mm)
    return best
