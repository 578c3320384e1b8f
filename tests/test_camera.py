import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from c2f_vol import camera, skeleton
from conftest import random_poses

CAM = camera.H36M_CAMERAS["54138969"]


def _h36m_reference_project(point, cam):
    """Human3.6M's ProjectPointRadial written out for one point, as an independent formula."""
    x, y = point[0] / point[2], point[1] / point[2]
    k1, k2, k3 = cam.k
    p1, p2 = cam.p
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2 ** 2 + k3 * r2 ** 3
    tan = p1 * y + p2 * x
    xd = x * (radial + tan) + p2 * r2
    yd = y * (radial + tan) + p1 * r2
    return np.array([cam.fx * xd + cam.cx, cam.fy * yd + cam.cy])


def test_h36m_camera_table():
    assert set(camera.H36M_CAMERAS) == {"54138969", "55011271", "58860488", "60457274"}
    c = camera.H36M_CAMERAS["58860488"]
    np.testing.assert_allclose(c.intrinsics, [1149.141, 1148.799, 519.816, 501.403], rtol=1e-6)
    np.testing.assert_allclose(c.distortion, [-0.20834, 0.25549, -0.00246, 0.00148, -0.00076], rtol=1e-5)
    assert (c.width, c.height) == (1000, 1000)
    assert camera.H36M_CAMERAS["60457274"].height == 1002


def test_project_matches_independent_formula(rng):
    pts = random_poses(rng, 4).reshape(-1, 3)
    got = camera.project(pts[None], CAM.intrinsics.astype(np.float64), CAM.distortion.astype(np.float64))[0]
    want = np.stack([_h36m_reference_project(p, CAM) for p in pts])
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # Without distortion it is the pinhole model, as OpenCV computes it.
    k = np.array([[CAM.fx, 0, CAM.cx], [0, CAM.fy, CAM.cy], [0, 0, 1]])
    cv, _ = cv2.projectPoints(pts, np.zeros(3), np.zeros(3), k, None)
    np.testing.assert_allclose(camera.project(pts[None], CAM.intrinsics.astype(np.float64))[0], cv[:, 0], atol=1e-6)


@pytest.mark.parametrize("distorted", [False, True])
def test_back_project_inverts_project_with_batch_shapes(rng, distorted):
    pts = random_poses(rng, 6).reshape(2, 3, 17, 3)
    intr = np.broadcast_to(CAM.intrinsics.astype(np.float64), (2, 3, 4))
    dist = CAM.distortion.astype(np.float64) if distorted else None
    uv = camera.project(pts, intr, dist)
    assert uv.shape == (2, 3, 17, 2)
    back = camera.back_project(uv, pts[..., 2], intr, dist)
    np.testing.assert_allclose(back, pts, atol=1e-3)


def test_jax_and_tf_agree_with_numpy(rng):
    pts = random_poses(rng, 3).astype(np.float32)
    want = camera.project(pts, CAM.intrinsics, CAM.distortion)
    # Traced under jit: one compilation, where op by op each of its ~20 ops compiles on its own.
    got_jax = jax.jit(camera.project)(jnp.asarray(pts), jnp.asarray(CAM.intrinsics), jnp.asarray(CAM.distortion))
    got_tf = camera.project(tf.constant(pts), tf.constant(CAM.intrinsics), tf.constant(CAM.distortion))
    assert isinstance(got_jax, jnp.ndarray)
    np.testing.assert_allclose(np.asarray(got_jax), want, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(got_tf), want, rtol=1e-5)


def test_world_camera_round_trip(rng):
    angle = 0.7
    rot = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    centre = np.array([1000.0, -500.0, 200.0])
    pts = rng.normal(size=(4, 17, 3)) * 500
    cam_pts = camera.world_to_camera(pts, rot, centre)
    # X_cam = R (X - T), written out.
    np.testing.assert_allclose(cam_pts[1, 2], rot @ (pts[1, 2] - centre), atol=1e-9)
    np.testing.assert_allclose(camera.camera_to_world(cam_pts, rot, centre), pts, atol=1e-9)


def test_crop_inverse_undoes_forward(rng):
    centre = rng.uniform(100, 900, (5, 2))
    scale = rng.uniform(200, 600, (5,))
    rot = rng.uniform(-60, 60, (5,))
    flip = np.array([True, False, True, False, False])
    aff = camera.crop_affine(centre, scale, 256, rot, flip)
    assert aff.shape == (5, 2, 3)
    pts = rng.uniform(0, 1000, (5, 17, 2))
    crop = camera.apply_affine(aff, pts)
    np.testing.assert_allclose(camera.apply_affine(camera.invert_affine(aff), crop), pts, atol=1e-8)
    # The box centre lands on the crop centre, its edges on the crop's outer pixel edges.
    np.testing.assert_allclose(camera.apply_affine(aff, centre[:, None])[:, 0], np.full((5, 2), 127.5), atol=1e-9)
    plain = camera.crop_affine(centre, scale, 256)
    left_edge = centre - np.stack([scale / 2, np.zeros(5)], -1)
    np.testing.assert_allclose(camera.apply_affine(plain, left_edge[:, None])[:, 0, 0], -0.5, atol=1e-9)


def test_crop_rotation_is_counter_clockwise_as_displayed():
    aff = camera.crop_affine(np.array([50.0, 50.0]), 100.0, 100, 90.0)
    # A point right of the centre goes above it (smaller row) when turned 90 deg anticlockwise.
    out = camera.apply_affine(aff, np.array([[60.0, 50.0]]))
    np.testing.assert_allclose(out, [[49.5, 39.5]], atol=1e-9)


def test_crop_matches_cv2_warp_affine():
    img = np.zeros((300, 400), np.float32)
    dot = np.array([230.0, 140.0])
    img[int(dot[1]), int(dot[0])] = 1.0
    aff = camera.crop_affine(np.array([210.0, 150.0]), 96.0, 192, rotation_deg=25.0, flip=True)
    crop = cv2.warpAffine(img, aff.astype(np.float64), (192, 192), flags=cv2.INTER_LINEAR)
    ys, xs = np.nonzero(crop)
    w = crop[ys, xs]
    centroid = np.array([(xs * w).sum() / w.sum(), (ys * w).sum() / w.sum()])
    np.testing.assert_allclose(centroid, camera.apply_affine(aff, dot[None])[0], atol=0.15)


def test_flip_maps_joints_onto_mirrored_partners(rng):
    # A pose symmetric about the vertical line through the box centre.
    centre = np.array([400.0, 300.0])
    half = rng.uniform(20, 150, (17,))
    rows = rng.uniform(100, 500, (17,))
    pose = np.stack([np.full(17, centre[0]), rows], -1)
    for r, l in skeleton.LEFT_RIGHT_PAIRS:
        rows[l] = rows[r]
        pose[r] = [centre[0] - half[r], rows[r]]
        pose[l] = [centre[0] + half[r], rows[r]]
    plain = camera.apply_affine(camera.crop_affine(centre, 500.0, 128), pose)
    flipped = camera.apply_affine(camera.crop_affine(centre, 500.0, 128, flip=True), pose)
    np.testing.assert_allclose(flipped[list(skeleton.FLIP_PERMUTATION)], plain, atol=1e-9)


def test_crop_in_tf_graph_matches_numpy(rng):
    centre = rng.uniform(100, 900, (3, 2)).astype(np.float32)
    scale = rng.uniform(200, 600, (3,)).astype(np.float32)
    rot = rng.uniform(-60, 60, (3,)).astype(np.float32)
    flip = np.array([True, False, True])
    want = camera.crop_affine(centre, scale, 128, rot, flip)
    fn = tf.function(lambda c, s, r, f: camera.crop_affine(c, s, 128, r, f))
    got = fn(tf.constant(centre), tf.constant(scale), tf.constant(rot), tf.constant(flip))
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-3)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="points_cam.*3"):
        camera.project(np.zeros((4, 2)), CAM.intrinsics)
    with pytest.raises(ValueError, match="intrinsics.*4"):
        camera.project(np.ones((4, 3)), np.ones(3))
    with pytest.raises(ValueError, match=r"\(\.\.\., 2, 3\)"):
        camera.apply_affine(np.eye(3), np.zeros((4, 2)))


def test_crop_to_camera_inverts_projection_and_crop(rng):
    """Joints projected, cropped (rotated, flipped) and lifted back with their root depth are the joints again."""
    poses = random_poses(rng, 4)
    intr = np.array([[1145.0, 1144.0, 512.5, 515.4]] * 4)
    uv = camera.project(poses, intr)
    affine = camera.crop_affine(uv.mean(axis=1), np.array([400.0, 300.0, 500.0, 350.0]), 64,
                                rotation_deg=np.array([0.0, 20.0, -35.0, 90.0]), flip=np.array([0, 1, 0, 1]))
    joints_crop = np.concatenate([camera.apply_affine(affine, uv), (poses[..., 2] - poses[:, :1, 2])[..., None]], -1)
    np.testing.assert_allclose(camera.crop_to_image(joints_crop[..., :2], affine), uv, atol=1e-6)
    np.testing.assert_allclose(camera.crop_to_camera(joints_crop, affine, intr, poses[:, 0, 2]), poses, atol=1e-6)
    # A wrong root depth scales the pose along the rays: the error is not hidden.
    assert np.abs(camera.crop_to_camera(joints_crop, affine, intr, poses[:, 0, 2] + 100) - poses).max() > 50
