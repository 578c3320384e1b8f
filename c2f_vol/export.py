"""SavedModel export through jax2tf, with the weights held as tf.Variables.

Signatures
  serving_default(images uint8 (b, S, S, 3)) ->
      joints      float32 (b, 17, 3): crop pixels (u, v) and root-relative depth in mm
      confidence  float32 (b, 17)
  camera_frame(images uint8 (b, S, S, 3), intrinsics (b, 4), box (b, 3)) ->
      joints_cam  float32 (b, 17, 3): camera-frame mm, root depth from the limb-length search
      root_depth_mm (b,), joints_image (b, 17, 2) pixels in the original image, confidence (b, 17)
  `box` is (centre u, centre v, side) in pixels of the original image: the square
  region that was resized (without rotation) to the S x S input.

Constants stored in the SavedModel (so a client needs nothing else): the joint
names, parents and bones, the input size, image normalisation, the codec block
and the mean bone lengths, as `metadata_json` and as the asset `c2f_vol.json`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

from c2f_vol import camera, model as model_lib, rootdepth, skeleton

SIGNATURE_CROP = "serving_default"
SIGNATURE_CAMERA = "camera_frame"
METADATA_ASSET = "c2f_vol.json"


def variables_of(state: dict) -> dict:
    """The inference variables (pure dicts of arrays) of a train state."""
    return {"params": state["params"], "batch_stats": state["batch_stats"]}


def make_crop_fn(trainer):
    """Pure JAX: (variables, images) -> (joints (b, J, 3) crop px + depth mm, confidence (b, J)).

    The last stack's logits are decoded by the codec's decoder (`VolumeCodec.decode_logits`).
    """
    codec = trainer.codec
    level = codec.num_levels - 1

    def fn(variables, images):
        model = trainer.model_from(variables["params"], variables["batch_stats"])
        model.eval()
        logits = model(images)[level]
        coords, conf = codec.decode_logits(logits)
        uv, depth = codec.decode(coords, level)
        if depth is None:
            depth = jnp.zeros(uv.shape[:-1], jnp.float32)
        return jnp.concatenate([uv, depth[..., None]], axis=-1), conf

    return fn


def make_camera_fn(trainer, bone_lengths_mm):
    """Pure JAX: (variables, images, intrinsics, box) -> camera-frame joints via the limb-length search."""
    crop_fn = make_crop_fn(trainer)
    size = trainer.codec.input_size
    bones = jnp.asarray(bone_lengths_mm, jnp.float32)

    def fn(variables, images, intrinsics, box):
        joints, conf = crop_fn(variables, images)
        affine = camera.crop_affine(box[..., :2], box[..., 2], size)
        image_uv = camera.apply_affine(camera.invert_affine(affine), joints[..., :2])
        depth_rel = joints[..., 2]
        root = rootdepth.search_root_depth(image_uv, depth_rel, intrinsics, bones)
        joints_cam = camera.back_project(image_uv, depth_rel + root[..., None], intrinsics)
        return joints_cam, root, image_uv, conf

    return fn


def metadata(trainer, bone_lengths_mm) -> dict:
    return {
        "joint_names": list(skeleton.JOINT_NAMES),
        "parents": list(skeleton.PARENTS),
        "bones": [list(b) for b in skeleton.BONES],
        "flip_permutation": list(skeleton.FLIP_PERMUTATION),
        "input_size": trainer.codec.input_size,
        "input_dtype": "uint8 RGB, (b, S, S, 3); normalised inside the model",
        "image_mean": list(model_lib.IMAGE_MEAN),
        "image_std": list(model_lib.IMAGE_STD),
        "codec": {k: (list(v) if isinstance(v, tuple) else v) for k, v in trainer.codec.__dict__.items()},
        "mean_bone_lengths_mm": [float(v) for v in bone_lengths_mm],
        "outputs": {
            SIGNATURE_CROP: "joints (b,17,3): crop pixels u, v and root-relative depth mm; confidence (b,17)",
            SIGNATURE_CAMERA: "joints_cam (b,17,3) camera mm; root_depth_mm (b,); joints_image (b,17,2); "
                              "confidence (b,17). box = (centre u, centre v, side) px",
        },
    }


def export_saved_model(trainer, state: dict, bone_lengths_mm, out_dir: str,
                       platforms=("cpu", "cuda")) -> str:
    """Write the SavedModel to `out_dir` atomically (a failed export leaves any old one intact)."""
    import tensorflow as tf
    from jax.experimental import jax2tf

    bone_lengths_mm = np.asarray(bone_lengths_mm, np.float32)
    if bone_lengths_mm.shape != (len(skeleton.BONES),) or not np.all(bone_lengths_mm > 0):
        raise ValueError(f"bone_lengths_mm must be ({len(skeleton.BONES)},) positive mm; got {bone_lengths_mm}")
    s = trainer.codec.input_size
    variables = jax.device_get(variables_of(state))
    opts = dict(with_gradient=False, native_serialization_platforms=tuple(platforms))
    crop_tf = jax2tf.convert(make_crop_fn(trainer), polymorphic_shapes=[None, "(b, ...)"], **opts)
    cam_tf = jax2tf.convert(make_camera_fn(trainer, bone_lengths_mm),
                            polymorphic_shapes=[None, "(b, ...)", "(b, ...)", "(b, ...)"], **opts)
    meta = metadata(trainer, bone_lengths_mm)

    module = tf.Module()
    # A flat list: TF's trackable dicts need string keys, NNX state has integer ones (layer lists).
    leaves, treedef = jax.tree.flatten(variables)
    module.weights = [tf.Variable(x, trainable=False) for x in leaves]
    # Constants as non-trainable variables: plain tensors on a tf.Module are not saved.
    module.metadata_json = tf.Variable(json.dumps(meta), trainable=False)
    module.joint_names = tf.Variable(list(skeleton.JOINT_NAMES), trainable=False)
    module.parents = tf.Variable(list(skeleton.PARENTS), dtype=tf.int32, trainable=False)

    @tf.function(input_signature=[tf.TensorSpec([None, s, s, 3], tf.uint8, name="images")], autograph=False)
    def serve(images):
        joints, conf = crop_tf(jax.tree.unflatten(treedef, module.weights), images)
        return {"joints": joints, "confidence": conf}

    @tf.function(input_signature=[tf.TensorSpec([None, s, s, 3], tf.uint8, name="images"),
                                  tf.TensorSpec([None, 4], tf.float32, name="intrinsics"),
                                  tf.TensorSpec([None, 3], tf.float32, name="box")], autograph=False)
    def serve_camera(images, intrinsics, box):
        joints_cam, root, image_uv, conf = cam_tf(jax.tree.unflatten(treedef, module.weights), images, intrinsics, box)
        return {"joints_cam": joints_cam, "root_depth_mm": root, "joints_image": image_uv, "confidence": conf}

    module.serve, module.serve_camera = serve, serve_camera
    out_dir = os.path.abspath(out_dir)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".export-", dir=parent)
    try:
        asset_src = os.path.join(tmp, METADATA_ASSET)
        with open(asset_src, "w") as f:
            json.dump(meta, f, indent=2)
        module.metadata_asset = tf.saved_model.Asset(asset_src)
        saved = os.path.join(tmp, "saved_model")
        tf.saved_model.save(module, saved, signatures={SIGNATURE_CROP: serve, SIGNATURE_CAMERA: serve_camera})
        if os.path.exists(out_dir):
            old = out_dir + ".old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out_dir, old)
            os.replace(saved, out_dir)
            shutil.rmtree(old)
        else:
            os.replace(saved, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
