import jax
import jax.numpy as jnp
import numpy as np
import pytest

from c2f_vol import camera
from c2f_vol.codec import VolumeCodec
from conftest import random_poses

CODEC = VolumeCodec(input_size=64, heatmap_size=(16, 16), depth_bins=(1, 4, 16), depth_range_mm=1000.0, sigma=1.5)

# The volume ops run under one jax.jit per test (and shape) rather than op by op: eagerly, every
# op is compiled on its own the first time it sees a shape, which is most of these tests' time.
# Random inputs come from NumPy for the same reason (jax.random compiles per shape).


def _random_voxels(rng, codec, n, margin=4.0):
    h, w = codec.heatmap_size
    d = max(codec.depth_bins)
    lo, hi = margin, np.array([w - 1 - margin, h - 1 - margin])
    xy = rng.uniform(lo, hi, (n, 17, 2))
    z_mm = rng.uniform(-1000 + 2 * margin * codec.bin_size_mm(-1), 1000 - 2 * margin * codec.bin_size_mm(-1), (n, 17))
    return codec.heatmap_to_crop(xy), z_mm


def test_from_config_and_validation():
    codec = VolumeCodec.from_config({"input_size": 128, "heatmap_size": 32, "depth_bins": [1, 2, 4, 64]})
    assert codec.heatmap_size == (32, 32) and codec.depth_bins == (1, 2, 4, 64)
    assert codec.bin_size_mm() == pytest.approx(31.25)
    with pytest.raises(ValueError, match="unknown codec config keys"):
        VolumeCodec.from_config({"depth_bin": [1]})
    with pytest.raises(ValueError, match="depth_bins"):
        VolumeCodec(depth_bins=(0, 4))


def test_encode_decode_round_trip(rng):
    uv, z = _random_voxels(rng, CODEC, 3)
    levels = CODEC.encode(uv, z)
    assert [lv.shape for lv in levels] == [(3, 17, 2), (3, 17, 3), (3, 17, 3)]
    for i, lv in enumerate(levels):
        uv2, z2 = CODEC.decode(lv, i)
        np.testing.assert_allclose(uv2, uv, atol=1e-9)
        if CODEC.depth_bins[i] == 1:
            assert z2 is None
        else:
            np.testing.assert_allclose(z2, z, atol=1e-9)
    # Bin edges: -R maps to the outer edge of bin 0, +R to that of the last bin.
    assert CODEC.depth_to_bin(-1000.0, 2) == pytest.approx(-0.5)
    assert CODEC.depth_to_bin(1000.0, 2) == pytest.approx(15.5)
    # Crop pixel edges map to heatmap pixel edges.
    np.testing.assert_allclose(CODEC.crop_to_heatmap(np.array([-0.5, 63.5])[None].T.repeat(2, 1)),
                               [[-0.5, -0.5], [15.5, 15.5]])


def test_gaussian_targets_are_separable_peaked_and_jittable():
    coords = jnp.array([[[5.0, 7.0, 9.0]]])
    draw = jax.jit(CODEC.gaussian_targets, static_argnums=1)
    vol = draw(coords, 2)
    assert vol.shape == (1, 1, 16, 16, 16)
    assert float(vol[0, 0, 9, 7, 5]) == pytest.approx(1.0)
    assert tuple(np.unravel_index(np.argmax(vol), vol.shape)[2:]) == (9, 7, 5)
    # One voxel away in x, the value is exp(-1 / (2 sigma^2)).
    assert float(vol[0, 0, 9, 7, 6]) == pytest.approx(np.exp(-0.5 / 1.5 ** 2), rel=1e-5)
    flat = draw(coords[..., :2], 0)
    assert flat.shape == (1, 1, 1, 16, 16)
    # The coarse level's z sigma is floored, so the target still peaks in one bin.
    assert CODEC.sigma_z(1) == pytest.approx(0.5)


@jax.jit
def _encode_draw_and_decode(uv, z):
    """Per level: (encoded coords, soft-argmax, argmax) of the log of its Gaussian target."""
    out = []
    for level, coords in enumerate(CODEC.encode(uv, z)):
        logits = jnp.log(CODEC.gaussian_targets(coords, level) + 1e-30)
        out.append((coords, CODEC.soft_argmax(logits), CODEC.argmax(logits)))
    return out


def test_soft_argmax_recovers_encoded_coordinates(rng):
    uv, z = _random_voxels(rng, CODEC, 4)
    levels = _encode_draw_and_decode(jnp.asarray(uv, jnp.float32), jnp.asarray(z, jnp.float32))
    assert len(levels) == CODEC.num_levels
    for level, (coords, got, hard) in enumerate(levels):
        assert got.shape == coords.shape
        # z at the coarse levels is not a Gaussian centred away from the borders; x, y must be exact.
        err = np.abs(np.asarray(got) - np.asarray(coords))
        if CODEC.depth_bins[level] >= 16:
            assert err.max() < 0.1, err.max()
        else:
            assert err[..., :2].max() < 0.1, err[..., :2].max()
        assert np.abs(np.asarray(hard) - np.asarray(coords)).max() <= 0.5 + 1e-6


def test_soft_argmax_is_differentiable():
    logits = np.random.default_rng(0).standard_normal((2, 17, 4, 16, 16)).astype(np.float32)
    grad = jax.jit(jax.grad(lambda lg: CODEC.soft_argmax(lg).sum()))(logits)
    assert grad.shape == logits.shape and bool(jnp.all(jnp.isfinite(grad))) and float(jnp.abs(grad).max()) > 0


def test_full_chain_back_to_camera_mm(rng):
    codec = VolumeCodec(input_size=128, heatmap_size=(32, 32), depth_bins=(1, 2, 4, 64))
    cam = camera.H36M_CAMERAS["55011271"]
    intr = cam.intrinsics.astype(np.float64)
    poses = random_poses(rng, 5)
    poses[..., :] = poses[:, :1] + (poses - poses[:, :1]) * 0.8  # within the +-1 m depth range
    uv_img = camera.project(poses, intr)
    lo, hi = uv_img.min(axis=1), uv_img.max(axis=1)
    aff = camera.crop_affine((lo + hi) / 2, (hi - lo).max(axis=-1) * 1.3, codec.input_size)
    uv_crop = camera.apply_affine(aff, uv_img)
    depth_rel = poses[..., 2] - poses[:, :1, 2]
    coords = codec.encode(jnp.asarray(uv_crop), jnp.asarray(depth_rel))[-1]
    logits = jnp.log(codec.gaussian_targets(coords, 3) + 1e-30)
    uv_dec, z_dec = codec.decode(np.asarray(codec.soft_argmax(logits), np.float64), 3)
    got = camera.crop_to_camera(np.concatenate([uv_dec, z_dec[..., None]], -1), aff, intr, poses[:, 0, 2])
    err = np.linalg.norm(got - poses, axis=-1)
    assert err.max() < codec.bin_size_mm(), err.max()


def test_check_logits_names_the_bad_level():
    ok = [jnp.zeros((2, 17, d, 16, 16)) for d in CODEC.depth_bins]
    CODEC.check_logits(ok)
    with pytest.raises(ValueError, match="level 1"):
        CODEC.check_logits([ok[0], jnp.zeros((2, 17, 3, 16, 16)), ok[2]])
    with pytest.raises(ValueError, match="encode expects"):
        CODEC.encode(np.zeros((2, 17, 3)), np.zeros((2, 17)))


def _reference_soft_argmax(logits):
    """The textbook form: softmax over the flattened volume, then expectations of the indices."""
    *lead, d, h, w = logits.shape
    p = jax.nn.softmax(logits.reshape(*lead, d * h * w), axis=-1).reshape(logits.shape)
    cols = [jnp.einsum("...dhw,w->...", p, jnp.arange(w, dtype=jnp.float32)),
            jnp.einsum("...dhw,h->...", p, jnp.arange(h, dtype=jnp.float32))]
    if d > 1:
        cols.append(jnp.einsum("...dhw,d->...", p, jnp.arange(d, dtype=jnp.float32)))
    return jnp.stack(cols, axis=-1)


@jax.jit
def _soft_argmax_and_reference(logits, weights):
    """soft_argmax and the reference, the gradients of <., weights> of both, and soft_argmax(logits + 1e4)."""
    grad = jax.grad(lambda lg: jnp.sum(CODEC.soft_argmax(lg) * weights))(logits)
    want = jax.grad(lambda lg: jnp.sum(_reference_soft_argmax(lg) * weights))(logits)
    return CODEC.soft_argmax(logits), _reference_soft_argmax(logits), grad, want, CODEC.soft_argmax(logits + 1e4)


@pytest.mark.parametrize("shape", [(2, 17, 4, 8, 6), (2, 17, 1, 8, 8), (17, 3, 5, 5), (4, 6, 7)])
def test_soft_argmax_matches_the_softmax_expectation_and_its_gradient(shape):
    rng = np.random.default_rng(1)
    logits = (3.0 * rng.standard_normal(shape)).astype(np.float32)
    *lead, d, _, _ = shape
    weights = rng.standard_normal((*lead, 3 if d > 1 else 2)).astype(np.float32)
    got, ref, grad, want, big = _soft_argmax_and_reference(logits, weights)
    assert got.shape == ref.shape == weights.shape
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grad, want, rtol=1e-4, atol=1e-6)
    # Large logits must not overflow: the max is subtracted before exp.
    assert bool(jnp.all(jnp.isfinite(big)))


def _noisy_heatmaps(rng, codec, level, n, sigma, noise):
    """MSE-style volumes: peak-1 Gaussians of `sigma` voxels at random sub-voxel positions, plus noise."""
    h, w = codec.heatmap_size
    d = codec.depth_bins[level]
    lo, hi = 4.0, np.array([w - 5.0, h - 5.0, d - 5.0])
    coords = rng.uniform(lo, hi, (n, 17, 3)).astype(np.float32)
    draw = VolumeCodec(**{**codec.__dict__, "sigma": sigma, "sigma_z_min": sigma}).gaussian_targets
    vol = jax.jit(draw, static_argnums=1)(coords, level)
    # sigma_z scales with D / max(D): the test codec's last level has D = max(D), so z uses `sigma` too.
    vol = np.asarray(vol) + noise * rng.standard_normal(vol.shape).astype(np.float32)
    return jnp.asarray(vol), coords


def test_decoders_on_noisy_heatmaps_bound_each_error(rng):
    """On the paper's kind of output (peak 1 over a near-zero background), argmax_local is sub-voxel,
    plain argmax within half a voxel per axis, and the global soft-argmax far off (pulled to the centre)."""
    codec = VolumeCodec(input_size=128, heatmap_size=(32, 32), depth_bins=(32,))
    vol, coords = _noisy_heatmaps(rng, codec, 0, 4, sigma=2.0, noise=0.02)
    names = ("soft_argmax", "argmax_local")
    decoded = jax.jit(lambda v: [VolumeCodec(**{**codec.__dict__, "decoder": n}).decode_logits(v) for n in names]
                      + [codec.argmax(v)])(vol)
    err = {}
    for name, (got, conf) in zip(names, decoded[:2]):
        assert got.shape == coords.shape and conf.shape == coords.shape[:2]
        err[name] = np.linalg.norm(np.asarray(got) - coords, axis=-1)
    err["argmax"] = np.linalg.norm(np.asarray(decoded[2]) - coords, axis=-1)
    assert err["argmax_local"].mean() < 0.2, err["argmax_local"].mean()
    assert err["argmax"].mean() < 0.7 and err["argmax"].max() < 1.5  # noise can move the peak one voxel
    assert err["argmax_local"].mean() < 0.5 * err["argmax"].mean()
    assert err["soft_argmax"].mean() > 5.0, err["soft_argmax"].mean()


def test_argmax_local_is_exact_on_clean_gaussians_and_safe_at_borders(rng):
    codec = VolumeCodec(input_size=64, heatmap_size=(16, 16), depth_bins=(1, 16), decoder="argmax_local")
    vol, coords = _noisy_heatmaps(rng, codec, 1, 2, sigma=1.5, noise=0.0)
    # Jitted, as export and evaluation trace it.
    decode = jax.jit(codec.decode_logits)
    got, conf = decode(vol)
    np.testing.assert_allclose(np.asarray(got), coords, atol=1e-3)
    np.testing.assert_allclose(np.asarray(conf), np.asarray(vol).max(axis=(2, 3, 4)), atol=1e-6)
    # A D = 1 level gives (x, y); a peak on the border keeps its integer position; all finite.
    flat = np.zeros((1, 17, 1, 16, 16), np.float32)
    flat[0, :, 0, 0, 15] = 1.0
    xy, conf = decode(flat)
    assert xy.shape == (1, 17, 2)
    np.testing.assert_allclose(np.asarray(xy), np.broadcast_to([15.0, 0.0], (1, 17, 2)))
    neg, _ = decode(-np.ones((1, 17, 16, 16, 16), np.float32))  # nothing above zero: no fit, no NaN
    assert bool(jnp.all(jnp.isfinite(neg)))


def test_decoder_follows_the_loss_kind():
    block = dict(input_size=64, heatmap_size=(16, 16), depth_bins=(2, 16), decoder="auto")
    assert VolumeCodec.from_config(block, "heatmap").decoder == "argmax_local"
    assert VolumeCodec.from_config(block, "integral").decoder == "soft_argmax"
    assert VolumeCodec.from_config(block, "both").decoder == "soft_argmax"
    assert VolumeCodec.from_config(dict(block, decoder="argmax_local"), "integral").decoder == "argmax_local"
    with pytest.raises(ValueError, match="follows loss.kind"):
        VolumeCodec.from_config(block)
    with pytest.raises(ValueError, match="decoder must be one of"):
        VolumeCodec(decoder="mean")
    with pytest.raises(ValueError, match="target must be one of"):
        VolumeCodec(target="gauss")


def test_paper_targets_match_the_released_drawing():
    """13-voxel window, relative sigma 0.25 (3.25 voxels), centred on the joint's voxel, truncated, peak 1;
    in z 13 bins at D = 64 and one-hot at D <= 4 (DESIGN.md §1a)."""
    codec = VolumeCodec(input_size=256, heatmap_size=(64, 64), depth_bins=(1, 2, 4, 64), target="paper")
    assert [codec.paper_window_z(i) for i in range(4)] == [1, 1, 1, 13]
    # Off-centre sub-voxel position: the peak sits on the nearest voxel centre (20.4 -> 20, 30.6 -> 31).
    draw = jax.jit(codec.gaussian_targets, static_argnums=1)
    coords = jnp.array([[[20.4, 30.6, 40.2]]])
    vol = np.asarray(draw(coords, 3))[0, 0]  # (D, H, W)
    assert vol.max() == pytest.approx(1.0) and vol[40, 31, 20] == pytest.approx(1.0)
    sigma = 0.25 * 13
    assert vol[40, 31, 20 + 6] == pytest.approx(np.exp(-0.5 * (6 / sigma) ** 2), rel=1e-5)
    assert vol[40, 31, 20 + 7] == 0.0 and vol[40, 31 - 7, 20] == 0.0 and vol[40 + 7, 31, 20] == 0.0
    assert vol[40 - 6, 31, 20] == pytest.approx(np.exp(-0.5 * (6 / sigma) ** 2), rel=1e-5)
    assert np.count_nonzero(vol) == 13 ** 3
    # Coarse levels: one-hot in z at the joint's bin, the same 13x13 window in x, y.
    for level, d in ((1, 2), (2, 4)):
        coarse = np.asarray(draw(jnp.array([[[20.4, 30.6, (d - 1) * 0.7]]]), level))[0, 0]
        zbin = int(np.floor((d - 1) * 0.7 + 0.5))
        assert np.count_nonzero(coarse.sum(axis=(1, 2))) == 1 and coarse[zbin].max() == pytest.approx(1.0)
        assert np.count_nonzero(coarse[zbin]) == 13 * 13
    # A joint whose voxel is far outside the volume draws nothing.
    assert float(draw(jnp.array([[[-20.0, 30.0, 10.0]]]), 3).max()) == 0.0


def test_density_is_what_each_decoder_reads():
    logits = np.random.default_rng(3).standard_normal((2, 17, 4, 8, 8)).astype(np.float32)
    codec = VolumeCodec(input_size=32, heatmap_size=(8, 8), depth_bins=(4,))
    soft, heat, want = jax.jit(lambda lg: (
        codec.density(lg), VolumeCodec(**{**codec.__dict__, "decoder": "argmax_local"}).density(lg),
        jax.nn.softmax(lg.reshape(2, 17, -1), axis=-1)))(logits)
    np.testing.assert_allclose(np.asarray(soft).reshape(2, 17, -1), np.asarray(want), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(heat).sum(axis=(2, 3, 4)), 1.0, rtol=1e-5)
    assert float(heat.min()) >= 0.0
    # The clipped heatmap: negative voxels carry (almost) nothing, positive ones are proportional to the value.
    flat, v = np.asarray(heat).reshape(2, 17, -1), np.asarray(logits).reshape(2, 17, -1)
    assert flat[v < 0].max() < 1e-9
    ratio = flat[0, 0][v[0, 0] > 0] / v[0, 0][v[0, 0] > 0]
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-4)
