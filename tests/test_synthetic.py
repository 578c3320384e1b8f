"""The synthetic dataset: BVH kinematics and sides, procedural poses, cameras, and built datasets."""

import dataclasses
import logging
import warnings

import numpy as np
import pytest
import tensorflow_datasets as tfds
from scipy.spatial.transform import Rotation

from c2f_vol import camera, skeleton
from c2f_vol.data.synthetic import builder, bvh, poses

UP = np.array([0.0, 0.0, 1.0])


# ---------------------------------------------------------------------------
# BVH.


def _independent_fk(motion: bvh.BvhMotion, frame: int) -> np.ndarray:
    """(K, 3) positions by per-frame recursion with scipy's intrinsic Euler angles."""
    row = motion.motion[frame]
    pos, rot = {}, {}
    for k, joint in enumerate(motion.joints):
        offset = joint.offset.astype(np.float64).copy()
        order, angles = "", []
        for c, ch in enumerate(joint.channels):
            value = row[joint.channel_start + c]
            if ch.endswith("position"):
                offset["XYZ".index(ch[0])] += value
            else:
                order += ch[0]
                angles.append(value)
        # Upper-case sequence = intrinsic rotations, i.e. R = R_first @ R_second @ ...
        local = Rotation.from_euler(order, angles, degrees=True) if order else Rotation.identity()
        if joint.parent < 0:
            pos[k], rot[k] = offset, local
        else:
            pos[k] = pos[joint.parent] + rot[joint.parent].apply(offset)
            rot[k] = rot[joint.parent] * local
    return np.stack([pos[k] for k in range(len(motion.joints))])


@pytest.mark.parametrize("name", ["131_01", "01_01"])
def test_bvh_forward_kinematics_matches_independent_fk(shared_data, name):
    motion = bvh.load_bvh(shared_data / "mocap" / f"{name}.bvh")
    frames = np.array([0, 137, motion.num_frames - 1])
    ours = motion.forward_kinematics(frames)
    for i, f in enumerate(frames):
        np.testing.assert_allclose(ours[i], _independent_fk(motion, f), atol=1e-9)
    # 131_* mixes channel orders (ZXY on the arms): the parser keeps each joint's own.
    if name == "131_01":
        assert motion.joints[motion.index("LeftElbow")].channels == ("Zrotation", "Xrotation", "Yrotation")


@pytest.mark.parametrize("name, expected", [
    ("131_01", ("Hips", "RightHip", "RightKnee", "RightAnkle", "LeftHip", "LeftKnee", "LeftAnkle",
                "Chest", "Neck", "Head", "Head_End", "LeftShoulder", "LeftElbow", "LeftWrist",
                "RightShoulder", "RightElbow", "RightWrist")),
    ("01_01", ("Hips", "RightUpLeg", "RightLeg", "RightFoot", "LeftUpLeg", "LeftLeg", "LeftFoot",
               "Spine", "Neck1", "Head", "Head_End", "LeftArm", "LeftForeArm", "LeftHand",
               "RightArm", "RightForeArm", "RightHand")),
])
def test_both_cmu_naming_schemes_convert(shared_data, name, expected):
    motion = bvh.load_bvh(shared_data / "mocap" / f"{name}.bvh")
    assert tuple(motion.names[i] for i in bvh.h36m17_indices(motion)) == expected
    joints = bvh.y_up_to_z_up(bvh.to_h36m17(motion, slice(0, None, 50)))
    assert joints.shape[1:] == (17, 3)
    bones = skeleton.bone_lengths(joints)
    # Limb bones are single BVH segments, so rigid (other bones pass through
    # intermediate joints, e.g. the collar); adult lengths in mm.
    limbs = [1, 2, 4, 5, 11, 12, 14, 15]
    np.testing.assert_allclose(bones[:, limbs], np.broadcast_to(bones[0, limbs], bones[:, limbs].shape), atol=1e-6)
    thigh, shin = bones[0, 1], bones[0, 2]
    assert 330 < thigh < 520 and 330 < shin < 520, (thigh, shin)
    # Z up after conversion: the head is above the pelvis, the pelvis above the ankles.
    assert np.all(joints[:, 10, 2] > joints[:, 0, 2]) and np.all(joints[:, 0, 2] > joints[:, 3, 2])


def _left_score(left_joint, right_joint, forward):
    """Fraction of frames where left_joint lies on the person's left (left = up x forward)."""
    left_dir = np.cross(UP, forward)
    return np.mean(np.einsum("fi,fi->f", left_joint - right_joint, left_dir) > 0)


@pytest.mark.parametrize("name, toe, ankle", [
    ("131_01", "Toe", "Ankle"), ("131_02", "Toe", "Ankle"), ("01_01", "ToeBase", "Foot")])
def test_sides_from_names_are_anatomical(shared_data, name, toe, ankle):
    motion = bvh.load_bvh(shared_data / "mocap" / f"{name}.bvh")
    everything = bvh.y_up_to_z_up(motion.forward_kinematics())
    joints = bvh.y_up_to_z_up(bvh.to_h36m17(motion))
    # Forward = where both feet point (summed over the feet, so it is side-blind).
    fwd = sum(everything[:, motion.index(side + toe)] - everything[:, motion.index(side + ankle)]
              for side in ("Left", "Right"))
    fwd[:, 2] = 0
    # Hips and shoulders sit on the trunk: always on their side. Knees, ankles,
    # elbows and wrists may cross over (crossed legs, a hand reaching across).
    for r, l in skeleton.LEFT_RIGHT_PAIRS:
        expected = 0.99 if l in (4, 11) else 0.8
        assert _left_score(joints[:, l], joints[:, r], fwd) > expected, (name, skeleton.JOINT_NAMES[l])
    if name == "131_01":
        # A second cue: the direction of travel over 0.25 s where the person walks.
        # The subject also steps backwards for a moment, hence a majority only.
        travel = joints[30:, 0] - joints[:-30, 0]
        travel[:, 2] = 0
        moving = np.linalg.norm(travel, axis=-1) > 150.0
        assert moving.sum() > 200
        for r, l in ((1, 4), (14, 11)):
            assert _left_score(joints[30:, l][moving], joints[30:, r][moving], travel[moving]) > 0.85


def test_bvh_errors_name_the_file_and_the_problem(tmp_path, shared_data):
    good = (shared_data / "mocap" / "131_01.bvh").read_text()
    with pytest.raises(bvh.BvhError, match=r"broken\.bvh.*expected a 'MOTION' section"):
        bvh.parse_bvh(good.split("MOTION")[0], source="broken.bvh")
    with pytest.raises(bvh.BvhError, match=r"x\.bvh:6: expected 'CHANNELS'; found 'JOINT'"):
        bvh.parse_bvh(good.replace("CHANNELS 6 Xposition Yposition Zposition Zrotation Yrotation Xrotation", ""),
                      source="x.bvh")
    head, motion = good.split("MOTION")
    lines = motion.splitlines()
    lines[4] = lines[4] + " 1.0"
    with pytest.raises(bvh.BvhError, match=r"y\.bvh: expected 96 values per frame.*motion line 1"):
        bvh.parse_bvh(head + "MOTION" + "\n".join(lines), source="y.bvh")
    lines = motion.splitlines()
    lines[5] = " ".join(["1.0", "nan"] + lines[5].split()[2:])  # frame 2, channel 1
    with pytest.raises(bvh.BvhError, match=r"n\.bvh: frame 2 \(motion line 3\) holds nan in channel 1"):
        bvh.parse_bvh(head + "MOTION" + "\n".join(lines), source="n.bvh")
    path = tmp_path / "renamed.bvh"
    path.write_text(good.replace("LeftKnee", "LKnee"))
    with pytest.raises(KeyError, match=r"renamed\.bvh.*missing LKnee \(one of \['LeftLeg', 'LeftKnee'\]\)"):
        bvh.to_h36m17(bvh.load_bvh(path))


# ---------------------------------------------------------------------------
# Procedural poses and cameras.


def test_procedural_bodies_have_adult_proportions():
    rng = np.random.default_rng(1)
    ref_height = poses.rest_height(poses.REFERENCE_BONE_LENGTHS_MM)
    families = set()
    for _ in range(150):
        sample = poses.sample_pose(rng)
        families.add(sample.family)
        body = sample.body
        assert poses.HEIGHT_RANGE_MM[0] <= body.height_mm <= poses.HEIGHT_RANGE_MM[1]
        lengths = skeleton.bone_lengths(sample.joints_mm)
        np.testing.assert_allclose(lengths, body.bone_lengths_mm, rtol=1e-9)
        # Bones relative to stature stay near the reference proportions.
        ratio = (lengths / body.height_mm) / (poses.REFERENCE_BONE_LENGTHS_MM / ref_height)
        assert np.all(np.abs(ratio - 1) < 3 * poses.BONE_JITTER + 0.02), ratio
        # Symmetric body; feet on the floor; nothing below it.
        for r, l in skeleton.LEFT_RIGHT_PAIRS:
            assert lengths[r - 1] == pytest.approx(lengths[l - 1])
        ankle_z = min(sample.joints_mm[3, 2], sample.joints_mm[6, 2])
        assert ankle_z == pytest.approx(poses.ANKLE_HEIGHT_FRACTION * body.height_mm)
        assert sample.joints_mm[:, 2].min() > -0.1 * body.height_mm
    assert families == set(poses.FAMILIES)


def test_standing_pose_height_sides_and_knees():
    rng = np.random.default_rng(2)
    for _ in range(30):
        s = poses.sample_pose(rng, family="standing")
        j = s.joints_mm
        top = j[10, 2]  # the head top, above the floor at Z = 0
        assert 0.93 * s.body.height_mm < top < 1.02 * s.body.height_mm
        yaw = np.deg2rad(s.yaw_deg)
        forward = np.array([-np.sin(yaw), np.cos(yaw), 0.0])
        for r, l in skeleton.LEFT_RIGHT_PAIRS:
            assert _left_score(j[None, l], j[None, r], forward[None]) == 1.0, skeleton.JOINT_NAMES[l]
    sitting = poses.sample_pose(np.random.default_rng(3), family="sitting", yaw_deg=0.0).joints_mm
    # Sitting: the thighs point forward (+Y at yaw 0) and the shins hang down from the knees.
    assert sitting[2, 1] - sitting[1, 1] > 250 and sitting[5, 1] - sitting[4, 1] > 250
    assert sitting[3, 2] < sitting[2, 2] - 200 and sitting[6, 2] < sitting[5, 2] - 200


def test_camera_frames_the_person_and_labels_the_view():
    rng = np.random.default_rng(4)
    pose = poses.sample_pose(rng, family="standing", yaw_deg=0.0).joints_mm  # faces +Y
    rotation, centre, intr = builder.sample_camera(rng, pose, (120, 160))
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(rotation) == pytest.approx(1.0)
    uv = camera.project(camera.world_to_camera(pose, rotation, centre), intr)
    assert np.all((uv > 0) & (uv < [159, 119]))
    assert intr[0] == pytest.approx(1.147 * 160, rel=0.11)
    # Up in the world is up in the image (+Y down) for a level camera.
    cam = builder.look_at(np.array([0.0, -4000, 1000]), np.array([0.0, 0, 1000]))
    assert (cam @ UP)[1] == pytest.approx(-1.0)
    assert builder.view_label(pose, np.array([0.0, 4000, 1000])) == "front"
    assert builder.view_label(pose, np.array([0.0, -4000, 1000])) == "back"
    assert builder.view_label(pose, np.array([-4000.0, 0, 1000])) == "left"  # left is -X at yaw 0


# ---------------------------------------------------------------------------
# Built datasets.


def _build(data_dir, source, manual_dir=None, seed=0, by_name=False):
    config = builder.C2fSyntheticConfig(name=f"t_{source}", source=source, train_size=6, test_size=3,
                                        image_size=(96, 96), seed=seed)
    if by_name:  # the registry path users take, with a config instance of their own
        b = tfds.builder("c2f_synthetic", config=config, data_dir=str(data_dir), try_gcs=False)
    else:
        b = builder.C2fSynthetic(config=config, data_dir=str(data_dir))
    b.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=None if manual_dir is None else str(manual_dir)))
    return b


def _examples(b, split):
    return list(tfds.as_numpy(b.as_dataset(split=split, shuffle_files=False)))


@pytest.mark.parametrize("source", ["procedural", "mocap"])
def test_built_dataset_features_projection_and_determinism(tmp_path, request, source):
    # Only the mocap source needs the shared files (the fixture skips without them).
    manual = request.getfixturevalue("shared_data") / "mocap" if source == "mocap" else None
    b1 = _build(tmp_path / "a", source, manual)
    b2 = _build(tmp_path / "b", source, manual, by_name=True)
    assert b2.builder_config.image_size == (96, 96) and b2.builder_config.train_size == 6
    assert {k: v.num_examples for k, v in b1.info.splits.items()} == {"train": 6, "test": 3}
    train, test = _examples(b1, "train"), _examples(b1, "test")
    for ex in train + test:
        assert ex["image"].shape == (96, 96, 3) and ex["image"].dtype == np.uint8
        assert ex["image"].std() > 5
        assert ex["joints_2d"].shape == (17, 2) and ex["joints_2d"].dtype == np.float32
        assert ex["joints_3d"].shape == (17, 3) and ex["joints_3d"].dtype == np.float32
        assert ex["intrinsics"].shape == (4,) and ex["intrinsics"].dtype == np.float32
        assert ex["frame"].dtype == np.int32 and ex["frame"] >= 0
        assert np.all((ex["joints_2d"] >= 0) & (ex["joints_2d"] <= 95))
        assert np.all((ex["joints_3d"][:, 2] > 1500) & (ex["joints_3d"][:, 2] < 9000))
        fx, fy, cx, cy = ex["intrinsics"]
        assert 0.9 * 1.147 * 96 * 0.99 < fx < 1.1 * 1.147 * 96 * 1.01 and abs(cx - 47.5) < 3 and abs(cy - 47.5) < 3
        projected = camera.project(ex["joints_3d"], ex["intrinsics"])
        assert np.abs(projected - ex["joints_2d"]).max() < 1.0
        assert ex["camera"].decode() in ("front", "left", "back", "right")
        if source == "procedural":
            assert ex["subject"] == b"procedural" and ex["action"].decode() in poses.FAMILIES
        else:
            assert ex["subject"].decode() in ("131_01", "131_02", "01_01") and ex["action"] == ex["subject"]
    if source == "mocap":
        # Temporal hold-out: test frames come from the last part of each file.
        for ex in test:
            n = {"131_01": 994, "131_02": 1247, "01_01": 2752}[ex["subject"].decode()]
            assert ex["frame"] >= round(0.8 * n)
        assert b1.info.metadata["bvh_files"] == ["01_01", "131_01", "131_02"]
    # Same seed, another folder: byte-identical; train and test differ.
    again = _examples(b2, "train")
    key = lambda ex: (ex["subject"], ex["frame"], ex["joints_3d"].tobytes())  # noqa: E731
    for x, y in zip(sorted(train, key=key), sorted(again, key=key)):
        assert x["image"].tobytes() == y["image"].tobytes()
        assert x["joints_3d"].tobytes() == y["joints_3d"].tobytes()
    train_poses = {ex["joints_3d"].tobytes() for ex in train}
    assert not train_poses & {ex["joints_3d"].tobytes() for ex in test}


def test_registered_tiny_config_builds_offline(tmp_path):
    b = tfds.builder("c2f_synthetic/tiny", data_dir=str(tmp_path), try_gcs=False)
    assert b.builder_config.image_size == (96, 96)
    b.download_and_prepare()
    ds = tfds.as_numpy(b.as_dataset(split="test"))
    examples = list(ds)
    assert len(examples) == 16 and examples[0]["image"].shape == (96, 96, 3)
    assert {c.name for c in builder.C2fSynthetic.BUILDER_CONFIGS} == {"procedural", "mocap", "tiny"}


def test_config_validation_and_missing_mocap_folder(tmp_path):
    with pytest.raises(ValueError, match="source must be one of"):
        builder.C2fSyntheticConfig(name="bad", source="video")
    with pytest.raises(ValueError, match="image_size"):
        builder.C2fSyntheticConfig(name="bad", image_size=(8, 8))
    (tmp_path / "notes.txt").write_text("no motion here")
    with pytest.raises(FileNotFoundError, match=r"expected \*\.bvh motion files; found \['notes.txt'\]"):
        builder.load_mocap_clips(tmp_path)


def test_renderer_colours_sides_and_paints_near_over_far():
    from c2f_vol.data.synthetic import render
    # A person facing the camera 4 m away (yaw 180: faces -Y, the camera at -Y looks along +Y).
    world = poses.sample_pose(np.random.default_rng(5), family="standing", yaw_deg=180.0).joints_mm
    rotation = builder.look_at(np.array([0.0, -4000.0, 1000.0]), np.array([0.0, 0.0, 1000.0]))
    centre = np.array([0.0, -4000.0, 1000.0])
    joints = camera.world_to_camera(world, rotation, centre)
    intr = np.array([300.0, 300.0, 79.5, 79.5])
    # A green shirt, so neither side's hue can come from the torso.
    look = dataclasses.replace(render.sample_appearance(np.random.default_rng(6)), shirt=(0.2, 0.8, 0.2))
    img = np.full((160, 160, 3), 128, np.uint8)
    render.draw_person(img, joints, intr, look, np.array([0.0, 0.0, -1.0]), ambient=0.6)
    uv = camera.project(joints, intr)
    for thigh, warm in (((4, 5), False), ((1, 2), True)):
        u, v = np.round(uv[list(thigh)].mean(0)).astype(int)
        r, _, b = img[v, u].astype(int)
        assert (r > b) == warm, (thigh, img[v, u])
    # Facing the camera, the person's left appears on the image's right.
    assert uv[4, 0] > uv[1, 0]
    # Near over far: the same pose with a hand pushed in front of the chest.
    near = joints.copy()
    near[13] = 0.5 * (joints[8] + joints[0]) - [0.0, 0.0, 300.0]
    near[12] = near[13] + [150.0, 0.0, 50.0]
    img2 = np.full((160, 160, 3), 128, np.uint8)
    render.draw_person(img2, near, intr, look, np.array([0.0, 0.0, -1.0]), ambient=0.6)
    u, v = np.round(camera.project(near[12:14], intr).mean(0)).astype(int)
    r, g, b = img2[v, u].astype(int)
    assert b > r and b > g, img2[v, u]  # the (blue) left forearm covers the (green) torso
    r, g, b = img[v, u].astype(int)
    assert g > b and g > r, img[v, u]  # where, without it, the shirt shows


def test_room_floor_is_finite_without_warnings_where_rays_miss_the_floor():
    from c2f_vol.data.synthetic import render

    # A level camera whose centre column (u = cx exactly) looks straight along +Y: the upward rays
    # of that column have a world x of exactly 0 and never meet the floor.
    centre = np.array([0.0, -4000.0, 1000.0])
    rotation = builder.look_at(centre, np.array([0.0, 0.0, 1000.0]))
    intr = np.array([100.0, 100.0, 48.0, 48.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        img = render._room(np.random.default_rng(0), 96, 96, intr, rotation, centre, np.zeros(2))
        # Procedural example 2826 (256 px) has such a ray too.
        builder.make_example(builder.C2fSyntheticConfig(name="w", train_size=1, test_size=1), "train", 2826)
    assert img.shape == (96, 96, 3) and np.isfinite(img).all()


# ---------------------------------------------------------------------------
# Building: one progress display, no warnings.


def test_build_shows_one_progress_line_and_no_warnings(tmp_path, capsys, caplog):
    from c2f_vol.data import builders

    with warnings.catch_warnings(), caplog.at_level(logging.WARNING):
        warnings.simplefilter("error", RuntimeWarning)
        assert builders.build("c2f_synthetic/tiny", str(tmp_path)) == {"train": 48, "test": 16}
    out = capsys.readouterr()
    text = out.out + out.err
    # Not a terminal: one line, at the end (the build takes well under Progress.min_gap_s).
    assert [line for line in text.splitlines() if "examples" in line] == [
        line for line in text.splitlines() if line.startswith("building c2f_synthetic/tiny: 64/64 examples (100%)")]
    assert text.count("building c2f_synthetic/tiny") == 1
    assert not any(bar in text for bar in ("Generating", "Shuffling", "splits/s", "\r"))  # TFDS's bars are off
    assert "warning" not in text.lower()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    # Already prepared: nothing but what the caller prints.
    with caplog.at_level(logging.WARNING):
        assert builders.build("c2f_synthetic/tiny", str(tmp_path)) == {"train": 48, "test": 16}
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_a_build_removes_what_killed_builds_left(tmp_path, caplog):
    from c2f_vol.data import builders
    from c2f_vol.data.synthetic.builder import C2fSynthetic

    version = str(C2fSynthetic.VERSION)
    stale = tmp_path / "c2f_synthetic" / "tiny" / f"incomplete.AB12CD_{version}"
    (stale / "shards").mkdir(parents=True)
    (stale / "shards" / "part-0").write_bytes(b"x" * 2048)
    other = tmp_path / "c2f_synthetic" / "tiny" / "incomplete.ZZ99ZZ_0.9.0"  # another version: not ours
    other.mkdir()
    with caplog.at_level(logging.WARNING):
        assert builders.build("c2f_synthetic/tiny", str(tmp_path)) == {"train": 48, "test": 16}
    assert not stale.exists() and other.exists()
    assert any(f"incomplete.AB12CD_{version}" in r.getMessage() and "interrupted build" in r.getMessage()
               for r in caplog.records)
