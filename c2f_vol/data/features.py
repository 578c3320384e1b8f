"""The one example contract shared by every dataset builder.

Each example:
  image       uint8 JPEG, H x W x 3: a frame, or a person region of one, as stored.
  joints_2d   float32 (17, 2): pixels (u, v) in `image` (pixel centres at integers).
  joints_3d   float32 (17, 3): camera frame, mm.
  intrinsics  float32 (4,): (fx, fy, cx, cy) valid for `image` as stored.
  subject, action, camera: strings.
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
        "subject": tfds.features.Text(),
        "action": tfds.features.Text(),
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
