"""SavedModel export through jax2tf, with the weights held as tf.Variables.

Signatures
  serving_default(images uint8 (b, S, S, 3)) ->
      joints      float32 (b, 17, 3): crop pixels (u, v) and root-relative depth in mm
      confidence  float32 (b, 17)
  camera_frame(images uint8 (b, S, S, 3), intrinsics (b, 4), box (b, 3)) ->
      joints_cam  float32 (b, 17, 3): camera-frame mm, root depth from the limb-length search
      root_depth_mm (b,), joints_image (b, 17, 2) pixels in the original image, confidence (b, 17)
  camera_frame_distorted(images, intrinsics, box, distortion (b, 5)) -> the same outputs,
      for an image whose lens distortion (k1, k2, k3, p1, p2) is known: the predicted pixels
      (where the lens imaged the joints, as in the training labels) are undistorted before
      the root search and the lifting. camera_frame is this with zeros (a pinhole camera).
  `box` is (centre u, centre v, side) in pixels of the original image: the square
  region that was resized (without rotation) to the S x S input.
  A SavedModel signature cannot leave an input out, so the optional distortion is a second
  signature; the restored object's `camera_frame(images, intrinsics, box, distortion=None)`
  (a tf.function traced both ways) takes it as an optional argument.
  A batch of 0 returns empty outputs, (0, 17, 3) etc. Bad input fails before the network
  runs with an InvalidArgumentError of ~300 characters whose text holds
  "assertion failed: [<signature>: <what is wrong>]", e.g.
      serving_default: images must be uint8 (b, 64, 64, 3); got (1, 63, 63, 3)
      camera_frame: images, intrinsics and box must have the same batch size; got 2, 1 and 2
      camera_frame: intrinsics need focal lengths fx, fy > 0 px; row 0 (fx, fy, cx, cy) = (0, 0, 320, 240)
      camera_frame: box needs side > 0 px; row 1 (centre u, centre v, side) = (320, 240, -50)
      camera_frame_distorted: distortion must be float32 (b, 5); got (2, 4)
  (also a wrong intrinsics (b, 4) or box (b, 3) shape; NaN focal lengths and sides fail too).
  The input specs fix the dtypes, and name the ranks with every size open (ranks and sizes
  are the checks' to refuse): a wrong dtype is refused by TensorFlow itself in ~200 characters,
  "... input #1(zero-based) was expected to be a uint8 tensor but is a float tensor",
  counting inputs in name order (camera_frame: box #0, images #1, intrinsics #2).

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
SIGNATURE_CAMERA_DISTORTED = "camera_frame_distorted"
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
                            polymorphic_shapes=[None, "(b, ...)", "(b, ...)", "(b, ...)", "(b, ...)"], **opts)
    meta = metadata(network, bone_lengths_mm)

    module = tf.Module()
    # A flat list: TF's trackable dicts need string keys, NNX state has integer ones (layer lists).
    leaves, treedef = jax.tree.flatten(variables)
    module.weights = [tf.Variable(x, trainable=False) for x in leaves]
    # Constants as non-trainable variables: plain tensors on a tf.Module are not saved.
    module.metadata_json = tf.Variable(json.dumps(meta), trainable=False)
    module.joint_names = tf.Variable(list(skeleton.JOINT_NAMES), trainable=False)
    module.parents = tf.Variable(list(skeleton.PARENTS), dtype=tf.int32, trainable=False)

    # Every size is open in the specs, so that a wrong shape reaches the checks: a loaded signature
    # checks neither sizes nor rank (with [None, s, s, 3] a 63 x 63 batch reached XlaCallModule,
    # whose refusal is ~20 KB of MLIR), and the loaded tf.function refused one with a binding
    # TypeError. A wrong dtype is TF's to refuse, in one line.
    @tf.function(input_signature=[tf.TensorSpec([None] * 4, tf.uint8, name="images")], autograph=False)
    def serve(images):
        images = _checked_images(tf, SIGNATURE_CROP, images, s)

        def run():
            joints, conf = crop_tf(jax.tree.unflatten(treedef, module.weights), images)
            return {"joints": joints, "confidence": conf}

        return _empty_if_no_batch(tf, tf.shape(images)[0], run, _crop_outputs())

    # Both camera signatures check their inputs, then call this one traced function (one conversion).
    @tf.function(input_signature=[tf.TensorSpec([None, s, s, 3], tf.uint8), tf.TensorSpec([None, 4], tf.float32),
                                  tf.TensorSpec([None, 3], tf.float32), tf.TensorSpec([None, 5], tf.float32)],
                 autograph=False)
    def camera_core(images, intrinsics, box, distortion):
        def run():
            joints_cam, root, image_uv, conf = cam_tf(jax.tree.unflatten(treedef, module.weights), images,
                                                      intrinsics, box, distortion)
            return {"joints_cam": joints_cam, "root_depth_mm": root, "joints_image": image_uv, "confidence": conf}

        return _empty_if_no_batch(tf, tf.shape(images)[0], run, _camera_outputs())

    def camera_outputs(signature, images, intrinsics, box, distortion):
        images = _checked_images(tf, signature, images, s)
        intrinsics, box, distortion = _checked_camera(tf, signature, tf.shape(images)[0], intrinsics, box,
                                                      distortion)
        return camera_core(images, intrinsics, box, distortion)

    camera_specs = [tf.TensorSpec([None] * 4, tf.uint8, name="images"),
                    tf.TensorSpec([None, None], tf.float32, name="intrinsics"),
                    tf.TensorSpec([None, None], tf.float32, name="box")]

    @tf.function(input_signature=camera_specs, autograph=False)
    def serve_camera(images, intrinsics, box):
        return camera_outputs(SIGNATURE_CAMERA, images, intrinsics, box, None)

    @tf.function(input_signature=camera_specs + [tf.TensorSpec([None, None], tf.float32, name="distortion")],
                 autograph=False)
    def serve_camera_distorted(images, intrinsics, box, distortion):
        return camera_outputs(SIGNATURE_CAMERA_DISTORTED, images, intrinsics, box, distortion)

    @tf.function(autograph=False)
    def camera_frame(images, intrinsics, box, distortion=None):
        if distortion is None:
            return serve_camera(images, intrinsics, box)
        return serve_camera_distorted(images, intrinsics, box, distortion)

    for args in (camera_specs, camera_specs + [tf.TensorSpec([None, None], tf.float32, name="distortion")]):
        camera_frame.get_concrete_function(*args)
    module.serve, module.serve_camera, module.serve_camera_distorted = serve, serve_camera, serve_camera_distorted
    module.camera_frame = camera_frame
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
        tf.saved_model.save(module, saved, signatures={SIGNATURE_CROP: serve, SIGNATURE_CAMERA: serve_camera,
                                                       SIGNATURE_CAMERA_DISTORTED: serve_camera_distorted})
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


# Each signature's outputs without the batch dimension: what a batch of 0 returns, as (0, ...) zeros.
def _crop_outputs() -> dict:
    j = skeleton.NUM_JOINTS
    return {"joints": (j, 3), "confidence": (j,)}


def _camera_outputs() -> dict:
    j = skeleton.NUM_JOINTS
    return {"joints_cam": (j, 3), "root_depth_mm": (), "joints_image": (j, 2), "confidence": (j,)}


def _shape_text(tf, x):
    """'(1, 63, 63, 3)': the runtime shape of `x` as a string tensor."""
    return tf.strings.join(["(", tf.strings.reduce_join(tf.strings.as_string(tf.shape(x)), separator=", "), ")"])


def _values_text(tf, row):
    return tf.strings.join(["(", tf.strings.reduce_join(tf.strings.as_string(row, shortest=True), separator=", "), ")"])


def _require(tf, ok, message, x):
    """`x` once `ok` holds; else the call fails with `message` (a string tensor, built only on failure).

    The failure is an Assert op, so the client's InvalidArgumentError reads
    "assertion failed: [<message>]" in a few hundred characters.
    """
    text = tf.cond(ok, lambda: tf.constant(""), message)
    with tf.control_dependencies([tf.debugging.Assert(ok, [text])]):
        return tf.identity(x)


def _has_shape(tf, x, want):
    """Whether `x` has rank len(want) and those sizes (None: any), as a boolean tensor; any rank is safe."""
    shape = tf.shape(x, out_type=tf.int64)
    padded = tf.concat([shape, tf.fill([len(want)], tf.constant(-1, tf.int64))], 0)[:len(want)]
    ok = tf.equal(tf.size(shape), len(want))
    for i, w in enumerate(want):
        if w is not None:
            ok = tf.logical_and(ok, tf.equal(padded[i], w))
    return ok


def _checked_images(tf, signature, images, size):
    """`images` with static shape (None, S, S, 3) once its runtime shape is (b, S, S, 3), else a named error."""
    images = _require(tf, _has_shape(tf, images, (None, size, size, 3)), lambda: tf.strings.join(
        [f"{signature}: images must be uint8 (b, {size}, {size}, 3); got ", _shape_text(tf, images)]), images)
    return tf.ensure_shape(images, [None, size, size, 3])


def _checked_camera(tf, name, batch, intrinsics, box, distortion=None):
    """`intrinsics` (b, 4), `box` (b, 3) and `distortion` (b, 5) (zeros when None) for the images' batch b,
    fx, fy > 0, side > 0 and a finite distortion; else a named error."""

    def checked_shape(x, what, width):
        x = _require(tf, _has_shape(tf, x, (None, width)), lambda: tf.strings.join(
            [f"{name}: {what} must be float32 (b, {width}); got ", _shape_text(tf, x)]), x)
        return tf.ensure_shape(x, [None, width])

    intrinsics = checked_shape(intrinsics, "intrinsics (fx, fy, cx, cy)", 4)
    box = checked_shape(box, "box (centre u, centre v, side)", 3)
    given = [tf.cast(batch, tf.int32), tf.shape(intrinsics)[0], tf.shape(box)[0]]
    names = ["images", "intrinsics", "box"]
    if distortion is None:
        distortion = tf.zeros([tf.shape(intrinsics)[0], 5], tf.float32)
    else:
        distortion = checked_shape(distortion, "distortion (k1, k2, k3, p1, p2)", 5)
        given.append(tf.shape(distortion)[0])
        names.append("distortion")
    sizes = tf.stack(given)
    listed = ", ".join(names[:-1]) + " and " + names[-1]
    got = ", ".join(["{}"] * (len(names) - 1)) + " and {}"
    box = _require(tf, tf.reduce_all(tf.equal(sizes, sizes[0])), lambda: tf.strings.format(
        f"{name}: {listed} must have the same batch size; got {got}", tf.unstack(sizes)), box)

    def first_bad(x, good, what):
        i = tf.argmin(tf.cast(good, tf.int32))
        return tf.strings.join(["; row ", tf.strings.as_string(i), f" {what} = ", _values_text(tf, x[i])])

    # Written as "x > 0" so that NaN fails too; over a batch of 0 both hold.
    focal_ok = tf.logical_and(intrinsics[:, 0] > 0, intrinsics[:, 1] > 0)
    intrinsics = _require(tf, tf.reduce_all(focal_ok), lambda: tf.strings.join(
        [f"{name}: intrinsics need focal lengths fx, fy > 0 px",
         first_bad(intrinsics, focal_ok, "(fx, fy, cx, cy)")]), intrinsics)
    side_ok = box[:, 2] > 0
    box = _require(tf, tf.reduce_all(side_ok), lambda: tf.strings.join(
        [f"{name}: box needs side > 0 px", first_bad(box, side_ok, "(centre u, centre v, side)")]), box)
    finite = tf.reduce_all(tf.math.is_finite(distortion), axis=-1)
    distortion = _require(tf, tf.reduce_all(finite), lambda: tf.strings.join(
        [f"{name}: distortion must be finite", first_bad(distortion, finite, "(k1, k2, k3, p1, p2)")]), distortion)
    return intrinsics, box, distortion


def _empty_if_no_batch(tf, batch, run, outputs: dict):
    """`run()` for a batch of one or more; for a batch of 0, zeros of shape (0, ...) for each output
    (the converted function's shape polymorphism takes b >= 1, and a 0 reaching it fails)."""

    def empty():
        return {k: tf.zeros((0,) + tuple(shape), tf.float32) for k, shape in outputs.items()}

    def checked_run():
        out = run()
        got = {k: tuple(v.shape[1:]) for k, v in out.items()}
        if got != {k: tuple(shape) for k, shape in outputs.items()}:
            raise ValueError(f"the converted function's outputs {got} differ from the declared {outputs}")
        return out

    return tf.cond(batch > 0, checked_run, empty)


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

    def camera(self, images: np.ndarray, intrinsics: np.ndarray, box: np.ndarray, distortion=None) -> dict:
        """`camera_frame` (`camera_frame_distorted` when `distortion` (b, 5) is given): joints_cam,
        root_depth_mm, joints_image, confidence as numpy arrays."""
        tf = self._tf
        inputs = dict(images=tf.constant(images), intrinsics=tf.constant(intrinsics), box=tf.constant(box))
        if distortion is None:
            out = self._model.signatures[SIGNATURE_CAMERA](**inputs)
        else:
            if SIGNATURE_CAMERA_DISTORTED not in self._model.signatures:
                raise ValueError(f"{self.path} was exported before lens distortion was supported (no "
                                 f"{SIGNATURE_CAMERA_DISTORTED} signature); export it again with tools/export.py")
            out = self._model.signatures[SIGNATURE_CAMERA_DISTORTED](
                **inputs, distortion=tf.constant(np.asarray(distortion, np.float32)))
        return {k: v.numpy() for k, v in out.items()}

    def predict_fn(self):
        """numpy images -> numpy (b, J, 3) crop predictions, for `evaluation.evaluate`."""
        return lambda images: self.crop(images)[0]
