"""Left and right of Human3.6M's 32-joint poses, decided from the geometry.

A release may label the limb chains the other way round. `decide_sides` finds,
per file, whether the 3D legs and arms are labelled anatomically (a majority
over frames of the person's left axis from label-symmetric joints);
`match_2d_sides` matches the 2D labels to the projected, side-corrected 3D
joints; `swap_sides32` exchanges the chains. The `human36m` builder applies
them to every file and logs and records each swap.
"""

from __future__ import annotations

import dataclasses

import numpy as np

# Human3.6M 32-joint indices read by the side rule. Which of each pair is
# anatomically left is what the rule decides; the pelvis, thorax, nose and the
# mean of both ankles/toes are label-symmetric.
_P32_PELVIS, _P32_THORAX, _P32_NOSE = 0, 13, 14
_P32_ANKLES, _P32_TOES = (3, 8), (4, 9)
_P32_HIPS = (1, 6)         # (labelled right, labelled left)
_P32_SHOULDERS = (25, 17)  # (labelled right, labelled left)
# Whole limb chains swapped together when a release has the sides the other way.
_P32_RIGHT_LEG, _P32_LEFT_LEG = tuple(range(1, 6)), tuple(range(6, 11))
_P32_LEFT_ARM, _P32_RIGHT_ARM = tuple(range(16, 24)), tuple(range(24, 32))

# A frame votes on a side only when the pair is this far apart along the left axis
# (mm) or the two 2D labellings differ by this much (px): below it the body is
# edge-on or the joints coincide, and the vote would be noise.
_MIN_SIDE_SEPARATION_MM = 10.0
_MIN_2D_DIFFERENCE_PX = 1.0


@dataclasses.dataclass(frozen=True)
class SideDecision:
    """Whether a file's labelled sides must be swapped to be anatomical.

    Attributes:
      legs_swapped, arms_swapped: True when the chain labelled left is on the person's right.
      legs_agreement, arms_agreement: share of voting frames that agree with the decision.
      frames: frames that voted (legs, arms).
    """

    legs_swapped: bool
    arms_swapped: bool
    legs_agreement: float
    arms_agreement: float
    frames: tuple[int, int]

    def describe(self) -> str:
        def one(name, swapped, agreement, n):
            return f"{name} {'swapped' if swapped else 'as labelled'} ({agreement:.0%} of {n} frames)"
        return (one("legs", self.legs_swapped, self.legs_agreement, self.frames[0]) + ", "
                + one("arms", self.arms_swapped, self.arms_agreement, self.frames[1]))


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return np.where(n > 1e-9, v / np.maximum(n, 1e-9), 0.0)


def _majority(votes: np.ndarray) -> tuple[bool, float, int]:
    """(swapped, agreement, voters) from signed votes; > 0 means 'as labelled'."""
    voters = votes[np.abs(votes) > 0]
    if voters.size == 0:
        return False, 0.0, 0
    keep = float(np.mean(voters > 0))
    return keep < 0.5, max(keep, 1.0 - keep), int(voters.size)


def person_left_axis(poses32_mm: np.ndarray) -> np.ndarray:
    """The person's left direction in every frame, from label-symmetric joints.

    up = thorax - pelvis; forward = the nose ahead of the thorax plus the toes ahead
    of the ankles (both feet together), each taken perpendicular to up; and in a
    right-handed frame (Human3.6M's camera and world frames are) left = up x forward.

    Args:
      poses32_mm: (N, 32, 3) Human3.6M 32-joint poses.
    Returns:
      (N, 3) unit vectors; zero where up or forward is degenerate.
    """
    p = np.asarray(poses32_mm, np.float64)
    up = _unit(p[:, _P32_THORAX] - p[:, _P32_PELVIS])

    def across_up(v):
        return _unit(v - np.sum(v * up, -1, keepdims=True) * up)

    head = across_up(p[:, _P32_NOSE] - p[:, _P32_THORAX])
    feet = across_up(p[:, list(_P32_TOES)].mean(1) - p[:, list(_P32_ANKLES)].mean(1))
    return _unit(np.cross(up, head + feet))


def decide_sides(poses32_mm: np.ndarray) -> SideDecision:
    """Decide, by a majority over frames, whether legs and arms are labelled anatomically.

    A frame votes 'as labelled' when the labelled-left hip (shoulder) lies further
    along `person_left_axis` than the labelled-right one.

    Args:
      poses32_mm: (N, 32, 3), any right-handed frame, mm.
    """
    p = np.asarray(poses32_mm, np.float64)
    left = person_left_axis(p)

    def votes(pair):
        d = np.sum((p[:, pair[1]] - p[:, pair[0]]) * left, -1)
        return np.where(np.abs(d) > _MIN_SIDE_SEPARATION_MM, d, 0.0)

    legs = _majority(votes(_P32_HIPS))
    arms = _majority(votes(_P32_SHOULDERS))
    return SideDecision(legs[0], arms[0], legs[1], arms[1], (legs[2], arms[2]))


def swap_sides32(poses32: np.ndarray, legs: bool, arms: bool) -> np.ndarray:
    """Exchange the left and right leg and/or arm chains of (N, 32, C) poses."""
    perm = np.arange(32)
    if legs:
        perm[list(_P32_RIGHT_LEG + _P32_LEFT_LEG)] = _P32_LEFT_LEG + _P32_RIGHT_LEG
    if arms:
        perm[list(_P32_LEFT_ARM + _P32_RIGHT_ARM)] = _P32_RIGHT_ARM + _P32_LEFT_ARM
    return np.asarray(poses32)[:, perm]


def match_2d_sides(joints2d32_px: np.ndarray, projected32_px: np.ndarray) -> tuple[bool, bool]:
    """Whether the 2D legs / arms must be swapped to match the projected (side-corrected) 3D.

    Args:
      joints2d32_px: (N, 32, 2) D2_Positions.
      projected32_px: (N, 32, 2) the 3D joints projected with the same camera.
    Returns:
      (legs_swapped, arms_swapped), by a majority over frames.
    """
    decisions = []
    for legs, arms, chains in ((True, False, _P32_RIGHT_LEG + _P32_LEFT_LEG),
                               (False, True, _P32_LEFT_ARM + _P32_RIGHT_ARM)):
        idx = list(chains)
        keep = np.linalg.norm(joints2d32_px[:, idx] - projected32_px[:, idx], axis=-1).mean(-1)
        swapped = swap_sides32(joints2d32_px, legs, arms)[:, idx]
        swap = np.linalg.norm(swapped - projected32_px[:, idx], axis=-1).mean(-1)
        d = swap - keep
        decisions.append(_majority(np.where(np.abs(d) > _MIN_2D_DIFFERENCE_PX, d, 0.0))[0])
    return decisions[0], decisions[1]
