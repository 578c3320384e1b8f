"""The `c2f_synthetic` TFDS builder: rendered whole frames of procedural or motion-capture poses.

Build, offline (importing this module registers the builder):

    import tensorflow_datasets as tfds
    import c2f_vol.data.synthetic.builder
    tfds.builder("c2f_synthetic/tiny", data_dir=DIR).download_and_prepare()
    # any size or seed: a config instance under a name of its own
    cfg = C2fSyntheticConfig(name="small", train_size=600, test_size=100, image_size=(128, 128))
    tfds.builder("c2f_synthetic", config=cfg, data_dir=DIR).download_and_prepare()
    # mocap poses from a folder of BVH files:
    tfds.builder("c2f_synthetic/mocap", data_dir=DIR).download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir="../shared/data/mocap"))

Every example follows `c2f_vol.data.features` (image = the whole frame; the
pipeline crops the person later). Per example:
  * a pose in the world frame (+Z up, mm, floor at Z = 0): procedural
    (`poses.sample_pose`, action = its family, subject 'procedural', frame = the
    example's index) or a frame of a BVH file (subject and action = the file's
    stem, frame = the BVH frame);
  * a camera looking at the person from a random azimuth, distance, height and
    small roll, with Human3.6M-like intrinsics scaled to the frame
    (camera = the view relative to the person's facing: front/left/back/right);
  * joints_3d in that camera's frame (mm, `c2f_vol.camera` convention) and
    joints_2d = camera.project(joints_3d, intrinsics), exactly (no distortion);
  * the image from `render.render_frame`.
Determinism: example i of a split draws everything from
np.random.default_rng([seed, split_id, i]), so a seed gives byte-identical
examples in any order, and train (split_id 0) and test (1) streams are disjoint.
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from c2f_vol import camera, skeleton
from c2f_vol.data import features
from c2f_vol.data.synthetic import bvh, poses, render

SOURCES = ("procedural", "mocap")
_SPLIT_IDS = {"train": 0, "test": 1}

# Human3.6M's focal length for its 1000-pixel-wide frames; scaled to the frame width.
_H36M_FOCAL_PER_WIDTH = 1.147
# Camera placement (mm), around Human3.6M's studio geometry.
_DISTANCE_MM = (3000.0, 6000.0)
_CAMERA_HEIGHT_MM = (700.0, 2300.0)
_ROLL_SIGMA_DEG, _ROLL_MAX_DEG = 3.0, 8.0
# Every joint must project this far (fraction of the frame) inside the border;
# limbs' thickness may still reach past it, so the person is "mostly" inside.
_BORDER_FRACTION = 0.03
_MAX_CAMERA_TRIES = 50
# Mocap: the last part of every file is the test split; frames within the gap
# before it are used by neither, so train and test never share near-duplicates
# (0.5 s at CMU's 120 fps).
_MOCAP_TEST_FRACTION = 0.2
_MOCAP_GAP_FRAMES = 60


@dataclasses.dataclass(eq=False)
class C2fSyntheticConfig(tfds.core.BuilderConfig):
    """What to generate.

    Attributes:
      source: 'procedural' (poses.sample_pose) or 'mocap' (every *.bvh in manual_dir).
      train_size, test_size: examples per split.
      image_size: (H, W) of the stored whole frames, pixels.
      seed: the one seed of every random draw.
    A custom config needs a name of its own: TFDS stores each name in its own folder.
    """

    source: str = "procedural"
    train_size: int = 8000
    test_size: int = 1000
    image_size: tuple[int, int] = (256, 256)
    seed: int = 0

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}; got {self.source!r}")
        if self.train_size < 1 or self.test_size < 1:
            raise ValueError(f"train_size and test_size must be >= 1 (TFDS cannot write an empty "
                             f"split); got {self.train_size}, {self.test_size}")
        self.image_size = tuple(int(v) for v in self.image_size)
        if len(self.image_size) != 2 or min(self.image_size) < 32:
            raise ValueError(f"image_size must be (H, W) with H, W >= 32; got {self.image_size}")
        if self.description is None:
            self.description = (f"{self.source} poses, {self.train_size} train / {self.test_size} "
                                f"test frames of {self.image_size[0]}x{self.image_size[1]}, seed {self.seed}")


# ---------------------------------------------------------------------------
# Cameras.


def facing_direction(joints_world_mm: np.ndarray) -> np.ndarray:
    """(3,) unit horizontal direction the body faces, from its hips and shoulders.

    The person's left is up x forward (right-handed, +Z up), so forward = left x up.
    """
    left = (joints_world_mm[4] - joints_world_mm[1]) + (joints_world_mm[11] - joints_world_mm[14])
    forward = np.cross(left, [0.0, 0.0, 1.0])
    forward[2] = 0.0
    return forward / max(np.linalg.norm(forward), 1e-9)


def look_at(centre_mm: np.ndarray, target_mm: np.ndarray, roll_deg: float = 0.0) -> np.ndarray:
    """(3, 3) world-to-camera rotation R of a camera at `centre_mm` looking at `target_mm`.

    Rows are the camera's +X (right), +Y (down) and +Z (forward) in world
    coordinates (+Z up), then rolled about the optical axis.
    """
    forward = np.asarray(target_mm, np.float64) - centre_mm
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    c, s = np.cos(np.deg2rad(roll_deg)), np.sin(np.deg2rad(roll_deg))
    roll = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return roll @ np.stack([right, down, forward])


def view_label(joints_world_mm: np.ndarray, centre_mm: np.ndarray) -> str:
    """Where the camera stands relative to the person: 'front', 'left', 'back' or 'right'."""
    forward = facing_direction(joints_world_mm)
    to_cam = np.asarray(centre_mm, np.float64) - joints_world_mm[skeleton.ROOT]
    to_cam[2] = 0.0
    left = np.cross([0.0, 0.0, 1.0], forward)
    angle = np.degrees(np.arctan2(np.dot(to_cam, left), np.dot(to_cam, forward)))
    return ("front", "left", "back", "right")[int(((angle + 45.0) % 360.0) // 90.0)]


def sample_camera(rng: np.random.Generator, joints_world_mm: np.ndarray, image_size: tuple[int, int]):
    """A random camera that sees every joint inside the frame.

    Args:
      joints_world_mm: (J, 3) world frame, +Z up.
      image_size: (H, W).
    Returns:
      (rotation (3, 3), centre_mm (3,), intrinsics (4,) = (fx, fy, cx, cy)), float64.
    Raises:
      RuntimeError: no camera framed the pose within _MAX_CAMERA_TRIES draws.
    """
    height, width = image_size
    focal_px = _H36M_FOCAL_PER_WIDTH * width * rng.uniform(0.9, 1.1)
    intrinsics = np.array([focal_px, focal_px * rng.uniform(0.995, 1.005),
                           (width - 1) / 2 + rng.uniform(-0.02, 0.02) * width,
                           (height - 1) / 2 + rng.uniform(-0.02, 0.02) * height])
    pelvis = joints_world_mm[skeleton.ROOT]
    lo = np.array([_BORDER_FRACTION * width, _BORDER_FRACTION * height])
    hi = np.array([width - 1, height - 1]) - lo
    for _ in range(_MAX_CAMERA_TRIES):
        azimuth = rng.uniform(0, 2 * np.pi)
        distance = rng.uniform(*_DISTANCE_MM)
        centre = np.array([pelvis[0] + distance * np.cos(azimuth), pelvis[1] + distance * np.sin(azimuth),
                           rng.uniform(*_CAMERA_HEIGHT_MM)])
        # Aim near the pelvis so the person is not always dead centre.
        target = pelvis + np.array([rng.normal(0, 150), rng.normal(0, 150), rng.uniform(-250, 250)])
        roll = float(np.clip(rng.normal(0, _ROLL_SIGMA_DEG), -_ROLL_MAX_DEG, _ROLL_MAX_DEG))
        rotation = look_at(centre, target, roll)
        cam = camera.world_to_camera(joints_world_mm, rotation, centre)
        if np.all(cam[:, 2] > 500.0):
            uv = camera.project(cam, intrinsics)
            if np.all((uv >= lo) & (uv <= hi)):
                return rotation, centre, intrinsics
    raise RuntimeError(f"no camera in {_MAX_CAMERA_TRIES} draws framed the pose (extent "
                       f"{np.ptp(joints_world_mm, axis=0).round()} mm) in a {height}x{width} frame")


# ---------------------------------------------------------------------------
# Pose sources.


@dataclasses.dataclass(frozen=True)
class MocapClip:
    """One BVH file converted to the 17 joints.

    Attributes:
      name: the file's stem.
      joints_world_mm: (F, J, 3) world frame, +Z up, mm.
    """

    name: str
    joints_world_mm: np.ndarray

    def split_frames(self, split: str) -> np.ndarray:
        """Frame indices of this clip that belong to `split` (temporal hold-out)."""
        n = len(self.joints_world_mm)
        boundary = int(round(n * (1.0 - _MOCAP_TEST_FRACTION)))
        if split == "test":
            return np.arange(boundary, n)
        return np.arange(0, max(0, boundary - _MOCAP_GAP_FRAMES))


def load_mocap_clips(folder) -> list[MocapClip]:
    """Every *.bvh in `folder` (sorted by name), converted to the 17 joints.

    Raises:
      FileNotFoundError: `folder` holds no .bvh file.
      bvh.BvhError, KeyError: a malformed file or one missing required joints (named).
    """
    folder = pathlib.Path(folder)
    paths = sorted(folder.glob("*.bvh"))
    if not paths:
        found = sorted(p.name for p in folder.iterdir())[:20] if folder.is_dir() else "no such folder"
        raise FileNotFoundError(f"{folder}: expected *.bvh motion files; found {found}.\n"
                                f"{C2fSynthetic.MANUAL_DOWNLOAD_INSTRUCTIONS}")
    clips = []
    for path in paths:
        motion = bvh.load_bvh(path)
        clips.append(MocapClip(path.stem, bvh.y_up_to_z_up(bvh.to_h36m17(motion))))
    return clips


def make_example(config: C2fSyntheticConfig, split: str, index: int, clips=None) -> dict:
    """The features of example `index` of `split` (see the module docstring)."""
    rng = np.random.default_rng([config.seed, _SPLIT_IDS[split], index])
    if config.source == "procedural":
        sample = poses.sample_pose(rng)
        world, subject, action, frame = sample.joints_mm, "procedural", sample.family, index
    else:
        counts = np.array([len(c.split_frames(split)) for c in clips])
        if counts.sum() == 0:
            raise ValueError(f"the BVH files {[c.name for c in clips]} have no frames for the {split} split")
        pick = int(rng.integers(counts.sum()))
        k = int(np.searchsorted(np.cumsum(counts), pick, side="right"))
        frame = int(clips[k].split_frames(split)[pick - (np.cumsum(counts)[k] - counts[k])])
        world, subject, action = clips[k].joints_world_mm[frame], clips[k].name, clips[k].name
    rotation, centre, intrinsics = sample_camera(rng, world, config.image_size)
    joints_3d = camera.world_to_camera(world, rotation, centre).astype(np.float32)
    intrinsics = intrinsics.astype(np.float32)
    image = render.render_frame(rng, joints_3d, intrinsics, config.image_size, rotation, centre)
    return {
        "image": image,
        "joints_2d": np.asarray(camera.project(joints_3d.astype(np.float64), intrinsics.astype(np.float64)),
                                np.float32),
        "joints_3d": joints_3d,
        "intrinsics": intrinsics,
        "distortion": np.zeros(5, np.float32),  # the renderer's camera is a pinhole
        "joints_weight": np.ones(skeleton.NUM_JOINTS, np.float32),
        "joints_visible": np.ones(skeleton.NUM_JOINTS, bool),  # self-occlusion is not tracked
        "has_3d": True,
        "subject": subject,
        "action": action,
        "sequence": action,  # one take per pose family or BVH clip
        "camera": view_label(world, centre),
        "frame": np.int32(frame),
    }


# ---------------------------------------------------------------------------
# The builder.


class C2fSynthetic(features.OwnCodePath, tfds.core.GeneratorBasedBuilder):
    """Synthetic people: rendered whole frames with 17 2D/3D joints and intrinsics."""

    name = "c2f_synthetic"
    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {"1.0.0": "Procedural and BVH poses, capsule renderer, Human3.6M-like cameras.",
                     "1.1.0": "The example contract's distortion (zeros), joints_weight, joints_visible, has_3d "
                              "and sequence fields."}
    # Default sizes. `make demo` builds `procedural` on 2 shared cores before a
    # ~10 minute CPU training run: ~115 frames/s at 256 px (measured) makes its
    # 9000 frames ~80 s. 8000 train frames are 6 epochs of the demo's 3000 x 16
    # samples, so the model sees many poses more often than it memorises them;
    # 1000 test frames give ~140 per pose family for the per-action table.
    # `mocap` draws from the ~4000 distinct train frames of the shared BVH files
    # (cameras differ per draw), so more than 4000 would mostly repeat poses.
    # 256 px frames show a 100-170 px tall person, ample for 64-128 px crops.
    BUILDER_CONFIGS = [
        C2fSyntheticConfig(name="procedural", source="procedural", train_size=8000, test_size=1000,
                           image_size=(256, 256)),
        C2fSyntheticConfig(name="mocap", source="mocap", train_size=4000, test_size=500,
                           image_size=(256, 256)),
        # For the test-suite and quick trials: builds in about a second.
        C2fSyntheticConfig(name="tiny", source="procedural", train_size=48, test_size=16,
                           image_size=(96, 96)),
    ]
    DEFAULT_CONFIG_NAME = "procedural"
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Only the 'mocap' source reads files: pass a folder of BVH motion files as
    manual_dir (tfds.download.DownloadConfig(manual_dir=...)). Every *.bvh in it is
    used. The joint names of both CMU skeletons are understood (LeftHip/LeftKnee/
    Chest... and LeftUpLeg/LeftLeg/Spine1...), lengths in CMU units (56.44 mm). The
    CMU Graphics Lab Motion Capture Database (mocap.cs.cmu.edu) has them; the project's
    ../shared/data/mocap holds three. Nothing is ever downloaded.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=("Synthetic people for coarse-to-fine volumetric pose: whole frames of "
                         "procedurally posed or motion-captured 17-joint bodies drawn as shaded "
                         "capsules (left limbs cool hues, right limbs warm) over random scenes, "
                         "with joints in pixels and in the camera frame (mm) and the intrinsics."),
            features=features.example_features(),
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager):
        config: C2fSyntheticConfig = self.builder_config
        clips = None
        if config.source == "mocap":
            clips = load_mocap_clips(dl_manager.manual_dir)
            self.info.metadata["bvh_files"] = [c.name for c in clips]
        return {"train": self._generate_examples("train", config.train_size, clips),
                "test": self._generate_examples("test", config.test_size, clips)}

    def _generate_examples(self, split: str, size: int, clips):
        for index in range(size):
            yield f"{split}/{index:06d}", make_example(self.builder_config, split, index, clips)
