"""The tf.data input pipeline on an in-memory fake dataset of drawn people."""

import cv2
import ml_collections
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from etils import epath

from c2f_vol import camera, skeleton
from c2f_vol.data import augment, builders, features, pipeline
from c2f_vol.data.human36m import Human36m
from c2f_vol.data.mpii import Mpii
from c2f_vol.data.synthetic.builder import C2fSynthetic

LEFT_BGR, RIGHT_BGR, CENTRE_BGR = (0, 255, 0), (0, 0, 255), (255, 255, 255)  # green, red, white

# A standing person in body coordinates (mm): x to the person's left, y up, z forward.
_BODY_MM = np.array([
    [0, 1000, 0], [-130, 1000, 0], [-150, 550, 20], [-150, 90, 0],    # pelvis, right leg
    [130, 1000, 0], [150, 550, 20], [150, 90, 0],                     # left leg
    [0, 1230, 0], [0, 1480, 0], [0, 1590, 60], [0, 1720, 0],          # spine .. head
    [190, 1450, 0], [330, 1200, 40], [420, 960, 120],                 # left arm
    [-190, 1450, 0], [-330, 1200, 40], [-420, 960, 120],              # right arm
], np.float64)


def make_person(rng, image_size: int, focal_px: float, depth_mm: float = 4500.0):
    """One camera-frame pose (J, 3) mm facing the camera (yaw +-45 deg) and its intrinsics (4,)."""
    yaw = np.deg2rad(rng.uniform(-45, 45))
    c, s = np.cos(yaw), np.sin(yaw)
    body = _BODY_MM - _BODY_MM[0]
    # Person left -> camera +X, up -> -Y, forward -> -Z (facing the camera), then yaw about up.
    x, y, z = body[:, 0], body[:, 1], body[:, 2]
    cam = np.stack([c * x + s * z, -y, -(-s * x + c * z)], axis=-1)
    offset = np.array([rng.uniform(-150, 150), rng.uniform(-150, 150), depth_mm])
    half = (image_size - 1) / 2.0
    return (cam + offset).astype(np.float32), np.array([focal_px, focal_px, half, half], np.float32)


def draw_person(rng, image_size: int, joints_2d: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB: textured background, grey limbs, joint dots coloured by side."""
    noise = rng.integers(0, 256, (image_size // 8 + 1, image_size // 8 + 1, 3), dtype=np.uint8)
    img = cv2.resize(noise, (image_size, image_size), interpolation=cv2.INTER_CUBIC) // 2 + 40
    img = np.ascontiguousarray(img)
    r = max(2, image_size // 80)
    for p, ch in skeleton.BONES:
        cv2.line(img, tuple(int(round(v)) for v in joints_2d[p]), tuple(int(round(v)) for v in joints_2d[ch]),
                 (128, 128, 128), max(1, r // 2))
    for j, (u, v) in enumerate(joints_2d):
        colour = LEFT_BGR if j in skeleton.LEFT_JOINTS else RIGHT_BGR if j in skeleton.RIGHT_JOINTS else CENTRE_BGR
        cv2.circle(img, (int(round(u)), int(round(v))), r, colour, -1)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def fake_examples(n: int, image_size: int = 256, seed: int = 0, quality: int = 92) -> tf.data.Dataset:
    """A dataset of `n` contract examples (JPEG bytes); person about 0.7 (256 px) or 0.43 (1000 px) of the frame tall."""
    rng = np.random.default_rng(seed)
    focal = 1145.0 if image_size >= 1000 else 1145.0 * image_size / 620.0
    cols = {k: [] for k in ("image", "joints_2d", "joints_3d", "intrinsics", "distortion", "joints_weight",
                            "joints_visible", "has_3d", "subject", "action", "sequence", "camera", "frame")}
    for i in range(n):
        joints_3d, intr = make_person(rng, image_size, focal)
        joints_2d = camera.project(joints_3d, intr).astype(np.float32)
        img = draw_person(rng, image_size, joints_2d)
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
        assert ok
        cols["image"].append(buf.tobytes())
        cols["joints_2d"].append(joints_2d)
        cols["joints_3d"].append(joints_3d)
        cols["intrinsics"].append(intr)
        cols["distortion"].append(np.zeros(5, np.float32))
        cols["joints_weight"].append(np.ones(17, np.float32))
        cols["joints_visible"].append(np.ones(17, bool))
        cols["has_3d"].append(True)
        cols["subject"].append(f"S{i % 3}")
        cols["action"].append("Fake")
        cols["sequence"].append(f"Fake {i % 2 + 1}")
        cols["camera"].append("cam0")
        cols["frame"].append(np.int32(i))
    return tf.data.Dataset.from_tensor_slices({k: np.stack(v) if k != "image" else v for k, v in cols.items()})


def _config(**overrides) -> ml_collections.ConfigDict:
    c = pipeline.default_data_config()
    c.shuffle_buffer = 16
    c.num_parallel_calls = 2
    c.update(overrides)
    return c


@pytest.fixture(scope="module")
def examples() -> tf.data.Dataset:
    return fake_examples(10, 256).cache()


def _first(ds, n=1):
    return list(ds.take(n).as_numpy_iterator())


def _one(examples, i):
    return next(iter(examples.skip(i).take(1)))


def test_warp_matches_cv2_warp_affine(rng):
    img = cv2.GaussianBlur(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8), (0, 0), 2.0)
    # Inside the image, across its border (black outside) and far outside it.
    for rot, flip, scale in [(0.0, False, 70.0), (25.0, True, 55.0), (-50.0, False, 110.0), (10.0, False, 200.0)]:
        affine = camera.crop_affine(np.array([61.3, 44.8]), scale, 48, rot, flip).astype(np.float32)
        ours = augment.warp(tf.constant(img), tf.constant(affine), 48).numpy()
        ref = cv2.warpAffine(img.astype(np.float32), affine, (48, 48), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        # cv2 rounds source positions to 1/32 pixel; a half-pixel shift would show as errors of ~10 levels.
        diff = np.abs(ours - ref)
        assert diff.max() < 0.1 and diff.mean() < 0.01, (rot, flip, scale, diff.max(), diff.mean())


def test_window_decode_equals_full_frame_warp(examples):
    ex = _one(examples, 0)
    full = tf.io.decode_jpeg(ex["image"], channels=3)
    center, side = augment.person_box(ex["joints_2d"], 1.2)
    for rot, scale in [(0.0, 0.5), (40.0, 1.0), (10.0, 1.6)]:
        affine = tf.cast(camera.crop_affine(center, side * scale, 64, rot, False), tf.float32)
        windowed = augment.crop_image(ex["image"], affine, 64).numpy()
        whole = augment.warp(full, affine, 64).numpy()
        assert np.abs(windowed - whole).max() <= 2.0
        assert np.abs(windowed - whole).mean() < 0.05


def test_ops_eager_equal_inside_tf_data(examples):
    cfg = _config()
    seed = augment.example_seed(7, 0, 5)
    eager = augment.sample_augmentation(seed, cfg)
    graph = _first(tf.data.Dataset.from_tensors(seed).map(lambda s: augment.sample_augmentation(s, cfg)))[0]
    for k in eager:
        np.testing.assert_array_equal(eager[k].numpy(), graph[k])
    ex = _one(examples, 3)
    box_eager = augment.person_box(ex["joints_2d"], 1.2)
    box_graph = _first(examples.skip(3).map(lambda e: augment.person_box(e["joints_2d"], 1.2)))[0]
    np.testing.assert_allclose(box_eager[0].numpy(), box_graph[0], rtol=1e-6)
    np.testing.assert_allclose(box_eager[1].numpy(), box_graph[1], rtol=1e-6)
    out_eager = pipeline.preprocess(ex, tf.constant(11, tf.int64), cfg, 64, True, seed=3)
    out_graph = _first(examples.skip(3).map(lambda e: pipeline.preprocess(e, tf.constant(11, tf.int64), cfg, 64,
                                                                           True, seed=3)))[0]
    for k, v in out_eager.items():
        if v.dtype == tf.string:
            assert v.numpy() == out_graph[k]
        elif k == "image":
            assert np.abs(v.numpy().astype(int) - out_graph[k].astype(int)).max() <= 1
        else:
            np.testing.assert_allclose(v.numpy(), out_graph[k], rtol=1e-5, atol=1e-3, err_msg=k)


def test_outputs_and_inverse_affine_reproduce_joints_2d(examples):
    cfg = _config()
    batch = _first(pipeline.train_dataset_from_examples(examples, cfg, 64, batch_size=10, seed=0))[0]
    assert batch["image"].dtype == np.uint8 and batch["image"].shape == (10, 64, 64, 3)
    shapes = {k: v.shape for k, v in batch.items()}
    assert shapes["joints_uv"] == (10, 17, 2) and shapes["depth_rel_mm"] == (10, 17)
    assert shapes["affine"] == (10, 2, 3) and shapes["joints_3d"] == (10, 17, 3) and shapes["mask"] == (10,)
    src = {int(e["frame"]): e for e in examples.as_numpy_iterator()}
    flipped = 0
    for i in range(10):
        ex = src[int(batch["frame"][i])]
        back = camera.apply_affine(camera.invert_affine(batch["affine"][i].astype(np.float64)), batch["joints_uv"][i])
        is_flip = np.linalg.det(batch["affine"][i][:, :2]) < 0
        flipped += is_flip
        perm = list(skeleton.FLIP_PERMUTATION) if is_flip else list(range(17))
        np.testing.assert_allclose(back, ex["joints_2d"][perm], atol=1e-2)
        np.testing.assert_allclose(batch["joints_3d"][i], ex["joints_3d"][perm], atol=1e-3)
        root = ex["joints_3d"][skeleton.ROOT]
        np.testing.assert_allclose(batch["root_depth_mm"][i], root[2], rtol=1e-6)
        np.testing.assert_allclose(batch["depth_rel_mm"][i], ex["joints_3d"][perm, 2] - root[2], atol=1e-2)
        # Camera-frame joints reproject onto the image joints through the stored intrinsics.
        np.testing.assert_allclose(camera.project(batch["joints_3d"][i], batch["intrinsics"][i]), back, atol=0.05)
    assert 0 < flipped < 10


def test_flip_keeps_left_on_the_left(examples):
    """A mirror turns the person's left limbs into right-looking ones; the swap re-labels them.

    The fake people face the camera, so their anatomical left shows on the image's
    right. After flip + swap that must still hold for every crop, and the pixel
    under a joint labelled left shows the limb the mirror made a left one: the
    one drawn in the right colour (without the swap it would be the left colour,
    on the wrong side of the body).
    """
    for flip_prob, left_channel in ((1.0, 0), (0.0, 1)):  # RGB: red = drawn right, green = drawn left
        cfg = _config(flip_prob=flip_prob, rotation_prob=0.0, scale_clip=(1.0, 1.0))
        batch = _first(pipeline.train_dataset_from_examples(examples, cfg, 128, batch_size=10, seed=1))[0]
        assert np.all((np.linalg.det(batch["affine"][:, :, :2]) < 0) == (flip_prob == 1.0))
        for img, uv in zip(batch["image"], batch["joints_uv"]):
            for joints, channel in ((skeleton.LEFT_JOINTS, left_channel), (skeleton.RIGHT_JOINTS, 1 - left_channel)):
                for j in joints:
                    u, v = np.round(uv[j]).astype(int)
                    assert np.argmax(img[v, u].astype(int)) == channel, (flip_prob, j, img[v, u])
            for r, l in ((14, 11), (1, 4)):  # shoulders, hips
                assert uv[l, 0] > uv[r, 0]


def test_crops_contain_a_real_sized_person():
    examples = fake_examples(6, 1000, seed=3, quality=70).cache()
    cfg = _config()
    n_batches, b = 20, 6
    ds = pipeline.train_dataset_from_examples(examples, cfg, 64, batch_size=b, seed=5)
    uvs = np.concatenate([x["joints_uv"] for x in _first(ds, n_batches)])
    inside = np.all((uvs > -0.5) & (uvs < 63.5), axis=(1, 2))
    params = [augment.sample_augmentation(augment.example_seed(5, 0, p), cfg) for p in range(n_batches * b)]
    scale = np.array([float(p["scale"]) for p in params])
    rotation = np.array([float(p["rotation_deg"]) for p in params])
    # Without rotation and with a box at least as large as the joints' extent, nothing leaves the crop.
    expected = (rotation == 0) & (scale * cfg.box_margin >= 1.0)
    assert expected.sum() > 30
    assert inside[expected].all()
    # Joints leave only by rotation into the box corners or by a box smaller than the joints' extent:
    # never far (half a box side past the centre, times sqrt(2) for the corners).
    radius = np.abs(uvs - 31.5).max(axis=(1, 2)) / 32.0
    bound = np.sqrt(2) * np.maximum(1.0, 1.0 / (scale * cfg.box_margin))
    assert np.all(radius <= bound + 1e-3)


def test_determinism_and_seed(examples):
    cfg = _config()
    make = lambda seed: pipeline.train_dataset_from_examples(examples, cfg, 32, batch_size=4, seed=seed)  # noqa: E731
    a, b, c = _first(make(0), 2), _first(make(0), 2), _first(make(1), 2)
    for x, y in zip(a, b):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])
    assert any(not np.array_equal(x["joints_uv"], y["joints_uv"]) for x, y in zip(a, c))


def test_resume_from_start_step_reproduces_the_batches(examples):
    cfg = _config()
    kw = dict(batch_size=4, seed=2)
    full = _first(pipeline.train_dataset_from_examples(examples, cfg, 32, **kw), 7)
    # Step 3 starts inside epoch 1 (example 12 of 10 per epoch); step 5 at the start of epoch 2.
    for start in (3, 5):
        resumed = _first(pipeline.train_dataset_from_examples(examples, cfg, 32, start_step=start, **kw), 7 - start)
        for x, y in zip(full[start:], resumed, strict=True):
            for k in x:
                np.testing.assert_array_equal(x[k], y[k], err_msg=f"step {start}: {k}")
    # Every epoch shows every example once, in a new order (10 examples, 4 per batch: epochs cross batches).
    frames = np.concatenate([x["frame"] for x in full])
    assert sorted(frames[:10]) == list(range(10)) and sorted(frames[10:20]) == list(range(10))
    assert not np.array_equal(frames[:10], frames[10:20])


def test_process_shards_are_disjoint(examples):
    cfg = _config()
    seen = []
    for p in range(3):
        ds = pipeline.eval_dataset_from_examples(examples, cfg, 32, batch_size=1, process_index=p, process_count=3)
        batches = _first(ds, 100)
        # Shards of 4, 3 and 3 examples: every process steps through ceil(10 / 3) = 4 batches.
        assert len(batches) == 4 and [b["mask"][0] for b in batches] == [1, 1, 1, float(p == 0)]
        seen.append({int(f) for bt in batches for f, m in zip(bt["frame"], bt["mask"]) if m > 0})
        train = _first(pipeline.train_dataset_from_examples(examples, cfg, 32, batch_size=1, seed=0,
                                                             process_index=p, process_count=3), len(seen[-1]))
        assert {int(t["frame"][0]) for t in train} == seen[-1]
    assert sum(map(len, seen)) == 10 and set.union(*seen) == set(range(10))


def test_eval_padding_mask_and_stride(examples):
    cfg = _config()
    ds = pipeline.eval_dataset_from_examples(examples, cfg, 32, batch_size=4)
    assert ds.element_spec["image"].shape == (4, 32, 32, 3) and ds.element_spec["mask"].shape == (4,)
    batches = _first(ds, 100)
    assert [b["mask"].tolist() for b in batches] == [[1] * 4, [1] * 4, [1, 1, 0, 0]]
    assert np.concatenate([b["frame"] for b in batches])[:10].tolist() == list(range(10))
    assert batches[-1]["subject"][3] == b"" and not batches[-1]["image"][3].any()
    again = _first(ds, 100)
    np.testing.assert_array_equal(batches[1]["image"], again[1]["image"])
    strided = _first(pipeline.eval_dataset_from_examples(examples, cfg, 32, batch_size=4, frame_stride=3), 100)
    assert np.concatenate([b["frame"][b["mask"] > 0] for b in strided]).tolist() == [0, 3, 6, 9]


class _TinyBuilder(tfds.core.GeneratorBasedBuilder):
    """A real TFDS builder of six fake people, to run the pipeline on prepared tfrecords."""

    name = "c2f_pipeline_test_tiny"
    VERSION = tfds.core.Version("1.0.0")

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        return epath.Path(__file__)  # TFDS's package lookup would need the importlib_resources backport

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=features.example_features())

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(0), "test": self._generate_examples(1)}

    def _generate_examples(self, seed):
        for i, ex in enumerate(fake_examples(6, 128, seed=seed).as_numpy_iterator()):
            ex["image"] = cv2.imdecode(np.frombuffer(ex["image"], np.uint8), cv2.IMREAD_COLOR)[..., ::-1].copy()
            yield i, ex


def test_config_from_a_plain_mapping(examples):
    cfg = dict(_config().to_dict(), box_margin=2.0, rotation_prob=0.0)
    del cfg["flip_prob"]  # a missing field keeps its default
    resolved = pipeline.resolve_data_config(cfg)
    assert resolved.box_margin == 2.0 and resolved.flip_prob == pipeline.default_data_config().flip_prob
    batch = _first(pipeline.train_dataset_from_examples(examples, cfg, 32, batch_size=2, seed=0))[0]
    assert batch["image"].shape == (2, 32, 32, 3) and "subject" not in batch
    locked = pipeline.default_data_config()
    locked.lock()
    with pytest.raises(AttributeError):
        locked.box_margn = 1.0


def test_one_registry_names_every_family(tmp_path):
    assert builders.BUILDERS == {"c2f_synthetic": C2fSynthetic, "human36m": Human36m, "mpii": Mpii}
    assert all(cls.name == family for family, cls in builders.BUILDERS.items())
    assert builders.family("human36m/stride5:1.0.0") == "human36m"
    known = r"known families: \['c2f_synthetic', 'human36m', 'mpii'\]"
    with pytest.raises(FileNotFoundError, match=known):
        pipeline.load_builder("c2f_no_such_set/x", str(tmp_path))
    with pytest.raises(ValueError, match=r"no dataset family 'c2f_no_such_set'.*" + known):
        builders.build("c2f_no_such_set/x", str(tmp_path))
    # Datasets read from user files: the hint carries their --manual_dir.
    assert builders.build_command("human36m", "D") == ("python tools/build_dataset.py --dataset=human36m "
                                                       "--data_dir=D --manual_dir=/path/to/h36m")
    assert "--manual_dir=../shared/data/mocap" in builders.build_command("c2f_synthetic/mocap")
    assert "--manual_dir" not in builders.build_command("c2f_synthetic/tiny")
    with pytest.raises(FileNotFoundError, match=r"(?s)not prepared.*--dataset=human36m --data_dir=\S+ "
                                                r"--manual_dir=/path/to/h36m"):
        pipeline.load_builder("human36m", str(tmp_path))


def test_builder_api_on_prepared_tfrecords(tmp_path, monkeypatch):
    cfg = _config()
    # Only the test builder is in the registry, so the project's builders are not exercised here.
    monkeypatch.setattr(builders, "BUILDERS", {"c2f_pipeline_test_tiny": _TinyBuilder})
    with pytest.raises(FileNotFoundError, match="tools/build_dataset.py --dataset=c2f_pipeline_test_tiny --data_dir="):
        pipeline.load_builder("c2f_pipeline_test_tiny", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"known families: \['c2f_pipeline_test_tiny'\]. Build it with: "
                                                "python tools/build_dataset.py --dataset=c2f_unknown_set"):
        pipeline.load_builder("c2f_unknown_set", str(tmp_path))
    tfds.builder("c2f_pipeline_test_tiny", data_dir=str(tmp_path), try_gcs=False).download_and_prepare()
    real = pipeline.load_builder("c2f_pipeline_test_tiny", str(tmp_path))
    batch = _first(pipeline.train_dataset(real, "train", cfg, 32, batch_size=4, seed=0, process_index=0,
                                          process_count=1))[0]
    assert batch["image"].shape == (4, 32, 32, 3) and batch["image"].std() > 10
    ev = _first(pipeline.eval_dataset(real, "test", cfg, 32, batch_size=4, process_index=0, process_count=1), 10)
    assert [b["mask"].sum() for b in ev] == [4, 2]
    assert pipeline.measure_throughput(pipeline.eval_dataset(real, "test", cfg, 32, batch_size=2, process_index=0,
                                                             process_count=1), 2) > 0
    # Two hosts read disjoint halves of the files: 3 + 3 test examples, 2 batches of 2 each (one padded).
    frames = []
    for p in range(2):
        batches = _first(pipeline.eval_dataset(real, "test", cfg, 32, batch_size=2, process_index=p,
                                               process_count=2), 10)
        assert [b["mask"].tolist() for b in batches] == [[1, 1], [1, 0]]
        frames.append({int(f) for b in batches for f, m in zip(b["frame"], b["mask"]) if m})
        train = _first(pipeline.train_dataset(real, "train", cfg, 32, batch_size=3, seed=0, process_index=p,
                                              process_count=2))[0]
        frames.append({int(f) for f in train["frame"]})
    assert frames[0].isdisjoint(frames[2]) and frames[0] | frames[2] == set(range(6))
    assert frames[1].isdisjoint(frames[3]) and frames[1] | frames[3] == set(range(6))
    # Frames 0, 2, 4 fall unevenly into the halves; both hosts still step through the same number of batches.
    kept = [{f for f in frames[i] if f % 2 == 0} for i in (0, 2)]
    want = max(-(-len(k) // 2) for k in kept)
    for p in range(2):
        strided = _first(pipeline.eval_dataset(real, "test", cfg, 32, batch_size=2, process_index=p,
                                               process_count=2, frame_stride=2), 10)
        assert len(strided) == want
        assert {int(f) for b in strided for f, m in zip(b["frame"], b["mask"]) if m} == kept[p]


@pytest.mark.slow
def test_project_synthetic_builder_through_the_pipeline(tiny_dataset):
    builder = pipeline.load_builder("c2f_synthetic/tiny", str(tiny_dataset))
    cfg = _config()
    batch = _first(pipeline.train_dataset(builder, "train", cfg, 64, batch_size=4, seed=0, process_index=0,
                                          process_count=1))[0]
    assert batch["image"].shape == (4, 64, 64, 3) and batch["image"].std() > 5
    for b in _first(pipeline.eval_dataset(builder, "test", cfg, 64, batch_size=8, process_index=0,
                                          process_count=1), 100):
        real = b["mask"] > 0
        back = camera.apply_affine(camera.invert_affine(b["affine"][real].astype(np.float64)), b["joints_uv"][real])
        reproj = camera.project(b["joints_3d"][real].astype(np.float64), b["intrinsics"][real].astype(np.float64))
        assert np.abs(back - reproj).max() < 1.0  # synthetic frames have no lens distortion


# ---------------------------------------------------------------------------
# Crop reach, joint weights, the contract's defaults, the dataset mix.


def test_crop_reach_bounds_every_drawn_crop_and_is_reached():
    """Every corner of 3000 drawn training crops lies within crop_reach / 2 extents of the box centre on
    both axes, and some come within 2% of it: the stored-crop margin derived from it is tight and safe."""
    cfg = pipeline.default_data_config()
    reach = pipeline.crop_reach(cfg)
    centre, extent, s = np.array([200.0, 150.0]), 100.0, 64
    corners = np.array([[-0.5, -0.5], [s - 0.5, -0.5], [-0.5, s - 0.5], [s - 0.5, s - 0.5]])
    worst = 0.0
    for p in range(3000):
        a = augment.sample_augmentation(augment.example_seed(11, 0, p), cfg)
        affine = camera.crop_affine(centre, extent * cfg.box_margin * float(a["scale"]), s,
                                    float(a["rotation_deg"]), bool(a["flip"]))
        pts = camera.crop_to_image(corners, affine)
        worst = max(worst, float(np.abs(pts - centre).max()) / extent)
    assert worst <= reach / 2 + 1e-3 and worst > 0.98 * reach / 2
    # Without rotation the reach is the largest zoom-out; rotations clipped below 45 degrees reach less.
    assert pipeline.crop_reach(dict(cfg.to_dict(), rotation_prob=0.0)) == pytest.approx(1.4 * 1.25)
    assert pipeline.crop_reach(dict(cfg.to_dict(), rotation_clip_deg=30.0)) == pytest.approx(
        1.75 * (np.cos(np.pi / 6) + np.sin(np.pi / 6)))


def _with(example: dict, **fields) -> dict:
    return {**example, **{k: tf.constant(v) for k, v in fields.items()}}


def test_unlocated_joints_leave_the_box_and_their_weight_follows_the_flip(examples):
    ex = {k: v for k, v in _one(examples, 1).items()}
    cfg = dict(_config().to_dict(), rotation_prob=0.0, flip_prob=1.0, scale_sigma=0.0)
    weight = np.ones(17, np.float32)
    lwrist, rwrist = skeleton.JOINT_NAMES.index("LWrist"), skeleton.JOINT_NAMES.index("RWrist")
    weight[lwrist] = 0.0
    far = ex["joints_2d"].numpy().copy()
    far[lwrist] = [0.0, 0.0]  # an unlocated joint holds zeros: it must not stretch the box
    out = pipeline.preprocess(_with(ex, joints_weight=weight, joints_2d=far), 0, cfg, 64, True)
    ref = pipeline.preprocess(ex, 0, cfg, 64, True)
    centre, side = augment.person_box(tf.constant(np.delete(far, lwrist, 0)), cfg["box_margin"])
    want = camera.crop_affine(centre, side, 64, 0.0, True)
    np.testing.assert_allclose(out["affine"].numpy(), want, rtol=1e-5, atol=1e-3)
    # Flipped: the left wrist's zero weight moves with its label to the right wrist.
    assert out["joints_weight"].numpy()[rwrist] == 0.0 and out["joints_weight"].numpy().sum() == 16
    assert ref["joints_weight"].numpy().tolist() == [1.0] * 17 and float(ref["has_3d"]) == 1.0


def test_examples_without_the_newer_fields_read_as_pinhole_3d_single_take(examples):
    ex = {k: v for k, v in _one(examples, 2).items()
          if k not in ("distortion", "joints_weight", "joints_visible", "has_3d", "sequence")}
    out = pipeline.preprocess(ex, 0, _config(), 32, False)
    assert out["distortion"].numpy().tolist() == [0.0] * 5 and out["joints_weight"].numpy().tolist() == [1.0] * 17
    assert float(out["has_3d"]) == 1.0 and out["sequence"].numpy() == out["action"].numpy()
    full = pipeline.preprocess(_one(examples, 2), 0, _config(), 32, False)
    assert full["sequence"].numpy() == b"Fake 1" and full["action"].numpy() == b"Fake"


def test_mix_batch_sizes():
    assert pipeline.mix_batch_sizes((("a", 0.5), ("b", 0.5)), 16) == [8, 8]
    assert pipeline.mix_batch_sizes((("a", 2.0), ("b", 1.0)), 16) == [11, 5]
    assert sum(pipeline.mix_batch_sizes((("a", 1), ("b", 1), ("c", 1)), 16)) == 16
    with pytest.raises(pipeline.UserError, match="at least 1"):
        pipeline.mix_batch_sizes((("a", 0.95), ("b", 0.05)), 4)
    with pytest.raises(pipeline.UserError, match="distinct"):
        pipeline.mix_batch_sizes((("a", 1.0), ("a", 1.0)), 4)


def test_a_mix_concatenates_each_datasets_share_and_resumes_exactly(tmp_path):
    _TinyBuilder(data_dir=str(tmp_path)).download_and_prepare()
    cfg = _config()
    cfg.data_dir = str(tmp_path)
    cfg.mix = ((_TinyBuilder.name, 3.0), ("c2f_synthetic/tiny", 1.0))
    with pytest.raises(FileNotFoundError, match="c2f_synthetic/tiny"):  # an unprepared dataset of the mix is named
        pipeline.training_batches(cfg, 32, batch_size=4, seed=0, process_index=0, process_count=1)
    # The same prepared dataset under a second name stands in for a second dataset.
    cfg.mix = ((_TinyBuilder.name, 3.0), (_TinyBuilder.name + ":1.0.0", 1.0))
    make = lambda start: pipeline.training_batches(cfg, 32, batch_size=4, seed=0, start_step=start,  # noqa: E731
                                                   process_index=0, process_count=1)
    full = _first(make(0), 4)
    assert all(b["image"].shape == (4, 32, 32, 3) for b in full)
    single = _first(pipeline.train_dataset(_TinyBuilder(data_dir=str(tmp_path)), "train", cfg, 32, batch_size=3,
                                           seed=0, process_index=0, process_count=1), 1)[0]
    np.testing.assert_array_equal(full[0]["joints_uv"][:3], single["joints_uv"])  # the first share, as alone
    resumed = _first(make(2), 2)
    for x, y in zip(full[2:], resumed):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])
