"""SavedModel export: parity with JAX in a process that never imports jax, metadata, atomic writes."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from c2f_vol import camera, config as config_lib, export, inference, skeleton, train
from conftest import REPO

TINY = str(REPO / "configs" / "synthetic_cpu.py:tiny")
BONES = np.linspace(100.0, 450.0, 16).astype(np.float32)

# The client's side: TensorFlow alone, with jax made absent.
NO_JAX = textwrap.dedent("""
    import json, sys
    import importlib.abc

    class NoJax(importlib.abc.MetaPathFinder):
        # TensorFlow imports jax opportunistically when it is installed; make it absent.
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("jax", "jaxlib", "flax", "optax", "orbax"):
                raise ImportError(f"{name} is blocked: the SavedModel must serve without JAX")
            return None

    sys.meta_path.insert(0, NoJax())
    import numpy as np
    import tensorflow as tf
""")

RELOAD = NO_JAX + textwrap.dedent("""
    m = tf.saved_model.load(sys.argv[1])
    data = np.load(sys.argv[2])
    out = {}
    for b in (1, 5):
        r = m.signatures["serving_default"](images=tf.constant(data[f"images{b}"]))
        out[f"joints{b}"], out[f"conf{b}"] = r["joints"].numpy(), r["confidence"].numpy()
        c = m.signatures["camera_frame"](images=tf.constant(data[f"images{b}"]),
                                         intrinsics=tf.constant(data[f"intr{b}"]), box=tf.constant(data[f"box{b}"]))
        out[f"cam{b}"], out[f"root{b}"] = c["joints_cam"].numpy(), c["root_depth_mm"].numpy()
        d = m.signatures["camera_frame_distorted"](images=tf.constant(data[f"images{b}"]),
                                                   intrinsics=tf.constant(data[f"intr{b}"]),
                                                   box=tf.constant(data[f"box{b}"]), distortion=tf.constant(data[f"dist{b}"]))
        out[f"dcam{b}"], out[f"droot{b}"] = d["joints_cam"].numpy(), d["root_depth_mm"].numpy()
        # The restored object's camera_frame takes the distortion as an optional argument.
        plain = m.camera_frame(tf.constant(data[f"images{b}"]), tf.constant(data[f"intr{b}"]), tf.constant(data[f"box{b}"]))
        lens = m.camera_frame(tf.constant(data[f"images{b}"]), tf.constant(data[f"intr{b}"]), tf.constant(data[f"box{b}"]),
                              tf.constant(data[f"dist{b}"]))
        out[f"ocam{b}"], out[f"odcam{b}"] = plain["joints_cam"].numpy(), lens["joints_cam"].numpy()
    meta = json.loads(m.metadata_json.numpy().decode())
    assert "jax" not in sys.modules and "jaxlib" not in sys.modules, "the client imported jax"
    np.savez(sys.argv[3], **out)
    print("META" + json.dumps(meta))
""")

# Bad input to both signatures, in plain TensorFlow: each case's error text (or output shapes).
BAD_INPUT = NO_JAX + textwrap.dedent("""
    m = tf.saved_model.load(sys.argv[1])
    s = int(sys.argv[2])
    crop, cam = m.signatures["serving_default"], m.signatures["camera_frame"]
    dcam = m.signatures["camera_frame_distorted"]
    u8 = lambda *shape: tf.zeros(shape, tf.uint8)
    intr = lambda b: tf.constant(np.tile(np.float32([[1100, 1100, 500, 500]]), (b, 1)))
    box = lambda b: tf.constant(np.tile(np.float32([[500, 500, 400]]), (b, 1)))
    cases = {
        "spatial": lambda: crop(images=u8(1, s - 1, s - 1, 3)),
        "channels": lambda: crop(images=u8(2, s, s, 4)),
        "rank": lambda: crop(images=u8(s, s, 3)),
        "dtype": lambda: crop(images=tf.zeros((1, s, s, 3), tf.float32)),
        "batch0": lambda: crop(images=u8(0, s, s, 3)),
        "cam_spatial": lambda: cam(images=u8(1, s, s + 1, 3), intrinsics=intr(1), box=box(1)),
        "cam_batch0": lambda: cam(images=u8(0, s, s, 3), intrinsics=intr(0), box=box(0)),
        "zero_focal": lambda: cam(images=u8(2, s, s, 3), intrinsics=tf.constant([[1100, 1100, 500, 500],
                                                                                 [0, 0, 320, 240]], tf.float32),
                                  box=box(2)),
        "nan_focal": lambda: cam(images=u8(1, s, s, 3), intrinsics=tf.constant([[np.nan, 1, 2, 3]], tf.float32),
                                 box=box(1)),
        "negative_side": lambda: cam(images=u8(1, s, s, 3), intrinsics=intr(1),
                                     box=tf.constant([[320, 240, -50]], tf.float32)),
        "batch_mismatch": lambda: cam(images=u8(2, s, s, 3), intrinsics=intr(1), box=box(2)),
        "intrinsics_shape": lambda: cam(images=u8(1, s, s, 3), intrinsics=tf.ones((1, 3)), box=box(1)),
        "box_shape": lambda: cam(images=u8(1, s, s, 3), intrinsics=intr(1), box=tf.ones((1,))),
        "distortion_shape": lambda: dcam(images=u8(2, s, s, 3), intrinsics=intr(2), box=box(2),
                                         distortion=tf.zeros((2, 4))),
        "distortion_batch": lambda: dcam(images=u8(2, s, s, 3), intrinsics=intr(2), box=box(2),
                                         distortion=tf.zeros((1, 5))),
        "distortion_nan": lambda: dcam(images=u8(1, s, s, 3), intrinsics=intr(1), box=box(1),
                                       distortion=tf.constant([[0.1, np.nan, 0, 0, 0]], tf.float32)),
    }
    out = {}
    for name, call in cases.items():
        try:
            out[name] = {"shapes": {k: list(v.shape) for k, v in call().items()}}
        except Exception as e:
            out[name] = {"error": str(e)}
    assert "jax" not in sys.modules and "jaxlib" not in sys.modules, "the client imported jax"
    print("CASES" + json.dumps(out))
""")


# Exporting and serving the SavedModel through TensorFlow compiles every signature at every batch size
# (minutes on the AVX2 class), so the round trips are slow tests (CI runs them) for both decoders; the
# default suite checks the exported functions in JAX and the export's guards.
@pytest.fixture(scope="module", params=["soft_argmax", "argmax_local"])
def trained(tmp_path_factory, request):
    """A tiny model after a few steps on random data (non-trivial weights and BatchNorm statistics),
    exported with each decoder: both signatures decode through `VolumeCodec.decode_logits`."""
    config = config_lib.load(TINY, {"codec.decoder": request.param})
    trainer = train.Trainer(config)
    state = trainer.init_state()
    rng = np.random.default_rng(0)
    s = config.codec.input_size
    for _ in range(3):
        batch = {"image": rng.integers(0, 255, (4, s, s, 3), dtype=np.uint8),
                 "joints_uv": rng.uniform(4, s - 4, (4, 17, 2)).astype(np.float32),
                 "depth_rel_mm": rng.uniform(-500, 500, (4, 17)).astype(np.float32),
                 "mask": np.ones(4, np.float32)}
        state, _ = trainer.train_step(state, trainer.put(batch))
    out = tmp_path_factory.mktemp("export") / "saved_model"
    export.export_saved_model(trainer.network, inference.variables_of(state), BONES, str(out), platforms=("cpu",))
    return trainer.network, inference.variables_of(state), out


@pytest.mark.slow
def test_reloaded_savedmodel_matches_jax_at_two_batch_sizes(trained, tmp_path):
    network, variables, path = trained
    s = network.codec.input_size
    rng = np.random.default_rng(1)
    crop_fn = jax.jit(inference.make_crop_fn(network))
    cam_fn = jax.jit(inference.make_camera_fn(network, BONES))
    inputs, want = {}, {}
    for b in (1, 5):
        inputs[f"images{b}"] = rng.integers(0, 255, (b, s, s, 3), dtype=np.uint8)
        inputs[f"intr{b}"] = np.tile(np.array([[1100.0, 1100.0, 500.0, 500.0]], np.float32), (b, 1))
        inputs[f"box{b}"] = np.concatenate([rng.uniform(300, 700, (b, 2)), rng.uniform(300, 600, (b, 1))],
                                           1).astype(np.float32)
        inputs[f"dist{b}"] = np.tile(camera.H36M_CAMERAS["54138969"].distortion.astype(np.float32), (b, 1))
        j, c = crop_fn(variables, inputs[f"images{b}"])
        cam, root, _, _ = cam_fn(variables, inputs[f"images{b}"], inputs[f"intr{b}"], inputs[f"box{b}"],
                                 np.zeros((b, 5), np.float32))
        dcam, droot, _, _ = cam_fn(variables, inputs[f"images{b}"], inputs[f"intr{b}"], inputs[f"box{b}"],
                                   inputs[f"dist{b}"])
        want.update({f"joints{b}": j, f"conf{b}": c, f"cam{b}": cam, f"root{b}": root, f"dcam{b}": dcam,
                     f"droot{b}": droot})
    np.savez(tmp_path / "in.npz", **inputs)
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "-c", RELOAD, str(path), str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = np.load(tmp_path / "out.npz")
    for b in (1, 5):
        assert got[f"joints{b}"].shape == (b, 17, 3) and got[f"conf{b}"].shape == (b, 17)
        # Crop pixels to 1e-4 px; depth in mm to 1e-4 relative (float32 sums over a volume whose
        # bins are 500 mm wide in this tiny config reach ~2e-4 mm absolute; the paper's 31 mm bins ~16x less).
        np.testing.assert_allclose(got[f"joints{b}"][..., :2], np.asarray(want[f"joints{b}"])[..., :2], atol=1e-4, rtol=0)
        np.testing.assert_allclose(got[f"joints{b}"][..., 2], np.asarray(want[f"joints{b}"])[..., 2], atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(got[f"conf{b}"], np.asarray(want[f"conf{b}"]), atol=1e-4, rtol=0)
        # The limb-length search of an untrained model's poses has a flat float32 minimum, so the
        # root depths agree to 1%; given its own root depth, the camera-frame joints must be exact.
        np.testing.assert_allclose(got[f"root{b}"], np.asarray(want[f"root{b}"]), rtol=1e-2)
        affine = camera.crop_affine(inputs[f"box{b}"][:, :2], inputs[f"box{b}"][:, 2], s)
        # Independently of camera.crop_to_camera: the inverse affine by numpy, then the pinhole by hand.
        inv = np.linalg.inv(np.concatenate([affine, np.tile([[[0.0, 0.0, 1.0]]], (b, 1, 1))], 1))
        uv1 = np.concatenate([got[f"joints{b}"][..., :2], np.ones((b, 17, 1))], -1)
        uv = np.einsum("bij,bkj->bki", inv, uv1)[..., :2]
        z = got[f"joints{b}"][..., 2] + got[f"root{b}"][:, None]
        fx, fy, cx, cy = (inputs[f"intr{b}"][:, None, i] for i in range(4))
        lifted = np.stack([(uv[..., 0] - cx) / fx * z, (uv[..., 1] - cy) / fy * z, z], -1)
        np.testing.assert_allclose(got[f"cam{b}"], lifted, rtol=1e-4, atol=1e-2)
        # With the lens: JAX and TF agree, the lens moves the result, and the object function dispatches.
        np.testing.assert_allclose(got[f"droot{b}"], np.asarray(want[f"droot{b}"]), rtol=1e-2)
        np.testing.assert_allclose(got[f"ocam{b}"], got[f"cam{b}"], rtol=1e-6, atol=1e-3)
        np.testing.assert_allclose(got[f"odcam{b}"], got[f"dcam{b}"], rtol=1e-6, atol=1e-3)
        dz = got[f"dcam{b}"][..., 2:3]
        rays = np.asarray(camera.undistort_pixels(camera.crop_to_image(got[f"joints{b}"][..., :2].astype(np.float64),
                                                                        affine), inputs[f"intr{b}"].astype(np.float64),
                                                  inputs[f"dist{b}"].astype(np.float64)))
        want_xy = (rays - inputs[f"intr{b}"][:, None, 2:]) / inputs[f"intr{b}"][:, None, :2] * dz
        np.testing.assert_allclose(got[f"dcam{b}"][..., :2], want_xy, rtol=1e-4, atol=1e-2)
        assert np.abs(got[f"dcam{b}"][..., :2] / dz - got[f"cam{b}"][..., :2] / got[f"cam{b}"][..., 2:3]).max() > 1e-5
    meta = json.loads(proc.stdout.split("META")[-1])
    assert meta["joint_names"] == list(skeleton.JOINT_NAMES) and meta["parents"] == list(skeleton.PARENTS)
    assert meta["input_size"] == s and len(meta["image_mean"]) == 3
    assert meta["codec"]["decoder"] == network.codec.decoder
    assert meta["data"]["box_margin"] == network.config.data.box_margin
    np.testing.assert_allclose(meta["mean_bone_lengths_mm"], BONES, rtol=1e-6)
    assert (path / "assets" / export.METADATA_ASSET).is_file()


@pytest.fixture(scope="module")
def initialised():
    """The tiny model's network and initial variables: no training, no export."""
    network = inference.Network(config_lib.load(TINY))
    return network, network.init_variables()


def test_crop_fn_decodes_with_the_codec(initialised):
    network, variables = initialised
    codec = network.codec
    images = np.random.default_rng(2).integers(0, 255, (2, codec.input_size, codec.input_size, 3), dtype=np.uint8)
    joints, conf = inference.make_crop_fn(network)(variables, images)
    model = network.module(variables["params"], variables["batch_stats"])
    model.eval()
    coords, want_conf = codec.decode_logits(model(images)[-1])
    uv, depth = codec.decode(coords, codec.num_levels - 1)
    np.testing.assert_allclose(np.asarray(joints[..., :2]), np.asarray(uv), atol=1e-4)
    np.testing.assert_allclose(np.asarray(joints[..., 2]), np.asarray(depth), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(np.asarray(conf), np.asarray(want_conf), atol=1e-6)


def test_failed_export_keeps_the_previous_savedmodel(initialised, tmp_path):
    network, variables = initialised
    path = tmp_path / "saved_model"  # what a previous export left
    (path / "variables").mkdir(parents=True)
    (path / "saved_model.pb").write_bytes(b"previous")
    before = sorted(os.listdir(path))
    with pytest.raises(ValueError, match="bone_lengths_mm"):
        export.export_saved_model(network, variables, BONES[:3], str(path))
    assert sorted(os.listdir(path)) == before and (path / "saved_model.pb").read_bytes() == b"previous"
    assert not [p for p in os.listdir(path.parent) if p.startswith(".export-")]


@pytest.mark.slow
def test_bad_input_gets_a_short_named_error_and_batch_0_an_empty_result(trained):
    _, _, path = trained
    s = trained[0].codec.input_size
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "-c", BAD_INPUT, str(path), str(s)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.split("CASES")[-1])
    j = len(skeleton.JOINT_NAMES)
    assert got["batch0"] == {"shapes": {"joints": [0, j, 3], "confidence": [0, j]}}
    assert got["cam_batch0"] == {"shapes": {"joints_cam": [0, j, 3], "root_depth_mm": [0],
                                            "joints_image": [0, j, 2], "confidence": [0, j]}}
    want = {
        "spatial": f"serving_default: images must be uint8 (b, {s}, {s}, 3); got (1, {s - 1}, {s - 1}, 3)",
        "channels": f"serving_default: images must be uint8 (b, {s}, {s}, 3); got (2, {s}, {s}, 4)",
        "rank": f"serving_default: images must be uint8 (b, {s}, {s}, 3); got ({s}, {s}, 3)",
        # TensorFlow's own refusal, before the function runs: inputs counted in name order.
        "dtype": "input #0(zero-based) was expected to be a uint8 tensor but is a float tensor",
        "cam_spatial": f"camera_frame: images must be uint8 (b, {s}, {s}, 3); got (1, {s}, {s + 1}, 3)",
        "zero_focal": "camera_frame: intrinsics need focal lengths fx, fy > 0 px; "
                      "row 1 (fx, fy, cx, cy) = (0, 0, 320, 240)",
        "nan_focal": "camera_frame: intrinsics need focal lengths fx, fy > 0 px; "
                     "row 0 (fx, fy, cx, cy) = (nan, 1, 2, 3)",
        "negative_side": "camera_frame: box needs side > 0 px; row 0 (centre u, centre v, side) = (320, 240, -50)",
        "batch_mismatch": "camera_frame: images, intrinsics and box must have the same batch size; got 2, 1 and 2",
        "intrinsics_shape": "camera_frame: intrinsics (fx, fy, cx, cy) must be float32 (b, 4); got (1, 3)",
        "box_shape": "camera_frame: box (centre u, centre v, side) must be float32 (b, 3); got (1)",
        "distortion_shape": "camera_frame_distorted: distortion (k1, k2, k3, p1, p2) must be float32 (b, 5); got (2, 4)",
        "distortion_batch": "camera_frame_distorted: images, intrinsics, box and distortion must have the same batch "
                            "size; got 2, 2, 2 and 1",
        "distortion_nan": "camera_frame_distorted: distortion must be finite; row 0 (k1, k2, k3, p1, p2) = (0.1, nan",
    }
    for case, message in want.items():
        error = got[case].get("error")
        assert error is not None, f"{case}: no error; got {got[case]}"
        assert message in error, f"{case}: {message!r} not in {error!r}"
        # The review found ~20 KB of MLIR here; the Assert op's text is a few hundred characters.
        assert len(error) < 600, f"{case}: {len(error)} characters: {error[:2000]}"
