import functools

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

# The networks that are built and run: every part of each architecture (stem with a max-pool,
# hourglass, heads, feedback between two stacks) at the smallest width and depth, with B, J, D
# and H all different. What they cost is compilation (each distinct parameter shape's
# initialiser once, each forward once per structure and mode), so the tests share these configs.
RUN_CFG = dict(CFG, features=4, hourglass_depth=1, num_joints=3)
RUN_SHAPES = [(2, 3, 1, 8, 8), (2, 3, 4, 8, 8)]  # (B, J, D_i, H, W) for 2 images

# The forward passes run jitted, as training and evaluation run them: one compilation per model
# structure and mode (train / eval, dtype) is cheaper than compiling each op on its own eagerly.
# nnx.jit carries a train-mode call's BatchNorm statistics back into the model.
_forward = nnx.jit(lambda m, images: m(images))


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def model():
    return model_lib.create_model(RUN_CFG, CODEC, seed=0)


def _abstract_outputs(cfg, codec, batch=2, dtype=jnp.uint8):
    """Output shapes and dtypes from tracing only (no compile, no run).

    Traced in eval mode: the shapes are the same in both modes, and tracing a train-mode forward
    is quadratic in the number of BatchNorms (each running-statistics update asks its tracer for
    `.sharding`, whose error message walks the whole jaxpr): ~3 s for the 5-stack case, 0.1 s in
    eval mode. The forward tests run train mode for real.
    """
    m = nnx.eval_shape(lambda: model_lib.create_model(cfg, codec, seed=0))
    x = jax.ShapeDtypeStruct((batch, codec.input_size, codec.input_size, 3), dtype)
    return _abstract_call(nnx.view(m, use_running_average=True), x)


def _abstract_call(m, images):
    """m(images)'s output shapes and dtypes from tracing only; m itself is left untouched."""
    graphdef, state = nnx.split(m)
    return jax.eval_shape(lambda s, im: nnx.merge(graphdef, s)(im), state, images)


def test_forward_shapes_and_dtypes(model, images):
    out = _forward(model, images)
    assert isinstance(out, tuple) and len(out) == 2
    assert [o.shape for o in out] == RUN_SHAPES
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
    pred = np.broadcast_to(np.arange(j * d, dtype=np.float32)[:, None, None], (2, j * d, 5, 6))
    vol = model_lib.head_to_volume(jnp.asarray(pred), j, d)
    assert vol.shape == (2, j, d, 5, 6)
    jj, dd = np.meshgrid(np.arange(j), np.arange(d), indexing="ij")
    np.testing.assert_array_equal(vol[1, :, :, 4, 5], jj * d + dd)
    with pytest.raises(ValueError, match="J \\* D"):
        model_lib.head_to_volume(jnp.asarray(pred), 5, 4)


@pytest.mark.parametrize("use_bias", [True, False])
def test_pointwise_conv_channels_first_matches_channels_last(use_bias):
    """The heads' channels-first matmul and the remap's inverse give __call__'s values, and its gradients."""
    conv = model_lib.PointwiseConv(6, 10, use_bias=use_bias, rngs=nnx.Rngs(3))
    if use_bias:
        conv.bias[...] = jnp.linspace(-1.0, 1.0, 10)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4, 5, 6)).astype(np.float32))
    last = conv(x)  # (B, H, W, C_out)
    first = conv.channels_first(x)  # (B, C_out, H, W)
    assert first.shape == (2, 10, 4, 5)
    np.testing.assert_allclose(first, jnp.transpose(last, (0, 3, 1, 2)), rtol=1e-5, atol=1e-5)
    back = model_lib.PointwiseConv(10, 7, use_bias=use_bias, rngs=nnx.Rngs(4))
    np.testing.assert_allclose(back.from_channels_first(first), back(last), rtol=1e-5, atol=1e-5)
    w = jnp.asarray(np.random.default_rng(1).normal(size=first.shape).astype(np.float32))
    graphdef, params = nnx.split(conv, nnx.Param)
    first_loss = lambda x, p: jnp.sum(nnx.merge(graphdef, p).channels_first(x) * w)
    last_loss = lambda x, p: jnp.sum(nnx.merge(graphdef, p)(x) * jnp.transpose(w, (0, 2, 3, 1)))
    g_first = jax.grad(first_loss, argnums=(0, 1))(x, params)
    g_last = jax.grad(last_loss, argnums=(0, 1))(x, params)
    for a, b in zip(jax.tree.leaves(g_first), jax.tree.leaves(g_last)):  # input, kernel (and bias)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    back_graphdef, back_params = nnx.split(back, nnx.Param)
    v = jnp.asarray(np.random.default_rng(2).normal(size=(2, 4, 5, 7)).astype(np.float32))
    g_back = jax.grad(lambda f, p: jnp.sum(nnx.merge(back_graphdef, p).from_channels_first(f) * v), argnums=(0, 1))(
        first, back_params)
    g_ref = jax.grad(lambda l, p: jnp.sum(nnx.merge(back_graphdef, p)(l) * v), argnums=(0, 1))(last, back_params)
    np.testing.assert_allclose(g_back[0], jnp.transpose(g_ref[0], (0, 3, 1, 2)), rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves(g_back[1]), jax.tree.leaves(g_ref[1])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_batchnorm_relu_matches_flax_batchnorm_then_relu():
    """The fused training op: the same output, gradients (input, scale, bias) and running statistics."""
    x = jnp.asarray(np.random.default_rng(0).normal(0.3, 2.0, (4, 6, 6, 8)).astype(np.float32))
    w = jnp.asarray(np.random.default_rng(1).normal(size=x.shape).astype(np.float32))

    def run(cls, relu):
        m = cls(8, use_running_average=False, momentum=0.9, rngs=nnx.Rngs(0))
        m.scale[...] = jnp.linspace(0.5, 1.5, 8)
        m.bias[...] = jnp.linspace(-0.3, 0.3, 8)
        graphdef, params, stats = nnx.split(m, nnx.Param, nnx.BatchStat)
        params, stats = nnx.to_pure_dict(params), nnx.to_pure_dict(stats)

        def loss(x, params):
            p_state, s_state = (jax.tree.map(lambda a: a, st) for st in nnx.split(m, nnx.Param, nnx.BatchStat)[1:])
            nnx.replace_by_pure_dict(p_state, params)
            nnx.replace_by_pure_dict(s_state, stats)
            mm = nnx.merge(graphdef, p_state, s_state)
            y = mm(x)
            y = jax.nn.relu(y) if relu else y
            return jnp.sum(y * w), (y, nnx.to_pure_dict(nnx.state(mm, nnx.BatchStat)))

        (_, (y, new_stats)), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(x, params)
        m.eval()
        return y, grads, new_stats, m(x)

    ref, fused = run(nnx.BatchNorm, True), run(model_lib.BatchNormReLU, False)
    assert float(jnp.mean(fused[0] == 0.0)) > 0.2  # the ReLU is exercised
    np.testing.assert_allclose(fused[0], ref[0], rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves(fused[1]), jax.tree.leaves(ref[1])):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    for a, b in zip(jax.tree.leaves(fused[2]), jax.tree.leaves(ref[2])):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(fused[3], jax.nn.relu(ref[3]), rtol=1e-5, atol=1e-5)  # evaluation mode


def test_head_bias_puts_argmax_at_joint_and_bin(images):
    m = model_lib.create_model(RUN_CFG, CODEC, seed=1)
    head = m.heads[1]
    d = CODEC.depth_bins[1]
    joint, bin_ = 1, 2  # channel 1 * 4 + 2 = 6; the other order (bin * J + joint) would be 7
    head.kernel[...] = jnp.zeros_like(head.kernel[...])
    head.bias[...] = jnp.zeros_like(head.bias[...]).at[joint * d + bin_].set(10.0)
    vol = _forward(m, images)[1]
    # Only (joint, bin_) is lit, everywhere in the heatmap.
    np.testing.assert_allclose(vol[:, joint, bin_], 10.0)
    assert float(jnp.abs(vol.at[:, joint, bin_].set(0.0)).max()) == 0.0
    assert np.all(np.asarray(jnp.argmax(vol[:, joint], axis=1)) == bin_)


def _batch_stats(m):
    return jax.tree.map(np.array, jax.tree.leaves(nnx.state(m, nnx.BatchStat)))


def test_batchnorm_train_and_eval(images):
    m = model_lib.create_model(RUN_CFG, CODEC, seed=0)
    assert m.stem_bn.use_running_average is False  # built in training mode
    before = _batch_stats(m)
    train_out = _forward(m, images)[1]
    after_train = _batch_stats(m)
    assert any(not np.array_equal(a, b) for a, b in zip(before, after_train))

    # An eval view shares the weights and leaves the model in training mode.
    view = nnx.view(m, use_running_average=True)
    view_out = _forward(view, images)[1]
    assert m.stem_bn.use_running_average is False
    m.eval()
    eval_out = _forward(m, images)[1]
    after_eval = _batch_stats(m)
    assert all(np.array_equal(a, b) for a, b in zip(after_train, after_eval))
    np.testing.assert_allclose(view_out, eval_out, rtol=1e-6, atol=1e-7)
    assert not np.allclose(train_out, eval_out, rtol=1e-3, atol=1e-6)

    m.train()
    _forward(m, images)
    assert any(not np.array_equal(a, b) for a, b in zip(after_eval, _batch_stats(m)))


def test_bfloat16_compute_keeps_float32_params_and_logits(images):
    f32 = model_lib.create_model(RUN_CFG, CODEC, seed=3)
    bf16 = model_lib.create_model(dict(RUN_CFG, dtype="bfloat16"), CODEC, seed=3)
    params = jax.tree.leaves(nnx.state(bf16, nnx.Param)) + jax.tree.leaves(nnx.state(bf16, nnx.BatchStat))
    assert all(p.dtype == jnp.float32 for p in params)
    # Compared in eval mode: batch statistics of 2 samples on 4x4 maps would
    # amplify bfloat16 rounding into a test of BatchNorm, not of the model.
    f32.eval()
    bf16.eval()
    for a, b in zip(_forward(f32, images), _forward(bf16, images)):
        assert b.dtype == jnp.float32
        scale = float(jnp.abs(a).max())
        assert scale > 0.1
        assert float(jnp.abs(a - b).max()) < 0.04 * scale
    bf16.train()
    assert all(o.dtype == jnp.float32 for o in _abstract_call(bf16, images))  # dtypes are fixed by tracing


def test_images_are_normalised_on_device():
    x = np.array(IMAGE := [[[[0, 128, 255]]]], np.uint8)
    got = model_lib.normalize_images(x)
    want = (np.array(IMAGE, np.float32) / 255 - np.array(model_lib.IMAGE_MEAN)) / np.array(model_lib.IMAGE_STD)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert model_lib.normalize_images(x, jnp.bfloat16).dtype == jnp.bfloat16


def test_create_model_from_full_config():
    config = ml_collections.ConfigDict({"model": RUN_CFG})
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
    x = jnp.asarray(np.random.default_rng(3).standard_normal((2, 4, 4, 8)), jnp.float32)
    got, want = fast(x), conv(x)
    assert got.dtype == want.dtype
    tol = 1e-5 if dtype == jnp.float32 or preferred is not None else 2e-2
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), rtol=tol, atol=tol)
    # The gradients too: its custom backward (materialised operands, product-based bias sums).
    _assert_same_gradients(fast, conv, x, tol=1e-4 if dtype == jnp.float32 else 3e-2)


def _assert_same_gradients(module, reference, x, tol):
    """d sum(f(x) * w) with respect to x and every parameter agree between two modules of one state.

    A bias's gradient is checked against the float32 sum of w instead: in bfloat16, nnx.Conv's
    reduction of the bfloat16 cotangent is itself off by up to ~10% (module's sums run in float32).
    """
    w = jnp.asarray(np.random.default_rng(7).standard_normal(reference(x).shape), jnp.float32)

    def grads(m):
        graphdef, params = nnx.split(m, nnx.Param)
        loss = lambda x, p: jnp.sum(nnx.merge(graphdef, p)(x).astype(jnp.float32) * w)
        gx, gp = jax.grad(loss, argnums=(0, 1))(x, params)
        return {"x": gx, **nnx.to_pure_dict(gp)}

    got, want = grads(module), grads(reference)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    assert float(jnp.max(jnp.abs(want["x"]))) > 0.0
    if "bias" in want:
        exact = np.sum(np.asarray(w.astype(want["bias"].dtype), np.float64), axis=(0, 1, 2))
        btol = 1e-4 if tol <= 1e-4 else 1e-2  # float32 modules, or bfloat16 ones
        np.testing.assert_allclose(np.asarray(got.pop("bias"), np.float32), exact, rtol=btol, atol=btol)
        want.pop("bias")
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert a.dtype == b.dtype
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=tol, atol=tol)


@pytest.mark.parametrize("kernel,strides,padding", [((3, 3), 1, "SAME"), ((7, 7), (2, 2), ((3, 3), (3, 3))),
                                                    ((3, 3), 2, "VALID")])
@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_conv_equals_nnx_conv_in_values_and_gradients(kernel, strides, padding, use_bias, dtype):
    kw = dict(strides=strides, padding=padding, use_bias=use_bias, dtype=dtype)
    mine = model_lib.Conv(4, 6, kernel, rngs=nnx.Rngs(0), **kw)
    ref = nnx.Conv(4, 6, kernel, rngs=nnx.Rngs(0), **kw)
    if use_bias:
        mine.bias[...] = ref.bias[...] = jnp.linspace(-1.0, 1.0, 6)
    x = jnp.asarray(np.random.default_rng(5).standard_normal((2, 10, 10, 4)), jnp.float32)
    got, want = mine(x), ref(x)
    assert got.shape == want.shape and got.dtype == want.dtype
    tol = 1e-5 if dtype == jnp.float32 else 2e-2
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), rtol=tol, atol=tol)
    _assert_same_gradients(mine, ref, x, tol=1e-4 if dtype == jnp.float32 else 5e-2)


@pytest.mark.parametrize("kernel,padding", [((3, 3), ((1, 1), (1, 1))), ((3, 3), ((0, 2), (1, 0))),
                                            ((7, 7), ((3, 3), (3, 3))), ((2, 3), ((0, 0), (0, 0)))])
@pytest.mark.parametrize("batch", [1, 2])
def test_small_batch_conv_gradients_match_autodiff(kernel, padding, batch):
    """The per-tap kernel gradient (the CPU's, since these tests run there): autodiff's values and dtypes."""
    rng = np.random.default_rng(11)
    x = jnp.asarray(rng.normal(size=(batch, 9, 8, 5)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(*kernel, 5, 6)), jnp.float32)

    def reference(x, k):
        return model_lib._conv_nhwc(x, k, (1, 1), padding, None, None)

    custom = functools.partial(model_lib._conv_small_batch, padding=padding)
    np.testing.assert_allclose(custom(x, k), reference(x, k), rtol=1e-5, atol=1e-5)
    w = jnp.asarray(rng.normal(size=reference(x, k).shape), jnp.float32)
    got = jax.grad(lambda *a: jnp.sum(custom(*a) * w), argnums=(0, 1))(x, k)
    want = jax.grad(lambda *a: jnp.sum(reference(*a) * w), argnums=(0, 1))(x, k)
    for a, b in zip(got, want):
        assert a.dtype == b.dtype == jnp.float32 and a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_conv_takes_the_small_batch_gradient_only_where_measured():
    """float32, stride 1, batch <= SMALL_BATCH: the per-tap gradient; anything else: the plain convolution."""
    conv = model_lib.Conv(4, 4, (3, 3), padding="SAME", use_bias=False, rngs=nnx.Rngs(0))
    small = jnp.zeros((model_lib.SMALL_BATCH, 6, 6, 4), jnp.float32)
    assert conv._small_batch_padding(small) == ((1, 1), (1, 1))
    assert conv._small_batch_padding(jnp.zeros((model_lib.SMALL_BATCH + 1, 6, 6, 4))) is None
    assert model_lib.Conv(4, 4, (3, 3), padding="VALID", rngs=nnx.Rngs(0))._small_batch_padding(small) == ((0, 0), (0, 0))
    assert model_lib.Conv(4, 4, (3, 3), strides=2, rngs=nnx.Rngs(0))._small_batch_padding(small) is None
    assert model_lib.Conv(4, 4, (3, 3), dtype=jnp.bfloat16, rngs=nnx.Rngs(0))._small_batch_padding(small) is None
    symbolic = jax.ShapeDtypeStruct((jax.export.symbolic_shape("b")[0], 6, 6, 4), jnp.float32)  # an export's batch
    assert conv._small_batch_padding(symbolic) is None

    def gradient(batch):  # without a bias, the only per-platform choice is the kernel gradient's
        x = jnp.zeros((batch, 6, 6, 4), jnp.float32)
        graphdef, params = nnx.split(conv, nnx.Param)
        return str(jax.make_jaxpr(jax.grad(lambda p: jnp.sum(nnx.merge(graphdef, p)(x))))(params))

    assert "branches_platforms=(('cpu',), None)" in gradient(model_lib.SMALL_BATCH)
    assert "branches_platforms" not in gradient(model_lib.SMALL_BATCH + 1)


def test_conv_refuses_what_it_does_not_compute():
    with pytest.raises(ValueError, match="dilation, groups or mask"):
        model_lib.Conv(4, 4, (3, 3), kernel_dilation=2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="dilation, groups or mask"):
        model_lib.Conv(4, 4, (3, 3), padding="CIRCULAR", rngs=nnx.Rngs(0))


@pytest.mark.parametrize("axis", [-1, 1])
def test_add_bias_gradient_is_the_channel_sum(axis):
    y = jnp.asarray(np.random.default_rng(6).standard_normal((3, 5, 4, 7)), jnp.float32)
    c = y.shape[axis]
    bias = jnp.linspace(-0.5, 0.5, c)
    w = jnp.asarray(np.random.default_rng(8).standard_normal(y.shape), jnp.float32)
    shape = [1] * 4
    shape[axis] = c
    ref = lambda y, b: jnp.sum((y + b.reshape(shape)) * w)
    mine = lambda y, b: jnp.sum(model_lib.add_bias(y, b, axis) * w)
    np.testing.assert_allclose(mine(y, bias), ref(y, bias), rtol=1e-6)
    for a, b in zip(jax.grad(mine, argnums=(0, 1))(y, bias), jax.grad(ref, argnums=(0, 1))(y, bias)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="channel axis"):
        model_lib._channel_sums(y, axis=2)


def test_max_pool_equals_reduce_window_and_passes_gradient_to_the_maximum():
    x = jnp.asarray(np.random.default_rng(4).standard_normal((2, 8, 6, 3)), jnp.float32)
    want = nnx.max_pool(x, window_shape=(2, 2), strides=(2, 2))
    np.testing.assert_array_equal(model_lib._max_pool2(x), want)
    grad = jax.grad(lambda v: model_lib._max_pool2(v).sum())(x)
    # Without ties, each window's maximum gets gradient 1 and the other three get 0.
    np.testing.assert_array_equal(grad, (x == jnp.repeat(jnp.repeat(want, 2, 1), 2, 2)).astype(x.dtype))


# --- arch 'released': the c2f-vol hg-stacked-N network -------------------------------------------

PAPER_CODEC = VolumeCodec(input_size=256, heatmap_size=(64, 64), depth_bins=(1, 2, 4, 64))
PAPER_RELEASED = dict(arch="released", num_stacks=4, features=256, hourglass_depth=4, num_residual=1,
                      num_joints=17, dtype="float32")
RELEASED = dict(CFG, arch="released")  # f=16, depth 2, 32 -> 8x8, D=(1, 4)
RUN_RELEASED = dict(RUN_CFG, arch="released")  # f=4, depth 1, 32 -> 8x8, D=(1, 4)


@pytest.fixture(scope="module")
def paper_released():
    """The paper's released model, abstract: shapes only, nothing allocated."""
    return nnx.eval_shape(lambda: model_lib.create_model(PAPER_RELEASED, PAPER_CODEC, seed=0))


def _kernel(conv):
    return tuple(conv.kernel.shape)


def test_released_paper_model_has_the_released_parameter_count(paper_released):
    assert isinstance(paper_released, model_lib.ReleasedStackedHourglass)
    assert model_lib.count_params(paper_released) == 53_585_847
    assert model_lib.released_param_count(256, 17, (1, 2, 4, 64), 4) == 53_585_847
    # What the Trainer does: the state is exactly Param + BatchStat.
    _, params, stats = nnx.split(paper_released, nnx.Param, nnx.BatchStat)
    assert len(jax.tree.leaves(nnx.state(paper_released))) == len(jax.tree.leaves(params)) + len(
        jax.tree.leaves(stats))
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))


@pytest.mark.parametrize("f,j,bins,depth", [(16, 17, (1, 4), 2), (8, 5, (2,), 1), (12, 3, (1, 2, 4), 3)])
def test_released_param_count_matches_the_module(f, j, bins, depth):
    codec = VolumeCodec(input_size=4 * 2 ** depth, heatmap_size=(2 ** depth,) * 2, depth_bins=bins)
    cfg = dict(RELEASED, features=f, num_joints=j, num_stacks=len(bins), hourglass_depth=depth)
    abstract = nnx.eval_shape(lambda: model_lib.create_model(cfg, codec))
    assert model_lib.count_params(abstract) == model_lib.released_param_count(f, j, bins, depth)


def test_released_paper_model_channel_widths(paper_released):
    m = paper_released
    assert _kernel(m.stem_conv) == (7, 7, 3, 64) and m.stem_conv.bias.shape == (64,)
    assert _kernel(m.stem_res1.conv3) == (1, 1, 64, 128)
    assert [_kernel(b.conv3)[-1] for b in m.stem_pooled] == [128, 128] and _kernel(m.stem_res2.conv3)[-1] == 256
    d_bins = (1, 2, 4, 64)
    for k, (num_in, d) in enumerate(zip((256, 384, 512, 512), d_bins)):
        hg = m.hourglasses[k]
        # Input width (numIn): the first residual of both branches reads it.
        assert hg.upper[0].bn1.scale.shape == (num_in,)
        assert (hg.upper[0].skip is None) if num_in == 256 else _kernel(hg.upper[0].skip)[2] == num_in
        assert hg.lower[0].bn1.scale.shape == (num_in,)
        # Output width 512 from both branches; the inner levels run at 256 in and out of 512.
        assert _kernel(hg.upper[2].conv3)[-1] == 512 and _kernel(hg.lower_out.conv3)[-1] == 512
        assert _kernel(hg.inner.upper[0].conv1)[2] == 256 and _kernel(hg.inner.lower_out.conv3)[-1] == 512
        innermost = hg.inner.inner.inner
        assert _kernel(innermost.inner.conv3) == (1, 1, 256, 512)  # bottom: Res(256 -> 512)
        lin1, lin2 = m.post[k]
        feat = 512 if k == 3 else 256
        assert _kernel(lin1.conv) == (1, 1, 512, 512) and _kernel(lin2.conv) == (1, 1, 512, feat)
        assert _kernel(m.heads[k]) == (1, 1, feat, 17 * d)
    widths = [(_kernel(c)[2], _kernel(c)[3]) for c in m.remap_features]
    assert widths == [(384, 384), (512, 512), (512, 512)]
    assert [_kernel(c) for c in m.remap_preds] == [(1, 1, 17 * d, w) for d, (w, _) in zip(d_bins, widths)]
    # Every convolution carries a bias (the uniform Bottleneck's pre-BN convs do not).
    convs = [v for _, v in nnx.iter_graph(m) if isinstance(v, nnx.Conv)]
    assert convs and all(c.bias is not None for c in convs)


def test_released_single_stack_is_stem_hourglass_and_last_head():
    codec = VolumeCodec(input_size=32, heatmap_size=(8, 8), depth_bins=(8,))
    m = nnx.eval_shape(lambda: model_lib.create_model(dict(RELEASED, num_stacks=1), codec))
    assert len(m.hourglasses) == 1 and len(m.remap_features) == 0 and len(m.remap_preds) == 0
    assert m.hourglasses[0].upper[0].bn1.scale.shape == (16,)
    assert _kernel(m.post[0][1].conv) == (1, 1, 32, 32) and _kernel(m.heads[0]) == (1, 1, 32, 17 * 8)


def test_released_forward_shapes_and_batch_stats(images):
    m = model_lib.create_model(RUN_RELEASED, CODEC, seed=0)
    assert isinstance(m, model_lib.ReleasedStackedHourglass)
    assert m.stem_bn.use_running_average is False
    before = _batch_stats(m)
    out = _forward(m, images)
    assert [o.shape for o in out] == RUN_SHAPES
    assert all(o.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(o))) for o in out)
    assert any(not np.array_equal(a, b) for a, b in zip(before, _batch_stats(m)))
    m.eval()
    after = _batch_stats(m)
    eval_out = _forward(m, images)
    assert all(np.array_equal(a, b) for a, b in zip(after, _batch_stats(m)))
    assert all(bool(jnp.all(jnp.isfinite(o))) for o in eval_out)


def test_released_bfloat16_gives_float32_logits(images):
    m = model_lib.create_model(dict(RUN_RELEASED, dtype="bfloat16"), CODEC, seed=0)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(m, nnx.Param)))
    out = _forward(m, images)
    assert all(o.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(o))) for o in out)
    assert [o.shape for o in out] == RUN_SHAPES


def test_released_feedback_is_the_only_input_of_the_next_stack(images):
    """Stack 2's input is only the feedback convs' sum: zero them and stack 2 sees zeros."""
    m = model_lib.create_model(RUN_RELEASED, CODEC, seed=0)
    m.eval()
    base = _forward(m, images)
    for conv in (m.remap_features[0], m.remap_preds[0]):
        conv.kernel[...] = jnp.zeros_like(conv.kernel[...])
        conv.bias[...] = jnp.zeros_like(conv.bias[...])
    zeroed = _forward(m, images)
    np.testing.assert_array_equal(zeroed[0], base[0])
    # Nothing of stack 1's input is carried forward: stack 2 ran on an all-zero input,
    # so its output is the same for every image.
    np.testing.assert_allclose(zeroed[1][0], zeroed[1][1], rtol=1e-6, atol=1e-6)


def test_create_model_dispatches_on_arch_and_keeps_uniform_by_default():
    assert isinstance(model_lib.create_model(RUN_CFG, CODEC), model_lib.StackedHourglass)
    assert isinstance(model_lib.create_model(dict(RUN_CFG, arch="uniform"), CODEC), model_lib.StackedHourglass)
    with pytest.raises(ValueError, match="builds arch 'uniform'"):
        model_lib.StackedHourglass(RELEASED, CODEC, rngs=nnx.Rngs(0))
    # create_model's parameters are those of a plain nnx.Rngs(params=seed).
    plain = model_lib.StackedHourglass(RUN_CFG, CODEC, rngs=nnx.Rngs(params=5))
    built = model_lib.create_model(RUN_CFG, CODEC, seed=5)
    for a, b in zip(jax.tree.leaves(nnx.state(plain)), jax.tree.leaves(nnx.state(built))):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("change,codec_kw,match", [
    (dict(arch="hg-stacked"), {}, "arch must be one of \\['uniform', 'released'\\]; got 'hg-stacked'"),
    (dict(arch="released"), dict(input_size=64), "released.*input_size / heatmap side == 4; got codec "
                                                 "input_size 64 and heatmap_size \\(8, 8\\) \\(ratio 8\\)"),
    (dict(arch="released"), dict(input_size=16), "ratio 2"),
    (dict(bn_momentum=1.0), {}, "bn_momentum must be in \\[0, 1\\)"),
])
def test_arch_config_errors(change, codec_kw, match):
    codec = VolumeCodec(**{**dict(input_size=32, heatmap_size=(8, 8), depth_bins=(1, 4)), **codec_kw})
    with pytest.raises(ValueError, match=match):
        model_lib.create_model(dict(CFG, **change), codec)


@pytest.mark.parametrize("dtype,out_dtype", [(jnp.float32, None), (jnp.bfloat16, None), (jnp.bfloat16, jnp.float32)])
def test_channels_first_matmul_gradients_match_autodiff(dtype, out_dtype):
    """The remap's hand-written weight gradient: autodiff's values and dtypes, in float32 and bf16."""
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.normal(size=(2, 6, 20)), dtype)  # (B, C_in, P)
    kernel = jnp.asarray(rng.normal(size=(6, 9)), dtype)
    w = jnp.asarray(rng.normal(size=(2, 20, 9)), jnp.float32)

    def reference(x, kernel):
        return jax.lax.dot_general(x, kernel, (((1,), (0,)), ((), ())), preferred_element_type=out_dtype)

    custom = functools.partial(model_lib._channels_first_matmul, preferred_element_type=out_dtype)
    assert custom(x, kernel).dtype == reference(x, kernel).dtype
    got = jax.grad(lambda *a: jnp.sum(custom(*a).astype(jnp.float32) * w), argnums=(0, 1))(x, kernel)
    want = jax.grad(lambda *a: jnp.sum(reference(*a).astype(jnp.float32) * w), argnums=(0, 1))(x, kernel)
    tol = 1e-5 if dtype == jnp.float32 else 2e-2
    for a, b in zip(got, want):
        assert a.dtype == b.dtype == dtype
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=tol, atol=tol)
