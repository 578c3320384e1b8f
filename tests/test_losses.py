import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from c2f_vol import losses
from c2f_vol.codec import VolumeCodec
from c2f_vol.model import create_model

CODEC = VolumeCodec(input_size=32, heatmap_size=(8, 8), depth_bins=(1, 4), depth_range_mm=1000.0, sigma=1.0)
J = 3
BOTH = dict(kind="both", heatmap_weight=1.0, integral_weight=1.0)


MIDDLE_XY = ((3.0, 3.5), (3.5, 4.0), (4.0, 3.0))

# The losses run jitted (as the train step runs them), one compilation per loss config and input
# shape, and the test inputs are built in NumPy: op by op, JAX compiles every op on its first
# shape, which was most of these tests' time.
_JITTED_LOSSES = {}
_draw_targets = jax.jit(CODEC.gaussian_targets, static_argnums=1)


def _loss(logits, batch, cfg):
    """losses.compute_loss(logits, batch, CODEC, cfg) under jax.jit, compiled once per config and shapes."""
    key = repr(sorted(dict(cfg.items()).items()))
    if key not in _JITTED_LOSSES:
        _JITTED_LOSSES[key] = jax.jit(lambda lg, b: losses.compute_loss(lg, b, CODEC, cfg))
    return _JITTED_LOSSES[key](logits, batch)


def _batch(shift_x=0.0, depth_mm=(0.0, 250.0, -250.0), mask=(1.0, 1.0), xy=MIDDLE_XY):
    """Two samples of J joints; by default near the middle of the crop (voxels well inside the volume)."""
    xy = np.array(xy, np.float32)
    xy = np.stack([xy, xy[::-1]]) + np.array([shift_x, 0.0], np.float32)
    return {
        "joints_uv": jnp.asarray(CODEC.heatmap_to_crop(xy)),
        "depth_rel_mm": jnp.asarray(np.tile(np.array(depth_mm, np.float32), (2, 1))),
        "mask": jnp.asarray(mask, jnp.float32),
    }


def _levels(batch):
    """The batch's voxel coordinates per level (NumPy float32)."""
    return CODEC.encode(np.asarray(batch["joints_uv"]), np.asarray(batch["depth_rel_mm"]))


def _log_gaussians(batch, sharpness=0.25):
    """Logits (NumPy) that are sharp log-Gaussians (sigma `sharpness` voxels) at the true coordinates."""
    out = []
    for level, coords in enumerate(_levels(batch)):
        d = CODEC.depth_bins[level]
        h, w = CODEC.heatmap_size
        grids = [np.arange(n, dtype=np.float32) for n in (w, h, d)]
        sq = (grids[0] - coords[..., 0, None])[..., None, None, :] ** 2
        sq = sq + (grids[1] - coords[..., 1, None])[..., None, :, None] ** 2
        if d > 1:
            sq = sq + (grids[2] - coords[..., 2, None])[..., :, None, None] ** 2
        out.append(np.broadcast_to(-0.5 * sq / sharpness ** 2, coords.shape[:2] + (d, h, w)).astype(np.float32))
    return out


def _targets(batch):
    return [_draw_targets(c, i) for i, c in enumerate(_levels(batch))]


def test_heatmap_loss_is_zero_at_targets_and_positive_elsewhere():
    batch = _batch()
    loss, metrics = _loss(_targets(batch), batch, dict(kind="heatmap"))
    assert float(loss) == pytest.approx(0.0, abs=1e-12)
    assert set(metrics) == {"loss", "heatmap", "heatmap/stack0", "heatmap/stack1"}
    off, _ = _loss(_targets(_batch(shift_x=1.0)), batch, dict(kind="heatmap"))
    zeros = [np.zeros(t.shape, np.float32) for t in _targets(batch)]
    empty, _ = _loss(zeros, batch, dict(kind="heatmap"))
    assert 0.0 < float(off) < float(empty)


def test_integral_loss_is_zero_at_truth_and_grows_with_displacement():
    batch = _batch()
    values = []
    for shift in (0.0, 0.5, 1.0, 2.0):
        loss, metrics = _loss(_log_gaussians(_batch(shift_x=shift)), batch, dict(kind="integral"))
        values.append(float(loss))
        # Each stack is off by shift / W in normalised x only.
        for i in range(2):
            assert float(metrics[f"integral/stack{i}"]) == pytest.approx(shift / 8, abs=1e-4)
    assert values[0] == pytest.approx(0.0, abs=1e-4)
    assert values == sorted(values) and values[-1] > values[1] > 0


def test_integral_depth_is_normalised_by_level_size():
    # A 500 mm depth error is a quarter of the 2 m range at every level with depth.
    batch = _batch(depth_mm=(0.0, 0.0, 0.0))
    logits = _log_gaussians(_batch(depth_mm=(500.0, 500.0, 500.0)))
    _, metrics = _loss(logits, batch, dict(kind="integral"))
    assert float(metrics["integral/stack0"]) == pytest.approx(0.0, abs=1e-4)
    assert float(metrics["integral/stack1"]) == pytest.approx(0.25, abs=1e-3)


@pytest.mark.parametrize("kind", ["heatmap", "integral"])
def test_depth_free_stack_ignores_depth(kind):
    logits = _log_gaussians(_batch()) if kind == "integral" else _targets(_batch())
    _, near = _loss(logits, _batch(), dict(kind=kind))
    _, far = _loss(logits, _batch(depth_mm=(600.0, -700.0, 900.0)), dict(kind=kind))
    assert float(near[f"{kind}/stack0"]) == pytest.approx(float(far[f"{kind}/stack0"]), abs=1e-7)
    assert float(far[f"{kind}/stack1"]) > float(near[f"{kind}/stack1"]) + 1e-3


def test_mask_excludes_padding():
    batch = _batch()
    masked = dict(batch, mask=np.array([1.0, 0.0], np.float32))
    only0 = {k: np.asarray(v)[:1] for k, v in batch.items()}
    rng = np.random.default_rng(0)
    for kind in ("heatmap", "integral"):
        # Logits at which this kind's loss is ~0; sample 1 gets garbage that, masked out, must not count.
        good = [np.asarray(lg) for lg in (_targets(batch) if kind == "heatmap" else _log_gaussians(batch))]
        bad = [lg.copy() for lg in good]
        for lg in bad:
            lg[1] = rng.normal(size=lg.shape[1:]) * 5
        got, _ = _loss(bad, masked, dict(kind=kind))
        want, _ = _loss([lg[:1] for lg in good], only0, dict(kind=kind))
        assert float(got) == pytest.approx(float(want), rel=1e-6, abs=1e-6)
        unmasked, _ = _loss(bad, batch, dict(kind=kind))
        assert float(unmasked) > float(got) + 1e-3
        none, _ = _loss(bad, dict(batch, mask=np.zeros(2, np.float32)), dict(kind=kind))
        assert float(none) == 0.0


def test_weights_and_kinds_combine():
    batch = _batch()
    logits = [lg + np.float32(0.3) for lg in _log_gaussians(_batch(shift_x=1.0))]
    _, m = _loss(logits, batch, BOTH)
    cfg = ml_collections.ConfigDict(dict(kind="both", heatmap_weight=2.0, integral_weight=0.5,
                                         stack_weights=[0.0, 3.0]))
    loss, m2 = _loss(logits, batch, cfg)
    want = 2.0 * 3.0 * float(m["js/stack1"]) + 0.5 * 3.0 * float(m["integral/stack1"])
    assert float(loss) == pytest.approx(float(want), rel=1e-6)
    assert float(m2["loss"]) == float(loss)
    # The raw-MSE mix is still there to reproduce the old behaviour.
    mse, m3 = _loss(logits, batch, dict(BOTH, mix_heatmap="mse"))
    assert set(m3) == {"loss", "heatmap", "heatmap/stack0", "heatmap/stack1", "integral", "integral/stack0",
                       "integral/stack1"}
    assert float(mse) == pytest.approx(float(m3["heatmap"]) + float(m3["integral"]), rel=1e-6)


@functools.partial(jax.jit, static_argnums=2)
def _js_at_target_far_and_flat(coords, far_logits, level):
    """js_divergence at level `level` of: log of the normalised target, `far_logits`, a flat volume."""
    target = CODEC.gaussian_targets(coords, level)
    q = target / target.sum(axis=(2, 3, 4), keepdims=True)
    js = functools.partial(losses.js_divergence, coords=coords, codec=CODEC, level=level)
    return js(jnp.log(q)), js(far_logits), js(jnp.zeros_like(target))  # softmax(log q) == q


def test_js_divergence_bounds_and_minimum():
    batch = _batch()
    far_logits = _log_gaussians(_batch(shift_x=3.0))
    for i, coords in enumerate(_levels(batch)):
        at_target, far, flat = _js_at_target_far_and_flat(coords, far_logits[i] * 20, i)
        np.testing.assert_allclose(np.asarray(at_target), 0.0, atol=1e-6)
        # A wrong sharp peak is near the maximum ln 2; a flat volume in between.
        assert np.all(np.asarray(far) <= np.log(2) + 1e-6) and np.all(np.asarray(far) > 0.5)
        assert np.all((np.asarray(flat) > 1e-3) & (np.asarray(flat) < np.asarray(far)))


def test_mixed_loss_gradient_reaches_logits_through_both_terms():
    batch = _batch(shift_x=0.7)
    logits = [lg * np.float32(0.1) for lg in _log_gaussians(_batch())]

    def grads(cfg):
        return jax.jit(jax.grad(lambda lg: losses.compute_loss(lg, batch, CODEC, cfg)[0]))(logits)

    g_both = grads(dict(BOTH, heatmap_weight=2.0, integral_weight=0.5))
    g_int = grads(dict(kind="integral"))
    g_js = grads(dict(BOTH, heatmap_weight=1.0, integral_weight=0.0))
    for gb, gi, gj in zip(*(map(np.asarray, g) for g in (g_both, g_int, g_js))):
        assert np.abs(gi).max() > 1e-6 and np.abs(gj).max() > 1e-6
        np.testing.assert_allclose(gb, 0.5 * gi + 2.0 * gj, rtol=1e-4, atol=1e-9)
        # The two terms push differently (not one scaled copy of the other).
        cos = float(np.sum(gi * gj) / (np.linalg.norm(gi) * np.linalg.norm(gj)))
        assert cos < 0.99


def test_jit_grad_finite_and_float32_from_bfloat16():
    batch = _batch(shift_x=0.7)
    logits = [np.asarray(lg).astype(jnp.bfloat16) for lg in _targets(_batch())]
    fn = jax.jit(jax.value_and_grad(lambda lg: losses.compute_loss(lg, batch, CODEC, BOTH)[0]))
    loss, grads = fn(logits)
    assert loss.dtype == jnp.float32 and float(loss) > 0
    grads = [np.asarray(g, np.float32) for g in grads]
    assert all(np.all(np.isfinite(g)) and np.abs(g).max() > 0 for g in grads)


@pytest.mark.parametrize("cfg,match", [
    (dict(kind="mse"), "kind must be one of"),
    (dict(kind="both", stack_weights=[1.0]), "stack_weights has 1 entries"),
    (dict(kind="both", heatmap_wieght=1.0), "unknown keys \\['heatmap_wieght'\\]"),
    (dict(kind="both", mix_heatmap="kl"), "mix_heatmap must be one of"),
])
def test_config_errors(cfg, match):
    with pytest.raises(ValueError, match=match):
        losses.compute_loss(_targets(_batch()), _batch(), CODEC, cfg)


def test_wrong_logit_levels_error():
    with pytest.raises(ValueError, match="levels"):
        losses.compute_loss(_targets(_batch())[:1], _batch(), CODEC, BOTH)


@pytest.mark.slow  # 20 training steps of a small model
def test_few_steps_overfit_one_batch():
    model_cfg = dict(num_stacks=2, features=8, hourglass_depth=1, num_residual=1, num_joints=J, dtype="float32")
    model = create_model(model_cfg, CODEC, seed=0)
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    # Joints far from the middle, so the untrained (nearly uniform) volumes are far off.
    batch = dict(_batch(xy=((1.0, 1.0), (6.0, 2.0), (2.0, 6.0)), depth_mm=(-700.0, 0.0, 600.0)), image=jnp.asarray(np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3)), jnp.uint8))

    @nnx.jit
    def step(model, optimizer, batch):
        def loss_fn(m):
            return losses.compute_loss(m(batch["image"]), batch, CODEC, BOTH)
        (_, metrics), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        optimizer.update(model, grads)
        finite = jax.tree.reduce(lambda a, g: a & jnp.all(jnp.isfinite(g)), grads, jnp.bool_(True))
        return metrics, finite

    history = []
    for _ in range(20):
        metrics, finite = step(model, optimizer, batch)
        assert bool(finite)
        history.append({k: float(v) for k, v in metrics.items()})
    first, last = history[0], history[-1]
    # The heatmap term falls fast; the integral term, from near-uniform
    # volumes, slowly: both must fall, the sum by a clear margin.
    assert last["loss"] < 0.6 * first["loss"], history
    assert last["js"] < first["js"] and last["integral"] < first["integral"], history
