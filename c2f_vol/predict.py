"""Prediction on a user's own image, from a training workdir or an exported SavedModel.

Shapes legend: J joints (17), S model input side.
"""

from __future__ import annotations

import math
import os

import cv2
import jax
import numpy as np

from c2f_vol import camera, export, inference, skeleton, visualize, workdir as workdir_lib
from c2f_vol.data import stats

DEFAULT_HFOV_DEG = 55.0  # a typical photo's horizontal field of view, used when no focal length is given
BOX_MARGIN = 1.1         # a person box is a little wider than its joints' extent, which the crops were made from


class UserInputError(ValueError):
    """A mistake in what the user gave (file, box, flags): reported in one line, no traceback."""


def load_image(path: str) -> np.ndarray:
    """Any JPEG/PNG (grey, RGB, RGBA, 8 or 16 bit) -> RGB uint8 (H, W, 3)."""
    if not os.path.isfile(path):
        raise UserInputError(f"{path}: no such file")
    data = np.fromfile(path, np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise UserInputError(f"{path}: not a readable image (expected a JPEG or PNG file)")
    if img.dtype == np.uint16:
        img = (img / 257).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise UserInputError(f"{path}: unsupported pixel type {img.dtype} (expected 8- or 16-bit)")
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    elif img.shape[2] == 4:
        alpha = img[..., 3:4].astype(np.float32) / 255
        img = (img[..., :3] * alpha + 128 * (1 - alpha)).astype(np.uint8)  # transparent -> mid grey
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    else:
        img = cv2.cvtColor(img[..., :3], cv2.COLOR_BGR2RGB)
    if min(img.shape[:2]) < 8:
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
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        raise UserInputError(f"--bbox={text!r} lies outside the {width}x{height} image")
    return x, y, w, h


def crop_for_model(image: np.ndarray, bbox, input_size: int):
    """The square S x S crop around `bbox`; returns (crop uint8, affine (2, 3), box (3,) = centre u, v, side)."""
    x, y, w, h = bbox
    centre = np.array([x + w / 2 - 0.5, y + h / 2 - 0.5])  # pixel centres at integers
    side = max(w, h) * BOX_MARGIN
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

    def __call__(self, crop, intrinsics, box) -> dict:
        cam, root, image_uv, conf = self._camera(self._variables, crop[None], intrinsics[None], box[None])
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

    def __call__(self, crop, intrinsics, box) -> dict:
        out = self._served.camera(crop[None], intrinsics[None], box[None])
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


def predict_image(model, image_path: str, bbox: str | None = None, focal_px: float | None = None,
                  volume_joint: str | None = None) -> tuple[dict, np.ndarray]:
    """Run `model` on one image; returns (JSON-ready result, PNG picture RGB)."""
    image = load_image(image_path)
    h, w = image.shape[:2]
    box_xywh = parse_bbox(bbox, w, h)
    joint = joint_index(volume_joint) if volume_joint else None
    crop, _, box = crop_for_model(image, box_xywh, model.input_size)
    intr, focal_how = intrinsics_for(w, h, focal_px)
    out = model(crop, intr, box)
    rel = out["joints_cam"] - out["joints_cam"][skeleton.ROOT]
    result = {
        "image": os.path.abspath(image_path), "image_size": [w, h], "bbox_xywh": list(box_xywh),
        "model": model.source, "joint_names": list(skeleton.JOINT_NAMES), "parents": list(skeleton.PARENTS),
        "joints_2d_px": out["joints_image"].round(2).tolist(),
        "joints_3d_root_relative_mm": rel.round(1).tolist(),
        "joints_3d_camera_mm": out["joints_cam"].round(1).tolist(),
        "root_depth_mm": round(out["root_depth_mm"], 1),
        "root_depth_source": "limb-length search against the training subjects' mean bone lengths",
        "intrinsics": intr.tolist(), "focal_px_source": focal_how,
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
