"""The `human36m` TFDS builder: person crops, joints and intrinsics from the official download.

Build, offline (importing this module registers the builder; the download stays
where it is):

    import tensorflow_datasets as tfds
    import c2f_vol.data.human36m
    builder = tfds.builder("human36m", data_dir=DATA_DIR)   # or config=Human36mConfig(...)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir="/path/to/h36m"))

Every example follows `c2f_vol.data.features`:
  image       the person region of a video frame (square box around the 2D joints,
              with margin), resized to crop_size x crop_size; zero where the box
              leaves the frame.
  joints_2d   D2_Positions (17 of the 32, distortion included) through the crop's affine.
  joints_3d   D3_Positions_mono, 17 joints, that camera's frame, mm.
  intrinsics  the camera's pinhole intrinsics through the same affine (distortion is not
              stored, so projecting joints_3d misses joints_2d by the lens distortion:
              a few pixels at most for these lenses).
  subject 'S9', action (one of the 15 canonical names), camera '54138969', frame =
  index in the video.

Policies
  * Splits: train = S1, S5, S6, S7, S8; test = S9, S11. An absent subject folder is
    logged as a warning and recorded in `info.metadata['absent_subjects']`; a split
    with none of its subjects present is not written; no subject at all is an error.
  * A sequence present in any modality must have all three files. Missing,
    unreadable or inconsistent files stop the build (before anything is written
    when headers show it) with an error naming every such file; with
    `skip_bad_files` their sequences are skipped instead and a summary is logged at
    the end of each split and stored in `info.metadata['skipped']`.
  * `skip_sequences` (default: the damaged S11 'Directions' of camera 54138969) are
    skipped without being opened, and reported in the same summary.
  * Not every video has its camera's nominal size (S7 'Greeting.55011271' decodes to
    1000x1002 for a 1000x1000 camera). A size within `FRAME_SIZE_TOLERANCE_PX` of the
    nominal one in width and height is that camera: it is used as it is, with one
    warning per file, and recorded in `info.metadata['frame_size_mismatch']`
    ({'S7/Greeting.55011271': [1000, 1002]}). A size further off cannot be that camera
    and is a bad file, found from the headers before anything is written.
  * Video and pose frame counts may differ by a few frames: the common length is used
    with one warning per file. A gap of more than 25 frames and 5% of the longest
    file means a truncated or wrong file, and counts as a bad file.
  * Left/right: decided per file from the 3D geometry (`decide_sides`), and the 2D
    labels are matched to the projected 3D joints (`match_2d_sides`), so the stored
    LHip is on the person's left whatever convention a release uses. Every swap is
    logged and recorded in `info.metadata['side_swaps']`.
"""

from __future__ import annotations

import collections
import dataclasses
import fnmatch
import pathlib

import cv2
import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from c2f_vol import camera, skeleton
from c2f_vol.data import features
from c2f_vol.data import h36m_files as files

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
# Below this share of agreeing frames a side decision is logged as doubtful.
_CONFIDENT_AGREEMENT = 0.8
# Median distance (px) between D2 and projected D3 beyond which the files are
# logged as inconsistent (they agree to well under a pixel in the release).
_MAX_REPROJECTION_PX = 10.0
# Frame counts may differ by a few frames; a gap beyond both of these (frames, and
# share of the longest file) means a truncated or wrong file.
_MAX_FRAME_GAP = 25
_MAX_FRAME_GAP_FRACTION = 0.05
# How far (px, in width and in height separately) a video's frame size may be from its
# camera's nominal size and still be that camera. The intrinsics are anchored at the
# top-left pixel, so rows or columns added or missing at the bottom/right edge (the
# release has 1000x1002 videos of 1000x1000 cameras; encoders pad or trim a few
# lines to their block sizes) leave every pixel where the intrinsics put it, and the
# crops are cut through the same affine. A rescaled or foreign video differs by far
# more (640x480, 500x500); even a rescale by 8 px in 1000 would move edge pixels by
# about 4 px, the order of the lens distortion the stored pinhole intrinsics leave out.
FRAME_SIZE_TOLERANCE_PX = 8
# The crop box never shrinks below this side (px), so a degenerate 2D pose cannot
# produce a singular affine.
_MIN_BOX_PX = 32.0


# ---------------------------------------------------------------------------
# Left and right, from the geometry.


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


# ---------------------------------------------------------------------------
# The person crop.


def crop_affines(joints2d_px: np.ndarray, crop_size: int, box_margin: float) -> np.ndarray:
    """Affines from frame pixels to the stored crop, one per frame.

    The box is the square around the joints' bounding box (same centre), its side the
    larger extent times (1 + 2 * box_margin), at least `_MIN_BOX_PX`; no rotation.

    Args:
      joints2d_px: (N, J, 2) joints in frame pixels.
    Returns:
      (N, 2, 3) float64, crop = A @ [u, v, 1].
    """
    lo, hi = joints2d_px.min(axis=1), joints2d_px.max(axis=1)
    side = np.maximum((hi - lo).max(axis=-1) * (1.0 + 2.0 * box_margin), _MIN_BOX_PX)
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


# ---------------------------------------------------------------------------
# The builder.


@dataclasses.dataclass(eq=False)
class Human36mConfig(tfds.core.BuilderConfig):
    """What to store.

    Attributes:
      train_stride, test_stride: keep every k-th video frame (50 fps) of train / test subjects.
      crop_size: side of the stored square person crop, pixels.
      box_margin: context added on every side of the joints' box, as a fraction of its
        larger extent (the crop side is (1 + 2 * box_margin) times that extent).
      skip_bad_files: skip sequences with missing or unreadable files (summarised at
        the end) instead of stopping with an error.
      skip_sequences: fnmatch patterns of 'S11/Directions.54138969' (subject/sequence.camera)
        that are never read.
    A custom config needs a name of its own: TFDS stores each name in its own folder.
    """

    train_stride: int = 5
    test_stride: int = 5
    crop_size: int = 256
    box_margin: float = 0.25
    skip_bad_files: bool = False
    skip_sequences: tuple[str, ...] = ("S11/Directions.54138969",)

    def __post_init__(self):
        if self.train_stride < 1 or self.test_stride < 1:
            raise ValueError(f"strides must be >= 1; got train {self.train_stride}, "
                             f"test {self.test_stride}")
        if self.crop_size < 16:
            raise ValueError(f"crop_size must be >= 16 pixels; got {self.crop_size}")
        if self.box_margin < 0:
            raise ValueError(f"box_margin must be >= 0; got {self.box_margin}")
        if isinstance(self.skip_sequences, str):
            raise ValueError("skip_sequences is a sequence of patterns, not one string")
        self.skip_sequences = tuple(self.skip_sequences)
        if self.description is None:
            self.description = (f"{self.crop_size}px person crops, train stride {self.train_stride}, "
                                f"test stride {self.test_stride}")


_SPLIT_SUBJECTS = {"train": files.TRAIN_SUBJECTS, "test": files.TEST_SUBJECTS}


class Human36m(features.OwnCodePath, tfds.core.GeneratorBasedBuilder):
    """Human3.6M person crops with 17 2D/3D joints and crop intrinsics."""

    name = "human36m"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Person crops from the official videos, D2/D3_mono poses, sides "
                              "decided from the geometry."}
    # Train stride 5: the videos run at 50 fps, so neighbouring frames are
    # near-duplicates; every 5th frame (10 fps) keeps the pose variety and gives
    # ~310k train crops (~6 GB of 256 px JPEGs), and matches the test protocol's
    # sampling. Decoding every frame dominates the build time whatever the stride.
    # Test stride 5 is the original protocol; 64 is Sun et al.'s.
    BUILDER_CONFIGS = [
        Human36mConfig(name="stride5"),
        Human36mConfig(name="test_stride64", test_stride=64),
    ]
    DEFAULT_CONFIG_NAME = "stride5"
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Human3.6M needs a licence: register at http://vision.imar.ro/human3.6m, download
    for every subject (S1, S5, S6, S7, S8, S9, S11) the 'Videos' and the 'Poses'
    archives (D2_Positions and D3_Positions_mono), and extract them into one folder so that
      <manual_dir>/S9/Videos/Directions 1.54138969.mp4
      <manual_dir>/S9/MyPoseFeatures/D3_Positions_mono/Directions 1.54138969.cdf
      <manual_dir>/S9/MyPoseFeatures/D2_Positions/Directions 1.54138969.cdf
    exist. Pass that folder as manual_dir
    (tfds.download.DownloadConfig(manual_dir=...)). Nothing is ever downloaded.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=("Human3.6M: square person crops of the official videos with the 17 "
                         "joints in crop pixels (D2_Positions) and in the camera frame in mm "
                         "(D3_Positions_mono), and the crop's pinhole intrinsics."),
            features=features.example_features(),
            homepage="http://vision.imar.ro/human3.6m",
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager):
        config: Human36mConfig = self.builder_config
        try:
            root = pathlib.Path(dl_manager.manual_dir)
        except AssertionError as e:  # TFDS's way of saying manual_dir is unset, absent or empty
            raise FileNotFoundError(f"human36m reads the official download from manual_dir: {e}") from e
        subjects = files.TRAIN_SUBJECTS + files.TEST_SUBJECTS
        absent = [s for s in subjects if not (root / s).is_dir()]
        if len(absent) == len(subjects):
            raise FileNotFoundError(f"no subject folder ({', '.join(subjects)}) under {root}; "
                                    f"see MANUAL_DOWNLOAD_INSTRUCTIONS:\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
        if absent:
            logging.warning("human36m: subject folders absent under %s, left out: %s", root, absent)
        self.info.metadata["absent_subjects"] = absent
        self.info.metadata["skipped"] = {}
        self.info.metadata["side_swaps"] = {}
        self.info.metadata["frame_size_mismatch"] = {}

        plan, problems = {}, []
        for split, split_subjects in _SPLIT_SUBJECTS.items():
            present = [s for s in split_subjects if s not in absent]
            if not present:
                logging.warning("human36m: no %s subject present; the %s split is not written", split, split)
                continue
            keep, by_config, bad = [], [], []
            for subject in present:
                sequences, found_bad = files.discover_subject(root, subject)
                bad += found_bad
                for seq in sequences:
                    if any(fnmatch.fnmatchcase(seq.key, p) for p in config.skip_sequences):
                        by_config.append(seq.key)
                        continue
                    seq_bad = files.check_sequence(seq) or _frame_size_problems(seq)
                    bad += seq_bad
                    if not seq_bad:
                        keep.append(seq)
            problems += bad
            plan[split] = (keep, by_config, bad)
        if problems and not config.skip_bad_files:
            raise files.BadFileError(*problems, hint="Fix these files, or build with "
                                     "Human36mConfig(skip_bad_files=True) to skip their sequences.")
        return {split: self._generate_examples(split, *args) for split, args in plan.items()}

    def _generate_examples(self, split, sequences, skipped_by_config, bad):
        config: Human36mConfig = self.builder_config
        stride = config.train_stride if split == "train" else config.test_stride
        bad = list(bad)
        sides = collections.Counter()
        for seq in sequences:
            try:
                for frame, example in self._sequence_examples(seq, stride, sides):
                    yield f"{seq.key}/{frame}", example
            except files.BadFileError as e:
                if not config.skip_bad_files:
                    raise files.BadFileError(*e.bad, hint="Build with Human36mConfig("
                                             "skip_bad_files=True) to skip its sequence.") from e
                bad += e.bad
        logging.info("human36m %s: %d files with sides as labelled, %d with swaps", split,
                     sides["as labelled"], sides["swapped"])
        _log_skipped(split, skipped_by_config, bad)
        self.info.metadata["skipped"][split] = (
            [f"{k}: skip_sequences" for k in skipped_by_config] + [str(b) for b in bad])

    def _sequence_examples(self, seq: files.SequenceFiles, stride: int, sides: collections.Counter):
        """Yields (frame index, example) for every `stride`-th frame of one file triple."""
        config: Human36mConfig = self.builder_config
        cam = camera.H36M_CAMERAS[seq.camera]
        pose3d = files.read_pose_cdf(seq.pose3d, "pose3d")
        pose2d = files.read_pose_cdf(seq.pose2d, "pose2d")
        capture, n_video, size = files.open_video(seq.video)
        try:
            if check_frame_size(seq, size):
                logging.warning("human36m: %s: frames are %dx%d; camera %s is nominally %dx%d. "
                                "Within %d px, so used as that camera (intrinsics anchored at the "
                                "top-left)", seq.video, size[0], size[1], seq.camera, cam.width,
                                cam.height, FRAME_SIZE_TOLERANCE_PX)
                self.info.metadata["frame_size_mismatch"][seq.key] = [int(size[0]), int(size[1])]
            n = _common_length(seq, n_video, len(pose3d), len(pose2d))
            pose3d, pose2d = self._fix_sides(seq, pose3d[:n], pose2d[:n], cam, sides)
            kept = np.arange(0, n, stride)
            affines, joints_2d, intrinsics = crop_geometry(pose2d[kept], cam.intrinsics, config.crop_size,
                                                           config.box_margin)
            joints_2d = skeleton.from_h36m32(joints_2d)
            joints_3d = skeleton.from_h36m32(pose3d[kept])
            for index in range(n):
                # grab() skips decoding-to-BGR of frames the stride leaves out.
                if not capture.grab():
                    logging.warning("human36m: %s stopped decoding at frame %d of %d", seq.video, index, n)
                    return
                if index % stride:
                    continue
                ok, frame_bgr = capture.retrieve()
                if not ok:
                    logging.warning("human36m: %s stopped decoding at frame %d of %d", seq.video, index, n)
                    return
                i = index // stride
                crop = crop_frame(frame_bgr, affines[i], config.crop_size)
                yield index, {
                    "image": np.ascontiguousarray(crop[..., ::-1]),
                    "joints_2d": joints_2d[i].astype(np.float32),
                    "joints_3d": joints_3d[i].astype(np.float32),
                    "intrinsics": intrinsics[i].astype(np.float32),
                    "subject": seq.subject,
                    "action": seq.action,
                    "camera": seq.camera,
                    "frame": np.int32(index),
                }
        finally:
            capture.release()

    def _fix_sides(self, seq, pose3d, pose2d, cam, sides):
        """Swap the 3D and 2D chains to anatomical sides; logs and records any swap."""
        decision = decide_sides(pose3d)
        pose3d = swap_sides32(pose3d, decision.legs_swapped, decision.arms_swapped)
        projected = camera.project(pose3d, cam.intrinsics.astype(np.float64),
                                   cam.distortion.astype(np.float64))
        legs2d, arms2d = match_2d_sides(pose2d, projected)
        pose2d = swap_sides32(pose2d, legs2d, arms2d)
        doubtful = min(decision.legs_agreement, decision.arms_agreement) < _CONFIDENT_AGREEMENT
        swaps = [name for name, s in (("3D legs", decision.legs_swapped),
                                      ("3D arms", decision.arms_swapped),
                                      ("2D legs", legs2d), ("2D arms", arms2d)) if s]
        sides["swapped" if swaps else "as labelled"] += 1
        if swaps:
            self.info.metadata["side_swaps"][seq.key] = swaps
        log = logging.warning if doubtful else logging.info
        log("human36m: %s sides: 3D %s; 2D legs %s, arms %s%s", seq.key, decision.describe(),
            "swapped" if legs2d else "as labelled", "swapped" if arms2d else "as labelled",
            " (doubtful)" if doubtful else "")
        error_px = float(np.median(np.linalg.norm(pose2d - projected, axis=-1).mean(-1)))
        if error_px > _MAX_REPROJECTION_PX:
            logging.warning("human36m: %s: D2 lies %.1f px (median) from the projected D3; the "
                            "two files may not belong together", seq.key, error_px)
        return pose3d, pose2d


def check_frame_size(seq: files.SequenceFiles, size: tuple[int, int]) -> bool:
    """Whether a video's (width, height) differs from its camera's nominal size.

    Returns:
      False for the nominal size, True for one within `FRAME_SIZE_TOLERANCE_PX` of it
      in both width and height (still that camera).
    Raises:
      BadFileError: a size further off, which cannot be that camera.
    """
    cam = camera.H36M_CAMERAS[seq.camera]
    (w, h), tol = size, FRAME_SIZE_TOLERANCE_PX
    if abs(w - cam.width) > tol or abs(h - cam.height) > tol:
        raise files.BadFileError(files.BadFile(
            str(seq.video), f"frames are {w}x{h}; camera {seq.camera} is calibrated for "
                            f"{cam.width}x{cam.height}, and its videos are within {tol} px of "
                            f"that in width and height"))
    return (w, h) != (cam.width, cam.height)


def _frame_size_problems(seq: files.SequenceFiles) -> list[files.BadFile]:
    """[] when the video's header size can be its camera's, else the BadFile (no warning:
    the builder warns about a tolerated mismatch once, when it reads the file)."""
    try:
        capture, _, size = files.open_video(seq.video)
        capture.release()
        check_frame_size(seq, size)
    except files.BadFileError as e:
        return list(e.bad)
    return []


def _common_length(seq: files.SequenceFiles, n_video: int, n_pose3d: int, n_pose2d: int) -> int:
    """The frames all three files have; warns once when they differ, errors on a large gap."""
    counts = {seq.video: n_video, seq.pose3d: n_pose3d, seq.pose2d: n_pose2d}
    n, longest = min(counts.values()), max(counts.values())
    if longest - n > max(_MAX_FRAME_GAP, _MAX_FRAME_GAP_FRACTION * longest):
        shortest = min(counts, key=counts.get)
        raise files.BadFileError(files.BadFile(
            str(shortest), f"has {n} frames where {max(counts, key=counts.get)} has {longest}; "
                           f"truncated or from another sequence"))
    if n != longest:
        logging.warning("human36m: %s: video has %d frames, D3 %d, D2 %d; using the first %d",
                        seq.key, n_video, n_pose3d, n_pose2d, n)
    return n


def _log_skipped(split: str, skipped_by_config: list[str], bad: list[files.BadFile]) -> None:
    if skipped_by_config:
        logging.info("human36m %s: skipped by skip_sequences: %s", split, ", ".join(skipped_by_config))
    if bad:
        logging.warning("human36m %s: skipped %d bad file(s) (skip_bad_files):\n  %s", split,
                        len(bad), "\n  ".join(str(b) for b in bad))
