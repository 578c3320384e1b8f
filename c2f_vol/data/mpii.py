"""The `mpii` TFDS builder: 2D-only person crops from the official MPII Human Pose release.

Build, offline (importing this module registers the builder; the release stays where it is):

    import tensorflow_datasets as tfds
    import c2f_vol.data.mpii
    builder = tfds.builder("mpii", data_dir=DATA_DIR)   # or config=MpiiConfig(name=..., ...)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir="/path/to/mpii"))

manual_dir holds `images/` (the JPEGs of mpii_human_pose_v1.tar.gz) and the annotation
file `mpii_human_pose_v1_u12_1.mat`, directly or under `mpii_human_pose_v1_u12_2/` (as
the official annotation archive extracts). The .mat is read with scipy.io.loadmat.

Every example follows `c2f_vol.data.features`, one per annotated person:
  image       a square crop around the person (several people share an image), resized
              to crop_size x crop_size (default 448) with `crops.crop_frame`; zero where
              the box leaves the image. The side is box_margin (default 2.5) times the
              larger extent of the annotated joints' bounding box, centred on that box, so
              the training augmentation (scale, rotation) finds real pixels around the
              person. The extent is at least MPII's person height, `scale` * 200 px
              (`PERSON_HEIGHT_PX_PER_SCALE`): a person with two annotated joints (a head and
              a shoulder) has a tiny joint box, and a crop of that box would hold a few
              pixels of the person, not the person.
  joints_2d   the annotated joints in crop pixels (pixel centres at integers); zeros where
              a joint is not annotated.
  joints_weight 1 for an annotated joint, 0 otherwise (Spine always: see the mapping).
  joints_visible MPII's `is_visible` (1 seen, 0 occluded); True where it is empty or not a
              0/1 value (the file does not say); False for a joint with weight 0 (it is not
              located, so not seen).
  joints_3d   zeros; has_3d False; distortion zeros.
  intrinsics  a nominal pinhole of the crop, (crop_size, crop_size, (crop_size - 1) / 2,
              (crop_size - 1) / 2). MPII has no calibration: it is meaningless, and has_3d
              False says so; it only keeps the contract's shape.
  subject 'mpii'; action RELEASE.act(i).act_name ('' where empty); sequence the image name
  ('015601864.jpg'); camera ''; frame = 100 * (annolist index, 0-based) + (annorect index,
  0-based), unique per person and traceable to RELEASE.annolist(i+1).annorect(r+1) (MPII has
  at most ~20 people per image; more than 99 is an error). Keys: '<annolist index>/<rect>'.

Joint mapping (MPII id -> `c2f_vol.skeleton` joint):
  0 r-ankle -> RAnkle, 1 r-knee -> RKnee, 2 r-hip -> RHip, 3 l-hip -> LHip, 4 l-knee -> LKnee,
  5 l-ankle -> LAnkle, 6 pelvis -> Pelvis, 7 thorax -> Thorax, 8 upper neck -> Neck/Nose,
  9 head top -> Head, 10 r-wrist -> RWrist, 11 r-elbow -> RElbow, 12 r-shoulder -> RShoulder,
  13 l-shoulder -> LShoulder, 14 l-elbow -> LElbow, 15 l-wrist -> LWrist. Spine: none (weight 0;
  no position is invented, e.g. between pelvis and thorax).
  * Head and neck: Human3.6M's 'Head' (joint 15 of its 32) is the end of the chain, at the
    top of the skull, which is MPII's head top. Its 'Neck/Nose' (joint 14) lies between the
    thorax and the head top, where the head sits on the neck, in front of the spine; MPII's
    upper neck (where the neck meets the head, below the chin) is the MPII joint nearest to
    it. They are not the same point: Neck/Nose lies a few centimetres further up and
    forward, so in 2D the two differ by a fraction of the head's size. The mapping keeps
    that (small, systematic) difference rather than dropping the neck's supervision.
  * MPII's thorax is the top of the chest between the shoulders, as Human3.6M's Thorax; its
    pelvis the midpoint of the hips, as Human3.6M's Pelvis (the root).
Sides: MPII's annotations are person-centric: 'left' and 'right' are the person's own
(a person facing the camera has the right wrist on the image's left), which is the
skeleton module's convention ("the person's own sides"). So no swap: MPII's r-hip is RHip.
Coordinates: MPII's x, y are MATLAB pixel coordinates, 1-based (the centre of the top-left
pixel is (1, 1); MPII's authors confirmed this to the maintainers of
microsoft/human-pose-estimation.pytorch, issue 110, and common loaders subtract 1).
c2f_vol's pixel centres are at integers from 0, so u = x - 1, v = y - 1.

Splits
  * train: the annotated persons of the images with RELEASE.img_train == 1, except:
  * validation: every `validation_every`-th of those images (default 20: the 20th, 40th, ...
    img_train == 1 image in annolist order; 0 writes no validation split), so a user can
    measure 2D accuracy on people the model did not train on. A deterministic share of
    the images, not MPII's benchmark protocol; MPII images come from videos and
    neighbouring images may show the same scene, so it is an optimistic estimate.
  * MPII's test images (img_train == 0) carry no joint annotations and are not written
    (nor read).
Policies
  * A person without annopoints (or none usable) is skipped; the count per split is
    logged and stored in `info.metadata['persons_without_joints']`. Points with an id
    outside 0..15, without finite x, y, or repeating an id are left out and counted in
    `info.metadata['point_problems']`.
  * Every image that an example needs must exist: all missing ones are collected and named
    in one error before anything is written, unless `skip_missing_images` is set; an
    image OpenCV cannot decode stops the build with its name (also skipped under
    `skip_missing_images`). Skipped images are logged and stored in
    `info.metadata['skipped_images']` (per split).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import pathlib

import cv2
import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from c2f_vol import camera, skeleton
from c2f_vol.data import crops, data_config, features
from c2f_vol.errors import BadFile, BadFileError

ANNOTATION_FILE = "mpii_human_pose_v1_u12_1.mat"
# Where the annotation file may be, relative to manual_dir: as extracted from the official
# archive mpii_human_pose_v1_u12_2.zip, or moved up beside images/.
ANNOTATION_PLACES = (ANNOTATION_FILE, f"mpii_human_pose_v1_u12_2/{ANNOTATION_FILE}")
IMAGES_DIR = "images"

# MPII's 16 joint ids, in id order.
MPII_JOINTS = ("r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "pelvis", "thorax",
               "upper_neck", "head_top", "r_wrist", "r_elbow", "r_shoulder", "l_shoulder",
               "l_elbow", "l_wrist")
# MPII id -> skeleton joint index (module docstring: why these, and why no Spine).
MPII_TO_SKELETON = {
    mpii_id: skeleton.JOINT_NAMES.index(name) for mpii_id, name in enumerate((
        "RAnkle", "RKnee", "RHip", "LHip", "LKnee", "LAnkle", "Pelvis", "Thorax",
        "Neck/Nose", "Head", "RWrist", "RElbow", "RShoulder", "LShoulder", "LElbow", "LWrist"))
}
# MPII's `scale` is the person's height in units of 200 px.
PERSON_HEIGHT_PX_PER_SCALE = 200.0
# frame = PERSONS_PER_IMAGE * annolist index + annorect index.
PERSONS_PER_IMAGE = 100
# The crop box never shrinks below this side (px), so no degenerate affine.
_MIN_BOX_PX = 32.0


# ---------------------------------------------------------------------------
# Reading the annotation file.


@dataclasses.dataclass(frozen=True, eq=False)
class Person:
    """One annotated person (an annorect with at least one usable point).

    Attributes:
      rect: 0-based index in the image's annorect.
      xy: (16, 2) MPII x, y as stored (1-based MATLAB pixels), by MPII id; 0 where not annotated.
      annotated: (16,) bool.
      visible: (16,) bool, is_visible; True where the file does not say.
      scale: MPII's person scale (height / 200 px), or None where absent.
    """

    rect: int
    xy: np.ndarray
    annotated: np.ndarray
    visible: np.ndarray
    scale: float | None


@dataclasses.dataclass(frozen=True)
class ImageRecord:
    """One entry of RELEASE.annolist.

    Attributes:
      index: 0-based annolist index.
      name: the image file name, under images/.
      train: RELEASE.img_train == 1 (test images carry no joints).
      action: RELEASE.act(i).act_name, '' where empty.
      persons: the annotated persons (train images only).
      without_joints: annorects of a train image without usable annopoints (skipped).
    """

    index: int
    name: str
    train: bool
    action: str
    persons: tuple[Person, ...]
    without_joints: int


def find_annotation_file(root: pathlib.Path) -> pathlib.Path:
    """The annotation file under manual_dir `root`; FileNotFoundError naming both places if absent."""
    for place in ANNOTATION_PLACES:
        path = pathlib.Path(root) / place
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"mpii: the annotation file {ANNOTATION_FILE} is in neither "
        + " nor ".join(str(pathlib.Path(root) / p) for p in ANNOTATION_PLACES)
        + f"; found in {root}: {sorted(p.name for p in pathlib.Path(root).iterdir())[:20]}. "
          "Extract mpii_human_pose_v1_u12_2.zip (the official annotations) into manual_dir.")


def read_annotations(path: pathlib.Path) -> tuple[list[ImageRecord], collections.Counter]:
    """Parse the annotation file: (one ImageRecord per annolist entry, point problems by kind)."""
    # scipy (a runtime dependency of this builder only) is imported here, not at the top: the
    # registry imports every builder, and nothing else that imports it needs scipy.
    from scipy import io as scipy_io

    try:
        mat = scipy_io.loadmat(str(path), struct_as_record=False, squeeze_me=True)
    except Exception as e:  # scipy raises ValueError, TypeError, OSError, ... on a damaged file
        raise BadFileError(BadFile(str(path), f"scipy.io.loadmat cannot read it ({type(e).__name__}: {e}); "
                                               "expected MPII's MATLAB annotation file")) from e
    if "RELEASE" not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise BadFileError(BadFile(str(path), f"has no variable RELEASE (found {found}); expected "
                                               "MPII's annotation file"))
    return parse_release(mat["RELEASE"], str(path))


def parse_release(release, source: str = ANNOTATION_FILE) -> tuple[list[ImageRecord], collections.Counter]:
    """The annolist of a loaded RELEASE struct, whatever loadmat's options made of it.

    Accepts struct_as_record True or False, squeeze_me True or False, and simplify_cells:
    a struct array, a single struct squeezed to a scalar and [] are all read as lists of
    structs, and numbers, strings ('0', '1') and [] as scalars or None.

    Returns:
      (records, point problems counted by kind).
    """
    root = _struct(release)
    if root is None:
        raise BadFileError(BadFile(source, "RELEASE is not a struct; expected MPII's annotation file"))
    annolist = _structs(_field(root, "annolist"))
    if not annolist:
        raise BadFileError(BadFile(source, "RELEASE.annolist is missing or empty"))
    img_train = _numbers(_field(root, "img_train"))
    if len(img_train) != len(annolist):
        raise BadFileError(BadFile(source, f"RELEASE.img_train has {len(img_train)} entries where "
                                            f"RELEASE.annolist has {len(annolist)}"))
    acts = _structs(_field(root, "act"))
    if acts and len(acts) != len(annolist):
        logging.warning("mpii: %s: RELEASE.act has %d entries, RELEASE.annolist %d; actions left empty",
                        source, len(acts), len(annolist))
        acts = []
    problems = collections.Counter()
    records = []
    for i, anno in enumerate(annolist):
        train = img_train[i] == 1
        image = _struct(_field(anno, "image"))
        name = _text(_field(image, "name")) if image is not None else ""
        persons, without = [], 0
        if train:
            for r, rect in enumerate(_structs(_field(anno, "annorect"))):
                person = _person(r, rect, problems)
                if person is None:
                    without += 1
                else:
                    persons.append(person)
        if persons and not name:
            raise BadFileError(BadFile(source, f"RELEASE.annolist({i + 1}).image.name is empty, and the "
                                                f"image has {len(persons)} annotated person(s)"))
        action = _text(_field(acts[i], "act_name")).strip() if acts else ""
        records.append(ImageRecord(i, name, bool(train), action, tuple(persons), without))
    return records, problems


def _person(rect_index: int, rect, problems: collections.Counter) -> Person | None:
    annopoints = _struct(_field(rect, "annopoints"))
    points = _structs(_field(annopoints, "point")) if annopoints is not None else []
    n = len(MPII_JOINTS)
    xy, annotated, visible = np.zeros((n, 2)), np.zeros(n, bool), np.ones(n, bool)
    for point in points:
        joint = _number(_field(point, "id"))
        x, y = _number(_field(point, "x")), _number(_field(point, "y"))
        if joint is None or not float(joint).is_integer() or not 0 <= joint < n:
            problems["joint id not in 0..15"] += 1
            continue
        joint = int(joint)
        if x is None or y is None or not (math.isfinite(x) and math.isfinite(y)):
            problems["point without finite x, y"] += 1
            continue
        if annotated[joint]:
            problems["repeated joint id (first kept)"] += 1
            continue
        xy[joint], annotated[joint] = (x, y), True
        seen = _number(_field(point, "is_visible"))
        visible[joint] = True if seen is None or seen not in (0.0, 1.0) else bool(seen)
    if not annotated.any():
        return None
    scale = _number(_field(rect, "scale"))
    if scale is not None and not (math.isfinite(scale) and scale > 0):
        scale = None
    return Person(rect_index, xy, annotated, visible, scale)


# loadmat's representations: mat_struct (struct_as_record=False), numpy records
# (struct_as_record=True), dicts (simplify_cells); arrays of them, or one squeezed.


@functools.cache
def _mat_struct_type() -> type:
    from scipy.io.matlab import mat_struct  # scipy: see read_annotations

    return mat_struct


def _is_struct(value) -> bool:
    return (isinstance(value, (_mat_struct_type(), dict))
            or (isinstance(value, np.void) and value.dtype.names is not None))


def _structs(value) -> list:
    """A struct array, one struct (squeezed) or [] as a list of structs."""
    if value is None:
        return []
    if _is_struct(value):
        return [value]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _structs(v)]
    if isinstance(value, np.ndarray):
        if value.dtype.names is not None:
            return list(value.reshape(-1))
        if value.dtype == object:
            return [s for v in value.reshape(-1) for s in _structs(v)]
    return []  # a number, a string or an empty numeric array: no struct


def _struct(value):
    found = _structs(value)
    return found[0] if found else None


def _field(struct, name: str):
    """A struct's field, or None where the struct lacks it."""
    if struct is None:
        return None
    if isinstance(struct, dict):
        return struct.get(name)
    if isinstance(struct, np.void):
        return struct[name] if name in struct.dtype.names else None
    return getattr(struct, name, None)


def _scalar(value):
    """One MATLAB value as a Python scalar or str; None for [] (several values: returned as they are)."""
    while True:
        if isinstance(value, np.ndarray):
            if value.size == 0:
                return None
            if value.dtype.kind == "U":  # char arrays unsqueezed: array(['abc'])
                return "".join(value.reshape(-1).tolist())
            if value.size != 1:
                return value
            value = value.reshape(-1)[0]
        elif isinstance(value, (list, tuple)):
            if len(value) != 1:
                return None if not value else value
            value = value[0]
        elif isinstance(value, np.generic):
            return value.item()
        elif isinstance(value, bytes):
            return value.decode("utf-8", "replace")
        else:
            return value


def _number(value) -> float | None:
    """A number stored as a number, a string ('1', ' 0') or [] (None)."""
    value = _scalar(value)
    if isinstance(value, str):
        value = value.strip()
        try:
            return float(value) if value else None
        except ValueError:
            return None
    if isinstance(value, (bool, int, float)):
        return float(value)
    return None


def _numbers(value) -> list[float]:
    """A numeric vector (or one squeezed number) as a list of floats."""
    if value is None:
        return []
    try:
        return [float(v) for v in np.asarray(value, dtype=np.float64).reshape(-1)]
    except (TypeError, ValueError):
        return [v if v is not None else math.nan for v in (_number(x) for x in np.asarray(value).reshape(-1))]


def _text(value) -> str:
    value = _scalar(value)
    return value if isinstance(value, str) else ""


# ---------------------------------------------------------------------------
# Geometry of one person's crop.


def person_crop(person: Person, crop_size: int, box_margin: float):
    """Where a person's crop lies and its joints in it.

    Returns:
      affine (2, 3) image pixels -> crop pixels; joints_2d (17, 2) float32 crop pixels (0
      where not annotated); joints_weight (17,) float32; joints_visible (17,) bool.
    """
    uv = person.xy - 1.0  # MATLAB's 1-based pixel coordinates -> pixel centres at integers from 0
    located = uv[person.annotated]
    lo, hi = located.min(axis=0), located.max(axis=0)
    extent = float((hi - lo).max())
    if person.scale is not None:
        # MPII's person height as a floor: with a few joints annotated (a head, a shoulder) the
        # joints' box is tiny, and a crop of it would show a few pixels of the person.
        extent = max(extent, PERSON_HEIGHT_PX_PER_SCALE * person.scale)
    side = max(box_margin * extent, _MIN_BOX_PX)
    affine = camera.crop_affine((lo + hi) / 2.0, side, crop_size)
    crop_uv = camera.apply_affine(affine, uv)
    joints_2d = np.zeros((skeleton.NUM_JOINTS, 2), np.float32)
    weight = np.zeros(skeleton.NUM_JOINTS, np.float32)
    visible = np.zeros(skeleton.NUM_JOINTS, bool)
    for mpii_id, joint in MPII_TO_SKELETON.items():
        if person.annotated[mpii_id]:
            joints_2d[joint] = crop_uv[mpii_id]
            weight[joint] = 1.0
            visible[joint] = person.visible[mpii_id]
    return affine, joints_2d, weight, visible


def assign_splits(records: list[ImageRecord], validation_every: int) -> dict[str, list[ImageRecord]]:
    """train / validation images (those with annotated persons), by position among the img_train == 1 images.

    The k-th (0-based) train image goes to validation when validation_every > 0 and
    (k + 1) % validation_every == 0.
    """
    out = {"train": [], "validation": []}
    train_images = [r for r in records if r.train]
    for k, record in enumerate(train_images):
        held_out = validation_every > 0 and (k + 1) % validation_every == 0
        out["validation" if held_out else "train"].append(record)
    return out


# ---------------------------------------------------------------------------
# The builder.


@dataclasses.dataclass(eq=False)
class MpiiConfig(tfds.core.BuilderConfig):
    """What to store.

    Attributes:
      crop_size: side of the stored square person crop, pixels.
      box_margin: the crop side is box_margin times the larger extent of the annotated
        joints' bounding box (at least MPII's person height, scale * 200 px).
      validation_every: every k-th img_train == 1 image goes to the validation split
        (0: no validation split).
      skip_missing_images: skip images that are missing or cannot be decoded (summarised
        at the end) instead of stopping with an error.
    A custom config needs a name of its own: TFDS stores each name in its own folder.
    """

    crop_size: int = data_config.STORED_CROP_SIZE
    box_margin: float = data_config.STORED_BOX_MARGIN
    validation_every: int = 20
    skip_missing_images: bool = False

    def __post_init__(self):
        if self.crop_size < 16:
            raise ValueError(f"crop_size must be >= 16 pixels; got {self.crop_size}")
        if not self.box_margin >= 1.0:
            raise ValueError(f"box_margin must be >= 1 (the crop side over the joints' extent; below 1 "
                             f"the crop cuts the joints off); got {self.box_margin}")
        if self.validation_every < 0 or self.validation_every == 1:
            raise ValueError(f"validation_every must be 0 (no validation split) or >= 2; "
                             f"got {self.validation_every}")
        if self.description is None:
            self.description = (f"{self.crop_size}px person crops (box margin {self.box_margin}), "
                                f"every {self.validation_every}th train image held out")


class Mpii(features.OwnCodePath, tfds.core.GeneratorBasedBuilder):
    """MPII Human Pose person crops with their 2D joints (no 3D)."""

    name = "mpii"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Person crops of the official release's train images, 16 MPII joints mapped "
                              "to the 17-joint skeleton (no Spine), 2D only."}
    BUILDER_CONFIGS = [MpiiConfig(name="crop448")]
    DEFAULT_CONFIG_NAME = "crop448"
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    From http://human-pose.mpi-inf.mpg.de download the images (mpii_human_pose_v1.tar.gz)
    and the annotations (mpii_human_pose_v1_u12_2.zip), and extract both into one folder so
    that
      <manual_dir>/images/015601864.jpg
      <manual_dir>/mpii_human_pose_v1_u12_2/mpii_human_pose_v1_u12_1.mat
    exist (the .mat may also be moved to <manual_dir>/mpii_human_pose_v1_u12_1.mat). Pass
    that folder as manual_dir (tfds.download.DownloadConfig(manual_dir=...)). Nothing is
    ever downloaded.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=("MPII Human Pose: square person crops of the train images with the annotated "
                         "joints in crop pixels, mapped to the 17-joint skeleton; 2D only (has_3d False)."),
            features=features.example_features(),
            homepage="http://human-pose.mpi-inf.mpg.de",
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager):
        config: MpiiConfig = self.builder_config
        try:
            root = pathlib.Path(dl_manager.manual_dir)
        except AssertionError as e:  # TFDS's way of saying manual_dir is unset, absent or empty
            raise FileNotFoundError(f"mpii reads the official release from manual_dir: {e}") from e
        images = root / IMAGES_DIR
        if not images.is_dir():
            raise FileNotFoundError(f"mpii: no folder {images} (the JPEGs of mpii_human_pose_v1.tar.gz); "
                                    f"see MANUAL_DOWNLOAD_INSTRUCTIONS:\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
        annotation_file = find_annotation_file(root)
        records, problems = read_annotations(annotation_file)
        splits = assign_splits(records, config.validation_every)
        if not any(r.persons for r in splits["train"]):
            raise BadFileError(BadFile(str(annotation_file), "no annotated person in an img_train == 1 image "
                                        f"that the train split keeps ({len(records)} annolist entries)"))
        for record in records:
            if len(record.persons) and record.persons[-1].rect >= PERSONS_PER_IMAGE:
                raise BadFileError(BadFile(str(annotation_file), f"RELEASE.annolist({record.index + 1}) has "
                                            f"more than {PERSONS_PER_IMAGE} people; frame numbers would clash"))
        if problems:
            logging.warning("mpii: %s: points left out: %s", annotation_file, dict(problems))
        missing = [BadFile(str(images / r.name), f"missing; listed as RELEASE.annolist({r.index + 1}).image.name "
                                                 f"in {annotation_file} with {len(r.persons)} annotated person(s)")
                   for split in splits.values() for r in split if r.persons and not (images / r.name).is_file()]
        if missing and not config.skip_missing_images:
            raise BadFileError(*missing, hint=f"{len(missing)} image(s) missing. Extract the images again, or "
                                "build with MpiiConfig(skip_missing_images=True) to skip them.")
        self.info.metadata["point_problems"] = dict(problems)
        # What the pipeline checks its augmentation against (pipeline.check_stored_crops).
        self.info.metadata["box_margin"] = float(config.box_margin)
        self.info.metadata["crop_size"] = int(config.crop_size)
        self.info.metadata["persons_without_joints"] = {}
        self.info.metadata["skipped_images"] = {}
        missing_paths = {b.path for b in missing}
        generators = {}
        for split, split_records in splits.items():
            if not any(r.persons for r in split_records):
                logging.info("mpii: no annotated person in the %s split; it is not written", split)
                continue
            generators[split] = self._generate_examples(split, images, split_records, missing_paths)
        return generators

    def _generate_examples(self, split, images: pathlib.Path, records, missing_paths):
        config: MpiiConfig = self.builder_config
        skipped, without_joints, persons = [], 0, 0
        nominal = np.asarray([config.crop_size, config.crop_size, (config.crop_size - 1) / 2.0,
                              (config.crop_size - 1) / 2.0], np.float32)
        for record in records:
            without_joints += record.without_joints
            if not record.persons:
                continue
            path = images / record.name
            if str(path) in missing_paths:
                skipped.append(f"{path}: missing")
                continue
            frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if frame is None:
                bad = BadFile(str(path), "OpenCV cannot decode it (truncated, damaged or not an image); "
                                         f"RELEASE.annolist({record.index + 1}) lists it")
                if not config.skip_missing_images:
                    raise BadFileError(bad, hint="Replace the file, or build with "
                                                  "MpiiConfig(skip_missing_images=True) to skip it.")
                skipped.append(str(bad))
                continue
            for person in record.persons:
                affine, joints_2d, weight, visible = person_crop(person, config.crop_size, config.box_margin)
                crop = crops.crop_frame(frame, affine, config.crop_size)
                persons += 1
                yield f"{record.index}/{person.rect}", {
                    "image": np.ascontiguousarray(crop[..., ::-1]),
                    "joints_2d": joints_2d,
                    "joints_3d": np.zeros((skeleton.NUM_JOINTS, 3), np.float32),
                    "intrinsics": nominal,
                    "distortion": np.zeros(5, np.float32),
                    "joints_weight": weight,
                    "joints_visible": visible,
                    "has_3d": False,
                    "subject": "mpii",
                    "action": record.action,
                    "sequence": record.name,
                    "camera": "",
                    "frame": np.int32(PERSONS_PER_IMAGE * record.index + person.rect),
                }
        logging.info("mpii %s: %d persons written; %d without joints skipped", split, persons, without_joints)
        if skipped:
            logging.warning("mpii %s: skipped %d image(s) (skip_missing_images):\n  %s", split, len(skipped),
                            "\n  ".join(skipped))
        self.info.metadata["persons_without_joints"][split] = without_joints
        self.info.metadata["skipped_images"][split] = skipped
