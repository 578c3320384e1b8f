import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from c2f_vol import model as model_lib
from c2f_vol.codec import VolumeCodec

CODEC = VolumeCodec(input_size=32, heatmap_size=(8, 8), depth_bins=(1, 4))
CFG = dict(num_stacks=2, features=16, hourglass_depth=2, num_residual=1, num_joints=17, dtype="float32")


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def model():
    return model_lib.create_model(CFG, CODEC, seed=0)


def _abstract_outputs(cfg, codec, batch=2, dtype=jnp.uint8):
    """Output shapes and dtypes from tracing only (no compile, no run)."""
    m = model_lib.create_model(cfg, codec, seed=0)
    graphdef, state = nnx.split(m)
    x = jax.ShapeDtypeStruct((batch, codec.input_size, codec.input_size, 3), dtype)
    return jax.eval_shape(lambda s, im: nnx.merge(graphdef, s)(im), state, x)


def test_forward_shapes_and_dtypes(model, images):
    out = model(images)
    assert isinstance(out, tuple) and len(out) == 2
    assert [o.shape for o in out] == [(2, 17, 1, 8, 8), (2, 17, 4, 8, 8)]
    assert all(o.dtype == jnp.float32 for o in out)
    assert all(bool(jnp.all(jnp.isfinite(o))) for o in out)


@pytest.mark.parametrize("size,hm,bins,depth", [
    (16, 8, (1, 2, 4), 1),        # factor 2: stem conv only, no pooling
    (64, 8, (2, 8), 3),           # factor 8: two pools in the stem
    (32, 8, (1, 2, 4, 8, 16), 2),  # coarse-to-fine schedule, 5 stacks
])
def test_output_shapes_for_several_configs(size, hm, bins, depth):
    codec = VolumeCodec(input_size=size, heatmap_size=(hm, hm), depth_bins=bins)
    cfg = dict(CFG, num_stacks=len(bins), hourglass_depth=depth, num_joints=5, features=8)
    out = _abstract_outputs(cfg, codec, batch=3, dtype=jnp.float32)
    assert [o.shape for o in out] == [(3, 5, d, hm, hm) for d in bins]
    assert all(o.dtype == jnp.float32 for o in out)


def test_head_to_volume_layout():
    j, d = 3, 4
    pred = np.broadcast_to(np.arange(j * d, dtype=np.float32), (2, 5, 6, j * d))
    vol = model_lib.head_to_volume(jnp.asarray(pred), j, d)
    assert vol.shape == (2, j, d, 5, 6)
    jj, dd = np.meshgrid(np.arange(j), np.arange(d), indexing="ij")
    np.testing.assert_array_equal(vol[1, :, :, 4, 5], jj * d + dd)
    with pytest.raises(ValueError, match="J \\* D"):
        model_lib.head_to_volume(jnp.asarray(pred), 5, 4)


def test_head_bias_puts_argmax_at_joint_and_bin(images):
    m = model_lib.create_model(CFG, CODEC, seed=1)
    head = m.heads[1]
    d = CODEC.depth_bins[1]
    joint, bin_ = 5, 2
    head.kernel[...] = jnp.zeros_like(head.kernel[...])
    head.bias[...] = jnp.zeros_like(head.bias[...]).at[joint * d + bin_].set(10.0)
    vol = m(images)[1]
    # Only (joint, bin_) is lit, everywhere in the heatmap.
    np.testing.assert_allclose(vol[:, joint, bin_], 10.0)
    assert float(jnp.abs(vol.at[:, joint, bin_].set(0.0)).max()) == 0.0
    assert np.all(np.asarray(jnp.argmax(vol[:, joint], axis=1)) == bin_)


def _batch_stats(m):
    return jax.tree.map(np.array, jax.tree.leaves(nnx.state(m, nnx.BatchStat)))


def test_batchnorm_train_and_eval(images):
    m = model_lib.create_model(CFG, CODEC, seed=0)
    assert m.stem_bn.use_running_average is False  # built in training mode
    before = _batch_stats(m)
    train_out = m(images)[1]
    after_train = _batch_stats(m)
    assert any(not np.array_equal(a, b) for a, b in zip(before, after_train))

    # An eval view shares the weights and leaves the model in training mode.
    view = nnx.view(m, use_running_average=True)
    view_out = view(images)[1]
    assert m.stem_bn.use_running_average is False
    m.eval()
    eval_out = m(images)[1]
    after_eval = _batch_stats(m)
    assert all(np.array_equal(a, b) for a, b in zip(after_train, after_eval))
    np.testing.assert_allclose(view_out, eval_out, rtol=1e-6, atol=1e-7)
    assert not np.allclose(train_out, eval_out, rtol=1e-3, atol=1e-6)

    m.train()
    m(images)
    assert any(not np.array_equal(a, b) for a, b in zip(after_eval, _batch_stats(m)))


def test_bfloat16_compute_keeps_float32_params_and_logits(images):
    f32 = model_lib.create_model(CFG, CODEC, seed=3)
    bf16 = model_lib.create_model(dict(CFG, dtype="bfloat16"), CODEC, seed=3)
    params = jax.tree.leaves(nnx.state(bf16, nnx.Param)) + jax.tree.leaves(nnx.state(bf16, nnx.BatchStat))
    assert all(p.dtype == jnp.float32 for p in params)
    # Compared in eval mode: batch statistics of 2 samples on 2x2 maps would
    # amplify bfloat16 rounding into a test of BatchNorm, not of the model.
    f32.eval()
    bf16.eval()
    for a, b in zip(f32(images), bf16(images)):
        assert b.dtype == jnp.float32
        scale = float(jnp.abs(a).max())
        assert scale > 0.1
        assert float(jnp.abs(a - b).max()) < 0.04 * scale
    bf16.train()
    assert all(o.dtype == jnp.float32 for o in bf16(images))


def test_images_are_normalised_on_device():
    x = np.array(IMAGE := [[[[0, 128, 255]]]], np.uint8)
    got = model_lib.normalize_images(x)
    want = (np.array(IMAGE, np.float32) / 255 - np.array(model_lib.IMAGE_MEAN)) / np.array(model_lib.IMAGE_STD)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert model_lib.normalize_images(x, jnp.bfloat16).dtype == jnp.bfloat16


def test_create_model_from_full_config():
    config = ml_collections.ConfigDict({"model": CFG})
    m = model_lib.create_model(config, CODEC, seed=0)
    assert m.depth_bins == (1, 4) and model_lib.count_params(m) > 0


@pytest.mark.parametrize("change,codec_kw,match", [
    (dict(num_stacks=3), {}, "num_stacks=3 but codec depth_bins=\\(1, 4\\)"),
    ({}, dict(input_size=24), "power of two"),
    ({}, dict(input_size=8), "power of two"),
    ({}, dict(heatmap_size=(8, 4), input_size=32), "square"),
    (dict(hourglass_depth=4), {}, "divisible by 16"),
    (dict(dtype="float16"), {}, "dtype must be one of"),
    (dict(features=10), {}, "multiple of 4"),
    (dict(featurs=16), {}, "unknown keys \\['featurs'\\]"),
    (dict(num_residual=0), {}, "num_residual must be >= 1"),
])
def test_config_errors(change, codec_kw, match):
    cfg = dict(CFG, **change)
    if "featurs" in change:
        del cfg["features"]
    codec = VolumeCodec(**{**dict(input_size=32, heatmap_size=(8, 8), depth_bins=(1, 4)), **codec_kw})
    with pytest.raises(ValueError, match=match):
        model_lib.create_model(cfg, codec)


def test_wrong_image_shape_errors(model):
    with pytest.raises(ValueError, match="expects images \\(B, 32, 32, 3\\)"):
        model(np.zeros((1, 16, 16, 3), np.uint8))


@pytest.mark.parametrize("dtype,preferred", [(jnp.float32, None), (jnp.bfloat16, jnp.float32),
                                             (jnp.bfloat16, None)])
@pytest.mark.parametrize("use_bias", [True, False])
def test_pointwise_conv_equals_a_1x1_convolution(dtype, preferred, use_bias):
    kw = dict(dtype=dtype, preferred_element_type=preferred, use_bias=use_bias, padding="SAME")
    fast = model_lib.PointwiseConv(8, 5, rngs=nnx.Rngs(0), **kw)
    conv = nnx.Conv(8, 5, (1, 1), rngs=nnx.Rngs(0), **kw)
    # Same parameters, so checkpoints and exported weights do not change.
    assert jax.tree.map(jnp.shape, nnx.state(fast)) == jax.tree.map(jnp.shape, nnx.state(conv))
    x = jax.random.normal(jax.random.PRNGKey(3), (2, 4, 4, 8))
    got, want = fast(x), conv(x)
    assert got.dtype == want.dtype
    tol = 1e-5 if dtype == jnp.float32 or preferred is not None else 2e-2
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), rtol=tol, atol=tol)


def test_max_pool_equals_reduce_window_and_passes_gradient_to_the_maximum():
    x = jax.random.normal(jax.random.PRNGKey(4), (2, 8, 6, 3))
    want = nnx.max_pool(x, window_shape=(2, 2), strides=(2, 2))
    np.testing.assert_array_equal(model_lib._max_pool2(x), want)
    grad = jax.grad(lambda v: model_lib._max_pool2(v).sum())(x)
    # Without ties, each window's maximum gets gradient 1 and the other three get 0.
    np.testing.assert_array_equal(grad, (x == jnp.repeat(jnp.repeat(want, 2, 1), 2, 2)).astype(x.dtype))
