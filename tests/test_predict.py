"""Prediction on user images: input handling, one-line errors, pictures."""

import subprocess
import sys

import cv2
import numpy as np
import pytest

from c2f_vol import predict, visualize
from conftest import REPO


def test_load_image_handles_grey_rgba_and_16_bit(tmp_path):
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[..., 2] = 200  # red in OpenCV's BGR order
    cv2.imwrite(str(tmp_path / "c.png"), rgb)
    assert predict.load_image(str(tmp_path / "c.png"))[0, 0].tolist() == [200, 0, 0]
    cv2.imwrite(str(tmp_path / "g.jpg"), np.full((20, 30), 90, np.uint8))
    grey = predict.load_image(str(tmp_path / "g.jpg"))
    assert grey.shape == (20, 30, 3) and abs(int(grey[5, 5, 0]) - 90) <= 2
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., 3] = 0  # fully transparent
    cv2.imwrite(str(tmp_path / "a.png"), rgba)
    assert predict.load_image(str(tmp_path / "a.png"))[0, 0].tolist() == [128, 128, 128]
    cv2.imwrite(str(tmp_path / "w.png"), np.full((20, 30, 3), 65535, np.uint16))
    assert predict.load_image(str(tmp_path / "w.png")).max() == 255


def test_bad_inputs_raise_user_errors(tmp_path):
    (tmp_path / "not.jpg").write_text("hello")
    with pytest.raises(predict.UserInputError, match="not a readable image"):
        predict.load_image(str(tmp_path / "not.jpg"))
    with pytest.raises(predict.UserInputError, match="no such file"):
        predict.load_image(str(tmp_path / "missing.png"))
    with pytest.raises(predict.UserInputError, match="zero-size"):
        predict.parse_bbox("10,10,0,5", 100, 80)
    with pytest.raises(predict.UserInputError, match="outside the 100x80 image"):
        predict.parse_bbox("150,10,20,20", 100, 80)
    with pytest.raises(predict.UserInputError, match="four numbers"):
        predict.parse_bbox("1,2,3", 100, 80)
    assert predict.parse_bbox(None, 100, 80) == (0.0, 0.0, 100.0, 80.0)
    with pytest.raises(predict.UserInputError, match="volume_joint"):
        predict.joint_index("Tail")
    assert predict.joint_index("rwrist") == 16 and predict.joint_index("3") == 3


def test_crop_and_intrinsics():
    image = np.zeros((100, 200, 3), np.uint8)
    image[40:60, 90:110] = 255  # a white square centred at (99.5, 49.5)
    crop, affine, box = predict.crop_for_model(image, (80, 30, 40, 40), 32)
    assert crop.shape == (32, 32, 3) and box[2] == pytest.approx(44.0)
    assert crop[16, 16].tolist() == [255, 255, 255] and crop[1, 1].tolist() == [0, 0, 0]
    intr, how = predict.intrinsics_for(200, 100, None)
    assert intr[0] == pytest.approx(100 / np.tan(np.radians(27.5))) and "assumed" in how
    assert predict.intrinsics_for(200, 100, 500.0)[0][0] == 500.0


@pytest.mark.parametrize("args,message", [
    (["--image={tmp}/not.jpg"], "not a readable image"),
    (["--image={tmp}/ok.png", "--bbox=0,0,0,10"], "zero-size box"),
    (["--image={tmp}/ok.png", "--bbox=500,500,10,10"], "outside"),
    (["--image={tmp}/ok.png"], "no such file or folder"),
])
def test_tool_reports_one_line_without_traceback(tmp_path, args, message):
    (tmp_path / "not.jpg").write_text("hello")
    cv2.imwrite(str(tmp_path / "ok.png"), np.zeros((40, 40, 3), np.uint8))
    cmd = [sys.executable, str(REPO / "tools" / "predict.py"), f"--model={tmp_path}/missing"]
    cmd += [a.format(tmp=tmp_path) for a in args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], proc.stderr[-1500:]
    assert "Traceback" not in proc.stderr


def test_pictures_have_the_expected_layout():
    pose = np.zeros((17, 3))
    pose[:, 1] = np.linspace(-800, 800, 17)
    pose[:, 2] = 4000
    views = visualize.render_3d_views(pose, 100)
    assert views.shape == (100, 200, 3) and (views != 245).any()
    overlay = visualize.draw_skeleton_2d(np.zeros((50, 80, 3), np.uint8), np.full((17, 2), 20.0))
    assert overlay[20, 20].any()
    pic = visualize.compose(overlay, views, visualize.volume_panel(np.eye(8), 100, "x"))
    assert pic.shape == (100, 80 * 2 + 200 + 100, 3)
