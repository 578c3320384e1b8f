"""The `human36m` TFDS builder: person crops, joints and intrinsics from the official download.

Build, offline (importing this module registers the builder; the download stays
where it is):

    import tensorflow_datasets as tfds
    import c2f_vol.data.human36m
    builder = tfds.builder("human36m", data_dir=DATA_DIR)   # or config=Human36mConfig(...)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir="/path/to/h36m"))

Every example follows `c2f_vol.data.features`:
  image       the person region of a video frame: the square around the 17 2D joints' box,
              box_margin x its larger extent (2.5 by default: every crop the default
              training augmentation cuts lies inside, `data_config.crop_reach`), resized
              to crop_size x crop_size; zero where the box leaves the frame (`c2f_vol.data.crops`).
  joints_2d   D2_Positions (17 of the 32, distortion included) through the crop's affine.
  joints_3d   D3_Positions_mono, 17 joints, that camera's frame, mm.
  intrinsics  the camera's pinhole intrinsics through the same affine.
  distortion  the camera's (k1, k2, k3, p1, p2): projecting joints_3d with it and the
              intrinsics gives joints_2d; evaluation undistorts predictions with it.
  joints_weight ones, joints_visible True (the release does not mark occlusion), has_3d True.
  subject 'S9', action (one of the 15 canonical names), sequence (the take as the files
  name it: 'Eating 2'), camera '54138969', frame = index in the video.
  info.metadata records box_margin and crop_size; the pipeline refuses to train with an
  augmentation that would reach beyond the stored crops.

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
  * Left/right: decided per file from the 3D geometry (`h36m_sides.decide_sides`), and
    the 2D labels are matched to the projected 3D joints (`h36m_sides.match_2d_sides`),
    so the stored LHip is on the person's left whatever convention a release uses.
    Every swap is logged and recorded in `info.metadata['side_swaps']`.
"""

from __future__ import annotations

import collections
import dataclasses
import fnmatch
import pathlib

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from c2f_vol import camera, skeleton
from c2f_vol.data import crops, data_config, features
from c2f_vol.data import h36m_files as files
from c2f_vol.data import h36m_sides

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


# ---------------------------------------------------------------------------
# The builder.


@dataclasses.dataclass(eq=False)
class Human36mConfig(tfds.core.BuilderConfig):
    """What to store.

    Attributes:
      train_stride, test_stride: keep every k-th video frame (50 fps) of train / test subjects.
      crop_size: side of the stored square person crop, pixels.
      box_margin: the stored crop's side over the larger extent of the 17 joints' box (the
        data config's meaning). Training needs at least its `data_config.crop_reach`
        (2.475 for the default recipe); evaluation needs its data.box_margin (1.4).
      skip_bad_files: skip sequences with missing or unreadable files (summarised at
        the end) instead of stopping with an error.
      skip_sequences: fnmatch patterns of 'S11/Directions.54138969' (subject/sequence.camera)
        that are never read.
    A custom config needs a name of its own: TFDS stores each name in its own folder.
    """

    train_stride: int = 5
    test_stride: int = 5
    crop_size: int = data_config.STORED_CROP_SIZE
    box_margin: float = data_config.STORED_BOX_MARGIN
    skip_bad_files: bool = False
    skip_sequences: tuple[str, ...] = ("S11/Directions.54138969",)

    def __post_init__(self):
        if self.train_stride < 1 or self.test_stride < 1:
            raise ValueError(f"strides must be >= 1; got train {self.train_stride}, "
                             f"test {self.test_stride}")
        if self.crop_size < 16:
            raise ValueError(f"crop_size must be >= 16 pixels; got {self.crop_size}")
        if self.box_margin < 1:
            raise ValueError(f"box_margin (the crop side over the joints' extent) must be >= 1; got "
                             f"{self.box_margin}")
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
    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES = {"1.0.0": "Person crops from the official videos, D2/D3_mono poses, sides "
                              "decided from the geometry.",
                     "2.0.0": "Crops of 2.5 x the 17 joints' extent at 448 px (room for the training "
                              "augmentation), box_margin with the data config's meaning; the contract's "
                              "distortion, sequence (take), joints_weight, joints_visible and has_3d."}
    # Train stride 5: the videos run at 50 fps, so neighbouring frames are
    # near-duplicates; every 5th frame (10 fps) keeps the pose variety and gives
    # ~310k train crops (~18 GB of 448 px JPEGs), and matches the test protocol's
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
        self.info.metadata["box_margin"] = float(config.box_margin)
        self.info.metadata["crop_size"] = int(config.crop_size)

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
            # Boxed around the 17 joints, as the pipeline boxes them: both crops share a centre.
            affines, joints_2d, intrinsics = crops.crop_geometry(skeleton.from_h36m32(pose2d[kept]), cam.intrinsics,
                                                                 config.crop_size, config.box_margin)
            joints_3d = skeleton.from_h36m32(pose3d[kept])
            located = {"distortion": cam.distortion.astype(np.float32),
                       "joints_weight": np.ones(skeleton.NUM_JOINTS, np.float32),
                       "joints_visible": np.ones(skeleton.NUM_JOINTS, bool), "has_3d": True}
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
                crop = crops.crop_frame(frame_bgr, affines[i], config.crop_size)
                yield index, {
                    "image": np.ascontiguousarray(crop[..., ::-1]),
                    "joints_2d": joints_2d[i].astype(np.float32),
                    "joints_3d": joints_3d[i].astype(np.float32),
                    "intrinsics": intrinsics[i].astype(np.float32),
                    **located,
                    "subject": seq.subject,
                    "action": seq.action,
                    "sequence": seq.sequence,
                    "camera": seq.camera,
                    "frame": np.int32(index),
                }
        finally:
            capture.release()

    def _fix_sides(self, seq, pose3d, pose2d, cam, sides):
        """Swap the 3D and 2D chains to anatomical sides; logs and records any swap."""
        decision = h36m_sides.decide_sides(pose3d)
        pose3d = h36m_sides.swap_sides32(pose3d, decision.legs_swapped, decision.arms_swapped)
        projected = camera.project(pose3d, cam.intrinsics.astype(np.float64),
                                   cam.distortion.astype(np.float64))
        legs2d, arms2d = h36m_sides.match_2d_sides(pose2d, projected)
        pose2d = h36m_sides.swap_sides32(pose2d, legs2d, arms2d)
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
