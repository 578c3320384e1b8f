"""The data fields of the experiment config, without TensorFlow.

`c2f_vol.config.base_config` builds every config from these defaults, so
loading a config (and the model and train step it describes) does not import
TensorFlow; `c2f_vol.data.pipeline`, which does, re-exports both functions.
"""

from __future__ import annotations

import math

import ml_collections

# What the person-crop builders (human36m, mpii) store by default: square crops whose side is
# STORED_BOX_MARGIN x the joints' larger extent (>= `crop_reach` of the default recipe: 2.475), at
# STORED_CROP_SIZE px, i.e. 179 px per extent, about the network input's 183 (256 px for 1.4 x extent).
STORED_BOX_MARGIN = 2.5
STORED_CROP_SIZE = 448


def default_data_config() -> ml_collections.ConfigDict:
    """Data fields of the experiment config; defaults are the paper's training recipe."""
    return ml_collections.ConfigDict(dict(
        name="c2f_synthetic/procedural",
        data_dir=ml_collections.FieldReference(None, field_type=str),  # None = TFDS's default
        train_split="train",
        eval_split="test",
        # The one meaning of box_margin, here and in the builders and predict: a square crop's side over
        # the larger extent of the joints' bounding box (same centre). 1.4 > 1 / scale_clip[0], so even
        # the strongest zoom-in keeps every joint of an unrotated person inside the crop.
        box_margin=1.4,
        scale_sigma=0.25,         # box side x (1 + sigma N(0,1)), clipped to scale_clip
        scale_clip=(0.75, 1.25),
        rotation_sigma_deg=30.0,  # in-plane, clipped, applied with rotation_prob
        rotation_clip_deg=60.0,
        rotation_prob=0.4,
        flip_prob=0.5,
        color_gain=(0.8, 1.2),    # per-channel uniform factor
        shuffle_buffer=10_000,    # examples (JPEG bytes, not pixels)
        num_parallel_calls=-1,    # -1 = AUTOTUNE
        prefetch=2,               # batches; -1 = AUTOTUNE
        threads=0,                # tf.data private thread pool size; 0 = TensorFlow's default (all cores)
        # Training on several datasets: ((name, share), ...), e.g. (("human36m/stride5", 0.5), ("mpii", 0.5)).
        # Every batch takes round(share x batch) examples of each (name's train_split); empty: `name` alone.
        mix=(),
    ))


def crop_reach(data_config) -> float:
    """The side, over the joints' larger extent, of the square around the person box's centre that holds
    every crop this config's pipeline can cut: box_margin x the largest scale x the rotated square's reach.

    A square of side s rotated by t spans s (|cos t| + |sin t|) along each axis: at most sqrt(2) (t = 45
    degrees), less when rotations are clipped below 45 degrees. The pipeline refuses a dataset whose
    stored crops are smaller than this, since its crops would read black beyond the stored pixels.
    """
    c = resolve_data_config(data_config)
    t = 0.0
    if float(c.rotation_prob) > 0 and float(c.rotation_sigma_deg) > 0:
        t = math.radians(min(abs(float(c.rotation_clip_deg)), 45.0))
    return float(c.box_margin) * max(float(c.scale_clip[1]), 1.0) * (math.cos(t) + math.sin(t))


def resolve_data_config(data_config) -> ml_collections.ConfigDict:
    """`data_config` (ConfigDict or mapping) over the defaults; fields it lacks keep their default."""
    if isinstance(data_config, ml_collections.ConfigDict):
        given = data_config.to_dict()
    else:
        given = dict(data_config)
    config = default_data_config()
    for key, value in given.items():
        config[key] = value  # extra fields (other parts of a data block) are carried along
    return config
