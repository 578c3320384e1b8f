"""Training losses for the coarse-to-fine volumes, chosen by the config's `loss` block.

Shapes legend: B batch, J joints, D_i depth bins of stack i, H x W heatmap.

Kinds (`loss_config.kind`):
  * 'heatmap': the paper's loss. Per stack, the mean squared error between the
    logits and the unnormalised Gaussian volume (peak 1) that
    `VolumeCodec.gaussian_targets` builds on device from the coordinates. The
    mean runs over all J * D_i * H * W voxels of a sample, as the original's
    MSE criterion did.
  * 'integral': soft-argmax (`VolumeCodec.soft_argmax`) then L1 on voxel
    coordinates. Each axis is divided by its size (W, H, D_i), so an error is
    a fraction of the crop width, the crop height or the whole depth range;
    x, y and z errors are then comparable, and every level measures depth in
    the same units whatever its D_i. Per joint the axes are summed, so a D = 1
    stack (x and y only) is the x, y part of a deeper stack's loss.
  * 'both': integral_weight * integral + heatmap_weight * a heatmap term
    chosen by `mix_heatmap`:
      - 'js' (default): DSNT's regulariser, the Jensen-Shannon divergence (nats,
        mean over joints) between the softmax-normalised volume, the very
        distribution the soft-argmax takes its expectation under, and the
        normalised Gaussian target. It shapes the density the decoder reads
        without fighting it.
      - 'mse': the raw-logit MSE of 'heatmap'. This mix stalls (README, "Why
        integral + raw MSE stalled"): at weight 1 its gradient at the logits is
        about 3x the coordinate term's and pulls every logit to the [0, 1]
        target, so the softmax flattens and the soft-argmax loses its traction.

Every stack is supervised; stack i's term is multiplied by stack_weights[i]
(default 1) and the stacks are summed. Everything is computed in float32 and is
jittable and differentiable.

Which joints count, and in how many dimensions (batch keys, all optional):
  * mask (B,): 0 for padding; such a sample counts nowhere.
  * joints_weight (B, J): 1 supervises the joint, 0 does not (e.g. MPII's
    unannotated joints and its missing spine). Absent: all ones.
  * has_3d (B,): 1 when depth_rel_mm is real, 0 for a 2D-only example (MPII).
    Absent: all ones, and the 2D forms below are not even built (the graph is
    the one the loss had before the key existed). Present: both forms are
    computed at the deeper levels and each sample takes its own (on the
    synthetic_cpu train step, a few per cent more time even for an all-3D batch,
    so a pipeline without 2D-only data had best leave the key out). A 2D-only
    example is supervised in x and y only, at every level, and its depth_rel_mm
    is never read (replaced by 0 before encoding):
      - integral: the soft-argmax's x and y terms; the z term is dropped (the
        x, y part of a 3D example's loss, so each supervised coordinate counts
        the same whichever kind of example it comes from).
      - heatmap (MSE): the max over depth of each deeper level's logits (the
        x, y max-projection) against the 2D Gaussian (peak 1). The max, not the
        sum: the paper's targets are unnormalised with peak 1, and the
        max-projection of a 3D target is its 2D Gaussian whatever the depth
        (exactly for 'paper' targets, whose z profile peaks at 1 on the joint's
        bin; for 'continuous' ones where the depth is at a bin centre), while the
        sum would be the 2D Gaussian times the z profile's sum, which depends on
        the level and on the unknown depth. So a network that outputs the true
        3D target has (next to) no 2D loss. That MSE, a mean over H * W
        pixels, is multiplied by the level's `depth_energy_share` (sum_z g_z^2 / D
        of the level's z profile at an inner bin centre), which makes it the 3D
        MSE of logits whose depth profile is exact: for logits
        g_z (x) A, mean_DHW (g_z (x) A - g_z (x) T)^2 = share * mean_HW (A - T)^2.
        So a 2D-only joint's term is on the scale of a 3D joint's (at the
        start, with logits near 0, the two are equal).
      - js: the Jensen-Shannon divergence between the x, y marginal of the
        softmax volume (its sum over depth, the distribution of (x, y) the
        soft-argmax reads) and the normalised 2D Gaussian, which is the x, y
        marginal of the normalised 3D target. Same range (0 ... ln 2) as the 3D
        term.
    A level with D = 1 carries no depth: there both kinds of example get the
    same loss.

Normalisation: per level and term, the loss is the mean over supervised joints
of the batch, sum_bj m_b w_bj l_bj / sum_bj m_b w_bj (0 when nothing is
supervised), where l_bj is the joint's 3D or 2D term. Every supervised joint
counts the same, so a batch's scale does not depend on how many of its joints
are unannotated or how many of its examples are 2D-only. With all weights 1 this
is the old mean over samples of the mean over joints, exactly what the loss was
before the keys existed.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp

from c2f_vol import config as config_lib
from c2f_vol.codec import VolumeCodec

KINDS = ("heatmap", "integral", "both")
MIX_HEATMAP = ("js", "mse")
LOSS_CONFIG_KEYS = tuple(config_lib.base_config().loss)


# ---------------------------------------------------------------------------
# Per-joint terms: (B, J) values. The *_xy forms are the 2D-only terms.


def heatmap_mse_joints(logits, coords, codec: VolumeCodec, level: int):
    """Per-joint MSE against Gaussian targets.

    Args:
      logits: (B, J, D, H, W).
      coords: (B, J, 3) or (B, J, 2) voxel coordinates of `level`.
    Returns:
      (B, J) mean over D, H, W of the squared error.
    """
    target = codec.gaussian_targets(coords, level)
    return jnp.mean((logits.astype(jnp.float32) - target) ** 2, axis=(2, 3, 4))


def heatmap_mse(logits, coords, codec: VolumeCodec, level: int):
    """Per-sample MSE against Gaussian targets: (B,) mean over J, D, H, W (`heatmap_mse_joints`)."""
    return jnp.mean(heatmap_mse_joints(logits, coords, codec, level), axis=-1)


def _xy_codec(codec: VolumeCodec) -> VolumeCodec:
    """The same codec with one depth-free level: its gaussian_targets(xy, 0) are the 2D targets."""
    return dataclasses.replace(codec, depth_bins=(1,))


def _xy_targets(coords, codec: VolumeCodec):
    """(B, J, H, W) 2D Gaussian targets (peak 1) at the x, y of `coords`."""
    return _xy_codec(codec).gaussian_targets(coords[..., :2], 0)[:, :, 0]


@functools.lru_cache(maxsize=None)
def depth_energy_share(codec: VolumeCodec, level: int) -> float:
    """sum_z g_z^2 / D of `level`'s target z profile, the depth at the middle bin's centre (1 where D = 1).

    For logits g_z (x) A with the true z profile g_z, the 3D MSE against
    g_z (x) T is this share times the 2D MSE of A against T; `heatmap_mse_xy`
    scales by it so a 2D-only joint's term is on a 3D joint's scale. Exact for a
    depth on any bin centre the profile does not reach the volume's ends from;
    near the ends the profile is cut and its energy is smaller.
    """
    d = codec.depth_bins[level]
    if d == 1:
        return 1.0
    with jax.ensure_compile_time_eval():  # a constant, also when first asked inside a jit
        # x = y = 0 on a voxel centre: the profile there is g_z times 1.
        coords = jnp.asarray([[[0.0, 0.0, float((d - 1) // 2)]]], jnp.float32)
        gz = codec.gaussian_targets(coords, level)[0, 0, :, 0, 0]
        return float(jnp.sum(gz ** 2)) / d


@jax.custom_vjp
def max_over_depth(volume):
    """(B, J, D, H, W) -> (B, J, H, W): the max over depth, with jnp.max's gradient (split evenly
    between tied bins) computed as one masked broadcast, not JAX's generic max gradient (which
    took the heatmap loss's gradient ~1.5x longer on CPU)."""
    return jnp.max(volume, axis=2)


def _max_over_depth_fwd(volume):
    peak = jnp.max(volume, axis=2)
    return peak, (volume, peak)


def _max_over_depth_bwd(residuals, g):
    volume, peak = residuals
    at_peak = volume == peak[:, :, None]
    ties = jnp.sum(at_peak, axis=2).astype(volume.dtype)
    return (jnp.where(at_peak, (g / ties)[:, :, None], 0.0).astype(volume.dtype),)


max_over_depth.defvjp(_max_over_depth_fwd, _max_over_depth_bwd)


def heatmap_mse_xy(logits, coords, codec: VolumeCodec, level: int):
    """Per-joint 2D MSE: the max over depth of the logits against the 2D Gaussian target.

    Args:
      logits: (B, J, D, H, W).
      coords: (B, J, 3) or (B, J, 2) voxel coordinates of `level` (z, if any, unused).
    Returns:
      (B, J) depth_energy_share(level) * mean over H, W of the squared error of
      the x, y max-projection (module docstring).
    """
    marginal = max_over_depth(logits.astype(jnp.float32))
    err = jnp.mean((marginal - _xy_targets(coords, codec)) ** 2, axis=(2, 3))
    return depth_energy_share(codec, level) * err


_JS_EPS = 1e-30  # keeps log m finite where both densities underflow


def _js(log_p, q, q_log_q):
    """JS(p || q) in nats over the axes after (B, J), from log p, q (normalised) and their sum(q log q) (B, J).

    Every operand keeps the volume's own axes (no flattening: on CPU, XLA's
    fused loops over a reshaped broadcast target with a log were several times
    slower than over the unflattened axes).
    """
    axes = tuple(range(2, log_p.ndim))
    p = jnp.exp(log_p)
    log_m = jnp.log(0.5 * (p + q) + 1e-30)
    return 0.5 * (jnp.sum(p * (log_p - log_m), axis=axes) + q_log_q - jnp.sum(q * log_m, axis=axes))


def _normalised_target(profiles, denominator_floor: float = 1e-12):
    """A separable target divided by its sum, and its sum of q log q, from its 1-D profiles.

    Args:
      profiles: (B, J, n_k) non-negative 1-D factors, outermost axis first
        (`VolumeCodec.gaussian_profiles`).
    Returns:
      q (B, J, n_1, ..., n_K), their outer product over max(its sum, floor); and
      (B, J) sum(q log q) with 0 log 0 = 0, computed without a log per voxel:
      for q = prod_k g_k / Z, sum q log q = sum_k (sum g_k log g_k) prod_{l != k} S_l / Z
      - (S / Z) log Z, with S_k the sum of g_k, S their product and Z = max(S, floor).
    """
    sums = [jnp.sum(g, axis=-1) for g in profiles]
    total = functools.reduce(jnp.multiply, sums)
    z = jnp.maximum(total, denominator_floor)
    entropy_terms = jnp.zeros_like(total)
    for k, g in enumerate(profiles):
        others = functools.reduce(jnp.multiply, [s for i, s in enumerate(sums) if i != k], jnp.ones_like(total))
        entropy_terms = entropy_terms + jnp.sum(jax.scipy.special.xlogy(g, g), axis=-1) * others
    k = len(profiles)
    q = (1.0 / z).reshape(z.shape + (1,) * k)
    for i, g in enumerate(profiles):
        q = q * g.reshape(g.shape[:2] + (1,) * i + g.shape[2:] + (1,) * (k - 1 - i))
    return q, entropy_terms / z - (total / z) * jnp.log(z)


def _js_parts(logits, coords, codec: VolumeCodec, level: int, with_xy: bool):
    """(3D JS (B, J), 2D JS (B, J) or None), sharing one softmax of the volume."""
    log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=(2, 3, 4))
    gz, gy, gx = codec.gaussian_profiles(coords, level)
    full = _js(log_p, *_normalised_target((gz, gy, gx)))
    if not with_xy:
        return full, None
    # The x, y marginal of the softmax: its sum over depth (the exp of log_p again, which XLA
    # shares with the 3D term's); 1e-30 keeps the log and its gradient finite where it underflows.
    # Its target is the 2D Gaussian at the same x, y: the 3D target's y, x profiles.
    p_xy = jnp.sum(jnp.exp(log_p), axis=2)
    return full, _js(jnp.log(p_xy + 1e-30), *_normalised_target((gy, gx)))


def js_divergence_joints(logits, coords, codec: VolumeCodec, level: int):
    """Per-joint Jensen-Shannon divergence between softmax(logits) and the normalised Gaussian target.

    Args:
      logits: (B, J, D, H, W).
      coords: (B, J, 3) or (B, J, 2) voxel coordinates of `level`.
    Returns:
      (B, J) JS(p || q) in nats (0 ... ln 2), where p is the softmax over each
      joint's whole volume and q the codec's target volume divided by its sum.
    """
    return _js_parts(logits, coords, codec, level, with_xy=False)[0]


def js_divergence(logits, coords, codec: VolumeCodec, level: int):
    """Per-sample JS divergence: (B,) mean over joints of `js_divergence_joints`."""
    return jnp.mean(js_divergence_joints(logits, coords, codec, level), axis=-1)


def js_divergence_xy(logits, coords, codec: VolumeCodec, level: int):
    """Per-joint 2D JS divergence: the x, y marginal of softmax(logits) against the normalised 2D Gaussian.

    Args:
      logits: (B, J, D, H, W).
      coords: (B, J, 3) or (B, J, 2) voxel coordinates of `level` (z, if any, unused).
    Returns:
      (B, J) JS in nats (0 ... ln 2); the marginal is the softmax's sum over depth.
    """
    return _js_parts(logits, coords, codec, level, with_xy=True)[1]


def integral_l1_joints(logits, coords, codec: VolumeCodec, level: int, has_3d=None):
    """Per-joint L1 between soft-argmax and true voxel coordinates.

    Args:
      logits: (B, J, D, H, W).
      coords: (B, J, 3) or (B, J, 2) voxel coordinates of `level`.
      has_3d: optional (B,) 1 or 0; 0 drops a sample's z term (2D-only example); None: all 3D.
    Returns:
      (B, J) the sum over axes of |error| / axis size.
    """
    h, w = codec.heatmap_size
    d = codec.depth_bins[level]
    sizes = jnp.asarray((w, h) if d == 1 else (w, h, d), jnp.float32)
    pred = codec.soft_argmax(logits.astype(jnp.float32))
    err = jnp.abs(pred - coords[..., : sizes.shape[0]]) / sizes
    if has_3d is not None and d > 1:
        err = err * jnp.stack([jnp.ones_like(has_3d), jnp.ones_like(has_3d), has_3d], -1)[:, None, :]
    return jnp.sum(err, axis=-1)


def integral_l1(logits, coords, codec: VolumeCodec, level: int):
    """Per-sample L1 between soft-argmax and true voxel coordinates.

    Args:
      logits: (B, J, D, H, W).
      coords: (B, J, 3) or (B, J, 2) voxel coordinates of `level`.
    Returns:
      (B,) per joint the sum over axes of |error| / axis size, averaged over J.
    """
    return jnp.mean(integral_l1_joints(logits, coords, codec, level), axis=-1)


# Per-level terms: (logits, coords, codec, level, has_3d) -> (B, J). has_3d None: every sample
# is 3D (the batch has no has_3d key), so no 2D form is computed and the graph is the one the
# loss had before has_3d existed. Otherwise both forms are computed and each sample takes its
# own with a select (no lax.cond: a mixed batch needs both anyway, and on CPU a cond's zero-filled
# residuals cost about what the 2D form does).


def _heatmap_term(logits, coords, codec: VolumeCodec, level: int, has_3d):
    full = heatmap_mse_joints(logits, coords, codec, level)
    if has_3d is None or codec.depth_bins[level] == 1:  # D = 1: no depth, one loss for both kinds
        return full
    return jnp.where(has_3d[:, None] > 0.5, full, heatmap_mse_xy(logits, coords, codec, level))


def _js_term(logits, coords, codec: VolumeCodec, level: int, has_3d):
    full, xy = _js_parts(logits, coords, codec, level, has_3d is not None and codec.depth_bins[level] > 1)
    return full if xy is None else jnp.where(has_3d[:, None] > 0.5, full, xy)


_TERMS = {"heatmap": _heatmap_term, "js": _js_term, "integral": integral_l1_joints}


def _check_loss_config(loss_config: Mapping[str, Any], num_levels: int):
    given = dict(loss_config.items())
    unknown = sorted(set(given) - set(LOSS_CONFIG_KEYS))
    if unknown:
        raise ValueError(f"loss config: unknown keys {unknown}; expected a subset of {list(LOSS_CONFIG_KEYS)}")
    given = {**config_lib.base_config().loss.to_dict(), **given}  # fields not given: the base config's
    kind = given["kind"]
    if kind not in KINDS:
        raise ValueError(f"loss config: kind must be one of {KINDS}; got {kind!r}")
    mix = given["mix_heatmap"]
    if mix not in MIX_HEATMAP:
        raise ValueError(f"loss config: mix_heatmap must be one of {MIX_HEATMAP}; got {mix!r}")
    weights = given["stack_weights"] or (1.0,) * num_levels
    weights = tuple(float(v) for v in weights)
    if len(weights) != num_levels:
        raise ValueError(f"loss config: stack_weights has {len(weights)} entries; "
                         f"the codec has {num_levels} levels (stacks)")
    return (kind, mix, float(given["heatmap_weight"]), float(given["integral_weight"]), weights)


def compute_loss(logits: Sequence[jax.Array], batch: Mapping[str, jax.Array], codec: VolumeCodec,
                 loss_config: Mapping[str, Any]) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The training loss over all stacks.

    Args:
      logits: one (B, J, D_i, H, W) array per stack (any float dtype).
      batch: joints_uv (B, J, 2) crop pixels, depth_rel_mm (B, J) root-relative
        depth, mask (B,) 1 for real samples and 0 for padding; optionally
        joints_weight (B, J) (1 supervise, 0 not) and has_3d (B,) (1 depth is
        real, 0 a 2D-only example), all ones when absent (module docstring).
      codec: the experiment's codec (depth bins per stack, sigma, sizes).
      loss_config: kind, heatmap_weight, integral_weight, stack_weights, mix_heatmap.
    Returns:
      (loss, metrics). loss is a float32 scalar. metrics holds float32 scalars:
      'loss'; per term the weighted sum over stacks ('heatmap' (MSE), 'js',
      'integral'); per stack the unweighted term ('integral/stack{i}', ...).
    """
    codec.check_logits(logits)
    kind, mix, hm_weight, int_weight, stack_weights = _check_loss_config(loss_config, codec.num_levels)
    joints_uv = jnp.asarray(batch["joints_uv"], jnp.float32)
    depth = jnp.asarray(batch["depth_rel_mm"], jnp.float32)
    mask = jnp.asarray(batch["mask"], jnp.float32).reshape(-1)
    b, j = joints_uv.shape[:2]
    # Key presence is static (the batch's structure), so these branches are trace-time. No has_3d
    # key: every sample is 3D and has_3d stays None (no 2D forms are built, `_TERMS`).
    weights = (jnp.ones((b, j), jnp.float32) if batch.get("joints_weight") is None
               else jnp.asarray(batch["joints_weight"], jnp.float32).reshape(b, j))
    has_3d = None
    if batch.get("has_3d") is not None:
        has_3d = (jnp.asarray(batch["has_3d"], jnp.float32).reshape(b) > 0.5).astype(jnp.float32)
        # A 2D-only sample's depth is never read: whatever it holds (even NaN) reaches neither
        # the loss nor its gradient.
        depth = jnp.where(has_3d[:, None] > 0.5, depth, 0.0)
    # Nor is an unsupervised joint's position or depth.
    joints_uv = jnp.where(weights[..., None] > 0, joints_uv, 0.0)
    depth = jnp.where(weights > 0, depth, 0.0)
    levels = codec.encode(joints_uv, depth)
    joint_weights = mask[:, None] * weights
    total_weight = jnp.sum(joint_weights)
    safe_total = jnp.where(total_weight > 0, total_weight, 1.0)

    # term name -> weight in the total
    terms = {"heatmap": hm_weight} if kind == "heatmap" else {}
    if kind in ("integral", "both"):
        terms["integral"] = int_weight
    if kind == "both":
        terms["js" if mix == "js" else "heatmap"] = hm_weight
    metrics = {}
    loss = jnp.zeros((), jnp.float32)
    for name, weight in terms.items():
        fn = _TERMS[name]
        total = jnp.zeros((), jnp.float32)
        for i, (lg, coords) in enumerate(zip(logits, levels)):
            per_joint = fn(lg, coords, codec, i, has_3d)
            value = jnp.sum(per_joint * joint_weights) / safe_total
            metrics[f"{name}/stack{i}"] = value
            total = total + stack_weights[i] * value
        metrics[name] = total
        loss = loss + weight * total
    metrics["loss"] = loss
    return loss, metrics
