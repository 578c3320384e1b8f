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


def _js_reference(logits, target):
    """JS(softmax(logits) || target / its sum) over each joint's flattened volume, written out directly."""
    b, j = logits.shape[:2]
    log_p = jax.nn.log_softmax(logits.reshape(b, j, -1), axis=-1)
    q = target.reshape(b, j, -1)
    q = q / jnp.maximum(q.sum(-1, keepdims=True), 1e-12)
    p = jnp.exp(log_p)
    log_m = jnp.log(0.5 * (p + q) + 1e-30)
    return 0.5 * (jnp.sum(p * (log_p - log_m), -1) + jnp.sum(jax.scipy.special.xlogy(q, q) - q * log_m, -1))


@functools.partial(jax.jit, static_argnums=(2, 3))
def _js_and_reference(logits, coords, codec, level):
    """(JS, its gradient) by `losses` and by `_js_reference`, summed over the batch and joints."""
    target_volume = codec.gaussian_targets(coords, level)
    got = jax.value_and_grad(lambda v: jnp.sum(losses.js_divergence_joints(v, coords, codec, level)))(logits)
    want = jax.value_and_grad(lambda v: jnp.sum(_js_reference(v, target_volume)))(logits)
    return (*got, *want)


@pytest.mark.parametrize("target", ["continuous", "paper"])
def test_js_divergence_and_gradient_match_the_flattened_formula(target):
    """The separable target's sum(q log q) from its 1-D profiles and the unflattened axes change nothing.

    One joint lies outside the volume, where the paper target is all zero (q = 0, its JS is ln 2 / 2).
    """
    codec = VolumeCodec(input_size=32, heatmap_size=(8, 8), depth_bins=(1, 4), depth_range_mm=1000.0,
                        sigma=1.0, target=target)
    xy = np.array([[[3.2, 4.7], [0.4, 7.6], [40.0, 3.0]]], np.float32).repeat(2, 0)
    logits = jnp.asarray(np.random.default_rng(0).normal(0.0, 2.0, (2, J, 4, 8, 8)).astype(np.float32))
    for level, z in ((0, None), (1, 1.3)):
        coords = jnp.asarray(xy if z is None else np.concatenate([xy, np.full((2, J, 1), z, np.float32)], -1))
        lg = logits[:, :, :codec.depth_bins[level]]
        got, grad, want, want_grad = _js_and_reference(lg, coords, codec, level)
        np.testing.assert_allclose(float(got), float(want), rtol=1e-5)
        np.testing.assert_allclose(grad, want_grad, rtol=1e-4, atol=1e-7)
    if target == "paper":
        js = jax.jit(losses.js_divergence_joints, static_argnums=(2, 3))(lg, coords, codec, 1)
        np.testing.assert_allclose(js[:, 2], np.log(2) / 2, rtol=1e-5)


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


KINDS = {"heatmap": dict(kind="heatmap"), "integral": dict(kind="integral"), "js": BOTH,
         "mse": dict(BOTH, mix_heatmap="mse")}


def _old_loss(logits, batch, cfg):
    """The loss as it was before joints_weight / has_3d: per-sample terms, masked mean over samples."""
    kind = cfg["kind"]
    mix = cfg.get("mix_heatmap", "js")
    terms = {"heatmap": (losses.heatmap_mse, 1.0)} if kind == "heatmap" else {}
    if kind in ("integral", "both"):
        terms["integral"] = (losses.integral_l1, cfg.get("integral_weight", 1.0))
    if kind == "both":
        terms["js" if mix == "js" else "heatmap"] = (losses.js_divergence if mix == "js" else losses.heatmap_mse,
                                                     cfg.get("heatmap_weight", 1.0))
    mask = np.asarray(batch["mask"], np.float64)
    total = 0.0
    for fn, weight in terms.values():
        for i, coords in enumerate(_levels(batch)):
            per_sample = np.asarray(jax.jit(fn, static_argnums=(2, 3))(logits[i], coords, CODEC, i), np.float64)
            total += weight * np.sum(per_sample * mask) / max(mask.sum(), 1.0)
    return total


def _mixed_logits(seed=0):
    """Logits near (not at) the targets, plus noise, so every term and its gradient is non-trivial."""
    rng = np.random.default_rng(seed)
    return [lg * np.float32(0.2) + rng.normal(size=lg.shape).astype(np.float32)
            for lg in _log_gaussians(_batch(shift_x=0.8))]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_all_3d_batch_gives_the_old_loss(kind):
    cfg = KINDS[kind]
    batch = _batch(mask=(1.0, 0.0))
    logits = _mixed_logits()
    without, m_without = _loss(logits, batch, cfg)
    ones = dict(batch, joints_weight=np.ones((2, J), np.float32), has_3d=np.ones(2, np.float32))
    with_keys, m_with = _loss(logits, ones, cfg)
    # Same code path (absent keys are all ones): bit for bit.
    assert float(with_keys) == float(without)
    assert {k: float(v) for k, v in m_with.items()} == {k: float(v) for k, v in m_without.items()}
    # And the value the loss had before the keys existed.
    assert float(without) == pytest.approx(_old_loss(logits, batch, cfg), rel=2e-6)


def _two_d(batch, which=1):
    """`batch` with sample `which` 2D-only."""
    has_3d = np.ones(2, np.float32)
    has_3d[which] = 0.0
    return dict(batch, has_3d=has_3d, joints_weight=np.ones((2, J), np.float32))


def _grads(logits, batch, cfg):
    key = ("grad", repr(sorted(dict(cfg.items()).items())))
    if key not in _JITTED_LOSSES:
        _JITTED_LOSSES[key] = jax.jit(jax.value_and_grad(lambda lg, b: losses.compute_loss(lg, b, CODEC, cfg)[0]))
    value, grads = _JITTED_LOSSES[key](logits, batch)
    return float(value), [np.asarray(g) for g in grads]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_2d_only_sample_ignores_its_depth(kind):
    cfg = KINDS[kind]
    logits = _mixed_logits(1)
    near = _two_d(_batch())
    far = dict(near, depth_rel_mm=np.asarray(near["depth_rel_mm"]).copy())
    far["depth_rel_mm"][1] = (900.0, -800.0, np.nan)  # even NaN never reaches the loss
    v_near, g_near = _grads(logits, near, cfg)
    v_far, g_far = _grads(logits, far, cfg)
    assert np.isfinite(v_far) and v_far == v_near
    assert all(np.all(np.isfinite(g)) for g in g_far)
    for a, b in zip(g_near, g_far):
        np.testing.assert_array_equal(a, b)
    # The 3D sample's depth still counts.
    moved = dict(near, depth_rel_mm=np.asarray(near["depth_rel_mm"]).copy())
    moved["depth_rel_mm"][0] = (900.0, -800.0, 700.0)
    assert abs(_grads(logits, moved, cfg)[0] - v_near) > 1e-4


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_weight_zero_joint_has_no_gradient_and_no_say(kind):
    cfg = KINDS[kind]
    logits = _mixed_logits(2)
    weights = np.ones((2, J), np.float32)
    weights[0, 1] = 0.0  # sample 0, joint 1 (3D sample)
    weights[1, 2] = 0.0  # sample 1, joint 2 (2D-only sample)
    batch = dict(_batch(), joints_weight=weights, has_3d=np.array([1.0, 0.0], np.float32))
    value, grads = _grads(logits, batch, cfg)
    for g in grads:
        assert np.all(g[0, 1] == 0.0) and np.all(g[1, 2] == 0.0)
        assert np.abs(g[0, 0]).max() > 0 and np.abs(g[1, 0]).max() > 0
    # Whatever the unsupervised joints' coordinates hold, NaN included, nothing changes.
    uv = np.asarray(batch["joints_uv"]).copy()
    uv[0, 1], uv[1, 2] = (np.nan, 3.0), (-50.0, np.inf)
    value2, grads2 = _grads(logits, dict(batch, joints_uv=uv), cfg)
    assert value2 == value
    for a, b in zip(grads, grads2):
        np.testing.assert_array_equal(a, b)


def _level1_value(logits, batch, cfg, name):
    return float(_loss(logits, batch, cfg)[1][f"{name}/stack1"])


def _flat_codec_value(volume_xy, batch, cfg, name):
    """The stack-0 term of a depth-free codec (D = 1) on (B, J, H, W) heatmaps at the batch's x, y."""
    flat = VolumeCodec(input_size=CODEC.input_size, heatmap_size=CODEC.heatmap_size, depth_bins=(1,),
                       depth_range_mm=CODEC.depth_range_mm, sigma=CODEC.sigma)
    plain = {k: batch[k] for k in ("joints_uv", "depth_rel_mm", "mask")}
    _, m = jax.jit(lambda lg, b: losses.compute_loss(lg, b, flat, cfg))([volume_xy[:, :, None]], plain)
    return float(m[f"{name}/stack0"])


def test_2d_loss_at_a_deeper_level_is_the_loss_of_its_xy_marginal():
    logits = _mixed_logits(3)
    all_2d = dict(_batch(), has_3d=np.zeros(2, np.float32))
    deep = np.asarray(logits[1])  # (B, J, D=4, H, W)
    # heatmap: the max-projection over depth, scaled by the level's depth energy share.
    share = losses.depth_energy_share(CODEC, 1)
    sigma_z = CODEC.sigma_z(1)
    profile = np.exp(-0.5 * ((np.arange(4) - 1.0) / sigma_z) ** 2)  # z at the bin centre 1, D = 4
    assert share == pytest.approx(np.sum(profile ** 2) / 4, rel=1e-6)
    got = _level1_value(logits, all_2d, dict(kind="heatmap"), "heatmap")
    want = share * _flat_codec_value(deep.max(axis=2), all_2d, dict(kind="heatmap"), "heatmap")
    assert got == pytest.approx(want, rel=1e-5)
    # js and integral: the softmax's x, y marginal (log of its sum over depth).
    log_p = jax.nn.log_softmax(deep.reshape(2, J, -1), axis=-1).reshape(deep.shape)
    marginal = np.asarray(jax.nn.logsumexp(log_p, axis=2))
    for name, cfg in (("js", BOTH), ("integral", dict(kind="integral"))):
        got = _level1_value(logits, all_2d, cfg, name)
        assert got == pytest.approx(_flat_codec_value(marginal, all_2d, cfg, name), rel=1e-5, abs=1e-7)
    # The depth-free level is the same for both kinds of sample.
    for name, cfg in (("heatmap", dict(kind="heatmap")), ("js", BOTH), ("integral", dict(kind="integral"))):
        both_3d = float(_loss(logits, _batch(), cfg)[1][f"{name}/stack0"])
        assert float(_loss(logits, all_2d, cfg)[1][f"{name}/stack0"]) == pytest.approx(both_3d, rel=1e-6)


def test_2d_heatmap_term_is_the_3d_term_of_a_prediction_with_exact_depth():
    # Depth on inner bin centres of the D = 4 level (500 mm bins): -250, 250 mm -> z = 1, 2 (at the
    # volume's ends the z profile is cut, and its energy with it).
    batch = _batch(depth_mm=(-250.0, 250.0, -250.0))
    coords = _levels(batch)[1]
    np.testing.assert_allclose(coords[..., 2], np.tile([1.0, 2.0, 1.0], (2, 1)), atol=1e-5)
    # Logits: the true z profile times some wrong 2D heatmap A (the targets of shifted joints).
    true_target = np.asarray(_draw_targets(coords, 1))
    wrong_xy = np.asarray(_draw_targets(_levels(_batch(shift_x=1.3, depth_mm=(-250.0, 250.0, -250.0)))[1], 1))
    # Per joint: g_z(true) (x) A: take A from the wrong target's max over depth (its 2D Gaussian).
    a = wrong_xy.max(axis=2)
    gz = true_target.max(axis=(3, 4))  # (B, J, D): the true z profile (x, y peaks are 1 on voxel centres)
    logits = [np.asarray(_targets(batch)[0]), (gz[..., None, None] * a[:, :, None]).astype(np.float32)]
    three_d = _level1_value(logits, batch, dict(kind="heatmap"), "heatmap")
    two_d = _level1_value(logits, dict(batch, has_3d=np.zeros(2, np.float32)), dict(kind="heatmap"), "heatmap")
    assert three_d > 1e-4 and two_d == pytest.approx(three_d, rel=1e-4)
    # And at the start (all-zero logits) a 2D-only joint costs what a 3D one does.
    zeros = [np.zeros_like(lg) for lg in logits]
    z3 = _level1_value(zeros, batch, dict(kind="heatmap"), "heatmap")
    z2 = _level1_value(zeros, dict(batch, has_3d=np.zeros(2, np.float32)), dict(kind="heatmap"), "heatmap")
    assert z2 == pytest.approx(z3, rel=1e-4)


@pytest.mark.parametrize("kind", ["heatmap", "integral", "js"])
def test_every_supervised_joint_counts_the_same(kind):
    cfg = KINDS[kind]
    logits = _mixed_logits(4)
    weights = np.ones((2, J), np.float32)
    weights[1, :2] = 0.0  # the 2D-only sample supervises one joint
    batch = dict(_batch(), joints_weight=weights, has_3d=np.array([1.0, 0.0], np.float32))
    loss, _ = _loss(logits, batch, cfg)
    single = []
    for b in range(2):
        one = {k: np.asarray(v)[b:b + 1] for k, v in batch.items()}
        single.append(float(_loss([lg[b:b + 1] for lg in logits], one, cfg)[0]))
    n = weights.sum(axis=1)
    assert float(loss) == pytest.approx((n[0] * single[0] + n[1] * single[1]) / n.sum(), rel=1e-5)
    # Nothing supervised: 0, with a finite (zero) gradient.
    value, grads = _grads(logits, dict(batch, joints_weight=np.zeros((2, J), np.float32)), cfg)
    assert value == 0.0 and all(np.all(g == 0.0) for g in grads)


def test_max_over_depth_has_jnp_max_gradient_ties_included():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 3, 4, 5, 5)).astype(np.float32)
    x[0, 0, :, 0, 0] = 1.5          # every bin tied
    x[1, 2, 1:3, 4, 4] = 9.0        # two bins tied at the peak
    r = rng.normal(size=(2, 3, 5, 5)).astype(np.float32)
    mine = jax.jit(jax.value_and_grad(lambda v: jnp.sum(losses.max_over_depth(v) * r)))(x)
    ref = jax.jit(jax.value_and_grad(lambda v: jnp.sum(jnp.max(v, axis=2) * r)))(x)
    assert float(mine[0]) == pytest.approx(float(ref[0]), rel=1e-6)
    np.testing.assert_allclose(np.asarray(mine[1]), np.asarray(ref[1]), rtol=1e-6, atol=1e-7)


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
