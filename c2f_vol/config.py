"""The base experiment config. Files in configs/ start from it and change a few fields.

Every hyperparameter lives here or in a config file, not in code. Configs are
loaded with `lock_config=True`, so a misspelt override fails loudly.
"""

from __future__ import annotations

import importlib.util
import os

import ml_collections

from c2f_vol.data import data_config


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0

    # The volumetric representation (c2f_vol.codec.VolumeCodec).
    # target: 'continuous' Gaussians of `sigma` voxels, or the released code's 'paper' targets (13-voxel
    # window, sigma 3.25, one-hot z at D <= 4). decoder: 'auto' follows loss.kind (argmax_local for
    # 'heatmap', soft_argmax otherwise), or 'soft_argmax' / 'argmax_local'.
    c.codec = ml_collections.ConfigDict(dict(
        input_size=256, heatmap_size=(64, 64), depth_bins=(1, 2, 4, 64),
        depth_range_mm=1000.0, sigma=2.0, sigma_z_min=0.5, target="continuous", paper_window=13,
        decoder="auto"))

    # The network (c2f_vol.model.StackedHourglass); num_stacks == len(codec.depth_bins).
    # arch: 'uniform' (Newell's hourglass: one width, additive feedback, num_residual blocks per branch)
    # or 'released' (the released c2f-vol hg-stacked-N: three residuals per branch, 2x-wide hourglass
    # outputs, lin-lin heads, concatenation feedback; num_residual does not apply). bn_momentum 0.9 is
    # Torch's BatchNorm momentum (0.1) that the original code trained with.
    c.model = ml_collections.ConfigDict(dict(
        arch="uniform", num_stacks=4, features=256, hourglass_depth=4, num_residual=1, num_joints=17,
        dtype="float32", bn_momentum=0.9))

    # Losses (c2f_vol.losses.compute_loss): 'heatmap' (the paper's raw-logit MSE, decoded by argmax_local),
    # 'integral' (soft-argmax L1 on coordinates) or 'both' (integral + heatmap_weight x mix_heatmap, where
    # 'js' is DSNT's Jensen-Shannon regulariser on the softmax volume and 'mse' the raw MSE, which stalls).
    c.loss = ml_collections.ConfigDict(dict(
        kind="integral", heatmap_weight=1.0, integral_weight=1.0, mix_heatmap="js",
        stack_weights=ml_collections.FieldReference(None, field_type=tuple)))

    # Optimiser (c2f_vol.optim): the paper's RMSprop at 2.5e-4, no decay.
    c.optim = ml_collections.ConfigDict(dict(
        name="rmsprop", learning_rate=2.5e-4, schedule="constant", warmup_steps=0,
        final_lr_fraction=0.0, step_decay_at=(0.75,), step_decay_factor=0.1,
        weight_decay=0.0, grad_clip_norm=0.0, rmsprop_decay=0.99, b1=0.9, b2=0.999, eps=1e-8,
        # RMSprop: False adds eps after the square root, as Torch7's RMSprop (the paper's) does;
        # True puts it inside (optax's default).
        eps_in_sqrt=False,
        # One flat vector per optimiser slot (optax.flatten): fewer, larger operations, which pays
        # where there are many small parameters; the concatenation and copies cost more than they
        # save for the 53M-parameter released network (optim.make_optimizer). Part of the train
        # state's layout, so a resume keeps it.
        flatten=True))

    # Data (c2f_vol.data.pipeline).
    c.data = data_config.default_data_config()

    # Loop.
    c.batch_size = 4             # global, across all devices and hosts
    c.num_train_steps = 100_000
    c.log_every = 50
    c.checkpoint_every = 1000
    c.keep_checkpoints = 3
    c.eval_every = 5000
    c.eval_batch_size = 32
    c.eval_max_examples = 2000   # periodic evaluation subsample; 0 = the whole split
    c.bone_length_examples = 20000  # training examples averaged for the mean bone lengths
    c.num_devices = ml_collections.FieldReference(None, field_type=int)  # None = all visible
    return c


def load(spec: str, overrides: dict | None = None) -> ml_collections.ConfigDict:
    """Load `path/to/config.py[:variant]` as config_flags would, locked, with optional overrides.

    Overrides are dotted keys (`{"optim.learning_rate": 1e-3}`); an unknown key raises.
    """
    path, _, variant = spec.partition(":")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path} not found (expected configs/NAME.py[:variant])")
    mod_spec = importlib.util.spec_from_file_location(f"_c2f_config_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    config = module.get_config(variant) if variant else module.get_config()
    config.lock()
    for key, value in (overrides or {}).items():
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        if leaf not in node:
            raise KeyError(f"config override {key!r}: no such field in {path}")
        node[leaf] = value
    return config
