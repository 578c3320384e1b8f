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
names, parents and bones, the input size, image normalisation, the codec block,
the data block (the crops it was trained on) and the mean bone lengths, as
`metadata_json` and as the asset `c2f_vol.json`.

`ServedModel` is the one reader of an exported model (evaluation, prediction,
benchmarks). TensorFlow is imported inside the functions that need it, so the
JAX side of this module runs where TensorFlow is absent.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import jax
import numpy as np

from c2f_vol import inference, model as model_lib, skeleton

SIGNATURE_CROP = "serving_default"
SIGNATURE_CAMERA = "camera_frame"
METADATA_ASSET = "c2f_vol.json"


def metadata(network: inference.Network, bone_lengths_mm) -> dict:
    return {
        "joint_names": list(skeleton.JOINT_NAMES),
        "parents": list(skeleton.PARENTS),
        "bones": [list(b) for b in skeleton.BONES],
        "flip_permutation": list(skeleton.FLIP_PERMUTATION),
        "input_size": network.codec.input_size,
        "input_dtype": "uint8 RGB, (b, S, S, 3); normalised inside the model",
        "image_mean": list(model_lib.IMAGE_MEAN),
        "image_std": list(model_lib.IMAGE_STD),
        "codec": {k: (list(v) if isinstance(v, tuple) else v) for k, v in network.codec.__dict__.items()},
        "data": json.loads(network.config.data.to_json_best_effort()),
        "mean_bone_lengths_mm": [float(v) for v in bone_lengths_mm],
        "outputs": {
            SIGNATURE_CROP: "joints (b,17,3): crop pixels u, v and root-relative depth mm; confidence (b,17)",
            SIGNATURE_CAMERA: "joints_cam (b,17,3) camera mm; root_depth_mm (b,); joints_image (b,17,2); "
                              "confidence (b,17). box = (centre u, centre v, side) px",
        },
    }


def export_saved_model(network: inference.Network, variables: dict, bone_lengths_mm, out_dir: str,
                       platforms=("cpu", "cuda")) -> str:
    """Write the SavedModel to `out_dir` atomically (a failed export leaves any old one intact)."""
    import tensorflow as tf
    from jax.experimental import jax2tf

    bone_lengths_mm = np.asarray(bone_lengths_mm, np.float32)
    if bone_lengths_mm.shape != (len(skeleton.BONES),) or not np.all(bone_lengths_mm > 0):
        raise ValueError(f"bone_lengths_mm must be ({len(skeleton.BONES)},) positive mm; got {bone_lengths_mm}")
    s = network.codec.input_size
    variables = jax.device_get(variables)
    opts = dict(with_gradient=False, native_serialization_platforms=tuple(platforms))
    crop_tf = jax2tf.convert(inference.make_crop_fn(network), polymorphic_shapes=[None, "(b, ...)"], **opts)
    cam_tf = jax2tf.convert(inference.make_camera_fn(network, bone_lengths_mm),
                            polymorphic_shapes=[None, "(b, ...)", "(b, ...)", "(b, ...)"], **opts)
    meta = metadata(network, bone_lengths_mm)

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


class ServedModel:
    """An exported SavedModel, loaded with TensorFlow alone: its metadata and both signatures on numpy arrays."""

    def __init__(self, path: str):
        import tensorflow as tf

        if not os.path.isfile(os.path.join(path, "saved_model.pb")):
            raise FileNotFoundError(f"{path}: no saved_model.pb; expected a folder written by tools/export.py")
        self.path = os.path.abspath(path)
        self._tf = tf
        self._model = tf.saved_model.load(path)
        self.metadata = json.loads(self._model.metadata_json.numpy().decode())
        self.input_size = int(self.metadata["input_size"])
        self.bone_lengths_mm = np.asarray(self.metadata["mean_bone_lengths_mm"], np.float32)

    def crop(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`serving_default`: (joints (b, J, 3) crop px + relative depth mm, confidence (b, J))."""
        out = self._model.signatures[SIGNATURE_CROP](images=self._tf.constant(images))
        return out["joints"].numpy(), out["confidence"].numpy()

    def camera(self, images: np.ndarray, intrinsics: np.ndarray, box: np.ndarray) -> dict:
        """`camera_frame`: joints_cam, root_depth_mm, joints_image, confidence as numpy arrays."""
        tf = self._tf
        out = self._model.signatures[SIGNATURE_CAMERA](images=tf.constant(images), intrinsics=tf.constant(intrinsics),
                                                       box=tf.constant(box))
        return {k: v.numpy() for k, v in out.items()}

    def predict_fn(self):
        """numpy images -> numpy (b, J, 3) crop predictions, for `evaluation.evaluate`."""
        return lambda images: self.crop(images)[0]
