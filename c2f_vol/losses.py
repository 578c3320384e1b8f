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
(default 1) and the stacks are summed. Samples with mask 0 (padding) are left
out of every mean. Everything is computed in float32 and is jittable and
differentiable.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp

from c2f_vol import config as config_lib
from c2f_vol.codec import VolumeCodec

KINDS = ("heatmap", "integral", "both")
MIX_HEATMAP = ("js", "mse")
LOSS_CONFIG_KEYS = tuple(config_lib.base_config().loss)


def _masked_mean(per_sample, mask):
    """(B,) values and (B,) weights -> scalar; 0 when every sample is padding."""
    return jnp.sum(per_sample * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def heatmap_mse(logits, coords, codec: VolumeCodec, level: int):
    """Per-sample MSE against Gaussian targets.

    Args:
      logits: (B, J, D, H, W).
      coords: (B, J, 3) or (B, J, 2) voxel coordinates of `level`.
    Returns:
      (B,) mean over J, D, H, W of the squared error.
    """
    target = codec.gaussian_targets(coords, level)
    return jnp.mean((logits.astype(jnp.float32) - target) ** 2, axis=(1, 2, 3, 4))


def js_divergence(logits, coords, codec: VolumeCodec, level: int):
    """Per-sample Jensen-Shannon divergence between softmax(logits) and the normalised Gaussian target.

    Args:
      logits: (B, J, D, H, W).
      coords: (B, J, 3) or (B, J, 2) voxel coordinates of `level`.
    Returns:
      (B,) mean over joints of JS(p || q) in nats (0 ... ln 2), where p is the
      softmax over each joint's whole volume and q the codec's target volume
      divided by its sum.
    """
    b, j = logits.shape[:2]
    flat = logits.astype(jnp.float32).reshape(b, j, -1)
    log_p = jax.nn.log_softmax(flat, axis=-1)
    p = jnp.exp(log_p)
    q = codec.gaussian_targets(coords, level).reshape(b, j, -1)
    q = q / jnp.maximum(jnp.sum(q, axis=-1, keepdims=True), 1e-12)
    log_m = jnp.log(0.5 * (p + q) + 1e-30)
    kl_pm = jnp.sum(p * (log_p - log_m), axis=-1)
    kl_qm = jnp.sum(jax.scipy.special.xlogy(q, q) - q * log_m, axis=-1)
    return jnp.mean(0.5 * (kl_pm + kl_qm), axis=-1)


def integral_l1(logits, coords, codec: VolumeCodec, level: int):
    """Per-sample L1 between soft-argmax and true voxel coordinates.

    Args:
      logits: (B, J, D, H, W).
      coords: (B, J, 3) or (B, J, 2) voxel coordinates of `level`.
    Returns:
      (B,) per joint the sum over axes of |error| / axis size, averaged over J.
    """
    h, w = codec.heatmap_size
    d = codec.depth_bins[level]
    sizes = jnp.asarray((w, h) if d == 1 else (w, h, d), jnp.float32)
    pred = codec.soft_argmax(logits.astype(jnp.float32))
    err = jnp.abs(pred - coords[..., : sizes.shape[0]]) / sizes
    return jnp.mean(jnp.sum(err, axis=-1), axis=-1)


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
        depth, mask (B,) 1 for real samples and 0 for padding.
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
    levels = codec.encode(joints_uv, depth)

    # term name -> (per-sample function, weight in the total)
    terms = {"heatmap": (heatmap_mse, hm_weight)} if kind == "heatmap" else {}
    if kind in ("integral", "both"):
        terms["integral"] = (integral_l1, int_weight)
    if kind == "both":
        terms["js" if mix == "js" else "heatmap"] = ((js_divergence if mix == "js" else heatmap_mse), hm_weight)
    metrics = {}
    loss = jnp.zeros((), jnp.float32)
    for name, (fn, weight) in terms.items():
        total = jnp.zeros((), jnp.float32)
        for i, (lg, coords) in enumerate(zip(logits, levels)):
            value = _masked_mean(fn(lg, coords, codec, i), mask)
            metrics[f"{name}/stack{i}"] = value
            total = total + stack_weights[i] * value
        metrics[name] = total
        loss = loss + weight * total
    metrics["loss"] = loss
    return loss, metrics
