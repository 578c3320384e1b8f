"""Procedural 17-joint poses: joint angles within anatomical limits on a scaled body.

Shapes legend: J = 17 joints (`c2f_vol.skeleton` order), B = 16 bones (`skeleton.BONES`).

World frame (shared with the BVH source after `bvh.y_up_to_z_up`): right-handed,
millimetres, +Z up, the floor at Z = 0. A body at rest faces +Y with its right
side towards +X, so its left is up x forward = -X.

Angles (degrees) are defined for the right side; a left joint uses the mirror
image of the same angles, so "abduction" always moves a limb outwards.
  hip, shoulder: (flexion, abduction, twist); flexion swings the limb forward,
                 twist > 0 is internal rotation.
  knee:          flexion >= 0 folds the shin backwards.
  elbow:         flexion >= 0 folds the forearm forwards.
  spine, thorax, neck: (flexion, lateral bend, twist); flexion > 0 bends forward.
  pelvis:        (forward tilt, lateral tilt, yaw about +Z).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from c2f_vol import skeleton

FAMILIES: tuple[str, ...] = (
    "standing", "walking", "sitting", "reaching", "crouching", "bending", "waving",
)

HEIGHT_RANGE_MM = (1500.0, 1950.0)

# Reference body: bone lengths (mm) in BONES order, and the rest direction of
# every bone in its parent joint's frame (rest pose: upright, arms hanging).
# Proportions follow Human3.6M's mean skeleton.
_REST_BONES = {  # child joint: (length_mm, direction)
    1: (130.0, (1.0, 0.0, 0.0)), 4: (130.0, (-1.0, 0.0, 0.0)),
    2: (445.0, (0.0, 0.0, -1.0)), 5: (445.0, (0.0, 0.0, -1.0)),
    3: (440.0, (0.0, 0.0, -1.0)), 6: (440.0, (0.0, 0.0, -1.0)),
    7: (235.0, (0.0, 0.05, 1.0)),
    8: (255.0, (0.0, -0.05, 1.0)),
    9: (118.0, (0.0, 0.35, 1.0)),
    10: (150.0, (0.0, -0.25, 1.0)),
    11: (150.0, (-1.0, 0.0, -0.12)), 14: (150.0, (1.0, 0.0, -0.12)),
    12: (280.0, (0.0, 0.0, -1.0)), 15: (280.0, (0.0, 0.0, -1.0)),
    13: (250.0, (0.0, 0.0, -1.0)), 16: (250.0, (0.0, 0.0, -1.0)),
}
REFERENCE_BONE_LENGTHS_MM = np.array([_REST_BONES[c][0] for _, c in skeleton.BONES])
_REST_DIRECTIONS = np.zeros((skeleton.NUM_JOINTS, 3))
for _c, (_, _d) in _REST_BONES.items():
    _REST_DIRECTIONS[_c] = np.asarray(_d) / np.linalg.norm(_d)

# Ankle joint height above the floor, as a fraction of stature.
ANKLE_HEIGHT_FRACTION = 0.045
# Per-bone length variation (relative sigma, clipped at 2.5 sigma); left and
# right share a length, as in people.
BONE_JITTER = 0.04

# Anatomical limits (degrees): (lo, hi) per angle, every sample is clipped to them.
LIMITS_DEG: dict[str, tuple[tuple[float, float], ...]] = {
    "pelvis": ((-10, 70), (-15, 15), (-180, 180)),
    "hip": ((-30, 130), (-25, 60), (-40, 45)),
    "knee": ((0, 150),),
    "spine": ((-25, 60), (-30, 30), (-35, 35)),
    "thorax": ((-15, 40), (-20, 20), (-25, 25)),
    "neck": ((-45, 55), (-35, 35), (-70, 70)),
    "shoulder": ((-60, 180), (-15, 170), (-100, 80)),
    "elbow": ((0, 150),),
}
_JOINT_KIND = {0: "pelvis", 1: "hip", 4: "hip", 2: "knee", 5: "knee", 7: "spine", 8: "thorax",
               9: "neck", 11: "shoulder", 14: "shoulder", 12: "elbow", 15: "elbow"}
_LEFT = frozenset(skeleton.LEFT_JOINTS)
_MIRROR = np.diag([-1.0, 1.0, 1.0])


@dataclasses.dataclass(frozen=True)
class Body:
    """A person's proportions.

    Attributes:
      bone_lengths_mm: (B,) in `skeleton.BONES` order.
      height_mm: stature: floor to the top of the head (the Head joint) at rest.
    """

    bone_lengths_mm: np.ndarray
    height_mm: float


@dataclasses.dataclass(frozen=True)
class PoseSample:
    """One procedural pose.

    Attributes:
      joints_mm: (J, 3) world frame, mm, lowest ankle at its rest height above the floor.
      family: one of FAMILIES; the example's action label.
      body: the proportions it was built from.
      yaw_deg: heading; the person faces (-sin yaw, cos yaw, 0).
    """

    joints_mm: np.ndarray
    family: str
    body: Body
    yaw_deg: float


def _rot(axis: int, deg: float) -> np.ndarray:
    c, s = np.cos(np.deg2rad(deg)), np.sin(np.deg2rad(deg))
    i, j = [a for a in range(3) if a != axis]
    r = np.eye(3)
    r[i, i] = r[j, j] = c
    sign = -1.0 if axis == 1 else 1.0  # the (X, Z) plane runs Z -> X
    r[j, i], r[i, j] = sign * s, -sign * s
    return r


def local_rotation(kind: str, angles_deg, left: bool = False) -> np.ndarray:
    """(3, 3) rotation of one joint from its angles (module docstring conventions)."""
    a = tuple(angles_deg)
    if kind == "knee":
        r = _rot(0, -a[0])
    elif kind == "elbow":
        r = _rot(0, a[0])
    elif kind in ("hip", "shoulder"):
        r = _rot(0, a[0]) @ _rot(1, -a[1]) @ _rot(2, a[2])
    elif kind == "pelvis":
        r = _rot(2, a[2]) @ _rot(0, -a[0]) @ _rot(1, a[1])
    else:  # spine, thorax, neck
        r = _rot(0, -a[0]) @ _rot(1, a[1]) @ _rot(2, a[2])
    return _MIRROR @ r @ _MIRROR if left else r


def forward_kinematics(body: Body, angles: dict[int, tuple[float, ...]]) -> np.ndarray:
    """(J, 3) joints, pelvis at the origin, from per-joint angles (degrees).

    `angles` maps a joint index to its angles; absent joints keep their rest
    rotation. Angles are clipped to LIMITS_DEG.
    """
    lengths = np.zeros(skeleton.NUM_JOINTS)
    for (_, c), length in zip(skeleton.BONES, body.bone_lengths_mm):
        lengths[c] = length
    glob = np.zeros((skeleton.NUM_JOINTS, 3, 3))
    joints = np.zeros((skeleton.NUM_JOINTS, 3))
    for j, parent in enumerate(skeleton.PARENTS):
        local = np.eye(3)
        if j in angles:
            kind = _JOINT_KIND[j]
            clipped = [np.clip(v, lo, hi) for v, (lo, hi) in zip(angles[j], LIMITS_DEG[kind])]
            local = local_rotation(kind, clipped, left=j in _LEFT)
        if parent < 0:
            glob[j] = local
            continue
        joints[j] = joints[parent] + glob[parent] @ (_REST_DIRECTIONS[j] * lengths[j])
        glob[j] = glob[parent] @ local
    return joints


def rest_height(bone_lengths_mm: np.ndarray) -> float:
    """Stature of a body with these bones: ankle height plus the rest pose's vertical extent."""
    rest = forward_kinematics(Body(bone_lengths_mm, 0.0), {})
    extent = rest[10, 2] - min(rest[3, 2], rest[6, 2])
    return extent / (1.0 - ANKLE_HEIGHT_FRACTION)


def sample_body(rng: np.random.Generator, height_range_mm=HEIGHT_RANGE_MM) -> Body:
    """Random adult proportions around the reference, with stature in `height_range_mm`."""
    jitter = 1.0 + np.clip(rng.normal(0.0, BONE_JITTER, len(skeleton.BONES)),
                           -2.5 * BONE_JITTER, 2.5 * BONE_JITTER)
    # One jitter per left/right pair, so the body stays symmetric.
    bone_of_child = {c: b for b, (_, c) in enumerate(skeleton.BONES)}
    for r, l in skeleton.LEFT_RIGHT_PAIRS:
        jitter[bone_of_child[l]] = jitter[bone_of_child[r]]
    lengths = REFERENCE_BONE_LENGTHS_MM * jitter
    height = float(rng.uniform(*height_range_mm))
    lengths *= height / rest_height(lengths)
    return Body(lengths, height)


def _u(rng, lo, hi):
    return float(rng.uniform(lo, hi))


def sample_angles(rng: np.random.Generator, family: str) -> dict[int, tuple[float, ...]]:
    """Joint angles (degrees) typical of a pose family, before clipping to the limits."""
    if family not in FAMILIES:
        raise ValueError(f"unknown pose family {family!r}; expected one of {FAMILIES}")
    a: dict[int, tuple[float, ...]] = {}
    n = lambda s: float(rng.normal(0.0, s))  # noqa: E731
    # Defaults: relaxed standing, then each family overrides what defines it.
    a[0] = (n(3), n(3), 0.0)
    for hip, knee in ((1, 2), (4, 5)):
        a[hip] = (n(5), _u(rng, 0, 10), n(8))
        a[knee] = (_u(rng, 0, 12),)
    a[7] = (n(5), n(4), n(6))
    a[8] = (n(4), n(3), n(5))
    a[9] = (_u(rng, -15, 25), n(8), n(25))
    for sh, el in ((11, 12), (14, 15)):
        a[sh] = (n(12), _u(rng, 0, 25), _u(rng, -20, 50))
        a[el] = (_u(rng, 0, 45),)

    if family == "walking":
        phase = _u(rng, 0, 2 * np.pi)
        amp = _u(rng, 15, 32)
        arm = _u(rng, 10, 35)
        for (hip, knee, sh, el), ph in (((1, 2, 14, 15), phase), ((4, 5, 11, 12), phase + np.pi)):
            a[hip] = (8 + amp * np.sin(ph), _u(rng, 0, 6), n(6))
            # The knee folds most in early swing, when the hip is moving forward.
            a[knee] = (5 + 55 * max(0.0, np.cos(ph)) ** 2 + _u(rng, 0, 8),)
            a[sh] = (-arm * np.sin(ph), _u(rng, 3, 15), _u(rng, 0, 30))
            a[el] = (_u(rng, 10, 45),)
        a[7] = (_u(rng, 0, 10), n(3), 0.3 * amp * np.sin(phase))
    elif family == "sitting":
        for hip, knee in ((1, 2), (4, 5)):
            a[hip] = (_u(rng, 70, 100), _u(rng, 0, 22), n(10))
            a[knee] = (_u(rng, 65, 115),)
        a[7] = (_u(rng, -15, 20), n(5), n(8))
        for sh, el in ((11, 12), (14, 15)):
            a[sh] = (_u(rng, 5, 60), _u(rng, 0, 25), _u(rng, 0, 50))
            a[el] = (_u(rng, 30, 110),)
    elif family == "crouching":
        for hip, knee in ((1, 2), (4, 5)):
            a[hip] = (_u(rng, 95, 130), _u(rng, 5, 35), n(10))
            a[knee] = (_u(rng, 105, 150),)
        a[7] = (_u(rng, 15, 50), n(6), n(10))
        for sh, el in ((11, 12), (14, 15)):
            a[sh] = (_u(rng, 10, 90), _u(rng, 0, 30), _u(rng, -10, 50))
            a[el] = (_u(rng, 0, 100),)
    elif family == "bending":
        # A hip hinge: the pelvis tilts forward and the hips flex by as much,
        # so the legs stay under the body while the trunk goes down.
        tilt = _u(rng, 20, 60)
        a[0] = (tilt, n(3), 0.0)
        for hip, knee in ((1, 2), (4, 5)):
            a[hip] = (tilt + _u(rng, -5, 15), _u(rng, 0, 12), n(6))
            a[knee] = (_u(rng, 0, 30),)
        a[7] = (_u(rng, 10, 35), n(5), n(8))
        a[8] = (_u(rng, 5, 20), n(4), n(5))
        down = tilt + a[7][0] + a[8][0]  # arms hang about straight down
        for sh, el in ((11, 12), (14, 15)):
            a[sh] = (down + n(15), _u(rng, 0, 20), _u(rng, -10, 40))
            a[el] = (_u(rng, 0, 35),)
        a[9] = (_u(rng, -40, 10), n(8), n(20))
    elif family in ("reaching", "waving"):
        side = (11, 12) if rng.random() < 0.5 else (14, 15)
        both = family == "reaching" and rng.random() < 0.3
        for sh, el in ((11, 12), (14, 15)):
            if sh != side[0] and not both:
                continue
            if family == "reaching":
                a[sh] = (_u(rng, 50, 170), _u(rng, 0, 70), _u(rng, -30, 40))
                a[el] = (_u(rng, 0, 45),)
            else:
                # External rotation turns the elbow's hinge forward, so the
                # bent forearm points up beside the head.
                a[sh] = (_u(rng, -15, 35), _u(rng, 70, 140), _u(rng, -100, -70))
                a[el] = (_u(rng, 40, 120),)
        lean = 1.0 if side[0] == 14 else -1.0
        a[7] = (_u(rng, -10, 30), lean * _u(rng, -5, 15), lean * _u(rng, 0, 25))
        step = (1, 2) if rng.random() < 0.5 else (4, 5)
        a[step[0]] = (_u(rng, -15, 30), _u(rng, 0, 15), n(8))
        a[step[1]] = (_u(rng, 0, 30),)
    return a


def sample_pose(rng: np.random.Generator, family: str | None = None, body: Body | None = None,
                yaw_deg: float | None = None) -> PoseSample:
    """A random pose in the world frame, standing on the floor.

    Args:
      rng: the only source of randomness.
      family: one of FAMILIES; uniform over them when None.
      body: proportions; `sample_body(rng)` when None.
      yaw_deg: heading about +Z; uniform when None.
    """
    if family is None:
        family = FAMILIES[int(rng.integers(len(FAMILIES)))]
    if body is None:
        body = sample_body(rng)
    if yaw_deg is None:
        yaw_deg = _u(rng, -180, 180)
    angles = sample_angles(rng, family)
    angles[0] = (angles[0][0], angles[0][1], yaw_deg)
    joints = forward_kinematics(body, angles)
    # Feet on the floor: the lower ankle rests at its standing height.
    joints[:, 2] += ANKLE_HEIGHT_FRACTION * body.height_mm - min(joints[3, 2], joints[6, 2])
    return PoseSample(joints, family, body, float(yaw_deg))
