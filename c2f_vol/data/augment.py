"""Per-example image and joint operations of the input pipeline, as small TF functions.

Every function here is pure TensorFlow (no py_function), so it runs both
eagerly and inside a tf.data map, and its randomness is stateless: it comes
from an explicit (2,) int64 seed, never from a global generator.

Shape legend: J joints (17), S crop side in pixels, H x W the stored image.
Pixel conventions are `c2f_vol.camera`'s: (u, v) = (column, row) with pixel
centres at integer coordinates.
"""

from __future__ import annotations

import tensorflow as tf

from c2f_vol import camera, skeleton

# Order of the sub-seeds split from one example's seed.
_SCALE, _ROTATION, _ROTATION_GATE, _FLIP, _GAIN = range(5)


def example_seed(seed, process_index, position):
    """The (2,) int64 seed of the example at `position` of one process's stream.

    Folding the position in (rather than drawing from a stateful generator)
    makes an example's augmentation a function of (seed, process, position)
    only, so a resumed run reproduces the batches of an uninterrupted one.
    """
    base = tf.stack([tf.cast(seed, tf.int64), tf.cast(process_index, tf.int64)])
    return tf.random.experimental.stateless_fold_in(base, tf.cast(position, tf.int64))


def identity_augmentation() -> dict:
    """The parameters of "no augmentation" (evaluation)."""
    return {"scale": tf.constant(1.0), "rotation_deg": tf.constant(0.0),
            "flip": tf.constant(False), "color_gain": tf.ones([3])}


def sample_augmentation(seed, data_config) -> dict:
    """Draw one example's augmentation parameters (the training recipe).

    Args:
      seed: (2,) int seed (`example_seed`).
      data_config: fields scale_sigma, scale_clip (lo, hi), rotation_sigma_deg,
        rotation_clip_deg, rotation_prob, flip_prob, color_gain (lo, hi).
    Returns:
      scale (): multiplies the box side (> 1 zooms out); rotation_deg ()
      counter-clockwise as displayed, 0 unless drawn with rotation_prob;
      flip () bool; color_gain (3,) per-channel factor.
    """
    keys = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=5)
    c = data_config
    lo, hi = c.scale_clip
    scale = 1.0 + c.scale_sigma * tf.random.stateless_normal([], keys[_SCALE])
    scale = tf.clip_by_value(scale, lo, hi)
    rotation = c.rotation_sigma_deg * tf.random.stateless_normal([], keys[_ROTATION])
    rotation = tf.clip_by_value(rotation, -c.rotation_clip_deg, c.rotation_clip_deg)
    rotate = tf.random.stateless_uniform([], keys[_ROTATION_GATE]) < c.rotation_prob
    rotation = tf.where(rotate, rotation, 0.0)
    flip = tf.random.stateless_uniform([], keys[_FLIP]) < c.flip_prob
    glo, ghi = c.color_gain
    gain = tf.random.stateless_uniform([3], keys[_GAIN], minval=glo, maxval=ghi)
    return {"scale": scale, "rotation_deg": rotation, "flip": flip, "color_gain": gain}


def person_box(joints_2d, box_margin: float, joints_weight=None):
    """Square person box around the joints.

    Args:
      joints_2d: (J, 2) image pixels.
      box_margin: side / larger extent of the joints' bounding box.
      joints_weight: optional (J,); joints of weight 0 (not located by the source) are left out,
        unless no joint has weight.
    Returns:
      center (2,) pixels, side () pixels.
    """
    if joints_weight is not None:
        located = tf.logical_or(joints_weight > 0, tf.logical_not(tf.reduce_any(joints_weight > 0)))
        joints_2d = tf.boolean_mask(joints_2d, located)
    lo = tf.reduce_min(joints_2d, axis=0)
    hi = tf.reduce_max(joints_2d, axis=0)
    # A degenerate pose (all joints on one point) still needs a box of some size.
    side = tf.maximum(tf.reduce_max(hi - lo) * box_margin, 1.0)
    return (lo + hi) / 2.0, side


def flip_labels(flip, *per_joint):
    """Each (J, ...) tensor of `per_joint` with its left/right pairs swapped when `flip`."""
    perm = tf.constant(skeleton.FLIP_PERMUTATION)
    return tuple(tf.cond(flip, lambda x=x: tf.gather(x, perm), lambda x=x: x) for x in per_joint)


def crop_joints(affine, joints_2d, joints_3d, flip):
    """Joints of the crop: pixels through `affine`, re-labelled when flipped.

    After a mirror the person's left limbs look like right limbs, so every
    left/right pair swaps labels; the 3D joints swap with them (no sign change:
    mapping the crop back through the inverse affine lands on the original
    image, whose camera frame they stay in).

    Args:
      affine: (2, 3) image -> crop.
      joints_2d: (J, 2) image pixels.
      joints_3d: (J, 3) camera mm.
      flip: () bool.
    Returns:
      joints_uv (J, 2) crop pixels, joints_3d (J, 3) camera mm.
    """
    return flip_labels(flip, camera.apply_affine(affine, joints_2d), joints_3d)


def _image_shape(image):
    """(H, W) of an encoded JPEG (header only) or a decoded (H, W, 3) image."""
    if image.dtype == tf.string:
        return tf.cast(tf.io.extract_jpeg_shape(image)[:2], tf.int32)
    return tf.shape(image)[:2]


def source_window(affine, image_shape, output_size: int):
    """The image region a crop samples: (y0, x0, h, w) int32, clipped to the image.

    Covers the image positions of the crop's four outer corners, plus one pixel
    for the bilinear neighbours, so warping the window equals warping the frame.
    """
    s = float(output_size)
    corners = tf.constant([[-0.5, -0.5], [s - 0.5, -0.5], [-0.5, s - 0.5], [s - 0.5, s - 0.5]])
    pts = camera.apply_affine(camera.invert_affine(affine), corners)
    size = tf.cast(image_shape, tf.float32)  # (H, W)
    lo = tf.floor(tf.reduce_min(pts, axis=0)) - 1.0  # (u, v)
    hi = tf.math.ceil(tf.reduce_max(pts, axis=0)) + 2.0  # exclusive
    wh = tf.stack([size[1], size[0]])
    lo = tf.clip_by_value(lo, 0.0, wh - 1.0)
    hi = tf.maximum(tf.minimum(hi, wh), lo + 1.0)
    lo, hi = tf.cast(lo, tf.int32), tf.cast(hi, tf.int32)
    return tf.stack([lo[1], lo[0], hi[1] - lo[1], hi[0] - lo[0]])


def decode_window(image, window):
    """Decode only `window` (y0, x0, h, w) of `image` (JPEG bytes or (H, W, 3) uint8).

    Person boxes are often a small part of a full frame; decoding just the
    region skips most of the entropy decoding and colour conversion.
    Returns (h, w, 3) uint8.
    """
    if image.dtype == tf.string:
        return tf.io.decode_and_crop_jpeg(image, window, channels=3)
    return tf.slice(image, tf.stack([window[0], window[1], 0]), tf.stack([window[2], window[3], 3]))


def warp(image, affine, output_size: int, offset_uv=(0.0, 0.0)):
    """Bilinear warp of `image` into the crop (black outside the image).

    Matches `cv2.warpAffine(image, affine, (S, S), flags=INTER_LINEAR)` for the
    same affine (both sample the source at integer-centred pixels).

    Args:
      image: (h, w, C) any real dtype; pixel (0, 0) sits at image position `offset_uv`.
      affine: (2, 3) image -> crop.
      output_size: S.
      offset_uv: (2,) position (u, v) of the array's top-left pixel in the image.
    Returns:
      (S, S, C) float32.
    """
    inv = camera.invert_affine(affine)  # crop -> image
    off = tf.cast(offset_uv, tf.float32)
    transform = tf.stack([inv[0, 0], inv[0, 1], inv[0, 2] - off[0],
                          inv[1, 0], inv[1, 1], inv[1, 2] - off[1], 0.0, 0.0])
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(image, tf.float32)[None], transforms=transform[None],
        output_shape=tf.constant([output_size, output_size], tf.int32), fill_value=0.0,
        interpolation="BILINEAR", fill_mode="CONSTANT")
    return out[0]


def crop_image(image, affine, output_size: int):
    """Decode the needed window of `image` and warp it to (S, S, 3) float32."""
    window = source_window(affine, _image_shape(image), output_size)
    pixels = decode_window(image, window)
    return warp(pixels, affine, output_size, offset_uv=tf.cast(tf.stack([window[1], window[0]]), tf.float32))


def apply_color_gain(image, gain):
    """(S, S, 3) float32 pixel values times a (3,) gain -> (S, S, 3) uint8, rounded and saturated."""
    return tf.saturate_cast(tf.round(image * gain), tf.uint8)
