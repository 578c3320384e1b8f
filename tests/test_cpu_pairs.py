"""benchmarks/cpu_pairs.py: its refusal without torch, and (with torch) a run of the tiny config."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

SCRIPT = REPO / "benchmarks" / "cpu_pairs.py"
BLOCKER = REPO / "benchmarks" / "blocked_imports"


# Run as a script only: it defines absl flags (--config, --steps, ...) that torch_reference.py, loaded in
# process by test_gpu_script.py, defines too.
HAVE_TORCH = importlib.util.find_spec("torch") is not None


def _run(tmp_path, *args, env=None):
    return subprocess.run([sys.executable, str(SCRIPT), "--config=configs/synthetic_cpu.py:tiny", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=600, env=env)


def test_without_torch_it_says_how_to_get_it(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(BLOCKER), C2F_BLOCK_IMPORTS="torch")
    proc = _run(tmp_path, "--pairs=1", "--steps=1", env=env)
    assert proc.returncode != 0
    assert "torch is not importable" in proc.stderr and "PYTHONPATH" in proc.stderr


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_TORCH,
                    reason="torch is not importable here (put a torch install on PYTHONPATH, e.g. /tmp/torchpkgs)")
def test_two_pairs_of_the_tiny_config_time_both_torch_layouts_by_default(tmp_path):
    out = tmp_path / "pairs.json"
    proc = _run(tmp_path, "--pairs=2", "--steps=2", "--warmup=1", "--torch_warmup=1", "--pause_s=0",
                f"--output={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert len(result["pairs"]) == 2 and result["batch_size"] == 4 and result["dtype"] == "float32"
    assert result["torch_layouts"] == ["channels_last", "nchw"]
    for pair in result["pairs"]:
        assert pair["jax_images_per_sec"] > 0 and pair["torch_images_per_sec"] > 0
        assert pair["ratio"] == pytest.approx(pair["torch_step_s"] / pair["jax_step_s"])
        sides = pair["torch_by_layout"]
        assert set(sides) == {"channels_last", "nchw"}
        assert sides["channels_last"]["channels_last"] and not sides["nchw"]["channels_last"]  # what torch ran
        # The pair's own ratio is against the faster layout, so it is the smaller of the two.
        assert pair["torch_step_s"] == min(side["torch_step_s"] for side in sides.values())
        assert pair["ratio"] == min(side["ratio"] for side in sides.values())
        assert sides[pair["torch_layout"]]["torch_step_s"] == pair["torch_step_s"]
    for name in ("channels_last", "nchw"):
        assert result["median_ratio_by_layout"][name] > 0
        assert f"| `synthetic_cpu.py:tiny`, batch 4, float32 | {result['cpu']['class']} | 2 | {name} |" in proc.stdout
    assert "| the faster layout of each pair |" in proc.stdout
    assert result["cpu"]["class"] in ("AVX-512", "AVX2", "other", "unknown")
