"""The `mpii` builder on a tiny fake release in the official layout (tests/fake_mpii.py)."""

import logging
import pathlib
import sys

import numpy as np
import pytest
from scipy import io as scipy_io

from c2f_vol import skeleton
from c2f_vol.data import builders, mpii

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import fake_mpii  # noqa: E402
from conftest import build_from_manual_dir, stored_examples, text  # noqa: E402

VALIDATION_EVERY = 2  # train images k = 0..4: k = 1 (000000002.jpg) and 3 (000000004.jpg) held out
CROP = 448
JOINT = {name: i for i, name in enumerate(skeleton.JOINT_NAMES)}
# MPII's ids (0 r-ankle ... 15 l-wrist) -> the skeleton's joints, written out here, not taken from the module.
MPII_TO_NAME = ("RAnkle", "RKnee", "RHip", "LHip", "LKnee", "LAnkle", "Pelvis", "Thorax", "Neck/Nose", "Head",
                "RWrist", "RElbow", "RShoulder", "LShoulder", "LElbow", "LWrist")
SKELETON_TO_MPII = {JOINT[name]: m for m, name in enumerate(MPII_TO_NAME)}
# frame -> (image, person) of the fake release
PEOPLE = {100 * i + r: (image, person) for i, image in enumerate(fake_mpii.IMAGES)
          for r, person in enumerate(image.persons) if image.train and person.ids is not None}


def _build(root, data_dir, **config):
    config.setdefault("name", "fake")
    return build_from_manual_dir("mpii", mpii.MpiiConfig(**config), root, data_dir)


_examples, _text = stored_examples, text


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("mpii")
    fake_mpii.write_fake_mpii(root)
    builder = _build(root, tmp_path_factory.mktemp("tfds"), validation_every=VALIDATION_EVERY)
    return builder, {s: _examples(builder, s) for s in ("train", "validation")}


def _all(built):
    return built[1]["train"] + built[1]["validation"]


def test_config_defaults_and_validation():
    config = mpii.Mpii.builder_configs[mpii.Mpii.DEFAULT_CONFIG_NAME]
    assert (config.crop_size, config.box_margin, config.validation_every, config.skip_missing_images) == (
        448, 2.5, 20, False)
    assert builders.BUILDERS["mpii"] is mpii.Mpii
    assert "--manual_dir=" in builders.build_command("mpii")
    for bad, match in ((dict(box_margin=0.8), "box_margin"), (dict(validation_every=1), "validation_every"),
                       (dict(crop_size=8), "crop_size")):
        with pytest.raises(ValueError, match=match):
            mpii.MpiiConfig(name="x", **bad)


def test_splits_counts_and_ids(built):
    builder, examples = built
    got = {s: sorted((int(e["frame"]), _text(e["sequence"]), _text(e["action"])) for e in examples[s])
           for s in examples}
    assert got == {"train": [(0, "000000001.jpg", "running"), (200, "000000003.jpg", "walking"),
                             (500, "000000006.jpg", "dancing")],
                   "validation": [(100, "000000002.jpg", ""), (101, "000000002.jpg", "")]}
    assert {s: info.num_examples for s, info in builder.info.splits.items()} == {"train": 3, "validation": 2}
    # The persons without annopoints: the third of 000000002.jpg and the only one of 000000004.jpg.
    assert builder.info.metadata["persons_without_joints"] == {"train": 0, "validation": 2}
    assert builder.info.metadata["skipped_images"] == {"train": [], "validation": []}
    assert builder.info.metadata["point_problems"] == {}


def test_every_contract_field(built):
    for ex in _all(built):
        assert ex["image"].shape == (CROP, CROP, 3) and ex["image"].dtype == np.uint8
        assert ex["joints_2d"].shape == (17, 2) and ex["joints_2d"].dtype == np.float32
        assert ex["joints_weight"].dtype == np.float32 and ex["joints_visible"].dtype == bool
        assert not ex["has_3d"]
        np.testing.assert_array_equal(ex["joints_3d"], np.zeros((17, 3), np.float32))
        np.testing.assert_array_equal(ex["distortion"], np.zeros(5, np.float32))
        np.testing.assert_allclose(ex["intrinsics"], [CROP, CROP, (CROP - 1) / 2, (CROP - 1) / 2])
        assert (_text(ex["subject"]), _text(ex["camera"])) == ("mpii", "")
        assert ex["frame"].dtype == np.int32


def _expected_joints(person):
    """(17, 2) crop pixels and (17,) weights, from the drawn 0-based positions, by the documented geometry."""
    uv = person.joints_uv()[list(person.ids)]
    lo, hi = uv.min(0), uv.max(0)
    side = 2.5 * max((hi - lo).max(), 200.0 * person.mpii_scale)
    crop_uv = (person.joints_uv() - (lo + hi) / 2) * (CROP / side) + CROP / 2 - 0.5
    joints, weight = np.zeros((17, 2)), np.zeros(17)
    for m in person.ids:
        joints[JOINT[MPII_TO_NAME[m]]] = crop_uv[m]
        weight[JOINT[MPII_TO_NAME[m]]] = 1.0
    return joints, weight


def test_mapping_table():
    assert mpii.MPII_TO_SKELETON == {m: JOINT[name] for m, name in enumerate(MPII_TO_NAME)}
    assert JOINT["Spine"] not in mpii.MPII_TO_SKELETON.values()


def test_joints_and_weights(built):
    # (Translation-free: the crop is centred on the joints; test_each_joint_sits_on_its_own_dot checks
    # the 1-based coordinates against the pixels.)
    for ex in _all(built):
        _, person = PEOPLE[int(ex["frame"])]
        joints, weight = _expected_joints(person)
        np.testing.assert_array_equal(ex["joints_weight"], weight)
        np.testing.assert_allclose(ex["joints_2d"], joints, atol=1e-3)
        assert ex["joints_weight"][JOINT["Spine"]] == 0.0
        # Unannotated joints: weight 0, zeros, not visible.
        off = ex["joints_weight"] == 0
        assert np.all(ex["joints_2d"][off] == 0.0) and not ex["joints_visible"][off].any()


def _nearest_color(rgb):
    palette = np.array(fake_mpii.COLORS + (fake_mpii.BACKGROUND_RGB, (0, 0, 0)), float)
    return int(np.argmin(np.linalg.norm(palette - rgb, axis=-1)))


def test_each_joint_sits_on_its_own_dot(built):
    """The colour under every stored joint is its MPII id's: the mapping, the sides and the crop."""
    checked = 0
    for ex in _all(built):
        image = ex["image"].astype(float)
        _, person = PEOPLE[int(ex["frame"])]
        for j in np.flatnonzero(ex["joints_weight"]):
            u, v = np.round(ex["joints_2d"][j]).astype(int)
            assert _nearest_color(image[v - 1:v + 2, u - 1:u + 2].mean(axis=(0, 1))) == SKELETON_TO_MPII[j], (
                skeleton.JOINT_NAMES[j], int(ex["frame"]))
            # The dot's centroid is the joint, to a fraction of a pixel: MPII's x, y are 1-based (an
            # off-by-one would move it by the crop's magnification, over 1 px here).
            colour = np.array(fake_mpii.COLORS[SKELETON_TO_MPII[j]], float)
            r = int(fake_mpii.DOT_RADIUS_PX * 3)
            window = image[v - r:v + r + 1, u - r:u + r + 1]
            near = np.linalg.norm(window - colour, axis=-1) < 90
            assert near.sum() > 30
            rows, cols = np.nonzero(near)
            np.testing.assert_allclose([cols.mean() + u - r, rows.mean() + v - r], ex["joints_2d"][j], atol=0.5)
            checked += 1
    assert checked == 16 + 16 + 12 + 1 + 16


def test_sides_are_the_persons_own(built):
    by_frame = {int(e["frame"]): e for e in _all(built)}
    facing, away = by_frame[0]["joints_2d"], by_frame[500]["joints_2d"]
    # Facing the camera the person's right is on the image's left; facing away, on its right.
    for right, left in (("RHip", "LHip"), ("RWrist", "LWrist"), ("RShoulder", "LShoulder")):
        assert facing[JOINT[right], 0] < facing[JOINT[left], 0]
        assert away[JOINT[right], 0] > away[JOINT[left], 0]
    # Head top above the upper neck above the thorax.
    assert facing[JOINT["Head"], 1] < facing[JOINT["Neck/Nose"], 1] < facing[JOINT["Thorax"], 1]


def test_visibility_as_stored(built):
    by_frame = {int(e["frame"]): e for e in _all(built)}

    def invisible(frame):
        ex = by_frame[frame]
        return {skeleton.JOINT_NAMES[j] for j in np.flatnonzero((ex["joints_weight"] > 0) & ~ex["joints_visible"])}

    assert invisible(0) == {"RWrist"}                # the number 0
    assert invisible(100) == {"LAnkle"}              # the string '0'; the others '1'
    assert invisible(101) == set()                   # empty: the file does not say
    assert invisible(500) == {"RAnkle", "LShoulder"}  # 0.0 and '0'
    single = by_frame[200]
    assert np.flatnonzero(single["joints_weight"]).tolist() == [JOINT["Head"]]
    assert single["joints_visible"][JOINT["Head"]]


def test_crop_floor_of_a_single_point_person(built):
    """One annotated joint: the crop side is box_margin x MPII's person height, not a degenerate box."""
    single = next(e for e in _all(built) if int(e["frame"]) == 200)
    _, person = PEOPLE[200]
    side = 2.5 * 200.0 * person.mpii_scale
    # The drawn head is a disc of radius 4 px in the image: CROP / side times that in the crop.
    colour = np.array(fake_mpii.COLORS[9], float)
    area = (np.linalg.norm(single["image"].astype(float) - colour, axis=-1) < 90).sum()
    want = np.pi * (4.0 * CROP / side) ** 2
    assert 0.6 * want < area < 1.4 * want
    np.testing.assert_allclose(single["joints_2d"][JOINT["Head"]], [(CROP - 1) / 2] * 2, atol=1e-3)


@pytest.mark.parametrize("options", [dict(struct_as_record=False, squeeze_me=True),
                                     dict(struct_as_record=False, squeeze_me=False),
                                     dict(struct_as_record=True, squeeze_me=True),
                                     dict(struct_as_record=True, squeeze_me=False),
                                     dict(simplify_cells=True)])
def test_parse_whatever_loadmat_makes_of_it(tmp_path, options):
    path = fake_mpii.write_fake_mpii(tmp_path)
    records, problems = mpii.parse_release(scipy_io.loadmat(str(path), **options)["RELEASE"], str(path))
    assert not problems
    assert [(r.name, r.train, r.action, r.without_joints) for r in records] == [
        ("000000001.jpg", True, "running", 0), ("000000002.jpg", True, "", 1), ("000000003.jpg", True, "walking", 0),
        ("000000004.jpg", True, "", 1), ("000000005.jpg", False, "", 0), ("000000006.jpg", True, "dancing", 0)]
    for record, image in zip(records, fake_mpii.IMAGES):
        want = [(r, p) for r, p in enumerate(image.persons) if image.train and p.ids is not None]
        assert [p.rect for p in record.persons] == [r for r, _ in want]
        for person, (_, fake) in zip(record.persons, want):
            assert np.flatnonzero(person.annotated).tolist() == sorted(fake.ids)
            np.testing.assert_allclose(person.xy[person.annotated], fake.joints_uv()[sorted(fake.ids)] + 1.0)
            assert person.scale == pytest.approx(fake.mpii_scale)


def test_assign_splits_every_20th_train_image():
    records = [mpii.ImageRecord(i, f"{i}.jpg", i % 3 != 2, "", (), 0) for i in range(66)]
    splits = mpii.assign_splits(records, 20)
    train_images = [r.index for r in records if r.train]
    assert [r.index for r in splits["validation"]] == [train_images[19], train_images[39]]
    assert len(splits["train"]) == len(train_images) - 2
    assert not any(r.train is False for s in splits.values() for r in s)
    assert mpii.assign_splits(records, 0)["validation"] == []


def test_annotation_file_in_either_place_else_both_named(tmp_path):
    flat, nested = tmp_path / "flat", tmp_path / "nested"
    fake_mpii.write_fake_mpii(flat, flat=True)
    fake_mpii.write_fake_mpii(nested)
    assert mpii.find_annotation_file(flat) == fake_mpii.annotation_path(flat, flat=True)
    assert mpii.find_annotation_file(nested) == fake_mpii.annotation_path(nested)
    fake_mpii.annotation_path(nested).unlink()
    with pytest.raises(FileNotFoundError) as err:
        _build(nested, tmp_path / "tfds")
    message = str(err.value)
    assert "mpii_human_pose_v1_u12_1.mat" in message
    assert str(nested / "mpii_human_pose_v1_u12_1.mat") in message
    assert str(nested / "mpii_human_pose_v1_u12_2" / "mpii_human_pose_v1_u12_1.mat") in message


def test_missing_manual_dir_and_images_folder(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="manual_dir"):
        _build(empty, tmp_path / "tfds")
    root = tmp_path / "mpii"
    fake_mpii.write_fake_mpii(root)
    (root / "images").rename(root / "jpegs")
    with pytest.raises(FileNotFoundError, match="images") as err:
        _build(root, tmp_path / "tfds")
    assert str(root / "images") in str(err.value)


def test_annotation_file_without_release(tmp_path):
    root = tmp_path / "mpii"
    path = fake_mpii.write_fake_mpii(root)
    scipy_io.savemat(str(path), {"something": np.zeros(3)})
    with pytest.raises(mpii.BadFileError, match="no variable RELEASE") as err:
        _build(root, tmp_path / "tfds")
    assert str(path) in str(err.value) and "something" in str(err.value)
    path.write_bytes(b"MATLAB 5.0 MAT-file, truncated")
    with pytest.raises(mpii.BadFileError, match="loadmat cannot read it"):
        _build(root, tmp_path / "tfds")


def test_missing_images_are_all_named_before_anything_is_written(tmp_path, caplog):
    root = tmp_path / "mpii"
    fake_mpii.write_fake_mpii(root)
    gone = [root / "images" / "000000001.jpg", root / "images" / "000000006.jpg"]
    for path in gone:
        path.unlink()
    with pytest.raises(mpii.BadFileError) as err:
        _build(root, tmp_path / "tfds")
    message = str(err.value)
    assert all(str(p) in message for p in gone) and "skip_missing_images" in message
    assert "RELEASE.annolist(1).image.name" in message and "RELEASE.annolist(6).image.name" in message
    assert len(err.value.bad) == 2
    assert not (tmp_path / "tfds" / "mpii" / "fake" / "1.0.0").exists()
    with caplog.at_level(logging.WARNING, logger="absl"):
        builder = _build(root, tmp_path / "tfds", skip_missing_images=True, validation_every=0)
    assert sorted(int(e["frame"]) for e in _examples(builder, "train")) == [100, 101, 200]
    assert "validation" not in builder.info.splits
    skipped = builder.info.metadata["skipped_images"]["train"]
    assert sorted(skipped) == sorted(f"{p}: missing" for p in gone)
    assert any("skipped 2 image(s)" in r.getMessage() for r in caplog.records)


def test_unreadable_image_is_named(tmp_path):
    root = tmp_path / "mpii"
    fake_mpii.write_fake_mpii(root)
    damaged = root / "images" / "000000003.jpg"
    damaged.write_bytes(b"\xff\xd8\xff\xe0 truncated download")
    with pytest.raises(mpii.BadFileError, match="cannot decode") as err:
        _build(root, tmp_path / "tfds")
    assert str(damaged) in str(err.value) and "skip_missing_images" in str(err.value)


# ---------------------------------------------------------------------------
# Mixed into training.


@pytest.fixture(scope="module")
def mixed_config(tiny_dataset, tmp_path_factory):
    """The tiny config with data.mix: half synthetic 3D, half a fake MPII's 2D-only examples."""
    from c2f_vol import config as config_lib
    from conftest import REPO

    root = tmp_path_factory.mktemp("mpii")
    fake_mpii.write_fake_mpii(root)
    _build(root, tiny_dataset, name="mixfake")
    overrides = {"data.data_dir": str(tiny_dataset), "data.name": "c2f_synthetic/tiny", "batch_size": 4,
                 "num_train_steps": 2, "eval_every": 0, "eval_max_examples": 4,
                 "data.mix": (("c2f_synthetic/tiny", 0.5), ("mpii/mixfake", 0.5))}
    return config_lib.load(str(REPO / "configs" / "synthetic_cpu.py:tiny"), overrides), overrides


def _mixed_batch(config):
    from c2f_vol.data import pipeline

    return next(pipeline.training_batches(config.data, config.codec.input_size, batch_size=4, seed=0,
                                          process_index=0, process_count=1).as_numpy_iterator())


def test_mixed_batches_take_each_share_and_mpii_alone_is_refused(mixed_config, tmp_path):
    """configs' data.mix: every batch half synthetic 3D, half MPII 2D-only, and the Trainer takes has_3d; MPII
    alone as data.name is refused with the way to mix it."""
    from c2f_vol import config as config_lib, train
    from conftest import REPO

    config, overrides = mixed_config
    batch = _mixed_batch(config)
    assert batch["has_3d"].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert batch["joints_weight"][2:, 7].tolist() == [0.0, 0.0]  # MPII has no spine
    assert "has_3d" in train.train_keys(config) and "has_3d" not in train.train_keys(config_lib.load(
        str(REPO / "configs" / "synthetic_cpu.py:tiny")))  # without a mix the loss skips the 2D forms
    alone = config_lib.load(str(REPO / "configs" / "synthetic_cpu.py:tiny"),
                            dict(overrides, **{"data.name": "mpii/mixfake", "data.mix": ()}))
    with pytest.raises(train.UserError, match="2D poses only.*data.mix"):
        train.train_and_evaluate(alone, str(tmp_path / "alone"))


@pytest.mark.slow  # the train step with the 2D forms of the loss is a compile of its own (~30 s on AVX2)
def test_the_train_step_runs_on_a_mixed_batch(mixed_config):
    from c2f_vol import train

    config, _ = mixed_config
    trainer = train.Trainer(config)
    assert "has_3d" in trainer.keys
    state, metrics = trainer.train_step(trainer.init_state(), trainer.put(_mixed_batch(config)))
    assert int(state["step"]) == 1 and int(state["bad_step"]) < 0 and np.isfinite(float(metrics["loss"]))