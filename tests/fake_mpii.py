"""A tiny fake MPII Human Pose release in the official layout, written at test time.

    <root>/images/000000001.jpg, ...                         320 x 240 JPEGs
    <root>/mpii_human_pose_v1_u12_2/mpii_human_pose_v1_u12_1.mat   (or at <root>/ with flat=True)

The .mat holds RELEASE as the official file does: annolist (1 x N struct array: image.name,
annorect (1 x K struct array: annopoints.point (1 x P struct array: x, y, id, is_visible),
scale, objpos.x/y)), img_train (1 x N), act (N x 1 struct array: act_name, cat_name, act_id),
single_person (N x 1 cell). Edge cases: an image with two people and a third without
annopoints, a person with one point (annorect and point squeezed to scalar structs by
loadmat), an image whose only person has no annopoints, is_visible as a number, a string
('0', '1') and empty, a test image (img_train 0, no JPEG written: it must never be read),
and a person facing away from the camera (the person's right on the image's right).

Every image is dark grey with a disc of colour `COLORS[id]` at each annotated joint, drawn
at the 0-based pixel position (x - 1, y - 1) with sub-pixel precision, so a crop can be
checked joint by joint against its joints_2d.
"""

from __future__ import annotations

import dataclasses
import pathlib

import cv2
import numpy as np
from scipy import io as scipy_io

IMAGE_SIZE = (320, 240)  # width, height
BACKGROUND_RGB = (40, 40, 40)
# One colour per MPII joint id (RGB), far apart from each other, the background and black.
COLORS = (
    (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255),
    (255, 128, 0), (128, 0, 255), (0, 128, 255), (255, 0, 128), (128, 255, 0), (0, 255, 128),
    (255, 255, 255), (255, 128, 255), (128, 255, 255), (255, 255, 128),
)
DOT_RADIUS_PX = 5.0  # at scale 1; scaled with the person

# A person facing the camera, 170 px tall at scale 1: (u, v) from the pelvis by MPII id. Their
# right side is on the image's left.
_TEMPLATE = np.array([
    (-20, 70), (-18, 35), (-15, 0), (15, 0), (18, 35), (20, 70),      # r ankle..l ankle
    (0, 0), (0, -60), (0, -75), (0, -100),                             # pelvis, thorax, upper neck, head top
    (-40, -5), (-35, -35), (-22, -60), (22, -60), (35, -35), (40, -5),  # r wrist..l wrist
], np.float64)
_HEIGHT_PX = 170.0
_EMPTY = np.zeros((0, 0))


@dataclasses.dataclass(frozen=True)
class FakePerson:
    """One annorect. ids: the annotated MPII ids (None: no annopoints at all)."""

    pelvis_uv: tuple[float, float]   # 0-based pixel position of the (template's) pelvis
    scale: float                     # size relative to the 170 px template
    ids: tuple[int, ...] | None = tuple(range(16))
    facing_away: bool = False        # mirrored: the person's right on the image's right
    # is_visible per id, as stored: a number, a string or None (empty); default 1.
    visibility: tuple[tuple[int, object], ...] = ()

    def joints_uv(self) -> np.ndarray:
        """(16, 2) 0-based pixel positions by MPII id (all 16, annotated or not)."""
        template = _TEMPLATE * np.array([-1.0 if self.facing_away else 1.0, 1.0])
        return np.asarray(self.pelvis_uv) + self.scale * template

    @property
    def mpii_scale(self) -> float:
        """MPII's scale: the person's height / 200 px."""
        return self.scale * _HEIGHT_PX / 200.0


@dataclasses.dataclass(frozen=True)
class FakeImage:
    name: str
    train: bool
    persons: tuple[FakePerson, ...]
    act_name: str | None = None
    write_jpeg: bool = True


IMAGES: tuple[FakeImage, ...] = (
    FakeImage("000000001.jpg", True, (FakePerson((150.3, 110.6), 1.0, visibility=((10, 0), (15, 1.0))),),
              act_name="running"),
    FakeImage("000000002.jpg", True, (
        FakePerson((70.4, 150.2), 0.6, visibility=tuple((i, "1") for i in range(16) if i != 5) + ((5, "0"),)),
        FakePerson((230.7, 150.1), 0.6, ids=(2, 3, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                   visibility=tuple((i, None) for i in range(16))),
        FakePerson((290.0, 60.0), 0.4, ids=None),
    )),
    FakeImage("000000003.jpg", True, (FakePerson((160.2, 160.7), 0.8, ids=(9,)),), act_name="walking"),
    FakeImage("000000004.jpg", True, (FakePerson((160.0, 120.0), 1.0, ids=None),)),
    FakeImage("000000005.jpg", False, (FakePerson((160.0, 120.0), 1.0, ids=None),), write_jpeg=False),
    FakeImage("000000006.jpg", True, (FakePerson((161.6, 115.4), 0.9, facing_away=True,
                                                 visibility=((0, 0.0), (13, "0"))),),
              act_name="dancing"),
)


def _struct_array(records: list[dict], fields: tuple[str, ...], shape=None) -> np.ndarray:
    """A MATLAB struct array (savemat writes a numpy record array with object fields as one)."""
    array = np.zeros(shape or (1, len(records)), dtype=[(f, object) for f in fields])
    for i, record in enumerate(records):
        for f in fields:
            array.flat[i][f] = record.get(f, _EMPTY)
    return array


def _visibility(value) -> object:
    return _EMPTY if value is None else value


def _annorect(person: FakePerson, train: bool) -> dict:
    rect = {"scale": person.mpii_scale,
            "objpos": {"x": person.pelvis_uv[0] + 1.0, "y": person.pelvis_uv[1] + 1.0}}
    if not train or person.ids is None:
        return rect  # annopoints: [] (the struct array's other elements have the field)
    uv = person.joints_uv()
    visibility = dict(person.visibility)
    points = [{"x": float(uv[i, 0] + 1.0), "y": float(uv[i, 1] + 1.0), "id": float(i),  # MATLAB: 1-based
               "is_visible": _visibility(visibility.get(i, 1.0))} for i in person.ids]
    rect["annopoints"] = {"point": _struct_array(points, ("x", "y", "id", "is_visible"))}
    return rect


def write_image(path: pathlib.Path, persons: tuple[FakePerson, ...]) -> None:
    w, h = IMAGE_SIZE
    image = np.full((h, w, 3), BACKGROUND_RGB[::-1], np.uint8)
    for person in persons:
        if person.ids is None:
            continue
        uv = person.joints_uv()
        radius = int(round(DOT_RADIUS_PX * max(person.scale, 0.6) * 16))
        for i in person.ids:
            u, v = uv[i]
            cv2.circle(image, (int(round(u * 16)), int(round(v * 16))), radius, COLORS[i][::-1], -1,
                       lineType=cv2.LINE_AA, shift=4)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 95]), path


def annotation_path(root: pathlib.Path, flat: bool = False) -> pathlib.Path:
    root = pathlib.Path(root)
    return root / "mpii_human_pose_v1_u12_1.mat" if flat else (
        root / "mpii_human_pose_v1_u12_2" / "mpii_human_pose_v1_u12_1.mat")


def write_fake_mpii(root: pathlib.Path, images=IMAGES, flat: bool = False) -> pathlib.Path:
    """Write the fake release under `root`; returns the annotation file's path."""
    root = pathlib.Path(root)
    annolist = []
    for image in images:
        rects = [_annorect(p, image.train) for p in image.persons]
        annolist.append({"image": {"name": image.name},
                         "annorect": _struct_array(rects, ("annopoints", "scale", "objpos")),
                         "frame_sec": 0.0, "vididx": 1.0})
        if image.write_jpeg:
            write_image(root / "images" / image.name, image.persons)
    acts = [{"act_name": image.act_name if image.act_name else _EMPTY,
             "cat_name": "fake" if image.act_name else _EMPTY,
             "act_id": 1.0 if image.act_name else -1.0} for image in images]
    single = np.empty((len(images), 1), dtype=object)
    for i, image in enumerate(images):
        single[i, 0] = np.array([[1.0]]) if len(image.persons) == 1 else _EMPTY
    release = {
        "annolist": _struct_array(annolist, ("image", "annorect", "frame_sec", "vididx")),
        "img_train": np.array([[1.0 if image.train else 0.0 for image in images]]),
        "version": "12",
        "single_person": single,
        "act": _struct_array(acts, ("act_name", "cat_name", "act_id"), shape=(len(images), 1)),
    }
    path = annotation_path(root, flat)
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy_io.savemat(str(path), {"RELEASE": release})
    return path
