"""The data fields of the experiment config, without TensorFlow.

`c2f_vol.config.base_config` builds every config from these defaults, so
loading a config (and the model and train step it describes) does not import
TensorFlow; `c2f_vol.data.pipeline`, which does, re-exports both functions.
"""

from __future__ import annotations

import ml_collections


def default_data_config() -> ml_collections.ConfigDict:
    """Data fields of the experiment config; defaults are the paper's training recipe."""
    return ml_collections.ConfigDict(dict(
        name="c2f_synthetic/procedural",
        data_dir=ml_collections.FieldReference(None, field_type=str),  # None = TFDS's default
        train_split="train",
        eval_split="test",
        # Crop side / larger extent of the joints' bounding box. 1.4 > 1 / scale_clip[0], so even the
        # strongest zoom-in keeps every joint of an unrotated person inside the crop.
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
    ))


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
