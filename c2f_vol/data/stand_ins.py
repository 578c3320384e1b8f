"""In-memory stand-ins for the stored datasets, for measuring the input pipeline without them.

`stand_in_examples` renders `c2f_synthetic` examples and, for `human36m`, cuts
them into person crops with the builder's own geometry (`c2f_vol.data.crops`),
so the stand-ins have the stored image sizes, and therefore the decoding cost,
of the dataset they stand in for. `c2f_vol.benchmark.benchmark_pipeline` uses
them when the configured dataset is not prepared.
"""

from __future__ import annotations

import cv2
import numpy as np
import tensorflow as tf

from c2f_vol import camera
from c2f_vol.data import crops, human36m
from c2f_vol.data.synthetic import builder as synth


def _encode_jpeg(image: np.ndarray) -> bytes:
    """RGB uint8 -> JPEG bytes at quality 95, as TFDS's Image feature stores them."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    if not ok:
        raise RuntimeError("OpenCV failed to encode a synthetic frame as JPEG")
    return buf.tobytes()


def _builder_config(builder_cls, name: str):
    """The BuilderConfig `name` of a TFDS builder class ('' = its default)."""
    configs = {c.name: c for c in builder_cls.BUILDER_CONFIGS}
    name = name or builder_cls.DEFAULT_CONFIG_NAME
    if name not in configs:
        raise ValueError(f"{builder_cls.name} has no config named {name!r} (known: {', '.join(sorted(configs))})")
    return configs[name]


def stand_in_examples(data_name: str, num: int, seed: int = 0, frame_size: int = 0):
    """`num` rendered examples shaped like what the dataset `data_name` stores, held in memory.

    The pipeline's cost is mostly decoding, so it depends on the stored image:
      * c2f_synthetic/<config>: whole frames of that builder config's image_size;
      * human36m[/<config>]: person crops of that builder config (crop_size², box
        margin) cut from rendered frames of a Human3.6M camera's size, the way the
        builder cuts them from the videos;
      * frame_size > 0: whole frames of frame_size², whatever the dataset (for
        data you store as full frames yourself).
    Returns (a tf.data.Dataset of contract examples with JPEG images, a description of them).
    """
    family, _, variant = data_name.partition("/")
    crop = None
    if frame_size > 0:
        image_size = (frame_size, frame_size)
        what = f"synthetic {frame_size}x{frame_size} frames"
    elif family == synth.C2fSynthetic.name:
        image_size = _builder_config(synth.C2fSynthetic, variant).image_size
        what = f"synthetic {image_size[1]}x{image_size[0]} frames, as {data_name} stores them"
    elif family == human36m.Human36m.name:
        crop = _builder_config(human36m.Human36m, variant)
        cam = next(iter(camera.H36M_CAMERAS.values()))  # the video frames the builder crops from
        image_size = (cam.height, cam.width)
        what = (f"{crop.crop_size}x{crop.crop_size} person crops (box margin {crop.box_margin}) of synthetic "
                f"{cam.width}x{cam.height} frames, as human36m stores them")
    else:
        raise ValueError(f"no stand-in for dataset {data_name!r}: prepare it in config.data.data_dir, or pass "
                         f"frame_size > 0 for whole synthetic frames of that side")
    cfg = synth.C2fSyntheticConfig(name="bench", train_size=num, test_size=1, image_size=image_size, seed=seed)
    cols: dict[str, list] = {}
    for i in range(num):
        ex = synth.make_example(cfg, "train", i)
        if crop is not None:
            affines, joints_2d, intrinsics = crops.crop_geometry(
                ex["joints_2d"][None].astype(np.float64), ex["intrinsics"], crop.crop_size, crop.box_margin)
            ex["image"] = crops.crop_frame(ex["image"], affines[0], crop.crop_size)
            ex["joints_2d"] = joints_2d[0].astype(np.float32)
            ex["intrinsics"] = intrinsics[0].astype(np.float32)
        ex["image"] = _encode_jpeg(ex["image"])
        for k, v in ex.items():
            cols.setdefault(k, []).append(v)
    ds = tf.data.Dataset.from_tensor_slices({k: (v if k == "image" else np.stack(v)) for k, v in cols.items()})
    return ds, f"{num} JPEG {what}, in memory"
