"""Stacked hourglass network with coarse-to-fine volumetric heads (Flax NNX).

Two architectures, chosen by the model config's `arch` (`create_model` builds
the right one):

* 'uniform' (`StackedHourglass`): Newell's stacked hourglass, one width
  `features` throughout, `num_residual` bottlenecks per branch, additive
  feedback between stacks.
* 'released' (`ReleasedStackedHourglass`): the released c2f-vol `hg-stacked-N`
  network (geopavlakos/c2f-vol-train), generalised to N = num_stacks and a
  width f = features (the paper: f = 256, 53,585,847 parameters with 17
  joints and D = (1, 2, 4, 64)): three residuals per branch, 2f-wide
  hourglass outputs, lin-lin heads, concatenation feedback, biases on every
  convolution. `num_residual` does not apply to it.

Shapes legend: B batch, S input crop side, H x W heatmap, C features, J joints,
D_i depth bins of stack i.

Layout: activations are NHWC inside the network (the layout XLA's GPU
convolutions prefer); each stack's logits are returned as (B, J, D_i, H, W),
the layout `VolumeCodec` works in.

Head channel convention: channel c of stack i's head belongs to joint
j = c // D_i and depth bin d = c % D_i, i.e. c = j * D_i + d.

Train / eval: every BatchNorm is built in training mode
(`use_running_average=False`). Use the NNX idioms of this Flax version:
`model.train()` / `model.eval()` switch a model in place, and
`nnx.view(model, use_running_average=True)` gives an evaluation view that
shares the weights without touching the training model. In training mode a
call updates the running statistics (`nnx.BatchStat` variables), so a jitted
train step must carry that state out (`nnx.jit` does, or split the model with
`nnx.split` and return the updated `nnx.BatchStat` state).

Precision: `dtype` in the model config is the compute dtype; parameters and
BatchNorm statistics are always float32 and logits are returned in float32.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from c2f_vol import config as config_lib
from c2f_vol.codec import VolumeCodec

# Per-channel RGB statistics (ImageNet) used to normalise uint8 images on
# device as (x / 255 - IMAGE_MEAN) / IMAGE_STD. Export reuses these constants.
IMAGE_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGE_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

REQUIRED_KEYS = ("num_stacks", "features", "hourglass_depth", "num_residual", "num_joints", "dtype")
# The other keys of the base config's model block (arch, bn_momentum) may be left out and take its values.
OPTIONAL_KEYS = tuple(k for k in config_lib.base_config().model if k not in REQUIRED_KEYS)

def normalize_images(images, dtype=jnp.float32):
    """(B, S, S, 3) uint8 or float pixels in [0, 255] -> normalised `dtype`."""
    x = jnp.asarray(images).astype(jnp.float32) / 255.0
    x = (x - jnp.asarray(IMAGE_MEAN, jnp.float32)) / jnp.asarray(IMAGE_STD, jnp.float32)
    return x.astype(dtype)


def _init_common(model: nnx.Module, model_config: Mapping[str, Any], codec: VolumeCodec, arch: str) -> dict:
    """Validate the config for `arch` and set the attributes every architecture has; returns the config."""
    cfg = _check_config(model_config, codec)
    _check_arch(cfg, arch, type(model).__name__)
    model.num_joints = cfg["num_joints"]
    model.depth_bins = tuple(codec.depth_bins)
    model.input_size = int(codec.input_size)
    model.heatmap_size = tuple(codec.heatmap_size)
    model.dtype = DTYPES[cfg["dtype"]]
    return cfg


def _normalized_input(images, size: int, dtype, model_name: str):
    """Check (B, S, S, 3) and normalise; the first step of every architecture."""
    if images.ndim != 4 or tuple(images.shape[1:]) != (size, size, 3):
        raise ValueError(f"{model_name} expects images (B, {size}, {size}, 3); got {tuple(images.shape)}")
    return normalize_images(images, dtype)


def _max_pool2(x):
    """2x2 max-pool, stride 2: (B, H, W, C) -> (B, H/2, W/2, C).

    A reshape and a plain max-reduction rather than `reduce_window`: the same
    values, but XLA fuses it, and its gradient is an elementwise select instead
    of select-and-scatter (measured on the synthetic_cpu train step, CPU:
    reduce-window, its scatter and iotas took ~12 ms of a ~55 ms step). Where
    a window holds tied maxima the gradient is split between them.
    """
    b, h, w, c = x.shape
    return jnp.max(x.reshape(b, h // 2, 2, w // 2, 2, c), axis=(2, 4))


def _upsample2(x):
    """Nearest-neighbour (B, H, W, C) -> (B, 2H, 2W, C)."""
    b, h, w, c = x.shape
    x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c))
    return x.reshape(b, 2 * h, 2 * w, c)


@jax.custom_vjp
def _bn_relu_train(x, scale, bias, epsilon):
    """relu(BatchNorm(x)) over the batch's statistics (NHWC, per channel); also returns them.

    Returns (y in x's dtype, mean, biased variance), the statistics float32 and not
    differentiated (they only update the running averages). The gradient is written
    out: one fused pass for the two channel sums, one for dx, where autodiff of
    flax's normalisation and a separate ReLU took about 12 ops per layer.
    """
    return _bn_relu_fwd(x, scale, bias, epsilon)[0]


def _channel_sums(*arrays, axis: int = -1):
    """Per-channel sums (over every axis but `axis`, the last or the second) of float32 arrays of one shape.

    On the CPU they are matrix-vector products with a ones vector: XLA:CPU rewrites a large
    reduction into a single-threaded reduce-window tree (for precision), which took 1.8 s of the
    paper model's 13.4 s train step at batch 2 (AVX2, ~1,800 such ops per step, BatchNorm's
    statistics and gradients); a product with ones ran the statistics of a (2, 64, 64, 512) input
    in 6.2 instead of 32.8 ms, float32 throughout (Precision.HIGHEST); the sums differ from the
    reduction's by float32 rounding (7e-6 relative on 8,192 rows of mean 1). Other platforms keep
    XLA's reduction (`lax.platform_dependent` picks at lowering).
    """
    shape = arrays[0].shape
    axis = axis % len(shape)
    if axis not in (1, len(shape) - 1):
        raise ValueError(f"channel axis must be the second or the last of {shape}, got {axis}")
    c = shape[axis]
    highest = jax.lax.Precision.HIGHEST

    def by_reduction():
        axes = tuple(k for k in range(len(shape)) if k != axis)
        return tuple(jnp.sum(a, axis=axes) for a in arrays)

    def by_product():
        if axis == len(shape) - 1:  # (..., C): ones (N,) @ (N, C)
            ones = jnp.ones((math.prod(shape[:-1]),), jnp.float32)
            return tuple(jnp.dot(ones, a.reshape(-1, c), precision=highest) for a in arrays)
        # (B, C, ...): (B * C, N) @ ones (N,), then the B partial sums
        ones = jnp.ones((math.prod(shape[2:]),), jnp.float32)
        return tuple(jnp.dot(a.reshape(shape[0] * c, -1), ones, precision=highest).reshape(shape[0], c).sum(0)
                     for a in arrays)

    return jax.lax.platform_dependent(cpu=by_product, default=by_reduction)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def add_bias(y, bias, axis: int):
    """y + bias along y's channel `axis` (the last, or the second for channels-first arrays).

    The same values and gradients as the broadcast add; only the bias's gradient, the sum of y's
    cotangent over every other axis, is computed by `_channel_sums`: on the CPU XLA turned each
    of those sums into a reduce-window tree (the released model's ~400 biased convolutions; 26 of
    the 362 ms of a 512-channel residual block's train step, AVX2).
    """
    return _add_bias_fwd(y, bias, axis)[0]


def _add_bias_fwd(y, bias, axis):
    shape = [1] * y.ndim
    shape[axis] = bias.shape[0]
    return y + bias.astype(y.dtype).reshape(shape), bias  # the bias: its dtype for the gradient


def _add_bias_bwd(axis, bias, g):
    (total,) = _channel_sums(g.astype(jnp.float32), axis=axis)
    return g, total.astype(bias.dtype)


add_bias.defvjp(_add_bias_fwd, _add_bias_bwd)


def _bn_stats(x):
    xf = x.astype(jnp.float32)
    n = math.prod(x.shape[:-1])
    total, squares = _channel_sums(xf, xf * xf)
    mean = total / n
    var = jnp.maximum(squares / n - mean * mean, 0.0)  # flax's fast variance
    return mean, var


def _bn_relu_fwd(x, scale, bias, epsilon):
    mean, var = _bn_stats(x)
    rstd = jax.lax.rsqrt(var + epsilon)
    a = scale * rstd
    b = bias - mean * a
    y = jnp.maximum(x.astype(jnp.float32) * a + b, 0.0).astype(x.dtype)
    return (y, mean, var), (x, mean, rstd, a, b)


def _bn_relu_bwd(res, cotangents):
    x, mean, rstd, a, b = res
    g = cotangents[0].astype(jnp.float32)
    xf = x.astype(jnp.float32)
    g = jnp.where(xf * a + b > 0.0, g, 0.0)
    xhat = (xf - mean) * rstd
    n = math.prod(x.shape[:-1])
    dbias, dscale = _channel_sums(g, g * xhat)
    dx = a * (g - (dbias + xhat * dscale) / n)
    return dx.astype(x.dtype), dscale, dbias, None


_bn_relu_train.defvjp(_bn_relu_fwd, _bn_relu_bwd)


class BatchNormReLU(nnx.BatchNorm):
    """`nnx.BatchNorm` over the last axis followed by a ReLU, in one fused op when training.

    The same variables (scale, bias, running mean and var), defaults and
    statistics as nnx.BatchNorm with use_fast_variance, and the same running
    average update (momentum, biased variance); only the forward and backward
    passes are computed together (`_bn_relu_train`). Evaluation mode is the
    running statistics' affine map and the ReLU.
    """

    def __call__(self, x, use_running_average: bool | None = None):
        running = self.use_running_average if use_running_average is None else use_running_average
        n = x.shape[-1]
        scale = jnp.ones((n,), jnp.float32) if self.scale is None else self.scale[...].astype(jnp.float32)
        bias = jnp.zeros((n,), jnp.float32) if self.bias is None else self.bias[...].astype(jnp.float32)
        if running:
            a = scale * jax.lax.rsqrt(self.var[...] + self.epsilon)
            y = x.astype(jnp.float32) * a + (bias - self.mean[...] * a)
            return jnp.maximum(y, 0.0).astype(self.dtype or x.dtype)
        y, mean, var = _bn_relu_train(x.astype(self.dtype or x.dtype), scale, bias, self.epsilon)
        m = self.momentum
        self.mean[...] = jax.lax.stop_gradient(m * self.mean[...] + (1 - m) * mean)
        self.var[...] = jax.lax.stop_gradient(m * self.var[...] + (1 - m) * var)
        return y


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def materialized_vjp(fn, *operands):
    """fn(*operands), differentiated on materialised operands and cotangent.

    The same values and gradients as fn. A matmul's weight gradient (x^T g for a 1x1
    convolution) contracts the rows of both operands; XLA:CPU transposes one of them for it and
    fuses that transpose into whatever computes the operand, so elementwise work (BatchNorm's
    backward, pooling's and the residual sums) ran with transposed, strided writes: up to 50 ms
    for one (2, 64, 64, 512) gradient of the released model (AVX2). An optimisation barrier
    makes the operands and the cotangent plain arrays first, so the transpose is a copy; the
    released model's float32 train step at batch 2 went from 6.5 to 5.7 s (AVX2). CPU only: on
    other platforms this is fn's own gradient.
    """
    return fn(*operands)


def _materialized_fwd(fn, *operands):
    return fn(*operands), operands


def _materialized_bwd(fn, operands, g):
    # The barrier on the CPU only: other backends' GEMMs read transposed operands in place.
    operands, g = jax.lax.platform_dependent((operands, g), cpu=jax.lax.optimization_barrier, default=lambda a: a)
    return jax.vjp(fn, *operands)[1](g)


materialized_vjp.defvjp(_materialized_fwd, _materialized_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _channels_first_matmul(x, kernel, preferred_element_type=None):
    """(B, C_in, P) x (C_in, C_out) -> (B, P, C_out), with a weight gradient that transposes only x.

    Autodiff's weight gradient contracts x over (B, P) with the (B, P, C_out) cotangent, and
    XLA:CPU laid it out as x^T g^T: it transposed the cotangent (C_out = 512 for the released
    model's remaps) inside the fusion that computes it, 21-48 ms per remap (AVX2). Here the
    weight gradient is (C_in, B * P) x (B * P, C_out) and the input gradient (B * P, C_out) x
    (C_out, C_in): C_in is the few head channels, so only small arrays are transposed and the
    cotangent is read as it is laid out.
    """
    return _channels_first_fwd(x, kernel, preferred_element_type)[0]


def _channels_first_fwd(x, kernel, preferred_element_type):
    y = jax.lax.dot_general(x, kernel, (((1,), (0,)), ((), ())), preferred_element_type=preferred_element_type)
    return y, (x, kernel)


def _channels_first_bwd(preferred_element_type, res, g):
    x, kernel = res
    b, c, p = x.shape
    dot = functools.partial(jax.lax.dot_general, preferred_element_type=preferred_element_type)
    dx = dot(g, kernel, (((2,), (1,)), ((), ())))  # (B, P, C_in): g read row by row, as in the forward
    rows = jnp.transpose(x, (1, 0, 2)).reshape(c, b * p)
    dkernel = dot(rows, g.reshape(b * p, -1), (((1,), (0,)), ((), ())))
    return jnp.transpose(dx, (0, 2, 1)).astype(x.dtype), dkernel.astype(kernel.dtype)


_channels_first_matmul.defvjp(_channels_first_fwd, _channels_first_bwd)


# The largest (traced) batch whose stride-1 convolutions get `_conv_small_batch`'s kernel gradient.
SMALL_BATCH = 2


def _conv_nhwc(x, kernel, strides, padding, precision, preferred_element_type):
    return jax.lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        precision=precision, preferred_element_type=preferred_element_type)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv_small_batch(x, kernel, padding, precision=None, preferred_element_type=None):
    """A stride-1 NHWC convolution with explicit (low, high) padding, for small batches (`Conv`: <= SMALL_BATCH).

    The same values and gradients as the convolution. On the CPU its kernel gradient is
    K_h * K_w matrix products, one per kernel tap: the cotangent (B * H_out * W_out, C_out)
    contracted with the input window that tap sees. XLA:CPU computes autodiff's kernel gradient
    as a convolution whose input features are the batch, and with 2 of them it ran at ~60-90 of
    the ~140 GFLOP/s the forward reaches: 106 GFLOP of the released model's batch-2 train step
    are these gradients. The taps' products ran the (2, 64, 64, 256) gradient in 89 instead of
    105-149 ms, and the train step ~4% faster (AVX2). At batch 4 and above autodiff's is faster
    (114-131 GFLOP/s), so `Conv` uses this for batches up to SMALL_BATCH only; other platforms
    keep autodiff's gradient (`lax.platform_dependent` picks at lowering).
    """
    return _conv_small_batch_fwd(x, kernel, padding, precision, preferred_element_type)[0]


def _conv_small_batch_fwd(x, kernel, padding, precision, preferred_element_type):
    return _conv_nhwc(x, kernel, (1, 1), padding, precision, preferred_element_type), (x, kernel)


def _conv_small_batch_bwd(padding, precision, preferred_element_type, res, g):
    x, kernel = res
    conv = functools.partial(_conv_nhwc, strides=(1, 1), padding=padding, precision=precision,
                             preferred_element_type=preferred_element_type)
    dx = jax.vjp(lambda x: conv(x, kernel), x)[1](g)[0]

    def by_autodiff():
        return jax.vjp(lambda k: conv(x, k), kernel)[1](g)[0]

    def by_taps():
        kh, kw, cin, cout = kernel.shape
        _, h, w, _ = g.shape
        padded = jnp.pad(x, ((0, 0), *padding, (0, 0)))
        rows = g.reshape(-1, cout)
        taps = [jax.lax.dot_general(rows, padded[:, i:i + h, j:j + w].reshape(-1, cin), (((0,), (0,)), ((), ())),
                                    precision=precision, preferred_element_type=jnp.float32)
                for i in range(kh) for j in range(kw)]  # (C_out, C_in) each: the cotangent read as laid out
        return jnp.stack(taps).transpose(0, 2, 1).reshape(kernel.shape).astype(kernel.dtype)

    return dx, jax.lax.platform_dependent(cpu=by_taps, default=by_autodiff)


_conv_small_batch.defvjp(_conv_small_batch_fwd, _conv_small_batch_bwd)


class Conv(nnx.Conv):
    """A 2-D NHWC `nnx.Conv` (no dilation, groups or mask) whose bias is added by `add_bias`.

    The same parameters, defaults and values as nnx.Conv; with a bias, its gradient is the
    product-based channel sum on the CPU (`add_bias`), not XLA:CPU's reduce-window tree. A
    float32 stride-1 convolution of a batch of at most SMALL_BATCH takes its kernel gradient
    from `_conv_small_batch`.
    """

    def __init__(self, cin: int, cout: int, kernel_size, **kw):
        super().__init__(cin, cout, kernel_size, **kw)
        plain = (self.feature_group_count == 1 and self.mask is None and len(self.kernel_size) == 2
                 and all(d in (None, 1) for d in _pair(self.input_dilation) + _pair(self.kernel_dilation)))
        padding = self.padding
        lax_padding = padding in ("SAME", "VALID") if isinstance(padding, str) else not isinstance(padding, int)
        if not (plain and lax_padding):
            raise ValueError("Conv supports 2-D convolutions without dilation, groups or mask, with "
                             f"'SAME', 'VALID' or explicit (low, high) padding; got {self!r}")

    def __call__(self, x):
        small = self._small_batch_padding(x)
        if self.bias is None and small is None:
            return super().__call__(x)
        operands = (x, self.kernel[...]) + (() if self.bias is None else (self.bias[...],))
        x, kernel, *bias = self.promote_dtype(operands, dtype=self.dtype)
        if small is not None:
            y = _conv_small_batch(x, kernel, small, self.precision, self.preferred_element_type)
        else:
            y = _conv_nhwc(x, kernel, _pair(self.strides), self.padding, self.precision,
                           self.preferred_element_type)
        return y if not bias else add_bias(y, bias[0], -1)

    def _small_batch_padding(self, x):
        """The explicit padding when this call takes `_conv_small_batch`'s gradient, else None."""
        batch = x.shape[0]  # a symbolic dimension (an export's polymorphic batch) takes the plain convolution
        dtype = self.dtype or jnp.result_type(x, self.kernel[...])
        if (not isinstance(batch, int) or batch > SMALL_BATCH or jnp.dtype(dtype) != jnp.float32
                or _pair(self.strides) not in ((1, 1), (None, None))):
            return None
        padding = self.padding
        if isinstance(padding, str):
            padding = jax.lax.padtype_to_pads(x.shape[1:3], self.kernel_size, (1, 1), padding)
        pads = tuple(tuple(p) for p in padding)
        return pads if all(p >= 0 for pair in pads for p in pair) else None


def _pair(value) -> tuple:
    return (value, value) if value is None or isinstance(value, int) else tuple(value)


class PointwiseConv(nnx.Conv):
    """A 1x1, stride-1 `nnx.Conv` computed as a matmul over the channel axis.

    Same parameters (kernel (1, 1, C_in, C_out), optional bias) and the same
    result as nnx.Conv, but a dot_general: its gradients are plain matmuls,
    where the convolution's weight gradient made XLA (CPU) materialise
    transposed copies of the activations. Measured with tools/benchmark.py.
    """

    def __init__(self, cin: int, cout: int, **kw):
        super().__init__(cin, cout, (1, 1), **kw)

    def _operands(self, x):
        """x, the (C_in, C_out) kernel and the bias (or None), promoted to the compute dtype."""
        bias = self.bias[...] if self.bias is not None else None
        x, kernel, bias = self.promote_dtype((x, self.kernel[...], bias), dtype=self.dtype)
        return x, kernel[0, 0], bias

    def _matmul(self, dimension_numbers):
        return functools.partial(jax.lax.dot_general, dimension_numbers=dimension_numbers,
                                 preferred_element_type=self.preferred_element_type)

    def __call__(self, x):
        x, kernel, bias = self._operands(x)
        y = materialized_vjp(self._matmul((((1,), (0,)), ((), ()))), x.reshape(-1, x.shape[-1]), kernel)
        y = y.reshape(x.shape[:-1] + (kernel.shape[1],))
        return y if bias is None else add_bias(y, bias, -1)

    def channels_first(self, x):
        """(B, H, W, C_in) -> (B, C_out, H, W): the same values as __call__, channels first.

        Computed as one (C_out, C_in) x (C_in, H * W) matmul per sample on the
        transposed input, so the output is born in the layout the volumes are read
        in: a head's C_out = J * D channels are far more than its C_in, and
        transposing the output (and its gradient) cost about twice what
        transposing the input does (synthetic_cpu train step, CPU).
        """
        x, kernel, bias = self._operands(x)
        b, h, w, c = x.shape
        xt = jnp.transpose(x.reshape(b, h * w, c), (0, 2, 1))  # (B, C_in, HW)
        wt = jnp.broadcast_to(kernel.T[None], (b,) + kernel.T.shape)  # (B, C_out, C_in)
        y = materialized_vjp(self._matmul((((2,), (1,)), ((0,), (0,)))), wt, xt)
        if bias is not None:
            y = add_bias(y, bias, 1)
        return y.reshape(b, -1, h, w)

    def from_channels_first(self, x):
        """(B, C_in, H, W) -> (B, H, W, C_out): __call__ of the channels-last transpose of x."""
        x, kernel, bias = self._operands(x)
        b, c, h, w = x.shape
        y = _channels_first_matmul(x.reshape(b, c, h * w), kernel, self.preferred_element_type)  # (B, HW, C_out)
        y = y if bias is None else add_bias(y, bias, -1)
        return y.reshape(b, h, w, -1)


class Bottleneck(nnx.Module):
    """Pre-activation bottleneck residual block (BN-ReLU-conv 1x1, 3x3, 1x1).

    (B, H, W, C_in) -> (B, H, W, C_out); a 1x1 projection on the skip path
    when C_in != C_out.

    conv_bias: False (the uniform model) leaves the bias off the two convs
    that feed a BatchNorm, whose shift replaces it; True gives every conv a
    bias, as the released Torch `Residual` block has.
    """

    def __init__(self, cin: int, cout: int, *, dtype, momentum: float, rngs: nnx.Rngs,
                 conv_bias: bool = False):
        mid = max(cout // 2, 1)
        bn = dict(dtype=dtype, momentum=momentum, use_running_average=False, rngs=rngs)
        conv = dict(dtype=dtype, padding="SAME", rngs=rngs)
        self.bn1 = BatchNormReLU(cin, **bn)
        self.conv1 = PointwiseConv(cin, mid, use_bias=conv_bias, **conv)
        self.bn2 = BatchNormReLU(mid, **bn)
        self.conv2 = Conv(mid, mid, (3, 3), use_bias=conv_bias, **conv)
        self.bn3 = BatchNormReLU(mid, **bn)
        self.conv3 = PointwiseConv(mid, cout, **conv)
        self.skip = PointwiseConv(cin, cout, **conv) if cin != cout else None

    def __call__(self, x):
        h = self.conv1(self.bn1(x))
        h = self.conv2(self.bn2(h))
        h = self.conv3(self.bn3(h))
        return h + (x if self.skip is None else self.skip(x))


def _blocks(n: int, cin: int, cout: int, **kw) -> nnx.List:
    return nnx.List([Bottleneck(cin if k == 0 else cout, cout, **kw) for k in range(n)])


def _run(blocks, x):
    for block in blocks:
        x = block(x)
    return x


class Hourglass(nnx.Module):
    """One hourglass of `depth` levels: (B, H, W, C) -> (B, H, W, C).

    Each level keeps a full-resolution skip branch, pools by 2, recurses (or
    runs residual blocks at the bottom), upsamples by 2 and adds the skip.
    H and W must be divisible by 2**depth.
    """

    def __init__(self, depth: int, features: int, num_residual: int, **kw):
        self.skip = _blocks(num_residual, features, features, **kw)
        self.down = _blocks(num_residual, features, features, **kw)
        if depth > 1:
            self.inner = Hourglass(depth - 1, features, num_residual, **kw)
        else:
            self.inner = _blocks(num_residual, features, features, **kw)
        self.up = _blocks(num_residual, features, features, **kw)

    def __call__(self, x):
        skip = _run(self.skip, x)
        low = _run(self.down, _max_pool2(x))
        low = self.inner(low) if isinstance(self.inner, Hourglass) else _run(self.inner, low)
        return skip + _upsample2(_run(self.up, low))


class StackedHourglass(nnx.Module):
    """Stacked hourglass with one volumetric head per stack.

    Args:
      model_config: mapping with num_stacks, features, hourglass_depth,
        num_residual, num_joints, dtype ('float32' | 'bfloat16'), and optional
        arch (must be 'uniform' here; see `create_model`) and bn_momentum.
      codec: gives the input size S, heatmap size (H, W) and the depth bins
        D_i of every stack (len(codec.depth_bins) must equal num_stacks).

    Call: images (B, S, S, 3) uint8 or float in [0, 255] -> tuple with one
    float32 (B, J, D_i, H, W) logit volume per stack.
    """

    def __init__(self, model_config: Mapping[str, Any], codec: VolumeCodec, *, rngs: nnx.Rngs):
        cfg = _init_common(self, model_config, codec, "uniform")
        f = cfg["features"]
        kw = dict(dtype=self.dtype, momentum=cfg["bn_momentum"], rngs=rngs)
        conv = dict(dtype=self.dtype, padding="SAME", rngs=rngs)
        nres = cfg["num_residual"]

        # Stem (Newell et al.): 7x7 stride-2 conv, then one max-pool per
        # remaining factor of 2 down to the heatmap size.
        c1, c2 = f // 4, f // 2
        num_pools = int(round(math.log2(self.input_size // self.heatmap_size[0]))) - 1
        self.stem_conv = Conv(3, c1, (7, 7), strides=(2, 2), use_bias=False, **conv)
        self.stem_bn = BatchNormReLU(c1, use_running_average=False, dtype=self.dtype,
                                     momentum=cfg["bn_momentum"], rngs=rngs)
        self.stem_res1 = Bottleneck(c1, c2, **kw)
        self.stem_pooled = nnx.List([Bottleneck(c2, c2, **kw) for _ in range(num_pools)])
        self.stem_res2 = Bottleneck(c2, f, **kw)

        self.hourglasses = nnx.List()
        self.post = nnx.List()
        self.heads = nnx.List()
        self.remap_features = nnx.List()
        self.remap_preds = nnx.List()
        for i, d in enumerate(self.depth_bins):
            self.hourglasses.append(Hourglass(cfg["hourglass_depth"], f, nres, **kw))
            self.post.append(nnx.List([
                *_blocks(nres, f, f, **kw),
                PointwiseConv(f, f, use_bias=False, **conv),
                BatchNormReLU(f, use_running_average=False, dtype=self.dtype,
                              momentum=cfg["bn_momentum"], rngs=rngs),
            ]))
            # The head emits float32 so logits keep full precision under
            # bfloat16 compute; channel c = j * D_i + d (see module docstring).
            self.heads.append(PointwiseConv(f, self.num_joints * d, preferred_element_type=jnp.float32, **conv))
            if i + 1 < len(self.depth_bins):
                self.remap_features.append(PointwiseConv(f, f, **conv))
                self.remap_preds.append(PointwiseConv(self.num_joints * d, f, **conv))

    def __call__(self, images) -> tuple[jax.Array, ...]:
        """(B, S, S, 3) images -> tuple of float32 (B, J, D_i, H, W) logits."""
        x = _normalized_input(images, self.input_size, self.dtype, type(self).__name__)
        x = self.stem_bn(self.stem_conv(x))
        x = self.stem_res1(x)
        for block in self.stem_pooled:
            x = block(_max_pool2(x))
        x = self.stem_res2(x)

        outputs = []
        for i, d in enumerate(self.depth_bins):
            h = self.hourglasses[i](x)
            *res, lin, bn = self.post[i]
            h = bn(lin(_run(res, h)))
            pred = self.heads[i].channels_first(h)  # (B, J * D_i, H, W), float32
            outputs.append(head_to_volume(pred, self.num_joints, d))
            if i + 1 < len(self.depth_bins):
                # Intermediate supervision: features and predictions are mapped
                # back and added to what enters the next stack.
                x = x + self.remap_features[i](h) + self.remap_preds[i].from_channels_first(pred.astype(self.dtype))
        return tuple(outputs)


class Lin(nnx.Module):
    """The released code's `lin`: 1x1 conv (with bias), BN, ReLU. (B, H, W, C_in) -> (B, H, W, C_out)."""

    def __init__(self, cin: int, cout: int, *, dtype, momentum: float, rngs: nnx.Rngs):
        self.conv = PointwiseConv(cin, cout, dtype=dtype, padding="SAME", rngs=rngs)
        self.bn = BatchNormReLU(cout, use_running_average=False, dtype=dtype, momentum=momentum, rngs=rngs)

    def __call__(self, x):
        return self.bn(self.conv(x))


class ReleasedHourglass(nnx.Module):
    """The released `hourglass(n, numIn, numOut)`: (B, H, W, cin) -> (B, H, W, cout).

    Upper branch: Res(cin->f), Res(f->f), Res(f->cout) at full resolution.
    Lower branch: max-pool, Res(cin->f), Res(f->f), Res(f->f), then the
    next level `ReleasedHourglass(depth - 1, f, cout)` (or Res(f->cout) at the
    bottom), Res(cout->cout) and nearest x2 upsampling. Output: the sum.
    H and W must be divisible by 2**depth.
    """

    def __init__(self, depth: int, cin: int, cout: int, features: int, **kw):
        f = features
        self.upper = nnx.List([Bottleneck(cin, f, **kw), Bottleneck(f, f, **kw), Bottleneck(f, cout, **kw)])
        self.lower = nnx.List([Bottleneck(cin, f, **kw), Bottleneck(f, f, **kw), Bottleneck(f, f, **kw)])
        if depth > 1:
            self.inner = ReleasedHourglass(depth - 1, f, cout, f, **kw)
        else:
            self.inner = Bottleneck(f, cout, **kw)
        self.lower_out = Bottleneck(cout, cout, **kw)

    def __call__(self, x):
        upper = _run(self.upper, x)
        low = self.lower_out(self.inner(_run(self.lower, _max_pool2(x))))
        return upper + _upsample2(low)


class ReleasedStackedHourglass(nnx.Module):
    """The released c2f-vol `hg-stacked-N` network, N = num_stacks, width f = features.

    Structure (Torch's f = 256):
      stem: conv 7x7 stride 2 (3 -> f/4), BN, ReLU, Res(f/4 -> f/2), max-pool
        (the "pooled stem features", f/2 channels), Res(f/2 -> f/2) twice,
        Res(f/2 -> f). It therefore needs input_size == 4 * heatmap side.
      stack k: `ReleasedHourglass(hourglass_depth, numIn_k, 2f)`; head
        lin(2f -> 2f), lin(2f -> f) (the stack's "head features"; lin(2f -> 2f)
        twice for the last stack), then a 1x1 conv to J * D_k logits.
      numIn: f for stack 1, 1.5f for stack 2, 2f after that.
      feedback into stack k + 1: concat(head features of stack k, the pooled
        stem features for k = 1 or the head features of stack k - 1 after),
        a 1x1 conv of that (1.5f or 2f wide) plus a 1x1 conv of stack k's
        logits. Nothing else: unlike the uniform model, the previous stack's
        input is not carried forward.
    Every convolution has a bias. `num_residual` is ignored (the released
    network has a fixed number of residuals per branch). Parameter names follow
    the uniform model where the parts correspond (stem_*, hourglasses, post,
    heads, remap_features, remap_preds).

    The 7x7 stem conv pads 3 on every side as Torch's did (for even S the
    output side is S/2 either way; "SAME" would pad 2 before and 3 after).

    Call contract as `StackedHourglass`: images (B, S, S, 3) uint8 or float in
    [0, 255] -> tuple with one float32 (B, J, D_i, H, W) logit volume per stack.
    """

    def __init__(self, model_config: Mapping[str, Any], codec: VolumeCodec, *, rngs: nnx.Rngs):
        cfg = _init_common(self, model_config, codec, "released")
        f = cfg["features"]
        quarter, half, wide = f // 4, f // 2, 2 * f
        kw = dict(dtype=self.dtype, momentum=cfg["bn_momentum"], rngs=rngs)
        res = dict(kw, conv_bias=True)
        conv = dict(dtype=self.dtype, padding="SAME", rngs=rngs)

        self.stem_conv = Conv(3, quarter, (7, 7), strides=(2, 2), padding=((3, 3), (3, 3)),
                                  dtype=self.dtype, rngs=rngs)
        self.stem_bn = BatchNormReLU(quarter, use_running_average=False, dtype=self.dtype,
                                     momentum=cfg["bn_momentum"], rngs=rngs)
        self.stem_res1 = Bottleneck(quarter, half, **res)
        self.stem_pooled = nnx.List([Bottleneck(half, half, **res), Bottleneck(half, half, **res)])
        self.stem_res2 = Bottleneck(half, f, **res)

        self.hourglasses = nnx.List()
        self.post = nnx.List()
        self.heads = nnx.List()
        self.remap_features = nnx.List()
        self.remap_preds = nnx.List()
        last = len(self.depth_bins) - 1
        for i, d in enumerate(self.depth_bins):
            cin = f if i == 0 else (f + half if i == 1 else wide)
            self.hourglasses.append(ReleasedHourglass(cfg["hourglass_depth"], cin, wide, f, **res))
            feat = wide if i == last else f
            self.post.append(nnx.List([Lin(wide, wide, **kw), Lin(wide, feat, **kw)]))
            # float32 logits under bfloat16 compute; channel c = j * D_i + d.
            self.heads.append(PointwiseConv(feat, self.num_joints * d, preferred_element_type=jnp.float32, **conv))
            if i < last:
                width = f + half if i == 0 else wide
                self.remap_features.append(PointwiseConv(width, width, **conv))
                self.remap_preds.append(PointwiseConv(self.num_joints * d, width, **conv))

    def __call__(self, images) -> tuple[jax.Array, ...]:
        """(B, S, S, 3) images -> tuple of float32 (B, J, D_i, H, W) logits."""
        x = _normalized_input(images, self.input_size, self.dtype, type(self).__name__)
        x = self.stem_bn(self.stem_conv(x))
        pooled = _max_pool2(self.stem_res1(x))  # (B, H, W, f/2)
        x = self.stem_res2(_run(self.stem_pooled, pooled))

        outputs = []
        previous = pooled  # what stack 1's head features are concatenated with
        for i, d in enumerate(self.depth_bins):
            h = _run(self.post[i], self.hourglasses[i](x))
            pred = self.heads[i].channels_first(h)  # (B, J * D_i, H, W), float32
            outputs.append(head_to_volume(pred, self.num_joints, d))
            if i + 1 < len(self.depth_bins):
                cat = jnp.concatenate([h, previous], axis=-1)
                x = self.remap_features[i](cat) + self.remap_preds[i].from_channels_first(pred.astype(self.dtype))
                previous = h
        return tuple(outputs)


def released_param_count(features: int, num_joints: int, depth_bins, hourglass_depth: int) -> int:
    """Parameters of `ReleasedStackedHourglass` from its structure alone (no Flax).

    Counts conv weights and biases and BatchNorm scale and shift (running
    statistics excluded), for len(depth_bins) stacks. The paper's model,
    released_param_count(256, 17, (1, 2, 4, 64), 4), has 53,585,847.
    """
    f, j, bins = int(features), int(num_joints), tuple(int(d) for d in depth_bins)

    def conv(cin, cout, k=1):
        return k * k * cin * cout + cout

    def bn(c):
        return 2 * c

    def res(cin, cout):
        mid = cout // 2
        n = bn(cin) + conv(cin, mid) + bn(mid) + conv(mid, mid, 3) + bn(mid) + conv(mid, cout)
        return n + (conv(cin, cout) if cin != cout else 0)

    def hourglass(n, cin, cout):
        upper = res(cin, f) + res(f, f) + res(f, cout)
        lower = res(cin, f) + 2 * res(f, f)
        inner = hourglass(n - 1, f, cout) if n > 1 else res(f, cout)
        return upper + lower + inner + res(cout, cout)

    def lin(cin, cout):
        return conv(cin, cout) + bn(cout)

    total = conv(3, f // 4, 7) + bn(f // 4) + res(f // 4, f // 2) + 2 * res(f // 2, f // 2) + res(f // 2, f)
    last = len(bins) - 1
    for i, d in enumerate(bins):
        cin = f if i == 0 else (f + f // 2 if i == 1 else 2 * f)
        feat = 2 * f if i == last else f
        total += hourglass(hourglass_depth, cin, 2 * f) + lin(2 * f, 2 * f) + lin(2 * f, feat) + conv(feat, j * d)
        if i < last:
            width = f + f // 2 if i == 0 else 2 * f
            total += conv(width, width) + conv(j * d, width)
    return total


def head_to_volume(pred, num_joints: int, depth_bins: int):
    """(B, J * D, H, W) channels-first head output -> (B, J, D, H, W) float32, channel c = j * D + d.

    A reshape: the heads compute channels first (`PointwiseConv.channels_first`).
    """
    b, c, h, w = pred.shape
    if c != num_joints * depth_bins:
        raise ValueError(f"head has {c} channels; expected J * D = {num_joints} * {depth_bins}")
    return pred.reshape(b, num_joints, depth_bins, h, w).astype(jnp.float32)


def _check_config(model_config: Mapping[str, Any], codec: VolumeCodec) -> dict:
    """Validate the model block against the codec; return a plain dict with defaults."""
    given = dict(model_config.items())
    missing = [k for k in REQUIRED_KEYS if k not in given]
    unknown = sorted(set(given) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
    if missing or unknown:
        raise ValueError(f"model config: missing keys {missing}, unknown keys {unknown}; "
                         f"expected {list(REQUIRED_KEYS)} and optionally {sorted(OPTIONAL_KEYS)}")
    cfg = {**config_lib.base_config().model.to_dict(), **given}
    if not isinstance(cfg["arch"], str) or cfg["arch"] not in ARCHITECTURES:
        raise ValueError(f"model config: arch must be one of {list(ARCHITECTURES)}; got {cfg['arch']!r}")
    cfg["bn_momentum"] = float(cfg["bn_momentum"])
    if not 0.0 <= cfg["bn_momentum"] < 1.0:
        raise ValueError(f"model config: bn_momentum must be in [0, 1); got {cfg['bn_momentum']}")
    for key in ("num_stacks", "features", "hourglass_depth", "num_residual", "num_joints"):
        if int(cfg[key]) < 1:
            raise ValueError(f"model config: {key} must be >= 1; got {cfg[key]}")
        cfg[key] = int(cfg[key])
    if cfg["dtype"] not in DTYPES:
        raise ValueError(f"model config: dtype must be one of {sorted(DTYPES)}; got {cfg['dtype']!r}")
    if cfg["features"] % 4:
        raise ValueError(f"model config: features must be a multiple of 4 (stem widths are "
                         f"features/4 and features/2); got {cfg['features']}")
    if len(codec.depth_bins) != cfg["num_stacks"]:
        raise ValueError(f"model num_stacks={cfg['num_stacks']} but codec depth_bins={codec.depth_bins} "
                         f"has {len(codec.depth_bins)} levels; they must match (one level per stack)")
    s, (h, w) = int(codec.input_size), codec.heatmap_size
    factor = s // h if h and s % h == 0 else 0
    if h != w or factor < 2 or factor & (factor - 1):
        raise ValueError(f"codec input_size {s} and heatmap_size {(h, w)}: the heatmap must be square and "
                         f"input_size / heatmap side must be a power of two >= 2")
    if cfg["arch"] == "released" and factor != 4:
        raise ValueError(f"model arch 'released' has a fixed stem (a stride-2 conv and one max-pool), so it "
                         f"needs input_size / heatmap side == 4; got codec input_size {s} and heatmap_size "
                         f"{(h, w)} (ratio {factor}). Use arch 'uniform' or a heatmap of {s // 4}x{s // 4}")
    if h % (2 ** cfg["hourglass_depth"]):
        raise ValueError(f"hourglass_depth {cfg['hourglass_depth']} halves the {h}x{w} heatmap "
                         f"{cfg['hourglass_depth']} times; {h} must be divisible by {2 ** cfg['hourglass_depth']}")
    return cfg


def _check_arch(cfg: Mapping[str, Any], arch: str, cls: str) -> None:
    if cfg["arch"] != arch:
        raise ValueError(f"{cls} builds arch {arch!r}; the model config asks for {cfg['arch']!r} "
                         f"(create_model picks the class from arch)")


def create_model(config: Mapping[str, Any], codec: VolumeCodec, seed: int = 0) -> nnx.Module:
    """Build the model from the experiment config's `model` block (or the block itself).

    The block's `arch` picks the class ('uniform' when absent): see
    ARCHITECTURES. Both split into exactly nnx.Param and nnx.BatchStat state.

    Args:
      config: the full experiment config (uses config.model) or the model block.
      codec: the experiment's codec.
      seed: parameter initialisation seed.
    """
    block = config["model"] if "model" in config else config
    arch = _check_config(block, codec)["arch"]
    return ARCHITECTURES[arch](block, codec, rngs=_param_rngs(seed))


def _param_rngs(seed: int) -> nnx.Rngs:
    """`nnx.Rngs(params=seed)` whose draw counter is a host integer.

    It draws the same keys (fold_in(key, 0), fold_in(key, 1), ...), so the
    initial parameters are those of a plain nnx.Rngs. The reason: under a trace
    (the Trainer builds its abstract model with nnx.eval_shape) Flax's counter
    is a tracer, and every draw's update asks that tracer for `.sharding`,
    whose error message walks the whole jaxpr traced so far; quadratic in the
    number of parameters (the released paper model: ~25 s instead of ~1 s on CPU).
    """
    rngs = nnx.Rngs(params=seed)
    rngs.params.count.set_value(_HostCount())
    return rngs


class _HostCount:
    """The value of an RngStream's counter kept as a Python int.

    Flax reads it with `count[...]` and writes it with `count[...] = value`.
    Reads return a fresh immutable NumPy scalar: a mutable array handed to JAX
    (which may alias host memory on CPU and runs asynchronously) must not be
    incremented in place afterwards.
    """

    shape = ()
    dtype = np.dtype(np.uint32)

    def __init__(self, n: int = 0):
        self.n = n

    def __getitem__(self, index):
        return np.uint32(self.n)

    def __setitem__(self, index, value):
        self.n = int(value)


# arch name -> model class: the valid values of the model config's `arch`.
ARCHITECTURES = {"uniform": StackedHourglass, "released": ReleasedStackedHourglass}


def count_params(model: nnx.Module) -> int:
    """Number of trainable (nnx.Param) scalars."""
    return int(sum(np.prod(p.shape) for p in jax.tree.leaves(nnx.state(model, nnx.Param))))
