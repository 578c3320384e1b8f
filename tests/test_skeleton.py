import numpy as np
import pytest

from c2f_vol import skeleton


def test_tables_are_consistent():
    assert len(skeleton.JOINT_NAMES) == len(skeleton.PARENTS) == skeleton.NUM_JOINTS == 17
    assert len(skeleton.H36M_32_TO_17) == 17
    assert skeleton.PARENTS[skeleton.ROOT] == -1
    # Parents come before children, so forward kinematics can run in joint order.
    assert all(p < c for c, p in enumerate(skeleton.PARENTS) if p >= 0)
    assert len(skeleton.BONES) == 16


def test_left_right_pairs_match_names():
    for r, l in skeleton.LEFT_RIGHT_PAIRS:
        rn, ln = skeleton.JOINT_NAMES[r], skeleton.JOINT_NAMES[l]
        assert rn.startswith("R") and ln.startswith("L") and rn[1:] == ln[1:]


def test_flip_permutation_is_an_involution_swapping_pairs():
    perm = np.array(skeleton.FLIP_PERMUTATION)
    np.testing.assert_array_equal(perm[perm], np.arange(17))
    for r, l in skeleton.LEFT_RIGHT_PAIRS:
        assert perm[r] == l and perm[l] == r
    centre = [i for i in range(17) if i not in skeleton.LEFT_JOINTS + skeleton.RIGHT_JOINTS]
    assert all(perm[i] == i for i in centre)
    # Flipping preserves the tree: the parent of a swapped joint is the swapped parent.
    for c, p in enumerate(skeleton.PARENTS):
        if p >= 0:
            assert skeleton.PARENTS[perm[c]] == perm[p]


def test_from_h36m32_selects_documented_indices(rng):
    poses = rng.normal(size=(5, 96))
    out = skeleton.from_h36m32(poses)
    assert out.shape == (5, 17, 3)
    np.testing.assert_array_equal(out[:, 3], poses.reshape(5, 32, 3)[:, 3])
    np.testing.assert_array_equal(out[:, 4], poses.reshape(5, 32, 3)[:, 6])
    np.testing.assert_array_equal(out[:, 16], poses.reshape(5, 32, 3)[:, 27])
    np.testing.assert_array_equal(skeleton.from_h36m32(poses.reshape(5, 32, 3)), out)
    with pytest.raises(ValueError, match="32"):
        skeleton.from_h36m32(np.zeros((5, 17, 3)))


def test_bone_lengths():
    joints = np.zeros((17, 3))
    joints[1] = [100.0, 0, 0]
    joints[2] = [100.0, 400.0, 0]
    lengths = skeleton.bone_lengths(joints)
    assert lengths.shape == (16,)
    assert lengths[0] == pytest.approx(100.0)  # Pelvis-RHip
    assert lengths[1] == pytest.approx(400.0)  # RHip-RKnee
