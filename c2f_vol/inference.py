"""Inference: the network as pure functions of (variables, images).

Evaluation, export, prediction and the benchmarks all run the model through
this module; none of them needs the training step. Nothing here imports
TensorFlow.

  variables  {'params': pure dict, 'batch_stats': pure dict} (`variables_of(state)`)
  images     uint8 (B, S, S, 3) crops, normalised inside the model
  crop fn    (variables, images) -> joints (B, J, 3): crop pixels u, v and root-relative depth mm,
                                    confidence (B, J)
  camera fn  (variables, images, intrinsics (B, 4), box (B, 3)) -> camera-frame joints through the
             limb-length root-depth search (`rootdepth`)
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from c2f_vol import camera, model as model_lib, rootdepth
from c2f_vol.codec import VolumeCodec

PredictFn = Callable[[np.ndarray], np.ndarray]


class Network:
    """The model's structure for one experiment config: its codec, graph and parameter templates.

    Holds no weights: functions take the variables as arguments, so the same
    Network serves a freshly initialised state, a restored checkpoint and the
    SavedModel export.
    """

    def __init__(self, config):
        self.config = config
        self.codec = VolumeCodec.for_experiment(config)
        abstract = nnx.eval_shape(lambda: model_lib.create_model(config.model, self.codec, config.seed))
        # The abstract states are the templates that `module` fills with pure dicts.
        self.graphdef, self.abstract_params, self.abstract_stats = nnx.split(abstract, nnx.Param, nnx.BatchStat)
        self._jitted_crop_fn = None

    @property
    def num_params(self) -> int:
        return int(sum(np.prod(x.shape) for x in jax.tree.leaves(self.abstract_params)))

    def init_variables(self) -> dict:
        """Freshly initialised variables (pure dicts) from the config's seed."""
        model = model_lib.create_model(self.config.model, self.codec, self.config.seed)
        _, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
        return {"params": nnx.to_pure_dict(params), "batch_stats": nnx.to_pure_dict(batch_stats)}

    def module(self, params: dict, batch_stats: dict) -> nnx.Module:
        """The NNX model holding `params` and `batch_stats` (pure dicts); usable inside jit and grad."""
        params_state = jax.tree.map(lambda x: x, self.abstract_params)
        stats_state = jax.tree.map(lambda x: x, self.abstract_stats)
        nnx.replace_by_pure_dict(params_state, params)
        nnx.replace_by_pure_dict(stats_state, batch_stats)
        return nnx.merge(self.graphdef, params_state, stats_state)

    def logits(self, variables: dict, images) -> tuple:
        """Every stack's logits in inference mode (BatchNorm running statistics)."""
        model = self.module(variables["params"], variables["batch_stats"])
        model.eval()
        return model(images)

    def jitted_crop_fn(self):
        """`make_crop_fn(self)` under jit, compiled once and reused by every evaluation of this network."""
        if self._jitted_crop_fn is None:
            self._jitted_crop_fn = jax.jit(make_crop_fn(self))
        return self._jitted_crop_fn

    def predict_fn(self, variables: dict) -> PredictFn:
        """numpy images (B, S, S, 3) -> numpy (B, J, 3) crop predictions, for `evaluation.evaluate`."""
        fn = self.jitted_crop_fn()
        return lambda images: np.asarray(fn(variables, images)[0])


def variables_of(state: dict) -> dict:
    """The inference variables (pure dicts of arrays) of a train state."""
    return {"params": state["params"], "batch_stats": state["batch_stats"]}


def make_crop_fn(network: Network):
    """Pure JAX: (variables, images) -> (joints (b, J, 3) crop px + depth mm, confidence (b, J)).

    The last stack's logits are decoded by the codec's decoder (`VolumeCodec.decode_logits`).
    """
    codec = network.codec
    level = codec.num_levels - 1

    def fn(variables, images):
        coords, conf = codec.decode_logits(network.logits(variables, images)[level])
        uv, depth = codec.decode(coords, level)
        if depth is None:
            depth = jnp.zeros(uv.shape[:-1], jnp.float32)
        return jnp.concatenate([uv, depth[..., None]], axis=-1), conf

    return fn


def make_camera_fn(network: Network, bone_lengths_mm):
    """Pure JAX: (variables, images, intrinsics, box, distortion) -> (joints_cam, root_depth_mm,
    joints_image, confidence).

    `box` (b, 3) is (centre u, centre v, side) in pixels of the original image: the
    square region that was resized, without rotation, to the S x S input. `distortion`
    (b, 5) is that image's lens (k1, k2, k3, p1, p2), zeros for a pinhole camera: the
    network places joints where the lens imaged them (its labels did), so they are
    undistorted before the root search and the lifting; `joints_image` stays as predicted.
    """
    crop_fn = make_crop_fn(network)
    size = network.codec.input_size
    bones = jnp.asarray(bone_lengths_mm, jnp.float32)

    def fn(variables, images, intrinsics, box, distortion):
        joints, conf = crop_fn(variables, images)
        affine = camera.crop_affine(box[..., :2], box[..., 2], size)
        image_uv = camera.crop_to_image(joints[..., :2], affine)
        pinhole_uv = camera.undistort_pixels(image_uv, intrinsics, distortion)  # once: search and lifting
        root = rootdepth.estimate_root_depth(pinhole_uv, joints[..., 2], intrinsics, bones)
        cam = camera.back_project(pinhole_uv, joints[..., 2] + root[..., None], intrinsics)
        return cam, root, image_uv, conf

    return fn


def make_density_fn(network: Network):
    """Pure JAX: (variables, images) -> the finest stack's density (b, J, D, H, W), as its decoder reads it."""

    def fn(variables, images):
        return network.codec.density(network.logits(variables, images)[-1])

    return fn
