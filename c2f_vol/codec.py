"""The volumetric codec: the one owner of the coordinate conventions.

Shapes legend: B batch, J joints, D depth bins of a level, H x W heatmap.

Coordinates
  * Crop pixels (u, v) follow `c2f_vol.camera` (pixel centres at integers) on an
    S x S input crop.
  * Voxel coordinates (x, y, z) are continuous, with voxel centres at integers:
    x in [0, W-1], y in [0, H-1], z in [0, D-1]. The heatmap covers the crop
    exactly, so x = (u + 0.5) * W / S - 0.5.
  * Depth is root-relative, in mm, over [-depth_range_mm, +depth_range_mm]
    split into D equal bins, so z = (depth_mm + R) / (2R) * D - 0.5.
  * A level with D = 1 carries no depth: its coordinates are (x, y) only.

Training, evaluation, export and prediction all go through one `VolumeCodec`
built from the config's `codec` block, so targets and decoding cannot drift.

Targets (`target`)
  * 'continuous': a Gaussian of `sigma` voxels centred on the exact sub-voxel
    position (z sigma scaled to each level's resolution, see `sigma_z`).
  * 'paper': what the released c2f-vol code draws: a Gaussian of relative
    sigma 0.25 over a `paper_window`-voxel window (13 at a 64-voxel heatmap:
    sigma 3.25), centred on the joint's voxel (nearest voxel centre),
    truncated to the window, peak 1; in z a window of
    2 * floor(((paper_window - 1) * D / W + 1) / 2) + 1 bins of the same
    relative sigma, i.e. 13 bins at D = 64 and one-hot at D <= 4.

Decoders (`decoder`; `decode_logits` is the only place logits become coordinates)
  * 'soft_argmax': one softmax over each joint's whole volume, then the
    expected (x, y, z): integral regression. Right for a model trained with
    the integral loss (or the mix), whose logits are a log-density.
  * 'argmax_local': the paper's argmax, refined per axis by a quadratic fit of
    the log-heatmap through the peak voxel and its two neighbours (exact for a
    Gaussian peak). Right for the heatmap (MSE) loss, whose output is a
    Gaussian of peak 1 over a near-zero background: one softmax over such a
    volume is almost flat and the soft-argmax lands near the centre.
    Measured on noisy Gaussian volumes (sigma 2 voxels, noise 0.02, 200
    draws): mean 3-D error 0.50 voxel for plain argmax, 0.29 for the centroid
    of a 5^3 window, 0.40 for a windowed softmax, 0.13 for the quadratic fit.
  `decoder_for_loss` gives the default for a loss kind (config value 'auto').
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from c2f_vol import camera, config as config_lib


_BASE = config_lib.base_config()
TARGETS = ("continuous", "paper")
DECODERS = ("soft_argmax", "argmax_local")
# The decoder that matches what each loss kind trains the logits to be.
DECODER_FOR_LOSS = {"heatmap": "argmax_local", "integral": "soft_argmax", "both": "soft_argmax"}


def decoder_for_loss(loss_kind: str | None) -> str:
    """The default decoder of a loss kind: argmax_local for the heatmap MSE, soft_argmax otherwise."""
    if loss_kind not in DECODER_FOR_LOSS:
        raise ValueError(f"codec decoder 'auto' follows loss.kind, which must be one of "
                         f"{sorted(DECODER_FOR_LOSS)}; got {loss_kind!r}")
    return DECODER_FOR_LOSS[loss_kind]


@dataclasses.dataclass(frozen=True)
class VolumeCodec:
    """Joints <-> voxel coordinates for every level of the coarse-to-fine head.

    Attributes:
      input_size: side S of the square input crop, in pixels.
      heatmap_size: (H, W) of every level's volume.
      depth_bins: D of every level (stack), e.g. (1, 2, 4, 64).
      depth_range_mm: half-range R of root-relative depth, in mm.
      sigma: Gaussian target sigma in x and y, in voxels.
      sigma_z_min: smallest z sigma in bins; the z sigma is `sigma` scaled to
        each level's resolution (sigma * D / max(D)) and floored here, so a
        coarse level's target is effectively one bin wide.
      target: 'continuous' or 'paper' heatmap targets (module docstring).
      paper_window: side of the paper target's window in x and y, in voxels.
      decoder: 'soft_argmax' or 'argmax_local' (module docstring).
    """

    # Defaults: the base config's codec block (the config is the one place hyperparameters are set).
    input_size: int = _BASE.codec.input_size
    heatmap_size: tuple[int, int] = tuple(_BASE.codec.heatmap_size)
    depth_bins: tuple[int, ...] = tuple(_BASE.codec.depth_bins)
    depth_range_mm: float = _BASE.codec.depth_range_mm
    sigma: float = _BASE.codec.sigma
    sigma_z_min: float = _BASE.codec.sigma_z_min
    target: str = _BASE.codec.target
    paper_window: int = _BASE.codec.paper_window
    decoder: str = decoder_for_loss(_BASE.loss.kind)

    def __post_init__(self):
        hw = self.heatmap_size
        if isinstance(hw, int):
            hw = (hw, hw)
        object.__setattr__(self, "heatmap_size", tuple(int(v) for v in hw))
        object.__setattr__(self, "depth_bins", tuple(int(d) for d in self.depth_bins))
        if len(self.heatmap_size) != 2 or min(self.heatmap_size) < 1:
            raise ValueError(f"heatmap_size must be (H, W) with H, W >= 1; got {self.heatmap_size}")
        if not self.depth_bins or min(self.depth_bins) < 1:
            raise ValueError(f"depth_bins must be a non-empty list of D >= 1; got {self.depth_bins}")
        if self.depth_range_mm <= 0 or self.sigma <= 0 or self.input_size < 1:
            raise ValueError(
                "depth_range_mm, sigma and input_size must be positive; got "
                f"{self.depth_range_mm}, {self.sigma}, {self.input_size}")
        if self.target not in TARGETS:
            raise ValueError(f"codec target must be one of {TARGETS}; got {self.target!r}")
        if self.decoder not in DECODERS:
            raise ValueError(f"codec decoder must be one of {DECODERS} (or 'auto' in a config, which follows "
                             f"loss.kind); got {self.decoder!r}")
        if self.paper_window < 1 or self.paper_window % 2 == 0:
            raise ValueError(f"codec paper_window must be an odd number of voxels >= 1; got {self.paper_window}")

    @classmethod
    def from_config(cls, config: Mapping[str, Any], loss_kind: str | None = None) -> "VolumeCodec":
        """Build from a config block with the dataclass's field names.

        decoder 'auto' resolves through `decoder_for_loss(loss_kind)`.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        given = dict(config.items()) if hasattr(config, "items") else dict(config)
        unknown = set(given) - names
        if unknown:
            raise ValueError(f"unknown codec config keys {sorted(unknown)}; expected a subset of {sorted(names)}")
        if given.get("decoder") == "auto":
            given["decoder"] = decoder_for_loss(loss_kind)
        return cls(**given)

    @classmethod
    def for_experiment(cls, config: Mapping[str, Any]) -> "VolumeCodec":
        """The codec of a full experiment config (codec block; 'auto' decoder from loss.kind)."""
        return cls.from_config(config["codec"], config["loss"]["kind"])

    # -- scalar conventions --------------------------------------------------

    @property
    def num_levels(self) -> int:
        return len(self.depth_bins)

    def bin_size_mm(self, level: int = -1) -> float:
        """Depth covered by one bin of `level`, in mm."""
        return 2.0 * self.depth_range_mm / self.depth_bins[level]

    def sigma_z(self, level: int) -> float:
        d = self.depth_bins[level]
        return max(self.sigma * d / max(self.depth_bins), self.sigma_z_min)

    # -- encode / decode (NumPy, JAX or TF arrays) ---------------------------

    def crop_to_heatmap(self, uv):
        """(..., 2) crop pixels -> (..., 2) heatmap voxel (x, y)."""
        xp = camera.array_module(uv)
        h, w = self.heatmap_size
        s = self.input_size
        return xp.stack([(uv[..., 0] + 0.5) * (w / s) - 0.5,
                         (uv[..., 1] + 0.5) * (h / s) - 0.5], axis=-1)

    def heatmap_to_crop(self, xy):
        """(..., 2) heatmap voxel (x, y) -> (..., 2) crop pixels."""
        xp = camera.array_module(xy)
        h, w = self.heatmap_size
        s = self.input_size
        return xp.stack([(xy[..., 0] + 0.5) * (s / w) - 0.5,
                         (xy[..., 1] + 0.5) * (s / h) - 0.5], axis=-1)

    def depth_to_bin(self, depth_mm, level: int):
        """Root-relative depth (mm) -> continuous bin coordinate of `level`."""
        r, d = self.depth_range_mm, self.depth_bins[level]
        return (depth_mm + r) * (d / (2.0 * r)) - 0.5

    def bin_to_depth(self, z, level: int):
        """Continuous bin coordinate of `level` -> root-relative depth (mm)."""
        return (z + 0.5) * self.bin_size_mm(level) - self.depth_range_mm

    def encode(self, joints_uv, depth_rel_mm) -> tuple:
        """Joints -> continuous voxel coordinates at every level.

        Args:
          joints_uv: (..., J, 2) crop pixels.
          depth_rel_mm: (..., J) depth relative to the root joint, in mm.
        Returns:
          One array per level: (..., J, 3) as (x, y, z), or (..., J, 2) where D = 1.
        """
        xp = camera.array_module(joints_uv, depth_rel_mm)
        if joints_uv.shape[-1] != 2 or tuple(depth_rel_mm.shape) != tuple(joints_uv.shape[:-1]):
            raise ValueError(
                "encode expects joints_uv (..., J, 2) and depth_rel_mm (..., J); got "
                f"{tuple(joints_uv.shape)} and {tuple(depth_rel_mm.shape)}")
        xy = self.crop_to_heatmap(joints_uv)
        out = []
        for level, d in enumerate(self.depth_bins):
            if d == 1:
                out.append(xy)
            else:
                z = self.depth_to_bin(depth_rel_mm, level)
                out.append(xp.concatenate([xy, z[..., None]], axis=-1))
        return tuple(out)

    def decode(self, coords, level: int):
        """Voxel coordinates of `level` -> (crop pixels (..., J, 2), depth mm (..., J) or None)."""
        uv = self.heatmap_to_crop(coords[..., :2])
        if self.depth_bins[level] == 1:
            return uv, None
        if coords.shape[-1] != 3:
            raise ValueError(f"level {level} has D={self.depth_bins[level]} and needs (..., J, 3) coords; "
                             f"got {tuple(coords.shape)}")
        return uv, self.bin_to_depth(coords[..., 2], level)

    # -- on-device volume ops (JAX) ------------------------------------------

    def paper_window_z(self, level: int) -> int:
        """The paper target's window in z at `level`, in bins (13 at D = 64, 1 at D <= 4 for a 64-voxel heatmap)."""
        d, w = self.depth_bins[level], self.heatmap_size[1]
        return 2 * int(((self.paper_window - 1) * d / w + 1) // 2) + 1

    def gaussian_profiles(self, coords, level: int):
        """The 1-D profiles whose outer product is `gaussian_targets`: (gz, gy, gx).

        Args:
          coords: (B, J, 3) or (B, J, 2) voxel coordinates of `level`.
        Returns:
          float32 (B, J, D), (B, J, H), (B, J, W); gz is all ones where D = 1.
        """
        import jax.numpy as jnp

        h, w = self.heatmap_size
        d = self.depth_bins[level]
        coords = jnp.asarray(coords, jnp.float32)

        def profile(c, n, s, half=None):
            grid = jnp.arange(n, dtype=jnp.float32)
            if half is None:
                return jnp.exp(-0.5 * ((grid - c[..., None]) / s) ** 2)
            off = grid - jnp.floor(c[..., None] + 0.5)  # distance to the joint's voxel centre
            return jnp.where(jnp.abs(off) <= half, jnp.exp(-0.5 * (off / s) ** 2), 0.0)

        if self.target == "paper":
            win_xy, win_z = self.paper_window, self.paper_window_z(level)
            xy_args, z_args = (0.25 * win_xy, (win_xy - 1) // 2), (0.25 * win_z, (win_z - 1) // 2)
        else:
            xy_args, z_args = (self.sigma,), (self.sigma_z(level),)
        gx = profile(coords[..., 0], w, *xy_args)
        gy = profile(coords[..., 1], h, *xy_args)
        if d == 1:
            gz = jnp.ones(coords.shape[:-1] + (1,), jnp.float32)
        else:
            gz = profile(coords[..., 2], d, *z_args)
        return gz, gy, gx

    def gaussian_targets(self, coords, level: int, dtype=None):
        """Unnormalised separable Gaussian volumes (peak 1) around voxel coordinates.

        Built from 1-D profiles (`gaussian_profiles`) inside the caller's jit;
        nothing is carried by the input pipeline.

        Args:
          coords: (B, J, 3) or (B, J, 2) voxel coordinates of `level`.
        Returns:
          (B, J, D, H, W); 'continuous' peaks at 1 where a joint sits on a voxel
          centre, 'paper' peaks at exactly 1 on the joint's voxel and is 0
          outside its window (all 0 for a joint whose voxel is outside the volume).
        """
        import jax.numpy as jnp

        gz, gy, gx = self.gaussian_profiles(coords, level)
        vol = gz[..., :, None, None] * gy[..., None, :, None] * gx[..., None, None, :]
        return vol.astype(dtype or jnp.float32)

    def decode_logits(self, logits):
        """A level's logits -> voxel coordinates and a confidence, by the codec's decoder.

        The one decoding path: evaluation, export, prediction, the flip test and
        training-time evaluation all call this.

        Args:
          logits: (B, J, D, H, W) (any leading dims).
        Returns:
          coords (B, J, 3) voxel (x, y, z), or (B, J, 2) where D = 1;
          confidence (B, J) in [0, 1].
        """
        if self.decoder == "argmax_local":
            return self.argmax_local(logits)
        return self.soft_argmax(logits), self.confidence(logits)

    def density(self, logits):
        """Each joint's volume as a normalised density, as its decoder reads it.

        Args:
          logits: (B, J, D, H, W).
        Returns:
          (B, J, D, H, W) summing to 1 over (D, H, W): the softmax for soft_argmax,
          the heatmap clipped at 0 for argmax_local (an MSE model's output).
        """
        import jax
        import jax.numpy as jnp

        v = jnp.asarray(logits).astype(jnp.float32)
        *lead, d, h, w = v.shape
        flat = v.reshape(*lead, d * h * w)
        if self.decoder == "argmax_local":
            p = jnp.maximum(flat, 0.0) + 1e-12
            p = p / jnp.sum(p, axis=-1, keepdims=True)
        else:
            p = jax.nn.softmax(flat, axis=-1)
        return p.reshape(v.shape)

    def argmax_local(self, logits):
        """The paper's argmax, refined by a per-axis quadratic fit of the log-heatmap.

        Through the peak voxel's value b and its neighbours a (-1) and c (+1)
        along an axis, log-values fit a parabola whose vertex is at
        0.5 (log a - log c) / (log a - 2 log b + log c); that is exact for a
        Gaussian peak. The offset is kept within half a voxel, and an axis
        whose peak is at the border, or whose fit is not a maximum, keeps the
        integer position.

        Args:
          logits: (B, J, D, H, W) heatmap volumes (any leading dims).
        Returns:
          coords (B, J, 3) or (B, J, 2) where D = 1; confidence (B, J): the
          peak value clipped to [0, 1] (the heatmap target's peak is 1).
        """
        import jax.numpy as jnp

        v = jnp.asarray(logits).astype(jnp.float32)
        *lead, d, h, w = v.shape
        flat = v.reshape(*lead, d * h * w)
        idx = jnp.argmax(flat, axis=-1)
        peak = jnp.take_along_axis(flat, idx[..., None], axis=-1)[..., 0]
        z, y, x = jnp.unravel_index(idx, (d, h, w))
        log = lambda t: jnp.log(jnp.maximum(t, 1e-6))  # noqa: E731
        coords = []
        for pos, n, stride in ((x, w, 1), (y, h, w), (z, d, h * w)):
            if n == 1:
                coords.append(pos.astype(jnp.float32))
                continue
            inside = (pos > 0) & (pos < n - 1)
            lo = jnp.take_along_axis(flat, jnp.where(inside, idx - stride, idx)[..., None], axis=-1)[..., 0]
            hi = jnp.take_along_axis(flat, jnp.where(inside, idx + stride, idx)[..., None], axis=-1)[..., 0]
            la, lb, lc = log(lo), log(peak), log(hi)
            den = la - 2.0 * lb + lc
            ok = inside & (den < 0)
            off = jnp.clip(0.5 * (la - lc) / jnp.where(ok, den, -1.0), -0.5, 0.5)
            coords.append(pos.astype(jnp.float32) + jnp.where(ok, off, 0.0))
        if d == 1:
            coords = coords[:2]
        return jnp.stack(coords, axis=-1), jnp.clip(peak, 0.0, 1.0)

    def soft_argmax(self, logits):
        """Integral decoding: one softmax over each joint's whole volume.

        Args:
          logits: (B, J, D, H, W) (any leading dims: (..., J, D, H, W)).
        Returns:
          (B, J, 3) expected (x, y, z) voxel coordinates, or (B, J, 2) where D = 1.

        The probability volume is never materialised: the expectations
        contract exp(logits - max) with 1-D index vectors over the volume's own
        axes and divide once by the partition sum. (The heads emit this layout
        directly, `model.PointwiseConv.channels_first`, so nothing is transposed.)
        """
        import jax
        import jax.numpy as jnp

        v = jnp.asarray(logits).astype(jnp.float32)
        d, h, w = v.shape[-3:]
        axes = (-3, -2, -1)
        e = jnp.exp(v - jax.lax.stop_gradient(jnp.max(v, axis=axes, keepdims=True)))
        total = jnp.sum(e, axis=axes)
        coords = [jnp.einsum("...dhw,w->...", e, jnp.arange(w, dtype=jnp.float32)),
                  jnp.einsum("...dhw,h->...", e, jnp.arange(h, dtype=jnp.float32))]
        if d > 1:
            coords.append(jnp.einsum("...dhw,d->...", e, jnp.arange(d, dtype=jnp.float32)))
        return jnp.stack(coords, axis=-1) / total[..., None]

    def confidence(self, logits, radius: float = 2.0):
        """Per-joint confidence in [0, 1]: the softmax mass within `radius` voxels (x, y) of the soft-argmax.

        Args:
          logits: (B, J, D, H, W).
        Returns:
          (B, J); near 1 for a sharp single peak, low for a spread or multi-modal volume.
        """
        import jax
        import jax.numpy as jnp

        *lead, d, h, w = logits.shape
        flat = jnp.asarray(logits).reshape(*lead, d * h * w).astype(jnp.float32)
        pxy = jax.nn.softmax(flat, axis=-1).reshape(*lead, d, h, w).sum(axis=-3)  # (..., H, W)
        xy = self.soft_argmax(logits)[..., :2]
        near_x = jnp.abs(jnp.arange(w, dtype=jnp.float32) - xy[..., 0:1]) <= radius  # (..., W)
        near_y = jnp.abs(jnp.arange(h, dtype=jnp.float32) - xy[..., 1:2]) <= radius  # (..., H)
        return jnp.einsum("...hw,...h,...w->...", pxy, near_y.astype(jnp.float32), near_x.astype(jnp.float32))

    def argmax(self, logits):
        """The voxel of highest score (not differentiable).

        Args:
          logits: (B, J, D, H, W).
        Returns:
          (B, J, 3) integer-valued float (x, y, z), or (B, J, 2) where D = 1.
        """
        import jax.numpy as jnp

        *lead, d, h, w = logits.shape
        idx = jnp.argmax(jnp.asarray(logits).reshape(*lead, d * h * w), axis=-1)
        z, y, x = jnp.unravel_index(idx, (d, h, w))
        cols = [x, y] if d == 1 else [x, y, z]
        return jnp.stack(cols, axis=-1).astype(jnp.float32)

    def check_logits(self, logits: Sequence) -> None:
        """Raise ValueError unless `logits` has one (B, J, D_i, H, W) array per level."""
        if len(logits) != self.num_levels:
            raise ValueError(f"expected {self.num_levels} levels of logits; got {len(logits)}")
        for i, lg in enumerate(logits):
            want = (self.depth_bins[i], *self.heatmap_size)
            if lg.ndim != 5 or tuple(lg.shape[2:]) != want:
                raise ValueError(f"level {i} logits must be (B, J, {want[0]}, {want[1]}, {want[2]}); "
                                 f"got {tuple(lg.shape)}")
