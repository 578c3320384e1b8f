import functools
import importlib.util
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

from c2f_vol import camera, rootdepth, skeleton
from conftest import REPO, random_poses

INTR = np.array([1145.0, 1144.0, 512.0, 515.0])
# Zero noise settings: the search is then exact on exact input with the person's own bones.
EXACT = dict(sigma_px=0.0, sigma_depth_mm=0.0)


def _load_benchmark():
    """benchmarks/root_search.py as a module (it defines no flags on import)."""
    name = "_c2f_benchmarks_root_search"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / "root_search.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


root_search = _load_benchmark()


def _inputs(poses, intr=INTR):
    uv = camera.project(poses, intr)
    rel = poses[..., 2] - poses[..., :1, 2]
    return (jnp.asarray(uv, jnp.float32), jnp.asarray(rel, jnp.float32),
            jnp.asarray(np.broadcast_to(intr, poses.shape[:-2] + (4,)), jnp.float32))


@pytest.fixture(scope="module")
def small_poses():
    poses = random_poses(np.random.default_rng(0), 6, depth_mm=4000.0)
    return poses[:, :1] + (poses - poses[:, :1]) * 0.5


@pytest.fixture(scope="module")
def noisy_sample():
    """200 procedural poses in front of a Human3.6M-like camera, their own bones, noise of 4 px / 40 mm."""
    rng = np.random.default_rng(3)
    world, _, _ = root_search.load_poses(REPO / "no-such-folder", 200, rng)
    cam, intr = root_search.place_in_camera(world, rng)
    uv, rel = root_search.add_noise(cam, intr, rng, 4.0, 40.0, root_depth_noise=False)
    return uv, rel, jnp.asarray(intr, jnp.float32), jnp.asarray(skeleton.bone_lengths(world), jnp.float32), cam[:, 0, 2]


@pytest.mark.parametrize("search", [jax.jit(rootdepth.search_root_depth_lengths),
                                    functools.partial(rootdepth.search_root_depth, **EXACT),
                                    rootdepth.estimate_root_depth], ids=["lengths", "robust", "evaluation's"])
def test_limb_length_search_recovers_the_true_root_depth(small_poses, search):
    # Both jitted, as the camera-frame predictor runs them (search_root_depth is jitted itself).
    poses = small_poses
    bones = skeleton.bone_lengths(poses)  # each pose's own bones: the true depth is the exact minimum
    uv, rel, intr = _inputs(poses)
    found = [float(search(uv[i], rel[i], intr[i], jnp.asarray(bones[i], jnp.float32))) for i in range(6)]
    np.testing.assert_allclose(found, poses[:, 0, 2], rtol=2e-3)
    # Batched, with the training mean bones instead of the true ones, it still lands near the truth.
    batched = search(uv, rel, intr, jnp.asarray(bones.mean(axis=0), jnp.float32))
    assert batched.shape == (6,) and batched.dtype == jnp.float32
    assert np.abs(np.asarray(batched) - poses[:, 0, 2]).max() < 0.35 * poses[:, 0, 2].min()


def test_robust_search_beats_the_length_fit_on_noisy_poses(noisy_sample):
    # Measured at this seed: lengths 150 mm mean error (pulled closer), robust about 100 mm.
    uv, rel, intr, bones, true = noisy_sample
    old = np.abs(np.asarray(jax.jit(rootdepth.search_root_depth_lengths)(uv, rel, intr, bones)) - true)
    new = np.abs(np.asarray(rootdepth.search_root_depth(uv, rel, intr, bones)) - true)
    assert new.mean() < 0.8 * old.mean(), (new.mean(), old.mean())
    assert new.mean() < 130.0, new.mean()
    assert np.median(new) < np.median(old)


def test_batched_over_any_leading_dims_and_inside_jit(small_poses):
    uv, rel, intr = _inputs(small_poses)
    bones = jnp.asarray(skeleton.bone_lengths(small_poses).mean(0), jnp.float32)
    flat = rootdepth.search_root_depth(uv, rel, intr, bones, **EXACT)
    grid = rootdepth.search_root_depth(uv.reshape(2, 3, 17, 2), rel.reshape(2, 3, 17), intr.reshape(2, 3, 4), bones,
                                       **EXACT)
    assert grid.shape == (2, 3)
    np.testing.assert_allclose(np.asarray(grid).ravel(), flat, rtol=1e-5)
    one = rootdepth.search_root_depth(uv[4], rel[4], intr[4], bones, **EXACT)
    assert one.shape == () and abs(float(one) - float(flat[4])) < 1e-3 * float(flat[4])
    # Inside a caller's jit (as inference.make_camera_fn), with the sigmas traced.
    nested = jax.jit(lambda u, r, i, s: rootdepth.search_root_depth(u, r, i, bones, sigma_px=s, sigma_depth_mm=10 * s))
    np.testing.assert_allclose(nested(uv, rel, intr, 0.0), flat, rtol=1e-5)


def test_exports_with_a_symbolic_batch_and_no_custom_calls():
    # jax2tf serialises the camera-frame function this way; a LAPACK call would not run in TensorFlow.
    b, = export.symbolic_shape("b")
    exported = export.export(jax.jit(rootdepth.search_root_depth), platforms=("cpu", "cuda"))(
        jax.ShapeDtypeStruct((b, 17, 2), jnp.float32), jax.ShapeDtypeStruct((b, 17), jnp.float32),
        jax.ShapeDtypeStruct((b, 4), jnp.float32), jax.ShapeDtypeStruct((16,), jnp.float32))
    assert set(re.findall(r"custom_call @(\w+)", exported.mlir_module())) <= {"shape_assertion"}


def test_no_root_falls_back_to_the_closest_depth():
    # Relative depths longer than the bones: no depth makes the corrected lengths match; the answer stays finite.
    uv = jnp.asarray(np.random.default_rng(1).uniform(500, 520, (17, 2)), jnp.float32)
    rel = jnp.asarray(np.arange(17) * 400.0, jnp.float32)
    bones = jnp.full((16,), 100.0, jnp.float32)
    z = rootdepth.search_root_depth(uv, rel, jnp.asarray(INTR, jnp.float32), bones, **EXACT)
    assert np.isfinite(float(z)) and 500.0 <= float(z) <= 15000.0


def test_bone_sigma_must_be_positive(small_poses):
    uv, rel, intr = _inputs(small_poses)
    with pytest.raises(ValueError, match="bone_sigma_mm"):
        rootdepth.search_root_depth(uv, rel, intr, jnp.ones(16), bone_sigma_mm=0.0)


def test_benchmark_computation_on_a_tiny_sample():
    world, subjects, source = root_search.load_poses(REPO / "no-such-folder", 200, np.random.default_rng(3))
    assert source.startswith("procedural") and len(world) == 200
    result = root_search.evaluate(world, subjects, [(0.0, 0.0), (4.0, 40.0)], seed=3)
    rows = {(r["noise_px"], r["target"], r["method"]): r for r in result["rows"]}
    assert len(rows) == 2 * 2 * 3 and result["num_poses"] == 200
    for method in ("old", "new matched"):  # exact input, own bones: exact
        assert rows[0.0, "subject", method]["worst"] < 1.0
    assert rows[4.0, "subject", "new"]["mean"] < 0.8 * rows[4.0, "subject", "old"]["mean"]
    assert rows[4.0, "subject", "old"]["bias"] < -50.0  # the length fit pulls the person closer
    table = root_search.format_table(result)
    assert "| 4 / 40 | new matched |" in table and "| none | old |" in table


def test_benchmark_reads_the_shared_mocap(shared_data):
    world, subjects, source = root_search.load_poses(shared_data / "mocap", 50, np.random.default_rng(0))
    assert world.shape == (50, 17, 3) and source.startswith("BVH") and set(subjects) <= {"01", "131"}
    cam, intr = root_search.place_in_camera(world, np.random.default_rng(0))
    uv = camera.project(cam, intr)
    assert np.all((uv > 0) & (uv < 1000)) and np.all((cam[:, 0, 2] >= 3500) & (cam[:, 0, 2] <= 6500))
