"""Absolute root depth without ground truth: fitting limb lengths.

Back-projecting image joints with root depth Z gives bones whose lengths grow
with Z; the fit picks the Z whose bones match the training subjects' mean bone
lengths. Prediction noise inflates every back-projected bone, so a plain fit
of lengths answers with a person too close (`search_root_depth_lengths`).
`search_root_depth` fits squared lengths with the noise's inflation removed,
weighting bones by how well they are seen (generalised least squares), with a
first-order correction for the weights' own noise; closed-form, JAX, jittable
and exportable. It wins under the Gaussian noise it models but failed on a
trained model's errors, so evaluation and export call `estimate_root_depth`,
which is the plain length fit.

Shapes legend: ... batch, J joints, B bones (`skeleton.BONES`), K candidate depths.

Model. With root depth Z, joint j lies at ray_j * (Z + d_j), ray_j = ((u - cx)/fx,
(v - cy)/fy, 1), so bone b is D_b Z + e_b and its squared length a quadratic
in Z. Noise of sigma_px per image coordinate moves joint j laterally by
sigma_px * z_j / f per axis, and noise of sigma_d on d_j moves it by sigma_d *
ray_j; the bone's expected squared length is |b|^2 + v_b(Z), v_b the trace of
the bone's noise covariance (also quadratic in Z). The residuals
r_b(Z) = |b(Z)|^2 - v_b(Z) - L_b^2 then have mean zero at the true depth for
every bone, and any fixed weighting sum_b w_b r_b(Z) = 0 is a quadratic
equation with the true depth as its root in expectation.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from c2f_vol import skeleton

_PARENTS = np.asarray(skeleton.BONE_PARENTS)
_CHILDREN = np.asarray(skeleton.BONE_CHILDREN)
# (B, J) signed incidence: bone b = joint CHILDREN[b] - joint PARENTS[b].
_INCIDENCE = np.zeros((len(_PARENTS), skeleton.NUM_JOINTS), np.float32)
_INCIDENCE[np.arange(len(_PARENTS)), _CHILDREN] = 1.0
_INCIDENCE[np.arange(len(_PARENTS)), _PARENTS] = -1.0
# The most a bone is rescaled towards its target length when weighting (see `_gls_weights`).
_MAX_RESCALE = 1.5


def bone_lengths_at(image_uv, depth_rel_mm, intrinsics, root_depth_mm):
    """Bone lengths (..., K, B) of the poses back-projected at K candidate root depths (..., K)."""
    fx, fy, cx, cy = (intrinsics[..., None, None, i] for i in range(4))
    rays = jnp.stack([(image_uv[..., 0] - cx[..., 0]) / fx[..., 0], (image_uv[..., 1] - cy[..., 0]) / fy[..., 0],
                      jnp.ones_like(image_uv[..., 0])], axis=-1)  # (..., J, 3)
    depth = root_depth_mm[..., :, None] + depth_rel_mm[..., None, :]  # (..., K, J)
    pts = rays[..., None, :, :] * depth[..., None]  # (..., K, J, 3)
    return jnp.linalg.norm(pts[..., _CHILDREN, :] - pts[..., _PARENTS, :], axis=-1)


def search_root_depth_lengths(image_uv, depth_rel_mm, intrinsics, bone_lengths_mm, *, min_mm: float = 500.0,
                              max_mm: float = 15000.0, num: int = 64, rounds: int = 4):
    """The root depth Z (...,) minimising sum_b (|bone_b(Z)| - L_b)^2: exact on exact input, biased by noise.

    What `estimate_root_depth` runs; benchmarks/root_search.py compares it with `search_root_depth`.
    Args as `search_root_depth`. A grid of `num` depths over [min_mm, max_mm] is
    refined `rounds` times to +-2 grid steps around its best point; with the
    defaults the first step is 230 mm and the last about 0.004 mm.
    """
    target = jnp.asarray(bone_lengths_mm, jnp.float32)
    batch = image_uv.shape[:-2]
    lo = jnp.full(batch, min_mm, jnp.float32)
    hi = jnp.full(batch, max_mm, jnp.float32)
    t = jnp.linspace(0.0, 1.0, num)
    best = (lo + hi) / 2
    for _ in range(rounds + 1):
        cand = lo[..., None] + (hi - lo)[..., None] * t  # (..., K)
        err = jnp.sum((bone_lengths_at(image_uv, depth_rel_mm, intrinsics, cand) - target[..., None, :]) ** 2, axis=-1)
        idx = jnp.argmin(err, axis=-1)
        best = jnp.take_along_axis(cand, idx[..., None], axis=-1)[..., 0]
        step = (hi - lo) / (num - 1)
        lo, hi = jnp.maximum(best - 2 * step, min_mm), jnp.minimum(best + 2 * step, max_mm)
    return best


def _rays(image_uv, intrinsics):
    """(..., J, 3) viewing rays (x, y, 1) and the focal lengths fx, fy (..., 1)."""
    fx, fy, cx, cy = (intrinsics[..., None, i] for i in range(4))
    rays = jnp.stack([(image_uv[..., 0] - cx) / fx, (image_uv[..., 1] - cy) / fy, jnp.ones_like(image_uv[..., 0])], -1)
    return rays, fx, fy


def _residual_coefficients(rays, fx, fy, depth_rel, target, sigma_px, sigma_joint):
    """(a, beta, gamma), each (..., B): r_b(Z) = a Z^2 + 2 beta Z + gamma, noise inflation removed."""
    c, p = _CHILDREN, _PARENTS
    d_vec = rays[..., c, :] - rays[..., p, :]
    e_vec = rays[..., c, :] * depth_rel[..., c, None] - rays[..., p, :] * depth_rel[..., p, None]
    k = sigma_px ** 2 * (1.0 / fx ** 2 + 1.0 / fy ** 2)  # lateral variance per mm^2 of joint depth, (..., 1)
    ray2 = jnp.sum(rays * rays, -1)
    a = jnp.sum(d_vec * d_vec, -1) - 2 * k
    beta = jnp.sum(d_vec * e_vec, -1) - k * (depth_rel[..., c] + depth_rel[..., p])
    gamma = (jnp.sum(e_vec * e_vec, -1) - k * (depth_rel[..., c] ** 2 + depth_rel[..., p] ** 2)
             - sigma_joint[c] ** 2 * ray2[..., c] - sigma_joint[p] ** 2 * ray2[..., p] - target ** 2)
    return a, beta, gamma


def _root(a, beta, gamma):
    """The positive root Z (...,) of a Z^2 + 2 beta Z + gamma = 0, in the form that stays finite as a -> 0.

    Where there is none (noise larger than assumed makes the corrected lengths exceed the targets at
    every depth), the vertex -beta / a, where they come closest; NaN if that is no minimum either.
    """
    disc = beta * beta - a * gamma
    den = beta + jnp.sqrt(jnp.maximum(disc, 0.0))
    root = -gamma / jnp.where(den > 0, den, 1.0)
    vertex = jnp.where(a > 0, -beta / jnp.where(a > 0, a, 1.0), jnp.nan)
    return jnp.where((disc >= 0) & (den > 0), root, vertex)


def _spd_inverse(mat):
    """(..., n, n) inverse of symmetric positive definite matrices: Jacobi-scaled Gauss-Jordan in plain ops
    (no LAPACK call, so it exports to any runtime)."""
    n = mat.shape[-1]
    scale = jax.lax.rsqrt(jnp.diagonal(mat, axis1=-2, axis2=-1))
    mat = mat * scale[..., :, None] * scale[..., None, :]
    inv = jnp.broadcast_to(jnp.eye(n, dtype=mat.dtype), mat.shape)

    def eliminate(i, carry):
        mat, inv = carry
        here = jnp.arange(n) == i
        pivot = jnp.take(jnp.take(mat, i, axis=-1), i, axis=-1)[..., None]
        mat_row, inv_row = jnp.take(mat, i, axis=-2) / pivot, jnp.take(inv, i, axis=-2) / pivot
        col = jnp.where(here, 0.0, jnp.take(mat, i, axis=-1))[..., None]
        mat = jnp.where(here[:, None], mat_row[..., None, :], mat - col * mat_row[..., None, :])
        inv = jnp.where(here[:, None], inv_row[..., None, :], inv - col * inv_row[..., None, :])
        return mat, inv

    _, inv = jax.lax.fori_loop(0, n, eliminate, (mat, inv))
    return inv * scale[..., :, None] * scale[..., None, :]


@jax.custom_jvp
def _gls_solve(jac, rest, slope):
    """(J J^T + rest)^-1 slope (..., B) for jac (..., B, N), rest (..., B, B) and slope (..., B)."""
    cov = jnp.einsum("...an,...bn->...ab", jac, jac) + rest
    return jnp.einsum("...ab,...b->...a", _spd_inverse(cov), slope)


@_gls_solve.defjvp
def _gls_solve_jvp(primals, tangents):
    """dw = C^-1 (dg - dC w) with dC w = dJ (J^T w) + J (dJ^T w) + d(rest) w: matrix-vector products only."""
    jac, rest, slope = primals
    d_jac, d_rest, d_slope = tangents
    inv = _spd_inverse(jnp.einsum("...an,...bn->...ab", jac, jac) + rest)

    def mv(m, v):
        return jnp.einsum("...ab,...b->...a", m, v)

    w = mv(inv, slope)
    d_cov_w = (mv(d_jac, jnp.einsum("...bn,...b->...n", jac, w)) + mv(jac, jnp.einsum("...bn,...b->...n", d_jac, w))
               + mv(d_rest, w))
    return w, mv(inv, d_slope - d_cov_w)


def _gls_weights(rays, fx, fy, depth_rel, z, coef, target, sigma_px, sigma_joint, bone_sigma_mm):
    """(..., B) weights C^-1 g: g the residuals' slope dr/dZ at z, C their covariance (joint noise shared by bones)."""
    a, beta, _ = coef
    c, p = _CHILDREN, _PARENTS
    depth = z[..., None] + depth_rel  # (..., J)
    bones = rays[..., c, :] * depth[..., c, None] - rays[..., p, :] * depth[..., p, None]
    # Bones scaled to their target lengths: the weights then follow the bones' directions, not how long
    # they look, which would favour the bones longer than their targets (a person pulled closer). A bone
    # looking far off its target is mostly noise: its scale is bounded to [1 / _MAX_RESCALE, _MAX_RESCALE].
    ratio = jnp.clip(target / jnp.sqrt(jnp.maximum(jnp.sum(bones * bones, -1), 1.0)), 1 / _MAX_RESCALE, _MAX_RESCALE)
    bones = bones * ratio[..., None]
    slope = (2 * a * z[..., None] + 2 * beta) * ratio ** 2
    zero = jnp.zeros_like(depth)
    # (..., J, 3, 3): row k is the displacement of joint j per unit of its k-th noise (u, v, relative depth).
    spread = jnp.stack([jnp.stack([sigma_px * depth / fx, zero, zero], -1),
                        jnp.stack([zero, sigma_px * depth / fy, zero], -1),
                        sigma_joint[:, None] * rays], -2)
    # First order: dr_b / d(noise) = 2 b . (joint displacement), signed by the incidence; (..., B, J * 3).
    jac = 2.0 * _INCIDENCE[:, :, None] * jnp.einsum("...bi,...jki->...bjk", bones, spread)
    jac = jac.reshape(jac.shape[:-2] + (-1,))
    # Second order: cov(|n_a|^2, |n_b|^2) = 2 tr(M_ab^2), M_ab = cov(n_a, n_b) = sum_j A_aj A_bj cov(n_j): a
    # bone pair sharing joint j gets 2 tr(cov_j^2); a bone itself 2 tr((cov_c + cov_p)^2).
    joint_cov = jnp.einsum("...jki,...jkl->...jil", spread, spread)
    square = jnp.sum(joint_cov * joint_cov, (-2, -1))  # (..., J)
    between = jnp.sum(joint_cov[..., c, :, :] * joint_cov[..., p, :, :], (-2, -1))  # (..., B)
    shares = np.abs(_INCIDENCE)
    rest = (2 * jnp.einsum("aj,...j,bj->...ab", shares, square, shares)
            + jnp.eye(len(p)) * (4 * between + (2 * bone_sigma_mm * target) ** 2)[..., None, :])
    return _gls_solve(jac, rest, slope)


@functools.partial(jax.jit, static_argnames=("bone_sigma_mm",))
def search_root_depth(image_uv, depth_rel_mm, intrinsics, bone_lengths_mm, *, sigma_px: float = 4.0,
                      sigma_depth_mm: float = 40.0, bone_sigma_mm: float = 10.0, min_mm: float = 500.0,
                      max_mm: float = 15000.0):
    """The root depth Z (...,) in mm whose noise-corrected bone lengths match `bone_lengths_mm`.

    Args:
      image_uv: (..., J, 2) joints in image pixels.
      depth_rel_mm: (..., J) depth relative to the root.
      intrinsics: (..., 4) of that image.
      bone_lengths_mm: (B,) (or (..., B)) mean bone lengths in `skeleton.BONES` order.
      sigma_px: the 2D noise of the joints, px per image coordinate (a trained model: about 4).
      sigma_depth_mm: the noise of every non-root joint's relative depth, mm (about 40); the root's
        relative depth is 0 by definition and taken as exact.
      bone_sigma_mm: how far (> 0) a person's bone may differ from `bone_lengths_mm` beyond the
        noise (with no noise, the only term of the covariance C below).
      min_mm, max_mm: the answer is clipped to this range (max_mm where the input has no answer).
    Jitted: compiles once per input shape and bone_sigma_mm; the sigmas may change freely.
    With sigma_px = sigma_depth_mm = 0 it is exact on exact input and the person's own bones.

    1. Z1 solves sum_b r_b(Z) = 0 (equal weights: unbiased, dominated by the long bones).
    2. At Z1, generalised least squares weights w = C^-1 g (g: dr_b/dZ, C: the residuals'
       covariance, bones sharing a joint correlated) favour bones seen across rather than
       along the view and long bones over short ones. The weights come from the same noisy
       joints as the residuals; their covariance (to first order, sum over the noise
       sources of dw/dnoise * dr/dnoise) is subtracted, so the answer solves
       sum_b w_b r_b(Z) = cov(w, r) in closed form.
    """
    if not bone_sigma_mm > 0:
        raise ValueError(f"bone_sigma_mm must be > 0; got {bone_sigma_mm}")
    target = jnp.asarray(bone_lengths_mm, jnp.float32)
    image_uv = jnp.asarray(image_uv, jnp.float32)
    depth_rel_mm = jnp.asarray(depth_rel_mm, jnp.float32)
    intrinsics = jnp.asarray(intrinsics, jnp.float32)
    num_joints = image_uv.shape[-2]
    sigma_joint = jnp.full((num_joints,), sigma_depth_mm, jnp.float32).at[skeleton.ROOT].set(0.0)

    def weights_and_residuals(uv, rel):
        """((w, r(Z1)), (coefficients, Z1)): the weights follow the noise through Z1 too; r is taken at Z1 fixed."""
        rays, fx, fy = _rays(uv, intrinsics)
        coef = _residual_coefficients(rays, fx, fy, rel, target, sigma_px, sigma_joint)
        z1 = _root(*(jnp.sum(x, -1) for x in coef))
        z1 = jnp.clip(jnp.where(jnp.isnan(z1), max_mm, z1), min_mm, max_mm)
        w = _gls_weights(rays, fx, fy, rel, z1, coef, target, sigma_px, sigma_joint, bone_sigma_mm)
        a, beta, gamma = coef
        z = jax.lax.stop_gradient(z1)[..., None]
        return (w, a * z * z + 2 * beta * z + gamma), (coef, z1)

    (w, _), ((a, beta, gamma), z1) = weights_and_residuals(image_uv, depth_rel_mm)
    # One tangent per noise source (joint, coordinate), scaled by its sigma; the same in every pose.
    sigmas = jnp.concatenate([jnp.full((num_joints, 2), sigma_px, jnp.float32), sigma_joint[:, None]], -1)
    tangents = jnp.eye(num_joints * 3, dtype=jnp.float32).reshape(-1, num_joints, 3) * sigmas

    def derivative(t):
        t = jnp.broadcast_to(t, image_uv.shape[:-2] + t.shape)
        _, (dw, dr), _ = jax.jvp(weights_and_residuals, (image_uv, depth_rel_mm), (t[..., :2], t[..., 2]),
                                 has_aux=True)
        return jnp.sum(dw * dr, -1)

    # A loop, not a vmap over the tangents: 51 full-batch passes run faster than one 51 times as wide.
    correction = jax.lax.fori_loop(0, tangents.shape[0], lambda k, acc: acc + derivative(tangents[k]),
                                   jnp.zeros(image_uv.shape[:-2], jnp.float32))
    z = _root(jnp.sum(w * a, -1), jnp.sum(w * beta, -1), jnp.sum(w * gamma, -1) - correction)
    return jnp.clip(jnp.where(jnp.isnan(z), z1, z), min_mm, max_mm)


@jax.jit
def estimate_root_depth(image_uv, depth_rel_mm, intrinsics, bone_lengths_mm):
    """The root depth that evaluation (`--root_depth=limbs`) and the exported camera-frame predictor use.

    The 1-D bone-length search (`search_root_depth_lengths`). The noise-corrected fit
    (`search_root_depth`) does better under the Gaussian joint noise it models
    (benchmarks/root_search.py), but on a trained model's predictions, whose errors are
    larger and structured, it failed: the synthetic_cpu demo model's test split
    (1000 frames, 2026-12-02) gave MPJPE 181.6 mm with a mean root-depth error of
    1767 mm, against 112.9 mm and 408 mm for this search. Args and result as
    `search_root_depth`.
    """
    return search_root_depth_lengths(image_uv, depth_rel_mm, intrinsics, bone_lengths_mm)
