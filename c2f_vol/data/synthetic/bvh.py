"""BVH motion capture: parsing, forward kinematics, and conversion to the 17 joints.

Shapes legend: F frames, K joints of the file (end sites included), C motion channels.

A BVH joint's rotation channels are applied in the order the file lists them,
each about the joint's *local* (already rotated) axes, so a joint listing
`Zrotation Yrotation Xrotation` has the local rotation Rz @ Ry @ Rx. A joint's
position is its parent's position plus the parent's global rotation applied to
(OFFSET + its own position channels). Files may mix channel orders between
joints (the CMU 131 files do), so each joint keeps its own.

End sites become joints named `<parent>_End` without channels.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re

import numpy as np

from c2f_vol import skeleton
from c2f_vol.errors import UserError

# CMU files store lengths in units of 1/0.45 inch.
CMU_UNIT_MM = 56.44

_AXES = {"X": 0, "Y": 1, "Z": 2}
_CHANNEL_RE = re.compile(r"^([XYZ])(position|rotation)$")


@dataclasses.dataclass(frozen=True)
class BvhJoint:
    """One node of the hierarchy.

    Attributes:
      name: joint name; end sites are `<parent>_End`.
      parent: index of the parent joint, -1 for the root.
      offset: (3,) offset from the parent, in file units.
      channels: channel names in file order, e.g. ('Zrotation', 'Yrotation', 'Xrotation').
      channel_start: column of the first channel in the motion matrix.
    """

    name: str
    parent: int
    offset: np.ndarray
    channels: tuple[str, ...]
    channel_start: int


@dataclasses.dataclass(frozen=True)
class BvhMotion:
    """A parsed BVH file.

    Attributes:
      source: where it came from (file path or a label), used in error messages.
      joints: (K,) joints, every parent before its children.
      frame_time_s: seconds per frame.
      motion: (F, C) channel values (file units and degrees).
    """

    source: str
    joints: tuple[BvhJoint, ...]
    frame_time_s: float
    motion: np.ndarray

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(j.name for j in self.joints)

    @property
    def num_frames(self) -> int:
        return int(self.motion.shape[0])

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"{self.source}: no joint named {name!r}; joints are {list(self.names)}") from None

    def forward_kinematics(self, frames=None) -> np.ndarray:
        """Global joint positions.

        Args:
          frames: optional frame indices (int array or slice); all frames when None.
        Returns:
          (F', K, 3) positions in file units, in the file's world frame.
        """
        motion = self.motion if frames is None else self.motion[frames]
        motion = np.atleast_2d(np.asarray(motion, np.float64))
        n = motion.shape[0]
        positions = np.zeros((n, len(self.joints), 3))
        rotations = np.zeros((n, len(self.joints), 3, 3))
        for k, joint in enumerate(self.joints):
            local_rot = np.broadcast_to(np.eye(3), (n, 3, 3))
            translation = np.broadcast_to(joint.offset, (n, 3)).copy()
            for c, channel in enumerate(joint.channels):
                axis, kind = _CHANNEL_RE.match(channel).groups()
                values = motion[:, joint.channel_start + c]
                if kind == "position":
                    translation[:, _AXES[axis]] += values
                else:
                    local_rot = local_rot @ _axis_rotation(_AXES[axis], np.deg2rad(values))
            if joint.parent < 0:
                positions[:, k] = translation
                rotations[:, k] = local_rot
            else:
                parent_rot = rotations[:, joint.parent]
                positions[:, k] = positions[:, joint.parent] + np.einsum("nij,nj->ni", parent_rot, translation)
                rotations[:, k] = parent_rot @ local_rot
        return positions


def _axis_rotation(axis: int, angle_rad: np.ndarray) -> np.ndarray:
    """(F,) angles -> (F, 3, 3) right-handed rotations about one coordinate axis."""
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    out = np.zeros(angle_rad.shape + (3, 3))
    i, j = [a for a in range(3) if a != axis]
    out[..., axis, axis] = 1.0
    out[..., i, i] = c
    out[..., j, j] = c
    # For X the plane is (Y, Z), for Z it is (X, Y): both with +s below the
    # diagonal. For Y the plane is (X, Z) in the cyclic order Z -> X, so flip.
    sign = -1.0 if axis == 1 else 1.0
    out[..., j, i] = sign * s
    out[..., i, j] = -sign * s
    return out


class BvhError(UserError, ValueError):
    """A malformed BVH file."""


def _tokens(text: str):
    """(token, line number) pairs of the hierarchy; braces are tokens of their own."""
    for lineno, line in enumerate(text.splitlines(), start=1):
        for tok in line.replace("{", " { ").replace("}", " } ").split():
            yield tok, lineno


def parse_bvh(text: str, source: str = "<string>") -> BvhMotion:
    """Parse the text of a BVH file.

    Raises:
      BvhError: naming `source`, the line, what was expected and what was found.
    """
    head, sep, body = text.partition("MOTION")
    if not sep:
        raise BvhError(f"{source}: expected a 'MOTION' section after the hierarchy; found none")
    toks = list(_tokens(head))
    pos = 0

    def take(expected: str | None = None, what: str = "more tokens") -> tuple[str, int]:
        """The next token; with `expected`, it must be exactly that."""
        nonlocal pos
        if pos >= len(toks):
            raise BvhError(f"{source}: expected {expected or what} in the hierarchy; found the end of it")
        tok, line = toks[pos]
        if expected is not None and tok != expected:
            raise BvhError(f"{source}:{line}: expected {expected!r}; found {tok!r}")
        pos += 1
        return tok, line

    def number(line_hint: str) -> float:
        tok, line = take()
        try:
            return float(tok)
        except ValueError:
            raise BvhError(f"{source}:{line}: expected a number in {line_hint}; found {tok!r}") from None

    joints: list[BvhJoint] = []
    num_channels = 0

    def parse_joint(name: str, parent: int, is_end: bool) -> None:
        nonlocal num_channels
        take("{")
        take("OFFSET")
        offset = np.array([number("OFFSET") for _ in range(3)])
        channels: tuple[str, ...] = ()
        if not is_end:
            tok, line = take("CHANNELS")
            count_tok, line = take()
            if not count_tok.isdigit():
                raise BvhError(f"{source}:{line}: expected a channel count after CHANNELS; found {count_tok!r}")
            channels = tuple(take()[0] for _ in range(int(count_tok)))
            for ch in channels:
                if not _CHANNEL_RE.match(ch):
                    raise BvhError(f"{source}:{line}: joint {name!r}: expected channels like "
                                   f"'Xposition' or 'Zrotation'; found {ch!r}")
        index = len(joints)
        joints.append(BvhJoint(name, parent, offset, channels, num_channels))
        num_channels += len(channels)
        while True:
            tok, line = take(what="'JOINT', 'End Site' or '}'")
            if tok == "}":
                return
            if tok == "JOINT":
                parse_joint(take(what="a joint name")[0], index, False)
            elif tok == "End":
                take("Site")
                parse_joint(f"{name}_End", index, True)
            else:
                raise BvhError(f"{source}:{line}: expected 'JOINT', 'End Site' or '}}' in joint {name!r}; found {tok!r}")

    take("HIERARCHY")
    take("ROOT")
    parse_joint(take(what="the root's name")[0], -1, False)
    if pos != len(toks):
        tok, line = toks[pos]
        raise BvhError(f"{source}:{line}: expected 'MOTION' after the root's closing brace; found {tok!r}")

    lines = body.splitlines()
    frames_m = re.match(r"\s*Frames:\s*(\d+)\s*$", lines[1] if len(lines) > 1 else "")
    time_m = re.match(r"\s*Frame Time:\s*([0-9.eE+-]+)\s*$", lines[2] if len(lines) > 2 else "")
    if not frames_m or not time_m:
        raise BvhError(f"{source}: expected 'Frames: <n>' and 'Frame Time: <s>' after MOTION; "
                       f"found {lines[1:3]!r}")
    num_frames = int(frames_m.group(1))
    rows = [ln for ln in lines[3:] if ln.strip()]
    if len(rows) != num_frames:
        raise BvhError(f"{source}: the header says {num_frames} frames; found {len(rows)} motion lines")
    try:
        values = np.array(" ".join(rows).split(), dtype=np.float64) if rows else np.zeros(0)
    except ValueError as e:
        raise BvhError(f"{source}: expected only numbers in the motion lines; {e}") from None
    if values.size != num_frames * num_channels:
        bad = next((i for i, r in enumerate(rows) if len(r.split()) != num_channels), None)
        raise BvhError(f"{source}: expected {num_channels} values per frame (from the hierarchy); "
                       f"motion line {bad} has {len(rows[bad].split()) if bad is not None else '?'}")
    values = values.reshape(num_frames, num_channels)
    if not np.isfinite(values).all():
        frame, column = np.argwhere(~np.isfinite(values))[0]
        raise BvhError(f"{source}: frame {frame} (motion line {frame + 1}) holds {values[frame, column]} in "
                       f"channel {column}; every motion value must be a finite number. Fix or remove that frame.")
    return BvhMotion(source, tuple(joints), float(time_m.group(1)), values)


def load_bvh(path) -> BvhMotion:
    """Read and parse a BVH file."""
    path = pathlib.Path(path)
    return parse_bvh(path.read_text(encoding="utf-8", errors="strict"), source=str(path))


# Names that stand for each of the 17 joints, most specific first. Side joints
# are given as stems: "Left"/"Right" + stem, so the side always comes from the
# file's own joint name. Why these choices (CMU skeletons):
#  * Both schemes have a zero-length collar joint at the spine top; the first
#    joint of the arm proper ("LeftArm" in 01_*, "LeftShoulder" in 131_*) is
#    the shoulder. 01_* also has a "LeftShoulder", but it is the collar, so
#    "Arm" must win over "Shoulder".
#  * Thorax is the base of the neck at shoulder height: "Neck1" in 01_* (its
#    "Neck" sits at the collar level), "Neck" in 131_*.
#  * Spine is the first spine joint above the hips with a length ("Spine" /
#    "Chest"), about a third of the way from pelvis to thorax (Human3.6M: half).
#  * Neck/Nose is the "Head" joint (the upper neck), Head the head's end site,
#    the top of the head, matching Human3.6M's head-top joint.
_CENTRE_NAMES: dict[int, tuple[str, ...]] = {
    0: ("Hips",),
    7: ("Spine", "Chest"),
    8: ("Neck1", "Neck"),
    9: ("Head",),
    10: ("Head_End",),
}
_SIDE_STEMS: dict[str, tuple[str, ...]] = {
    "Hip": ("UpLeg", "Hip"),
    "Knee": ("Leg", "Knee"),
    "Ankle": ("Foot", "Ankle"),
    "Shoulder": ("Arm", "Shoulder"),
    "Elbow": ("ForeArm", "Elbow"),
    "Wrist": ("Hand", "Wrist"),
}


def h36m17_candidates() -> tuple[tuple[str, ...], ...]:
    """For each of the 17 joints, the BVH names accepted for it, most specific first."""
    out = []
    for idx, name in enumerate(skeleton.JOINT_NAMES):
        if idx in _CENTRE_NAMES:
            out.append(_CENTRE_NAMES[idx])
        else:
            side = {"L": "Left", "R": "Right"}[name[0]]
            out.append(tuple(side + stem for stem in _SIDE_STEMS[name[1:]]))
    return tuple(out)


def h36m17_indices(motion: BvhMotion) -> np.ndarray:
    """(17,) indices into `motion.joints` of the 17 joints.

    Raises:
      KeyError: naming the file, the joints that could not be found, the names
        accepted for them and the file's joints.
    """
    names = motion.names
    found, missing = [], []
    for target, candidates in zip(skeleton.JOINT_NAMES, h36m17_candidates()):
        hit = next((names.index(c) for c in candidates if c in names), None)
        found.append(hit)
        if hit is None:
            missing.append(f"{target} (one of {list(candidates)})")
    if missing:
        raise KeyError(f"{motion.source}: cannot map to the 17-joint skeleton; missing "
                       f"{'; '.join(missing)}. The file's joints are {list(names)}")
    return np.array(found)


def to_h36m17(motion: BvhMotion, frames=None, unit_mm: float = CMU_UNIT_MM) -> np.ndarray:
    """The 17 joints of every frame, in mm, in the file's own world frame.

    Args:
      motion: a parsed file.
      frames: optional frame indices or slice.
      unit_mm: millimetres per file unit (CMU: 56.44).
    Returns:
      (F', 17, 3) mm.
    """
    idx = h36m17_indices(motion)
    return motion.forward_kinematics(frames)[:, idx] * unit_mm


def y_up_to_z_up(points):
    """Rotate (..., 3) points from a Y-up frame (BVH) to a Z-up one (+90 deg about X).

    (x, y, z) -> (x, -z, y): a proper rotation, so handedness and sides are kept.
    """
    points = np.asarray(points)
    return np.stack([points[..., 0], -points[..., 2], points[..., 1]], axis=-1)
