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


def _batch(shift_x=0.0, depth_mm=(0.0, 250.0, -250.0), mask=(1.0, 1.0), xy=MIDDLE_XY):
    """Two samples of J joints; by default near the middle of the crop (voxels well inside the volume)."""
    xy = np.array(xy, np.float32)
    xy = np.stack([xy, xy[::-1]]) + np.array([shift_x, 0.0], np.float32)
    return {
        "joints_uv": jnp.asarray(CODEC.heatmap_to_crop(xy)),
        "depth_rel_mm": jnp.asarray(np.tile(np.array(depth_mm, np.float32), (2, 1))),
        "mask": jnp.asarray(mask, jnp.float32),
    }


def _log_gaussians(batch, sharpness=0.25):
    """Logits that are sharp log-Gaussians (sigma `sharpness` voxels) at the true coordinates."""
    out = []
    for level, coords in enumerate(CODEC.encode(batch["joints_uv"], batch["depth_rel_mm"])):
        d = CODEC.depth_bins[level]
        h, w = CODEC.heatmap_size
        grids = [jnp.arange(n, dtype=jnp.float32) for n in (w, h, d)]
        sq = (grids[0] - coords[..., 0, None])[..., None, None, :] ** 2
        sq = sq + (grids[1] - coords[..., 1, None])[..., None, :, None] ** 2
        if d > 1:
            sq = sq + (grids[2] - coords[..., 2, None])[..., :, None, None] ** 2
        out.append(jnp.broadcast_to(-0.5 * sq / sharpness ** 2, coords.shape[:2] + (d, h, w)))
    return out


def _targets(batch):
    levels = CODEC.encode(batch["joints_uv"], batch["depth_rel_mm"])
    return [CODEC.gaussian_targets(c, i) for i, c in enumerate(levels)]


def test_heatmap_loss_is_zero_at_targets_and_positive_elsewhere():
    batch = _batch()
    loss, metrics = losses.compute_loss(_targets(batch), batch, CODEC, dict(kind="heatmap"))
    assert float(loss) == pytest.approx(0.0, abs=1e-12)
    assert set(metrics) == {"loss", "heatmap", "heatmap/stack0", "heatmap/stack1"}
    off, _ = losses.compute_loss(_targets(_batch(shift_x=1.0)), batch, CODEC, dict(kind="heatmap"))
    zeros = [jnp.zeros_like(t) for t in _targets(batch)]
    empty, _ = losses.compute_loss(zeros, batch, CODEC, dict(kind="heatmap"))
    assert 0.0 < float(off) < float(empty)


def test_integral_loss_is_zero_at_truth_and_grows_with_displacement():
    batch = _batch()
    values = []
    for shift in (0.0, 0.5, 1.0, 2.0):
        loss, metrics = losses.compute_loss(_log_gaussians(_batch(shift_x=shift)), batch, CODEC,
                                            dict(kind="integral"))
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
    _, metrics = losses.compute_loss(logits, batch, CODEC, dict(kind="integral"))
    assert float(metrics["integral/stack0"]) == pytest.approx(0.0, abs=1e-4)
    assert float(metrics["integral/stack1"]) == pytest.approx(0.25, abs=1e-3)


@pytest.mark.parametrize("kind", ["heatmap", "integral"])
def test_depth_free_stack_ignores_depth(kind):
    logits = _log_gaussians(_batch()) if kind == "integral" else _targets(_batch())
    _, near = losses.compute_loss(logits, _batch(), CODEC, dict(kind=kind))
    _, far = losses.compute_loss(logits, _batch(depth_mm=(600.0, -700.0, 900.0)), CODEC, dict(kind=kind))
    assert float(near[f"{kind}/stack0"]) == pytest.approx(float(far[f"{kind}/stack0"]), abs=1e-7)
    assert float(far[f"{kind}/stack1"]) > float(near[f"{kind}/stack1"]) + 1e-3


def test_mask_excludes_padding():
    batch = _batch()
    masked = dict(batch, mask=jnp.array([1.0, 0.0]))
    only0 = {k: v[:1] for k, v in batch.items()}
    rng = np.random.default_rng(0)
    for kind in ("heatmap", "integral"):
        # Logits at which this kind's loss is ~0; sample 1 gets garbage that, masked out, must not count.
        good = _targets(batch) if kind == "heatmap" else _log_gaussians(batch)
        bad = [lg.at[1].set(jnp.asarray(rng.normal(size=lg.shape[1:]) * 5, jnp.float32)) for lg in good]
        got, _ = losses.compute_loss(bad, masked, CODEC, dict(kind=kind))
        want, _ = losses.compute_loss([lg[:1] for lg in good], only0, CODEC, dict(kind=kind))
        assert float(got) == pytest.approx(float(want), rel=1e-6, abs=1e-6)
        unmasked, _ = losses.compute_loss(bad, batch, CODEC, dict(kind=kind))
        assert float(unmasked) > float(got) + 1e-3
        none, _ = losses.compute_loss(bad, dict(batch, mask=jnp.zeros(2)), CODEC, dict(kind=kind))
        assert float(none) == 0.0


def test_weights_and_kinds_combine():
    batch = _batch()
    logits = [lg + 0.3 for lg in _log_gaussians(_batch(shift_x=1.0))]
    _, m = losses.compute_loss(logits, batch, CODEC, BOTH)
    cfg = ml_collections.ConfigDict(dict(kind="both", heatmap_weight=2.0, integral_weight=0.5,
                                         stack_weights=[0.0, 3.0]))
    loss, m2 = losses.compute_loss(logits, batch, CODEC, cfg)
    want = 2.0 * 3.0 * m["js/stack1"] + 0.5 * 3.0 * m["integral/stack1"]
    assert float(loss) == pytest.approx(float(want), rel=1e-6)
    assert float(m2["loss"]) == float(loss)
    # The raw-MSE mix is still there to reproduce the old behaviour.
    mse, m3 = losses.compute_loss(logits, batch, CODEC, dict(BOTH, mix_heatmap="mse"))
    assert set(m3) == {"loss", "heatmap", "heatmap/stack0", "heatmap/stack1", "integral", "integral/stack0",
                       "integral/stack1"}
    assert float(mse) == pytest.approx(float(m3["heatmap"] + m3["integral"]), rel=1e-6)


def test_js_divergence_bounds_and_minimum():
    batch = _batch()
    levels = CODEC.encode(batch["joints_uv"], batch["depth_rel_mm"])
    for i, coords in enumerate(levels):
        target = CODEC.gaussian_targets(coords, i)
        q = target / target.sum(axis=(2, 3, 4), keepdims=True)
        at_target = losses.js_divergence(jnp.log(q), coords, CODEC, i)  # softmax(log q) == q
        np.testing.assert_allclose(np.asarray(at_target), 0.0, atol=1e-6)
        # A wrong sharp peak is near the maximum ln 2; a flat volume in between.
        far = losses.js_divergence(_log_gaussians(_batch(shift_x=3.0))[i] * 20, coords, CODEC, i)
        flat = losses.js_divergence(jnp.zeros_like(target), coords, CODEC, i)
        assert np.all(np.asarray(far) <= np.log(2) + 1e-6) and np.all(np.asarray(far) > 0.5)
        assert np.all((np.asarray(flat) > 1e-3) & (np.asarray(flat) < np.asarray(far)))


def test_mixed_loss_gradient_reaches_logits_through_both_terms():
    batch = _batch(shift_x=0.7)
    logits = [lg * 0.1 for lg in _log_gaussians(_batch())]

    def grads(cfg):
        return jax.grad(lambda lg: losses.compute_loss(lg, batch, CODEC, cfg)[0])(logits)

    g_both = grads(dict(BOTH, heatmap_weight=2.0, integral_weight=0.5))
    g_int = grads(dict(kind="integral"))
    g_js = grads(dict(BOTH, heatmap_weight=1.0, integral_weight=0.0))
    for gb, gi, gj in zip(g_both, g_int, g_js):
        assert float(jnp.abs(gi).max()) > 1e-6 and float(jnp.abs(gj).max()) > 1e-6
        np.testing.assert_allclose(np.asarray(gb), np.asarray(0.5 * gi + 2.0 * gj), rtol=1e-4, atol=1e-9)
        # The two terms push differently (not one scaled copy of the other).
        cos = float(jnp.sum(gi * gj) / (jnp.linalg.norm(gi) * jnp.linalg.norm(gj)))
        assert cos < 0.99


def test_jit_grad_finite_and_float32_from_bfloat16():
    batch = _batch(shift_x=0.7)
    logits = [lg.astype(jnp.bfloat16) for lg in _targets(_batch())]
    fn = jax.jit(jax.value_and_grad(lambda lg: losses.compute_loss(lg, batch, CODEC, BOTH)[0]))
    loss, grads = fn(logits)
    assert loss.dtype == jnp.float32 and float(loss) > 0
    assert all(bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).max()) > 0 for g in grads)


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
