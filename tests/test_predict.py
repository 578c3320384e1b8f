"""Prediction on user images: input handling, one-line errors, pictures."""

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from c2f_vol import predict, visualize
from c2f_vol.errors import UserError
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
    with pytest.raises(predict.UserInputError, match="is a folder, expected an image file"):
        predict.load_image(str(tmp_path))
    with pytest.raises(predict.UserInputError, match="box of 0.001x5 px is too small .at least 2 px per side"):
        predict.parse_bbox("10,10,0.001,5", 100, 80)
    assert predict.parse_bbox("10,10,2,2", 100, 80) == (10.0, 10.0, 2.0, 2.0)


def test_image_size_is_read_from_the_header_and_large_images_are_refused(tmp_path):
    img = np.zeros((30, 70, 3), np.uint8)
    for name, params in (("a.png", []), ("a.jpg", []), ("p.jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])):
        cv2.imwrite(str(tmp_path / name), img, params)
        assert predict.image_size(str(tmp_path / name)) == (70, 30), name
    (tmp_path / "t.jpg").write_bytes((tmp_path / "a.jpg").read_bytes()[:20])  # truncated before the frame header
    assert predict.image_size(str(tmp_path / "t.jpg")) is None
    assert predict.load_image(str(tmp_path / "a.png"), max_pixels=70 * 30).shape == (30, 70, 3)
    with pytest.raises(predict.UserInputError, match=r"70x30 px .* over the 0.002 megapixel limit; downscale it"):
        predict.load_image(str(tmp_path / "a.png"), max_pixels=2000)
    cv2.imwrite(str(tmp_path / "thin.png"), np.zeros((5, 70), np.uint8))
    with pytest.raises(predict.UserInputError, match="too small"):
        predict.load_image(str(tmp_path / "thin.png"))


def test_output_paths_are_checked_before_any_work(tmp_path):
    predict.check_output_path(str(tmp_path / "p.json"), "--output_json")
    predict.check_output_path(str(tmp_path / "p.jpg"), "--output_png", picture=True)
    with pytest.raises(UserError, match="--output_json=.*folder .* does not exist"):
        predict.check_output_path(str(tmp_path / "no" / "p.json"), "--output_json")
    with pytest.raises(UserError, match="is a folder, expected a file name"):
        predict.check_output_path(str(tmp_path), "--output_json")
    with pytest.raises(predict.UserInputError, match="cannot write '.txt' pictures"):
        predict.check_output_path(str(tmp_path / "p.txt"), "--output_png", picture=True)
    with pytest.raises(predict.UserInputError, match="without an extension"):
        predict.check_output_path(str(tmp_path / "p"), "--output_png", picture=True)


def test_outputs_are_written_together_or_not_at_all(tmp_path):
    picture = np.zeros((20, 30, 3), np.uint8)
    picture[..., 0] = 255  # red
    js, png = tmp_path / "p.json", tmp_path / "p.png"
    predict.write_outputs(str(js), {"a": [1, 2]}, str(png), picture)
    assert json.loads(js.read_text()) == {"a": [1, 2]} and cv2.imread(str(png))[0, 0].tolist() == [0, 0, 255]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.json", "p.png"]  # no temporary files left
    with pytest.raises(FileNotFoundError):  # the JSON cannot be written: the picture is removed again
        predict.write_outputs(str(tmp_path / "no" / "q.json"), {}, str(tmp_path / "q.png"), picture)
    with pytest.raises(predict.UserInputError):  # the picture cannot be encoded: nothing is written
        predict.write_outputs(str(tmp_path / "r.json"), {}, str(tmp_path / "r.xyz"), picture)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.json", "p.png"]


class _FakeModel:
    input_size = 32
    source = "fake"
    box_margin = 1.4

    def __call__(self, crop, intrinsics, box, distortion=None):
        assert crop.shape == (32, 32, 3) and box[2] == pytest.approx(30 * 1.4)
        joints = np.zeros((17, 3), np.float32)
        joints[:, 2] = 4000
        return {"joints_cam": joints, "root_depth_mm": 4000.0, "joints_image": np.full((17, 2), 10.0, np.float32),
                "confidence": np.ones(17, np.float32)}


def test_predict_image_uses_the_decoded_image_without_reading_the_file(monkeypatch):
    monkeypatch.setattr(predict, "load_image", lambda *a, **k: pytest.fail("decoded twice"))
    result, picture = predict.predict_image(_FakeModel(), np.zeros((60, 40, 3), np.uint8), "5,5,20,30",
                                            image_path="me.png")
    assert result["image_size"] == [40, 60] and result["image"].endswith("me.png") and picture.ndim == 3


def test_crop_and_intrinsics():
    image = np.zeros((100, 200, 3), np.uint8)
    image[40:60, 90:110] = 255  # a white square centred at (99.5, 49.5)
    crop, affine, box = predict.crop_for_model(image, (80, 30, 40, 40), 32, box_margin=1.1)
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
    # checked before the model (here missing) would be loaded:
    (["--image={tmp}/ok.png", "--volume_joint=Tail"], "--volume_joint='Tail': expected 0-16"),
    (["--image={tmp}/ok.png", "--distortion=0.1,0.2"], "--distortion='0.1,0.2': expected five finite numbers"),
    (["--image={tmp}/ok.png", "--output_json={tmp}/no/such/dir/p.json"], "does not exist"),
    (["--image={tmp}/ok.png", "--max_pixels=1000"], "40x40 px (0.0 megapixels) is over the 0.001 megapixel limit"),
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
    assert not list(tmp_path.glob("*.pose.*"))  # nothing written


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


@pytest.mark.slow  # ~4-7 s: a 20000x20000 PNG and a run of the tool
def test_huge_image_is_refused_before_decoding(tmp_path):
    """A 20000x20000 PNG (1.2 MB of mostly zeros; 1.2 GB decoded) is refused from its header: the tool
    stays far under 1 GB of memory (decoding it took 2.6 GB and 12 s before)."""
    huge = np.zeros((20000, 20000, 3), np.uint8)  # calloc'd: untouched pages cost no memory here
    huge[:100, :100] = 255
    assert cv2.imwrite(str(tmp_path / "huge.png"), huge)
    del huge
    tool = [sys.executable, str(REPO / "tools" / "predict.py"), f"--model={tmp_path}/missing",
            f"--image={tmp_path}/huge.png"]
    # A fresh parent process, so its children's peak memory is the tool's alone.
    probe = ("import resource, subprocess, sys; p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
             "print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); print(p.stderr)")
    out = subprocess.run([sys.executable, "-c", probe, *tool], capture_output=True, text=True, timeout=120).stdout
    (rc, peak_kb), stderr = out.split("\n", 1)[0].split(), out.split("\n", 1)[1]
    assert int(rc) == 2 and "Traceback" not in stderr
    errors = [l for l in stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and "20000x20000 px (400.0 megapixels) is over the 50 megapixel limit" in errors[0]
    assert int(peak_kb) < 1024 * 1024, f"peak {int(peak_kb) / 1024:.0f} MiB"
