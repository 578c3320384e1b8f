"""Prediction on a user's own image, from a training workdir or an exported SavedModel.

Shapes legend: J joints (17), S model input side.
"""

from __future__ import annotations

import json
import math
import os

import cv2
import jax
import numpy as np

from c2f_vol import camera, export, fileio, inference, skeleton, visualize, workdir as workdir_lib
from c2f_vol.data import stats
from c2f_vol.errors import UserError

DEFAULT_HFOV_DEG = 55.0  # a typical photo's horizontal field of view, used when no focal length is given
MAX_PIXELS = 50_000_000  # larger images are refused before decoding (tools/predict.py --max_pixels)
MIN_IMAGE_PX = 8         # smallest image side accepted
MIN_BOX_PX = 2.0         # smallest box side accepted (a smaller box would be a blur of one pixel)


class UserInputError(UserError, ValueError):
    """A mistake in what the user gave (file, box, flags): reported in one line, no traceback."""


def image_size(path: str) -> tuple[int, int] | None:
    """(width, height) from a PNG's or JPEG's header, without decoding; None for anything else."""
    with open(path, "rb") as f:
        head = f.read(24)
        if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
            return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
        if head[:2] != b"\xff\xd8":
            return None
        f.seek(2)
        while True:  # JPEG: walk the segments up to the frame header (SOFn), which holds the size
            byte = f.read(1)
            if byte != b"\xff":
                return None
            marker = f.read(1)
            while marker == b"\xff":  # fill bytes
                marker = f.read(1)
            if not marker:
                return None
            m = marker[0]
            if m == 0x01 or 0xD0 <= m <= 0xD7:  # standalone markers, no length
                continue
            if m in (0xD9, 0xDA):  # end of image or start of scan before any frame header
                return None
            seg = f.read(2)
            if len(seg) < 2:
                return None
            length = int.from_bytes(seg, "big")
            if 0xC0 <= m <= 0xCF and m not in (0xC4, 0xC8, 0xCC):
                frame = f.read(5)  # precision (1), height (2), width (2)
                if len(frame) < 5:
                    return None
                return int.from_bytes(frame[3:5], "big"), int.from_bytes(frame[1:3], "big")
            if length < 2:
                return None
            f.seek(length - 2, os.SEEK_CUR)


def load_image(path: str, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Any JPEG/PNG (grey, RGB, RGBA, 8 or 16 bit) -> RGB uint8 (H, W, 3).

    The size is read from the file's header first, so an image of more than `max_pixels` is refused
    before anything is decoded (decoding takes ~10 bytes per pixel at its peak).
    """
    if os.path.isdir(path):
        raise UserInputError(f"{path}: is a folder, expected an image file")
    if not os.path.isfile(path):
        raise UserInputError(f"{path}: no such file")
    size = image_size(path)
    if size is None:
        raise UserInputError(f"{path}: not a readable image (expected a JPEG or PNG file)")
    w, h = size
    if w * h > max_pixels:
        raise UserInputError(
            f"{path}: image of {w}x{h} px ({w * h / 1e6:.1f} megapixels) is over the {max_pixels / 1e6:g} megapixel "
            f"limit; downscale it (a person needs far fewer pixels) or pass --max_pixels={w * h} "
            f"(decoding takes ~10 bytes a pixel)")
    if min(w, h) < MIN_IMAGE_PX:
        raise UserInputError(f"{path}: image of {w}x{h} px is too small (at least {MIN_IMAGE_PX} px per side)")
    data = np.fromfile(path, np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    del data
    if img is None:
        raise UserInputError(f"{path}: not a readable image (expected a JPEG or PNG file)")
    if img.dtype == np.uint16:
        img = (img // 257).astype(np.uint8)  # integer maths: no float copy of a large image
    elif img.dtype != np.uint8:
        raise UserInputError(f"{path}: unsupported pixel type {img.dtype} (expected 8- or 16-bit)")
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    elif img.shape[2] == 4:
        alpha = img[..., 3:4].astype(np.uint16)
        blended = (img[..., :3] * alpha + 128 * (255 - alpha)) // 255  # transparent -> mid grey
        img = cv2.cvtColor(blended.astype(np.uint8), cv2.COLOR_BGR2RGB)
    else:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB, dst=img)  # in place: no second copy of a large image
    if min(img.shape[:2]) < MIN_IMAGE_PX:
        raise UserInputError(f"{path}: image of {img.shape[1]}x{img.shape[0]} px is too small")
    return img


def parse_bbox(text: str | None, width: int, height: int) -> tuple[float, float, float, float]:
    """'x,y,w,h' in pixels -> a box that overlaps the image; the whole image when None."""
    if not text:
        return 0.0, 0.0, float(width), float(height)
    try:
        x, y, w, h = (float(v) for v in text.split(","))
    except ValueError:
        raise UserInputError(f"--bbox={text!r}: expected four numbers x,y,w,h in pixels") from None
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        raise UserInputError(f"--bbox={text!r}: values must be finite")
    if w <= 0 or h <= 0:
        raise UserInputError(f"--bbox={text!r}: zero-size box (width and height must be > 0)")
    if w < MIN_BOX_PX or h < MIN_BOX_PX:
        raise UserInputError(f"--bbox={text!r}: box of {w:g}x{h:g} px is too small "
                             f"(at least {MIN_BOX_PX:g} px per side; a person box is usually 100+ px)")
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        raise UserInputError(f"--bbox={text!r} lies outside the {width}x{height} image")
    return x, y, w, h


def parse_distortion(text: str | None) -> np.ndarray | None:
    """'k1,k2,k3,p1,p2' -> (5,) float32 (the lens of `c2f_vol.camera`); None when not given."""
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 5 or not all(math.isfinite(v) for v in values):
        raise UserInputError(f"--distortion={text!r}: expected five finite numbers k1,k2,k3,p1,p2 "
                             "(radial k1, k2, k3 and tangential p1, p2, in normalised image coordinates)")
    return np.asarray(values, np.float32)


def crop_for_model(image: np.ndarray, bbox, input_size: int, box_margin: float):
    """The square S x S crop around `bbox`; returns (crop uint8, affine (2, 3), box (3,) = centre u, v, side).

    The box stands for the joints' box, so the crop's side is `box_margin` (the model's data.box_margin:
    the crop side over the joints' larger extent it was trained on) times its larger side.
    """
    x, y, w, h = bbox
    centre = np.array([x + w / 2 - 0.5, y + h / 2 - 0.5])  # pixel centres at integers
    side = max(w, h) * box_margin
    affine = camera.crop_affine(centre, side, input_size)
    crop = cv2.warpAffine(image, affine, (input_size, input_size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    return crop, affine, np.array([centre[0], centre[1], side], np.float32)


def intrinsics_for(width: int, height: int, focal_px: float | None) -> tuple[np.ndarray, str]:
    """(fx, fy, cx, cy) with the principal point at the centre, and how the focal length was chosen."""
    if focal_px is not None:
        if not focal_px > 0:
            raise UserInputError(f"--focal_px={focal_px}: must be > 0")
        f, how = float(focal_px), "given by --focal_px"
    else:
        f = (width / 2) / math.tan(math.radians(DEFAULT_HFOV_DEG) / 2)
        how = f"assumed from a {DEFAULT_HFOV_DEG:g} degree horizontal field of view (pass --focal_px to set it)"
    return np.array([f, f, (width - 1) / 2, (height - 1) / 2], np.float32), how


class CheckpointPredictor:
    """Runs a training workdir's latest checkpoint with JAX."""

    def __init__(self, workdir: str):
        restored = workdir_lib.restore(workdir)
        self.network, self.step = restored.network, restored.step
        self.input_size = self.network.codec.input_size
        self._variables = restored.variables
        self._camera = jax.jit(inference.make_camera_fn(self.network, stats.read_bone_lengths(workdir)))
        self._density = jax.jit(inference.make_density_fn(self.network))
        self.source = f"checkpoint step {self.step} of {os.path.abspath(workdir)}"
        self.box_margin = float(self.network.config.data.box_margin)

    def __call__(self, crop, intrinsics, box, distortion=None) -> dict:
        distortion = np.zeros(5, np.float32) if distortion is None else distortion
        cam, root, image_uv, conf = self._camera(self._variables, crop[None], intrinsics[None], box[None],
                                                 distortion[None])
        return {"joints_cam": np.asarray(cam[0]), "root_depth_mm": float(root[0]),
                "joints_image": np.asarray(image_uv[0]), "confidence": np.asarray(conf[0])}

    def volume_slice(self, crop, joint: int) -> tuple[np.ndarray, int]:
        """The density (H, W) of `joint` at its most likely depth bin of the finest stack, as the
        model's decoder reads it (`VolumeCodec.density`)."""
        p = np.asarray(self._density(self._variables, crop[None]))[0, joint].astype(np.float64)  # (D, H, W)
        d = int(np.argmax(p.sum(axis=(1, 2))))
        return p[d], d


class SavedModelPredictor:
    """Runs an exported SavedModel with TensorFlow only."""

    def __init__(self, path: str):
        self._served = export.ServedModel(path)
        self.metadata = self._served.metadata
        self.input_size = self._served.input_size
        self.source = f"SavedModel {self._served.path}"
        self.box_margin = float(self.metadata["data"]["box_margin"])

    def __call__(self, crop, intrinsics, box, distortion=None) -> dict:
        out = self._served.camera(crop[None], intrinsics[None], box[None],
                                  None if distortion is None else distortion[None])
        return {"joints_cam": out["joints_cam"][0], "root_depth_mm": float(out["root_depth_mm"][0]),
                "joints_image": out["joints_image"][0], "confidence": out["confidence"][0]}

    def volume_slice(self, crop, joint):
        raise UserInputError("--volume_joint needs a training workdir: a SavedModel returns joints, not volumes")


def is_saved_model(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "saved_model.pb"))


def open_model(path: str):
    """A predictor for a SavedModel folder or a training workdir."""
    if is_saved_model(path):
        return SavedModelPredictor(path)
    if os.path.isfile(os.path.join(path, workdir_lib.CONFIG_FILE)):
        return CheckpointPredictor(path)
    raise UserInputError(f"{path}: neither a SavedModel (saved_model.pb) nor a training workdir (config.json)")


def joint_index(name_or_index: str) -> int:
    if name_or_index.isdigit() and int(name_or_index) < skeleton.NUM_JOINTS:
        return int(name_or_index)
    names = [n.lower() for n in skeleton.JOINT_NAMES]
    if name_or_index.lower() in names:
        return names.index(name_or_index.lower())
    raise UserInputError(f"--volume_joint={name_or_index!r}: expected 0-16 or one of {', '.join(skeleton.JOINT_NAMES)}")


def predict_image(model, image: str | np.ndarray, bbox: str | None = None, focal_px: float | None = None,
                  volume_joint: str | None = None, image_path: str | None = None,
                  distortion: str | None = None) -> tuple[dict, np.ndarray]:
    """Run `model` on one image; returns (JSON-ready result, PNG picture RGB).

    `distortion` 'k1,k2,k3,p1,p2': the camera's lens, undone before the joints are lifted to 3D.
    `image`: a path, or the RGB uint8 (H, W, 3) array `load_image` made of `image_path` (so a caller
    that has checked the image already need not decode it again).
    """
    if isinstance(image, (str, os.PathLike)):
        image_path, image = os.fspath(image), load_image(os.fspath(image))
    h, w = image.shape[:2]
    box_xywh = parse_bbox(bbox, w, h)
    joint = joint_index(volume_joint) if volume_joint else None
    lens = parse_distortion(distortion)
    crop, _, box = crop_for_model(image, box_xywh, model.input_size, model.box_margin)
    intr, focal_how = intrinsics_for(w, h, focal_px)
    out = model(crop, intr, box, lens)
    rel = out["joints_cam"] - out["joints_cam"][skeleton.ROOT]
    result = {
        "image": os.path.abspath(image_path) if image_path else None, "image_size": [w, h], "bbox_xywh": list(box_xywh),
        "model": model.source, "joint_names": list(skeleton.JOINT_NAMES), "parents": list(skeleton.PARENTS),
        "joints_2d_px": out["joints_image"].round(2).tolist(),
        "joints_3d_root_relative_mm": rel.round(1).tolist(),
        "joints_3d_camera_mm": out["joints_cam"].round(1).tolist(),
        "root_depth_mm": round(out["root_depth_mm"], 1),
        "root_depth_source": "limb-length search against the training subjects' mean bone lengths",
        "intrinsics": intr.tolist(), "focal_px_source": focal_how,
        "distortion": None if lens is None else lens.tolist(),
        "confidence": out["confidence"].round(4).tolist(),
    }
    overlay = visualize.draw_skeleton_2d(image, out["joints_image"])
    views = visualize.render_3d_views(out["joints_cam"], 320)
    extra = None
    if joint is not None:
        prob, d = model.volume_slice(crop, joint)
        extra = visualize.volume_panel(prob, 320, f"{skeleton.JOINT_NAMES[joint]} depth bin {d}")
        result["volume_slice"] = {"joint": skeleton.JOINT_NAMES[joint], "depth_bin": d}
    return result, visualize.compose(overlay, views, extra)


def check_output_path(path: str, flag: str, picture: bool = False) -> None:
    """Raise a `UserInputError` now, before any work, if `path` cannot be written (or, with `picture`,
    has no extension OpenCV can encode)."""
    fileio.check_writable(path, flag)
    if picture and not cv2.haveImageWriter(path):
        ext = os.path.splitext(path)[1]
        what = f"{ext!r} pictures" if ext else "a picture without an extension"
        raise UserInputError(f"{flag}={path}: OpenCV cannot write {what} (use a .png or .jpg name)")


def write_outputs(json_path: str, result: dict, png_path: str, picture: np.ndarray) -> None:
    """Write the JSON and the picture (RGB) atomically, and both or neither: both are encoded first, and
    if the second write fails the first file is removed."""
    try:
        ok, encoded = cv2.imencode(os.path.splitext(png_path)[1], np.ascontiguousarray(picture[..., ::-1]))
    except cv2.error:
        ok = False
    if not ok:
        raise UserInputError(f"{png_path}: OpenCV could not encode the picture")
    text = json.dumps(result, indent=2) + "\n"
    fileio.write_bytes(png_path, encoded.tobytes())
    try:
        fileio.write_text(json_path, text)
    except BaseException:
        os.remove(png_path)
        raise
