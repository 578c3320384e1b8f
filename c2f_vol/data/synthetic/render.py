"""A fast OpenCV renderer of a 17-joint body as shaded capsules over a random scene.

Shapes legend: J = 17 joints (`c2f_vol.skeleton`), H x W image.

The body is a set of convex "blobs" (a limb is the hull of two spheres, the
torso the hull of five, a head part one sphere), each projected through the
pinhole camera and filled with OpenCV, then painted back to front by mean
depth (painter's algorithm). Left limbs are drawn in blue hues and right limbs
in red-orange hues for every person, so the image alone says which side is
which. Shirts take other hues; background clutter may take any colour, so the
side cue is reliable on the body but not a free detector of limbs.

Images are RGB uint8. Camera frame and pixel conventions follow `c2f_vol.camera`
(+X right, +Y down, +Z forward; pixel centres at integers).
"""

from __future__ import annotations

import colorsys
import dataclasses

import cv2
import numpy as np

from c2f_vol import camera, skeleton
from c2f_vol.data.synthetic import poses

_SHIFT = 4  # OpenCV fixed-point bits: 1/16-pixel precision for edges.
_ONE = 1 << _SHIFT
_CIRCLE = np.stack([np.cos(np.linspace(0, 2 * np.pi, 20, endpoint=False)),
                    np.sin(np.linspace(0, 2 * np.pi, 20, endpoint=False))], -1)
_MIN_DEPTH_MM = 100.0  # parts closer than this (or behind the camera) are skipped

# Limb blobs: (joint a, joint b, radius at a, radius at b) with radii as
# fractions of stature, and which colour slot paints them.
_LIMBS = (
    (4, 5, 0.052, 0.036, "left_leg"), (5, 6, 0.034, 0.024, "left_leg"),
    (1, 2, 0.052, 0.036, "right_leg"), (2, 3, 0.034, 0.024, "right_leg"),
    (11, 12, 0.030, 0.025, "left_arm"), (12, 13, 0.024, 0.018, "left_arm"),
    (14, 15, 0.030, 0.025, "right_arm"), (15, 16, 0.024, 0.018, "right_arm"),
    (8, 9, 0.028, 0.026, "skin"),
)
_TORSO = ((11, 0.042), (14, 0.042), (4, 0.058), (1, 0.058), (7, 0.075))
_HEAD_RADIUS = 0.058


@dataclasses.dataclass(frozen=True)
class Appearance:
    """Colours (RGB floats in [0, 1]) of one person."""

    left_arm: tuple
    right_arm: tuple
    left_leg: tuple
    right_leg: tuple
    shirt: tuple
    skin: tuple
    hair: tuple
    shoes: tuple


def _hsv(h, s, v) -> tuple:
    return colorsys.hsv_to_rgb(h % 1.0, s, v)


def sample_appearance(rng: np.random.Generator) -> Appearance:
    """Left limbs blue (hue 0.55-0.68), right limbs red-orange (hue -0.03-0.08)."""
    u = rng.uniform
    left_h, right_h = u(0.55, 0.68), u(-0.03, 0.08)
    skin_v = u(0.3, 0.95)
    return Appearance(
        left_arm=_hsv(left_h, u(0.55, 0.95), u(0.55, 1.0)),
        right_arm=_hsv(right_h, u(0.55, 0.95), u(0.55, 1.0)),
        left_leg=_hsv(left_h + u(-0.03, 0.03), u(0.5, 0.95), u(0.4, 0.9)),
        right_leg=_hsv(right_h + u(-0.03, 0.03), u(0.5, 0.95), u(0.4, 0.9)),
        # Green-yellow or purple shirts, or greys: neither side's hue.
        shirt=_hsv(u(0.15, 0.45) if rng.random() < 0.6 else u(0.75, 0.88),
                   u(0.0, 0.7), u(0.25, 0.95)),
        skin=_hsv(u(0.03, 0.09), u(0.25, 0.6), skin_v),
        hair=_hsv(u(0.02, 0.12), u(0.2, 0.8), u(0.05, 0.5)),
        shoes=_hsv(u(0, 1), u(0, 0.4), u(0.05, 0.4)),
    )


def stature_mm(joints_mm: np.ndarray) -> float:
    """Stature estimated from bone lengths (robust to pose): median ratio to the reference body."""
    ratio = skeleton.bone_lengths(joints_mm) / poses.REFERENCE_BONE_LENGTHS_MM
    return float(np.median(ratio) * poses.rest_height(poses.REFERENCE_BONE_LENGTHS_MM))


def _body_blobs(joints: np.ndarray, look: Appearance):
    """Blobs as (centres (n, 3) mm, radii (n,) mm, colour, kind) in the camera frame."""
    s = stature_mm(joints)
    blobs = []
    for a, b, ra, rb, slot in _LIMBS:
        blobs.append((joints[[a, b]], np.array([ra, rb]) * s, getattr(look, slot), "capsule"))
    idx = [j for j, _ in _TORSO]
    blobs.append((joints[idx], np.array([r for _, r in _TORSO]) * s, look.shirt, "hull"))
    left, up = joints[4] - joints[1], joints[8] - joints[0]
    forward = np.cross(left, up)
    forward /= np.linalg.norm(forward) + 1e-9
    up /= np.linalg.norm(up) + 1e-9
    for wrist, elbow in ((13, 12), (16, 15)):
        axis = joints[wrist] - joints[elbow]
        axis /= np.linalg.norm(axis) + 1e-9
        blobs.append((joints[wrist][None] + axis * 0.035 * s, np.array([0.024 * s]), look.skin, "sphere"))
    for ankle, knee, slot in ((6, 5, "left_leg"), (3, 2, "right_leg")):
        shin = joints[ankle] - joints[knee]
        shin /= np.linalg.norm(shin) + 1e-9
        toe_dir = forward - shin * (forward @ shin)
        toe_dir /= np.linalg.norm(toe_dir) + 1e-9
        toe = joints[ankle] + toe_dir * 0.11 * s + shin * 0.025 * s
        shoe = tuple(0.7 * np.array(look.shoes) + 0.3 * np.array(getattr(look, slot)))
        blobs.append((np.stack([joints[ankle], toe]), np.array([0.026, 0.02]) * s, shoe, "capsule"))
    # Head: a skin sphere shifted to the face side and a hair sphere to the
    # back, so the face shows from the front and hair from behind.
    r = _HEAD_RADIUS * s
    centre = 0.45 * joints[9] + 0.55 * joints[10]
    blobs.append((centre[None] - forward * 0.3 * r + up * 0.12 * r, np.array([0.92 * r]), look.hair, "sphere"))
    blobs.append((centre[None] + forward * 0.15 * r, np.array([0.88 * r]), look.skin, "sphere"))
    nose_colour = tuple(0.8 * np.array(look.skin))
    blobs.append((centre[None] + forward * 0.95 * r - up * 0.1 * r, np.array([0.16 * r]), nose_colour, "sphere"))
    return blobs


def _fill_blob(img, centres_px, radii_px, colour_u8) -> None:
    pts = (centres_px[:, None, :] + radii_px[:, None, None] * _CIRCLE[None]).reshape(-1, 2)
    size = max(img.shape[:2])
    pts = np.clip(pts, -4 * size, 5 * size)
    hull = cv2.convexHull(np.round(pts * _ONE).astype(np.int32))
    cv2.fillConvexPoly(img, hull, colour_u8, cv2.LINE_AA, _SHIFT)


def draw_person(img: np.ndarray, joints_cam_mm: np.ndarray, intrinsics: np.ndarray,
                look: Appearance, light_dir: np.ndarray, ambient: float) -> None:
    """Paint the body into `img` (H, W, 3) uint8 in place, back to front.

    Args:
      joints_cam_mm: (J, 3) camera frame.
      intrinsics: (4,) (fx, fy, cx, cy).
      light_dir: (3,) unit vector towards the light, camera frame.
      ambient: share of light that ignores orientation, in [0, 1].
    """
    joints = np.asarray(joints_cam_mm, np.float64)
    focal_px = float(intrinsics[0])
    light2d = light_dir[:2] / (np.linalg.norm(light_dir[:2]) + 1e-9)
    # Surfaces seen by the camera face -Z; a light behind the person dims them.
    facing = 0.35 + 0.65 * max(0.0, -float(light_dir[2]))
    blobs = _body_blobs(joints, look)
    blobs.sort(key=lambda b: -float(b[0][:, 2].mean()))
    for centres, radii_mm, colour, kind in blobs:
        if centres[:, 2].min() < _MIN_DEPTH_MM:
            continue
        px = np.asarray(camera.project(centres, intrinsics))
        r_px = radii_mm * focal_px / centres[:, 2]
        if kind == "capsule":
            axis = centres[1] - centres[0]
            axis /= np.linalg.norm(axis) + 1e-9
            lam = np.sqrt(max(0.0, 1.0 - float(axis @ light_dir) ** 2))
            axis2d = px[1] - px[0]
            normal2d = np.array([-axis2d[1], axis2d[0]]) / (np.linalg.norm(axis2d) + 1e-9)
            shift = normal2d * float(normal2d @ light2d)
        else:
            lam, shift = 1.0, light2d
        base = np.asarray(colour) * (ambient + (1 - ambient) * 0.55 * lam * facing)
        tones = ((1.0, 0.0, base),
                 (0.68, 0.28, base * 1.25),
                 (0.35, 0.5, base * 1.5 + 0.05 * lam * facing))
        for scale, offset, tone in tones:
            tone_u8 = tuple(int(v) for v in np.clip(tone * 255.0, 0, 255))
            _fill_blob(img, px + shift * offset * r_px[:, None], r_px * scale, tone_u8)


# ---------------------------------------------------------------------------
# Scene.


def _random_colour(rng) -> np.ndarray:
    return rng.uniform(0, 255, 3).astype(np.float32)


def _texture(rng, h: int, w: int) -> np.ndarray:
    """(h, w, 3) float32 smooth colour noise: random grids upsampled, two octaves."""
    out = np.zeros((h, w, 3), np.float32)
    for cells, weight in ((int(rng.integers(2, 6)), 1.0), (int(rng.integers(8, 24)), 0.35)):
        grid = rng.uniform(0, 255, (cells, cells, 3)).astype(np.float32)
        out += weight * cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    return out / 1.35


def _gradient(rng, h: int, w: int) -> np.ndarray:
    """(h, w, 3) float32 linear blend of two colours along a random direction."""
    theta = rng.uniform(0, 2 * np.pi)
    t = np.cos(theta) * np.linspace(-0.5, 0.5, w)[None, :] + np.sin(theta) * np.linspace(-0.5, 0.5, h)[:, None]
    t = (t - t.min()) / (np.ptp(t) + 1e-9)
    c0, c1 = _random_colour(rng), _random_colour(rng)
    return (c0 + t[..., None].astype(np.float32) * (c1 - c0)).astype(np.float32)


def _room(rng, h, w, intrinsics, rotation, centre_mm, person_xy_mm) -> np.ndarray:
    """(h, w, 3) float32: a checker or plank floor (true perspective) inside a round room's wall."""
    fx, fy, cx, cy = (float(v) for v in intrinsics)
    u, v = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    rays_cam = np.stack([(u - cx) / fx, (v - cy) / fy, np.ones_like(u)], -1)
    rays = rays_cam @ np.asarray(rotation, np.float32)  # R^T d, row-wise
    # Only rays going down meet the floor (Z = 0), at distance t along the ray. The others
    # never show floor (on_floor needs `down`); t = 0 puts their floor point at the camera
    # centre, so every value below stays finite (an infinite t times a ray component of
    # exactly 0 would be NaN, and the floor pattern of an infinite point is undefined).
    down = rays[..., 2] < -1e-6
    t = np.where(down, -float(centre_mm[2]) / np.where(down, rays[..., 2], -1.0), 0.0)
    fx_mm = centre_mm[0] + t * rays[..., 0]
    fy_mm = centre_mm[1] + t * rays[..., 1]
    radius_mm = rng.uniform(3000, 9000)
    on_floor = down & (np.hypot(fx_mm - person_xy_mm[0], fy_mm - person_xy_mm[1]) < radius_mm)
    tile = rng.uniform(250, 900)
    if rng.random() < 0.5:
        pattern = (np.floor(fx_mm / tile) + np.floor(fy_mm / tile)) % 2
    else:
        pattern = (np.floor(fx_mm / (0.3 * tile)) % 2) * 0.6 + 0.2 * np.sin(fy_mm / tile * 7.0)
    pattern = pattern.astype(np.float32)
    c0, c1 = _random_colour(rng), _random_colour(rng)
    floor = c0 + pattern[..., None] * (c1 - c0) * rng.uniform(0.2, 0.8)
    # Far floor fades to its mean colour, as texture blurs with distance.
    fade = np.exp(-t / rng.uniform(6000, 15000)).astype(np.float32)[..., None]
    floor = fade * floor + (1 - fade) * (0.5 * (c0 + c1))
    wall = _gradient(rng, h, w) * 0.6 + _texture(rng, h, w) * 0.4
    return np.where(on_floor[..., None], floor, wall).astype(np.float32)


def _clutter(rng, img: np.ndarray, count: int) -> None:
    """Random opaque shapes painted in place."""
    h, w = img.shape[:2]
    size = max(h, w)
    for _ in range(count):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = int(rng.integers(4))
        p = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        extent = int(rng.integers(max(2, size // 30), max(3, size // 5)))
        if kind == 0:
            cv2.circle(img, p, extent // 2, colour, -1, cv2.LINE_AA)
        elif kind == 1:
            cv2.rectangle(img, p, (p[0] + extent, p[1] + int(rng.integers(1, 2 * extent))), colour, -1)
        elif kind == 2:
            q = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            cv2.line(img, p, q, colour, int(rng.integers(1, max(2, size // 40))), cv2.LINE_AA)
        else:
            axes = (extent // 2 + 1, int(rng.integers(1, extent)) // 2 + 1)
            cv2.ellipse(img, p, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1, cv2.LINE_AA)


def _shadow(rng, img, joints_world_mm, intrinsics, rotation, centre_mm) -> None:
    """Darken a soft disc on the floor under the person."""
    s = stature_mm(joints_world_mm)
    ground = np.array([joints_world_mm[0, 0], joints_world_mm[0, 1], 0.0])
    ring = ground + np.concatenate([_CIRCLE * 0.22 * s, np.zeros((len(_CIRCLE), 1))], -1)
    ring_cam = np.asarray(camera.world_to_camera(ring, rotation, centre_mm))
    if ring_cam[:, 2].min() < _MIN_DEPTH_MM:
        return
    px = np.asarray(camera.project(ring_cam, intrinsics))
    mask = np.zeros(img.shape[:2], np.float32)
    pts = np.round(np.clip(px, -4 * img.shape[1], 5 * img.shape[1]) * _ONE).astype(np.int32)
    cv2.fillPoly(mask, [pts], 1.0, cv2.LINE_AA, _SHIFT)
    k = 2 * max(1, img.shape[1] // 64) + 1
    mask = cv2.GaussianBlur(mask, (k, k), 0)
    img *= (1.0 - rng.uniform(0.25, 0.55) * mask)[..., None]


def render_frame(rng: np.random.Generator, joints_cam_mm: np.ndarray, intrinsics: np.ndarray,
                 image_size: tuple[int, int], rotation: np.ndarray | None = None,
                 centre_mm: np.ndarray | None = None) -> np.ndarray:
    """A whole synthetic frame of one person.

    Args:
      rng: the only source of randomness (same state -> same bytes).
      joints_cam_mm: (J, 3) camera frame.
      intrinsics: (4,) (fx, fy, cx, cy) of the frame.
      image_size: (H, W).
      rotation, centre_mm: optional world-to-camera (3, 3) and camera centre (3,)
        (Z-up world, floor at Z = 0); with them, a perspective floor and the
        person's shadow become possible.
    Returns:
      (H, W, 3) uint8 RGB.
    """
    h, w = image_size
    joints_cam_mm = np.asarray(joints_cam_mm, np.float64)
    has_world = rotation is not None and centre_mm is not None
    joints_world = (np.asarray(camera.camera_to_world(joints_cam_mm, rotation, centre_mm))
                    if has_world else None)
    kind = rng.choice(3, p=[0.45, 0.3, 0.25] if has_world else [0.0, 0.55, 0.45])
    if kind == 0:
        img = _room(rng, h, w, intrinsics, rotation, centre_mm, joints_world[0, :2])
    elif kind == 1:
        img = _gradient(rng, h, w) * rng.uniform(0.5, 1.0) + _texture(rng, h, w) * rng.uniform(0.0, 0.5)
    else:
        img = _texture(rng, h, w)
    img = np.clip(img, 0, 255).astype(np.uint8)
    _clutter(rng, img, int(rng.integers(0, 9)))
    if kind == 0:
        img = img.astype(np.float32)
        _shadow(rng, img, joints_world, intrinsics, rotation, centre_mm)
        img = img.astype(np.uint8)
    light = np.array([rng.normal(0, 0.8), rng.normal(-0.8, 0.5), -abs(rng.normal(0.6, 0.5))])
    light /= np.linalg.norm(light)
    draw_person(img, joints_cam_mm, intrinsics, sample_appearance(rng), light,
                ambient=float(rng.uniform(0.35, 0.7)))
    # Global exposure, colour cast, optional blur and sensor noise.
    out = img.astype(np.float32) * (rng.uniform(0.7, 1.2) * rng.uniform(0.88, 1.12, 3)).astype(np.float32)
    if rng.random() < 0.3:
        out = cv2.GaussianBlur(out, (3, 3), float(rng.uniform(0.3, 1.0)))
    noise_sigma = float(rng.uniform(0, 6))
    if noise_sigma > 0.5:
        out += rng.standard_normal(out.shape, dtype=np.float32) * noise_sigma
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
