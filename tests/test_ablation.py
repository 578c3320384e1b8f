"""tools/ablate.py's library: a grid of tiny runs, the table, the plot, and resuming a finished grid."""

import json
import os

import cv2
import pytest

from c2f_vol import ablation
from conftest import REPO

TINY = str(REPO / "configs" / "synthetic_cpu.py:tiny")


@pytest.mark.slow
def test_tiny_grid_trains_tables_plots_and_resumes(tiny_dataset, tmp_path):
    kw = dict(grid="stacks2", losses=["integral + soft_argmax"], steps=4, eval_points=2,
              data_dir=str(tiny_dataset), extra_overrides={"data.name": "c2f_synthetic/tiny", "num_devices": 1})
    logged = []
    rows = ablation.run_grid(TINY, str(tmp_path / "grid"), log=logged.append, **kw)
    assert [r["depth_bins"] for r in rows] == [[2, 16], [16, 16]]
    for r in rows:
        assert r["decoder"] == "soft_argmax" and r["steps"] == 4 and r["frames"] > 0
        assert [s for s, _ in r["curve_eval"]] == [2, 4]
        assert r["curve_eval"][-1][1] == pytest.approx(r["mpjpe_mm"])
        assert 0 < r["pa_mpjpe_mm"] <= r["mpjpe_mm"] + 1e-6
    table = ablation.format_table(rows)
    assert "| c2f (2, 16) | integral + soft_argmax |" in table and "coarse-to-fine" in table
    ablation.write_outputs(rows, str(tmp_path / "a.json"), str(tmp_path / "a.png"), meta={"grid": "stacks2"})
    saved = json.load(open(tmp_path / "a.json"))
    assert saved["grid"] == "stacks2" and len(saved["runs"]) == 2
    picture = cv2.imread(str(tmp_path / "a.png"))
    assert picture is not None and picture.shape == (520, 900, 3) and picture.min() < 100
    # A second call reads the finished runs back instead of training them again.
    logged.clear()
    again = ablation.run_grid(TINY, str(tmp_path / "grid"), log=logged.append, **kw)
    assert [r["mpjpe_mm"] for r in again] == [r["mpjpe_mm"] for r in rows]
    assert all("done earlier" in line for line in logged)
    # The same folder with other settings is refused rather than mixed.
    with pytest.raises(ValueError, match="records another run"):
        ablation.run_grid(TINY, str(tmp_path / "grid"), **dict(kw, steps=6))


def test_grid_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="grid must be one of"):
        ablation.run_grid(TINY, str(tmp_path), grid="stacks3")
    with pytest.raises(ValueError, match="unknown losses"):
        ablation.run_grid(TINY, str(tmp_path), losses=["l2"])
    over = ablation.run_overrides((1, 2, 4, 16), ablation.LOSSES["heatmap (MSE) + argmax_local"], 100, 4, None)
    assert over["model.num_stacks"] == 4 and over["eval_every"] == 25 and over["loss.kind"] == "heatmap"
    assert not os.listdir(tmp_path)
