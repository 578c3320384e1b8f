"""Finding, naming and reading the files of the official Human3.6M download.

Layout under the folder the user names (TFDS `manual_dir`), one folder per subject:

  S9/Videos/<Sequence>.<camera>.mp4
  S9/MyPoseFeatures/D3_Positions_mono/<Sequence>.<camera>.cdf   3D, that camera's frame, mm
  S9/MyPoseFeatures/D2_Positions/<Sequence>.<camera>.cdf        2D, pixels, distorted

`<Sequence>` is an action name with or without a take number ('Eating 2',
'Eating'); S1 spells two actions its own way ('TakingPhoto', 'WalkingDog').
Each CDF holds one variable `Pose` of shape (1, N, 32*C), C = 3 (3D) or 2 (2D).
The `_ALL*` videos are composites without poses and are ignored.

Discovery never raises on a damaged or missing file: problems are returned as
`BadFile` records, so the builder can either stop with all of them listed or
skip them and log a summary. The readers raise `BadFileError`.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re

import numpy as np

from c2f_vol import camera
from c2f_vol.errors import BadFile, BadFileError  # noqa: F401 (the builder reports through files.*)

TRAIN_SUBJECTS: tuple[str, ...] = ("S1", "S5", "S6", "S7", "S8")
TEST_SUBJECTS: tuple[str, ...] = ("S9", "S11")

# The 15 canonical action names, in the order the literature tabulates them.
ACTIONS: tuple[str, ...] = (
    "Directions", "Discussion", "Eating", "Greeting", "Phoning", "Photo", "Posing",
    "Purchases", "Sitting", "SittingDown", "Smoking", "Waiting", "WalkDog", "Walking",
    "WalkTogether",
)
# S1's spellings of two of them.
ACTION_ALIASES: dict[str, str] = {"TakingPhoto": "Photo", "WalkingDog": "WalkDog"}

# modality -> (folder under the subject, file suffix)
MODALITIES: dict[str, tuple[str, str]] = {
    "video": ("Videos", ".mp4"),
    "pose3d": ("MyPoseFeatures/D3_Positions_mono", ".cdf"),
    "pose2d": ("MyPoseFeatures/D2_Positions", ".cdf"),
}
_POSE_CHANNELS = {"pose3d": 3, "pose2d": 2}
_NUM_JOINTS32 = 32
# Composite videos of a whole session; they have no pose files.
_IGNORED_PREFIX = "_ALL"
_TAKE_SUFFIX = re.compile(r"^(?P<action>.+?)(?: (?P<take>\d+))?$")


@dataclasses.dataclass(frozen=True)
class SequenceFiles:
    """The three files of one sequence seen by one camera."""

    subject: str
    sequence: str   # as in the file name, e.g. 'Eating 2', 'TakingPhoto'
    camera: str     # e.g. '54138969'
    video: pathlib.Path
    pose3d: pathlib.Path
    pose2d: pathlib.Path

    @property
    def key(self) -> str:
        """'S9/Eating 2.54138969': the name `skip_sequences` patterns match."""
        return f"{self.subject}/{self.sequence}.{self.camera}"

    @property
    def action(self) -> str:
        return canonical_action(self.sequence)


def canonical_action(sequence: str) -> str:
    """'Eating 2' -> 'Eating', 'TakingPhoto' -> 'Photo'; ValueError for an unknown action."""
    m = _TAKE_SUFFIX.match(sequence.strip())
    name = m.group("action") if m else sequence
    name = ACTION_ALIASES.get(name, name)
    if name not in ACTIONS:
        raise ValueError(f"sequence {sequence!r} names no Human3.6M action; expected one of "
                         f"{ACTIONS} (or {tuple(ACTION_ALIASES)}), optionally followed by ' <take>'")
    return name


def _parse_name(name: str, suffix: str) -> tuple[str, str] | None:
    """'<Sequence>.<camera><suffix>' -> (sequence, camera); None for other files."""
    if not name.endswith(suffix) or name.startswith((".", _IGNORED_PREFIX)):
        return None
    stem = name[: -len(suffix)]
    sequence, dot, cam = stem.rpartition(".")
    if not dot or not sequence:
        return None
    return sequence, cam


def discover_subject(root: pathlib.Path, subject: str) -> tuple[list[SequenceFiles], list[BadFile]]:
    """Every sequence of `root/subject`, and the problems found by looking at names only.

    A (sequence, camera) present in any modality must be present in all three;
    each absent file is a `BadFile` naming the path where it was expected. An
    unknown camera or action is a `BadFile` too. Sequences with any problem are
    not returned.

    Returns:
      (sequences sorted by key, problems)
    """
    base = pathlib.Path(root) / subject
    found: dict[tuple[str, str], dict[str, pathlib.Path]] = {}
    for modality, (folder, suffix) in MODALITIES.items():
        directory = base / folder
        if not directory.is_dir():
            continue
        for path in directory.iterdir():
            parsed = _parse_name(path.name, suffix)
            if parsed is not None:
                found.setdefault(parsed, {})[modality] = path
    sequences, problems = [], []
    for (sequence, cam), paths in sorted(found.items()):
        bad = []
        for modality, (folder, suffix) in MODALITIES.items():
            if modality not in paths:
                present = next(iter(paths.values()))
                bad.append(BadFile(str(base / folder / f"{sequence}.{cam}{suffix}"),
                                   f"missing, though the sequence is present as {present}"))
        if cam not in camera.H36M_CAMERAS:
            bad += [BadFile(str(p), f"unknown camera {cam!r}; expected one of "
                                    f"{tuple(camera.H36M_CAMERAS)}") for p in paths.values()]
        try:
            canonical_action(sequence)
        except ValueError as e:
            bad += [BadFile(str(p), str(e)) for p in paths.values()]
        if bad:
            problems += bad
        else:
            sequences.append(SequenceFiles(subject, sequence, cam, paths["video"],
                                           paths["pose3d"], paths["pose2d"]))
    return sequences, problems


# ---------------------------------------------------------------------------
# Readers.


def _pose_variable(path: pathlib.Path, channels: int):
    """Open a pose CDF and check its `Pose` variable; returns (cdf, frames N)."""
    import cdflib  # only the Human3.6M builder needs it

    try:
        cdf = cdflib.CDF(str(path))
        info = cdf.varinq("Pose")
    except Exception as e:  # cdflib raises OSError, ValueError, KeyError, struct.error...
        raise BadFileError(BadFile(str(path), f"unreadable CDF or no variable 'Pose' ({e})")) from e
    dims = list(info.Dim_Sizes)
    # (1, N, 32*C) is one record of N x 32C; a release could also store N records of 32C.
    if len(dims) == 2 and dims[1] == _NUM_JOINTS32 * channels:
        return cdf, int(dims[0])
    if len(dims) == 1 and dims[0] == _NUM_JOINTS32 * channels:
        return cdf, int(info.Last_Rec) + 1
    raise BadFileError(BadFile(str(path), f"'Pose' has dimensions {dims} per record; expected "
                                          f"[N, {_NUM_JOINTS32 * channels}]"))


def pose_frame_count(path: pathlib.Path, modality: str) -> int:
    """Frames N of a pose CDF, from its header only (cheap); raises BadFileError."""
    return _pose_variable(path, _POSE_CHANNELS[modality])[1]


def read_pose_cdf(path: pathlib.Path, modality: str) -> np.ndarray:
    """Read `Pose` of a 'pose3d' (mm) or 'pose2d' (pixels) CDF.

    Returns:
      (N, 32, C) float64, C = 3 or 2.
    Raises:
      BadFileError: unreadable, wrong shape, or non-finite values.
    """
    channels = _POSE_CHANNELS[modality]
    cdf, frames = _pose_variable(path, channels)
    try:
        data = np.asarray(cdf.varget("Pose"), np.float64)
    except Exception as e:  # a truncated file fails only when its data are read
        raise BadFileError(BadFile(str(path), f"cannot read 'Pose' ({e})")) from e
    if data.size != frames * _NUM_JOINTS32 * channels:
        raise BadFileError(BadFile(str(path), f"'Pose' holds {data.size} values; expected "
                                              f"{frames} x {_NUM_JOINTS32 * channels}"))
    poses = data.reshape(frames, _NUM_JOINTS32, channels)
    if not np.all(np.isfinite(poses)):
        raise BadFileError(BadFile(str(path), "'Pose' holds non-finite values"))
    return poses


def open_video(path: pathlib.Path):
    """Open a video with OpenCV.

    Returns:
      (cv2.VideoCapture, frames from the container header, (width, height) pixels).
    Raises:
      BadFileError: OpenCV cannot open or decode it.
    """
    import cv2

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise BadFileError(BadFile(str(path), "OpenCV cannot open this video (missing codec "
                                              "or damaged file)"))
    frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    if frames <= 0 or min(size) <= 0:
        capture.release()
        raise BadFileError(BadFile(str(path), f"video reports {frames} frames of {size[0]}x{size[1]}"))
    return capture, frames, size


def check_sequence(seq: SequenceFiles) -> list[BadFile]:
    """Cheap checks of one sequence's files (headers only), before anything is built."""
    problems = []
    for modality in ("pose3d", "pose2d"):
        try:
            pose_frame_count(getattr(seq, modality), modality)
        except BadFileError as e:
            problems.extend(e.bad)
    try:
        capture, _, _ = open_video(seq.video)
        capture.release()
    except BadFileError as e:
        problems.extend(e.bad)
    return problems
