"""The one example contract shared by every dataset builder.

Each example:
  image       uint8 JPEG, H x W x 3: a frame, or a person region of one, as stored.
  joints_2d   float32 (17, 2): pixels (u, v) in `image` (pixel centres at integers).
  joints_3d   float32 (17, 3): camera frame, mm.
  intrinsics  float32 (4,): (fx, fy, cx, cy) valid for `image` as stored.
  distortion  float32 (5,): the lens's (k1, k2, k3, p1, p2) (`c2f_vol.camera`), in normalised
              coordinates, so valid with `intrinsics` of any crop of the frame; joints_2d are
              where the lens put the joints (distortion included). Zeros: a pinhole camera.
  joints_weight float32 (17,): 1 for a joint the source locates, 0 for one it does not
              (e.g. MPII has no spine joint, and leaves unseen limbs unannotated); such a
              joint's joints_2d / joints_3d are zeros and carry no meaning.
  joints_visible bool (17,): the source says the joint is seen (not occluded); True where a
              source does not say.
  has_3d      bool: joints_3d, intrinsics and distortion are real (False: 2D-only data such as
              MPII, whose joints_3d are zeros).
  subject, action, camera: strings; action is the canonical action ('Eating').
  sequence    string: the take as the source names it ('Eating 2'), so takes stay apart.
  frame       int32.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_datasets as tfds
from etils import epath

from c2f_vol import skeleton

J = skeleton.NUM_JOINTS


def example_features() -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(None, None, 3), dtype=tf.uint8, encoding_format="jpeg"),
        "joints_2d": tfds.features.Tensor(shape=(J, 2), dtype=tf.float32),
        "joints_3d": tfds.features.Tensor(shape=(J, 3), dtype=tf.float32),
        "intrinsics": tfds.features.Tensor(shape=(4,), dtype=tf.float32),
        "distortion": tfds.features.Tensor(shape=(5,), dtype=tf.float32),
        "joints_weight": tfds.features.Tensor(shape=(J,), dtype=tf.float32),
        "joints_visible": tfds.features.Tensor(shape=(J,), dtype=tf.bool),
        "has_3d": tfds.features.Scalar(dtype=tf.bool),
        "subject": tfds.features.Text(),
        "action": tfds.features.Text(),
        "sequence": tfds.features.Text(),
        "camera": tfds.features.Text(),
        "frame": tfds.features.Scalar(dtype=tf.int32),
    })


class OwnCodePath:
    """Mixin for this project's TFDS builders: `code_path` is the file that defines the builder.

    TFDS's own lookup needs the `importlib_resources` backport (not a dependency);
    the path only locates an optional checksums file beside the builder.
    """

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        import inspect

        return epath.Path(inspect.getfile(cls))
