"""Decoding matches training: the tiny model trained on each loss, decoded by each decoder."""

import jax
import numpy as np
import pytest

from c2f_vol import config as config_lib, train
from c2f_vol.codec import VolumeCodec
from conftest import REPO

TINY = str(REPO / "configs" / "synthetic_cpu.py:tiny")


def _batch(config, n=4, seed=0):
    """One fixed batch: random images and joints well inside the crop and the depth range."""
    rng = np.random.default_rng(seed)
    s = config.codec.input_size
    return {
        "image": rng.integers(0, 255, (n, s, s, 3), dtype=np.uint8),
        "joints_uv": rng.uniform(0.2 * s, 0.8 * s, (n, 17, 2)).astype(np.float32),
        "depth_rel_mm": rng.uniform(-600, 600, (n, 17)).astype(np.float32),
        "mask": np.ones((n,), np.float32),
    }


def _fit(overrides, steps, batch=None):
    """Train the tiny model on one repeated batch; returns (trainer, state, batch, metrics per step)."""
    config = config_lib.load(TINY, {"num_train_steps": steps, "optim.schedule": "constant",
                                    "num_devices": 1, **overrides})
    trainer = train.Trainer(config)
    state = trainer.init_state()
    batch = batch if batch is not None else _batch(config)
    placed = trainer.put(batch)
    history = []
    for _ in range(steps):
        state, metrics = trainer.train_step(state, placed)
        history.append({k: float(v) for k, v in jax.device_get(metrics).items()})
    return trainer, state, batch, history


def _last_level_logits(trainer, state, images):
    model = trainer.network.module(state["params"], state["batch_stats"])
    model.train()  # the batch statistics of this very batch: the test is about the decoder, not BN
    return model(images)[-1]


@pytest.mark.slow
def test_heatmap_loss_is_decoded_better_by_argmax_local():
    config = config_lib.load(TINY)
    trainer, state, batch, history = _fit({"loss.kind": "heatmap", "codec.decoder": "auto",
                                           "optim.learning_rate": 1e-2}, 200, _batch(config, n=2))
    codec = trainer.codec
    assert codec.decoder == "argmax_local"
    assert history[-1]["heatmap"] < 0.3 * history[0]["heatmap"], (history[0], history[-1])
    logits = _last_level_logits(trainer, state, batch["image"])
    target = np.asarray(codec.encode(batch["joints_uv"], batch["depth_rel_mm"])[-1])
    err = {}
    for name in ("argmax_local", "soft_argmax"):
        coords, _ = VolumeCodec(**{**codec.__dict__, "decoder": name}).decode_logits(logits)
        err[name] = float(np.linalg.norm(np.asarray(coords) - target, axis=-1).mean())
    assert err["argmax_local"] < 0.6 * err["soft_argmax"], err


@pytest.mark.slow
def test_mixed_loss_trains_the_coordinates_as_well_as_the_integral_loss():
    """integral + JS reaches integral's coordinate loss; integral + raw MSE (the old 'both') stalls."""
    steps, lr = 80, {"optim.learning_rate": 1e-2}
    batch = _batch(config_lib.load(TINY), n=2)
    _, _, _, integral = _fit({"loss.kind": "integral", **lr}, steps, batch)
    _, _, _, both = _fit({"loss.kind": "both", "loss.mix_heatmap": "js", **lr}, steps, batch)
    _, _, _, old = _fit({"loss.kind": "both", "loss.mix_heatmap": "mse", **lr}, steps, batch)
    first, want, got = integral[0]["integral"], integral[-1]["integral"], both[-1]["integral"]
    assert want < 0.2 * first, (first, want)
    assert got <= 1.1 * want, (got, want)
    assert both[-1]["js"] < 0.5 * both[0]["js"]
    assert old[-1]["integral"] > 3 * want, (old[-1]["integral"], want)
