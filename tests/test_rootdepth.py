import jax
import jax.numpy as jnp
import numpy as np

from c2f_vol import camera, rootdepth, skeleton
from conftest import random_poses


def test_limb_length_search_recovers_the_true_root_depth(rng):
    poses = random_poses(rng, 6, depth_mm=4000.0)
    poses = poses[:, :1] + (poses - poses[:, :1]) * 0.5
    bones = skeleton.bone_lengths(poses)  # each pose's own bones: the true depth is the exact minimum
    intr = np.array([1145.0, 1144.0, 512.0, 515.0])
    uv = camera.project(poses, intr)
    rel = poses[..., 2] - poses[:, :1, 2]
    # Jitted, as the camera-frame predictor runs it: one compilation per shape instead of one per op.
    search = jax.jit(rootdepth.search_root_depth)
    found = [float(search(jnp.asarray(uv[i], jnp.float32), jnp.asarray(rel[i], jnp.float32),
                          jnp.asarray(intr, jnp.float32), bones[i])) for i in range(6)]
    np.testing.assert_allclose(found, poses[:, 0, 2], rtol=2e-3)
    # Batched, with the training mean bones instead of the true ones, it still lands near the truth.
    mean = bones.mean(axis=0)
    batched = search(jnp.asarray(uv, jnp.float32), jnp.asarray(rel, jnp.float32),
                     jnp.asarray(np.tile(intr, (6, 1)), jnp.float32), mean)
    assert batched.shape == (6,)
    assert np.abs(np.asarray(batched) - poses[:, 0, 2]).max() < 0.35 * poses[:, 0, 2].min()
