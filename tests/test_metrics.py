import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from c2f_vol import metrics


def _reference_pa(pred, gt):
    """Independent Protocol #2: Kabsch via scipy (proper rotations only) plus closed-form scale."""
    out = []
    for p, g in zip(pred, gt):
        p0, g0 = p - p.mean(0), g - g.mean(0)
        rot, _ = Rotation.align_vectors(g0, p0)  # proper rotation R minimising |g0 - R p0|
        rp = rot.apply(p0)
        s = (rp * g0).sum() / (rp ** 2).sum()
        out.append(np.linalg.norm(s * rp + g.mean(0) - g, axis=-1).mean())
    return np.array(out)


def _random_rotation(rng):
    return Rotation.random(random_state=int(rng.integers(1 << 30))).as_matrix()


def test_mpjpe_against_loop(rng):
    pred, gt = rng.normal(size=(2, 6, 17, 3)) * 100
    want = [np.mean([np.linalg.norm((pred[n, j] - pred[n, 0]) - (gt[n, j] - gt[n, 0])) for j in range(17)])
            for n in range(6)]
    np.testing.assert_allclose(metrics.mpjpe(pred, gt), want, rtol=1e-12)
    raw = [np.mean(np.linalg.norm(pred[n] - gt[n], axis=-1)) for n in range(6)]
    np.testing.assert_allclose(metrics.mpjpe(pred, gt, root_index=None), raw, rtol=1e-12)
    # Translating a pose changes the unaligned error but not the root-aligned one.
    np.testing.assert_allclose(metrics.mpjpe(pred + 50, gt), metrics.mpjpe(pred, gt), rtol=1e-12)


def test_pa_mpjpe_against_independent_formulation(rng):
    gt = rng.normal(size=(20, 17, 3)) * 300
    pred = gt + rng.normal(size=gt.shape) * 60
    np.testing.assert_allclose(metrics.pa_mpjpe(pred, gt), _reference_pa(pred, gt), rtol=1e-6)


def test_pa_mpjpe_is_zero_for_similar_poses(rng):
    gt = rng.normal(size=(8, 17, 3)) * 300
    pred = np.stack([2.5 * g @ _random_rotation(rng).T + rng.normal(size=3) * 1000 for g in gt])
    assert metrics.pa_mpjpe(pred, gt).max() < 1e-8
    assert metrics.mpjpe(pred, gt).min() > 10  # the unaligned error is large


def test_pa_mpjpe_does_not_use_reflections(rng):
    gt = rng.normal(size=(10, 17, 3)) * 300
    mirrored = gt * np.array([-1.0, 1.0, 1.0])
    err = metrics.pa_mpjpe(mirrored, gt)
    assert err.min() > 1.0  # a reflection would align it perfectly
    np.testing.assert_allclose(err, _reference_pa(mirrored, gt), rtol=1e-6)


def test_n_mpjpe_removes_scale_only(rng):
    gt = rng.normal(size=(5, 17, 3)) * 300
    assert metrics.n_mpjpe(gt * 0.7 + 123.0, gt).max() < 1e-9
    pred = gt + rng.normal(size=gt.shape) * 40
    p0, g0 = pred - pred[:, :1], gt - gt[:, :1]
    s = (p0 * g0).sum(axis=(1, 2)) / (p0 ** 2).sum(axis=(1, 2))
    want = np.linalg.norm(s[:, None, None] * p0 - g0, axis=-1).mean(-1)
    np.testing.assert_allclose(metrics.n_mpjpe(pred, gt), want, rtol=1e-12)
    # Scale-only alignment cannot undo a rotation.
    rotated = gt @ _random_rotation(rng).T
    assert metrics.n_mpjpe(rotated, gt).min() > 1.0


def test_degenerate_poses_give_finite_errors():
    gt = np.zeros((2, 17, 3))
    gt[:, :, 0] = np.arange(17) * 10.0
    pred = np.ones((2, 17, 3)) * 5.0  # all joints at one point
    pa = metrics.pa_mpjpe(pred, gt)
    want = np.linalg.norm(gt - gt.mean(axis=1, keepdims=True), axis=-1).mean(-1)
    np.testing.assert_allclose(pa, want)
    assert np.all(np.isfinite(metrics.n_mpjpe(pred, gt)))
    assert metrics.pa_mpjpe(gt, gt).max() < 1e-9
    # A collinear gt (rank-deficient covariance) still aligns a scaled copy exactly.
    assert metrics.pa_mpjpe(gt * 2 + 7, gt).max() < 1e-8


def test_pck_and_auc(rng):
    gt = np.zeros((1, 17, 3))
    pred = np.zeros((1, 17, 3))
    pred[0, 1:, 0] = np.linspace(10, 320, 16)  # errors 10..320 mm, root exact
    within = (np.concatenate([[0.0], np.linspace(10, 320, 16)]) <= 150).mean()
    assert metrics.pck3d(pred, gt)[0] == pytest.approx(within)
    errs = np.concatenate([[0.0], np.linspace(10, 320, 16)])
    want_auc = np.mean([(errs <= t).mean() for t in np.linspace(0, 150, 31)])
    assert metrics.auc(pred, gt)[0] == pytest.approx(want_auc)
    assert metrics.auc(gt, gt)[0] == pytest.approx(1.0)


def test_bad_input_errors_name_shapes():
    with pytest.raises(ValueError, match=r"\(4, 17, 3\).*\(4, 16, 3\)"):
        metrics.mpjpe(np.zeros((4, 17, 3)), np.zeros((4, 16, 3)))
    with pytest.raises(ValueError, match=r"\(N, J, 3\).*\(4, 17, 2\)"):
        metrics.pa_mpjpe(np.zeros((4, 17, 2)), np.zeros((4, 17, 2)))
    bad = np.zeros((3, 17, 3))
    bad[1, 4, 2] = np.nan
    with pytest.raises(ValueError, match=r"pred of shape \(3, 17, 3\) holds NaN.*\[1\]"):
        metrics.mpjpe(bad, np.zeros((3, 17, 3)), check_finite=True)
    assert np.isnan(metrics.mpjpe(bad, np.zeros((3, 17, 3)))[1])  # unvalidated NaN propagates


def test_aggregate_action_and_frame_means():
    errs = np.array([10.0, 20.0, 30.0, 100.0])
    acts = ["Walking", "Walking", "Walking", "Eating"]
    out = metrics.aggregate({"mpjpe_mm": errs, "pa_mpjpe_mm": errs / 2}, acts)
    assert out["per_action"]["Walking"] == {"mpjpe_mm": 20.0, "pa_mpjpe_mm": 10.0, "frames": 3}
    assert out["action_mean"]["mpjpe_mm"] == pytest.approx(60.0)  # (20 + 100) / 2
    assert out["frame_mean"]["mpjpe_mm"] == pytest.approx(40.0)   # 160 / 4
    assert out["frames"] == 4
    table = metrics.format_table(out)
    assert "Eating" in table and "action mean" in table and "60.00" in table
    with pytest.raises(ValueError, match=r"\(3,\).*\(4,\)"):
        metrics.aggregate({"mpjpe_mm": errs[:3]}, acts)
