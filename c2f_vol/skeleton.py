"""The Human3.6M 17-joint skeleton used throughout c2f_vol.

Joint order (index: name): 0 Pelvis, 1 RHip, 2 RKnee, 3 RAnkle, 4 LHip, 5 LKnee,
6 LAnkle, 7 Spine, 8 Thorax, 9 Neck/Nose, 10 Head, 11 LShoulder, 12 LElbow,
13 LWrist, 14 RShoulder, 15 RElbow, 16 RWrist.

"Left" and "right" are the person's own sides. Whether a given data release
agrees with these labels is checked from the geometry, not assumed: see
`c2f_vol.data` and its tests.
"""

from __future__ import annotations

import numpy as np

NUM_JOINTS = 17
ROOT = 0

JOINT_NAMES: tuple[str, ...] = (
    "Pelvis", "RHip", "RKnee", "RAnkle", "LHip", "LKnee", "LAnkle", "Spine",
    "Thorax", "Neck/Nose", "Head", "LShoulder", "LElbow", "LWrist",
    "RShoulder", "RElbow", "RWrist",
)

# Parent of every joint; -1 for the root (pelvis).
PARENTS: tuple[int, ...] = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8, 11, 12, 8, 14, 15)

# (right, left) pairs of mirrored joints.
LEFT_RIGHT_PAIRS: tuple[tuple[int, int], ...] = (
    (1, 4), (2, 5), (3, 6), (14, 11), (15, 12), (16, 13),
)

# Indices of the 17 joints in Human3.6M's 32-joint pose vectors.
H36M_32_TO_17: tuple[int, ...] = (
    0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 17, 18, 19, 25, 26, 27,
)

# Bones as (parent, child) pairs, one per non-root joint, in joint order.
BONES: tuple[tuple[int, int], ...] = tuple(
    (p, c) for c, p in enumerate(PARENTS) if p >= 0
)
# The same bones as two index arrays: joints[..., BONE_CHILDREN, :] - joints[..., BONE_PARENTS, :].
BONE_PARENTS: tuple[int, ...] = tuple(p for p, _ in BONES)
BONE_CHILDREN: tuple[int, ...] = tuple(c for _, c in BONES)

def _flip_permutation() -> tuple[int, ...]:
    perm = list(range(NUM_JOINTS))
    for r, l in LEFT_RIGHT_PAIRS:
        perm[r], perm[l] = l, r
    return tuple(perm)


# joints_flipped = joints[..., FLIP_PERMUTATION, :] swaps every left/right pair.
FLIP_PERMUTATION: tuple[int, ...] = _flip_permutation()

LEFT_JOINTS: tuple[int, ...] = tuple(l for _, l in LEFT_RIGHT_PAIRS)
RIGHT_JOINTS: tuple[int, ...] = tuple(r for r, _ in LEFT_RIGHT_PAIRS)


def from_h36m32(poses32: np.ndarray) -> np.ndarray:
    """Select the 17 joints from Human3.6M 32-joint poses.

    Args:
      poses32: (..., 32, C) or flat (..., 32*C) with C in {2, 3}.
    Returns:
      (..., 17, C)
    """
    poses32 = np.asarray(poses32)
    if poses32.ndim >= 2 and poses32.shape[-2] == 32:
        return poses32[..., H36M_32_TO_17, :]
    last = poses32.shape[-1] if poses32.ndim else 0
    if last in (64, 96):
        c = last // 32
        return poses32.reshape(poses32.shape[:-1] + (32, c))[..., H36M_32_TO_17, :]
    raise ValueError(
        f"expected Human3.6M poses of shape (..., 32, C) or (..., 64|96); got {poses32.shape}"
    )


def bone_lengths(joints) -> np.ndarray:
    """Length of every bone in BONES order.

    Args:
      joints: (..., 17, 3).
    Returns:
      (..., 16), in the input's units.
    """
    joints = np.asarray(joints)
    return np.linalg.norm(joints[..., BONE_CHILDREN, :] - joints[..., BONE_PARENTS, :], axis=-1)
