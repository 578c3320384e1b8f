"""The benchmark library and CLI: timing discipline, XLA figures, pipeline and inference sections."""

import json
import subprocess
import sys

import numpy as np
import pytest

from c2f_vol import benchmark, camera, config as config_lib
from conftest import REPO

TINY = str(REPO / "configs" / "synthetic_cpu.py:tiny")


def _tiny(**overrides):
    return config_lib.load(TINY, overrides)


def test_time_interleaved_alternates_blocks_after_warmup():
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "ab"}
    times = benchmark.time_interleaved(fns, steps=4, warmup=1, rounds=2)
    assert {k: len(v) for k, v in times.items()} == {"a": 4, "b": 4}
    assert all(t >= 0 for v in times.values() for t in v)
    # warm-up a b, then per round: a (untimed settle), a a, b (settle), b b.
    assert "".join(calls) == "ab" + "aaabbb" * 2
    assert len(benchmark.time_calls(lambda: None, 3, 0)) == 3
    with pytest.raises(ValueError, match="steps >= 1"):
        benchmark.time_calls(lambda: None, 0, 0)


def test_summary_ratios():
    train = {"images_per_sec": 100.0}
    pipe = [{"threads": 2, "images_per_sec_per_thread": 40.0}, {"threads": 1, "images_per_sec_per_thread": 50.0}]
    infer = [{"runtime": "jax", "batch_size": 32, "images_per_sec": 200.0},
             {"runtime": "savedmodel", "batch_size": 32, "images_per_sec": 170.0},
             {"runtime": "jax", "batch_size": 1, "images_per_sec": 10.0}]
    s = benchmark.summarize(train, pipe, infer, host_cores=16)
    # The per-thread rate at the fewest threads (50) x 16 cores / 100 images/s.
    assert s["pipeline_over_train_projected"] == pytest.approx(8.0)
    assert s["savedmodel_over_jax_b32"] == pytest.approx(0.85)
    assert "savedmodel_over_jax_b1" not in s
    assert benchmark.summarize(None, [], []) is None


@pytest.mark.slow  # compiles and times a real step (~20 s; minutes on AVX2)
def test_train_step_figures_come_from_the_compiled_step():
    rows = [benchmark.benchmark_train(_tiny(batch_size=b), steps=2, warmup=1, peak_tflops=0.5) for b in (2, 4)]
    for r in rows:
        assert r["images_per_sec"] > 0 and r["min_s"] <= r["median_s"] <= r["max_s"] and r["compile_s"] > 0
        assert r["flops_per_step"] > 0 and r["memory_plan_bytes_per_device"]["total"] > 0
        assert r["utilisation"] == pytest.approx(r["tflops_per_sec"] / (0.5 * r["devices"]))
        assert r["params"] > 1000 and r["dtype"] == "float32"
    # XLA's count grows with the batch: the convolutions dominate, the optimiser update is per step.
    assert 1.6 < rows[1]["flops_per_step"] / rows[0]["flops_per_step"] <= 2.0
    assert "train" in benchmark.format_table(rows) and "GFLOP/step" in benchmark.format_table(rows)


def test_pipeline_reads_the_prepared_dataset_or_renders_frames(tiny_dataset, tmp_path):
    prepared = benchmark.benchmark_pipeline(
        _tiny(**{"data.data_dir": str(tiny_dataset), "data.name": "c2f_synthetic/tiny"}), threads=1, batches=3)
    assert "c2f_synthetic/tiny" in prepared["source"] and prepared["images_per_sec"] > 0
    rendered = benchmark.benchmark_pipeline(_tiny(**{"data.data_dir": str(tmp_path)}), threads=2, batches=3,
                                            frame_size=96, num_examples=4)
    assert "synthetic 96x96" in rendered["source"]
    assert rendered["images_per_sec_per_thread"] == pytest.approx(rendered["images_per_sec"] / 2)
    with pytest.raises(ValueError, match="threads"):
        benchmark.benchmark_pipeline(_tiny(), threads=0)


def test_stand_ins_are_shaped_like_the_stored_dataset():
    import tensorflow as tf

    crops, what = benchmark.stand_in_examples("human36m", 2, seed=1)
    assert "256x256 person crops" in what
    for ex in crops.as_numpy_iterator():
        assert tf.io.decode_jpeg(ex["image"]).shape == (256, 256, 3)
        # The builder's box: the joints' larger extent is 1 / (1 + 2 * 0.25) of the side, centred.
        lo, hi = ex["joints_2d"].min(0), ex["joints_2d"].max(0)
        assert (hi - lo).max() == pytest.approx(256 / 1.5, rel=1e-3)
        np.testing.assert_allclose((lo + hi) / 2, [127.5, 127.5], atol=0.05)
        # The crop's intrinsics still project the 3D joints onto the 2D joints (the renderer has no distortion).
        np.testing.assert_allclose(camera.project(ex["joints_3d"], ex["intrinsics"]), ex["joints_2d"], atol=0.05)
    frames, what = benchmark.stand_in_examples("c2f_synthetic/tiny", 1)
    assert "96x96 frames" in what and tf.io.decode_jpeg(next(iter(frames))["image"]).shape == (96, 96, 3)
    with pytest.raises(ValueError, match="no config named 'huge'.*procedural"):
        benchmark.stand_in_examples("c2f_synthetic/huge", 1)
    with pytest.raises(ValueError, match="frame_size"):
        benchmark.stand_in_examples("coco", 1)


@pytest.mark.slow  # exports and reloads a SavedModel to time it
def test_inference_times_jax_and_the_reloaded_savedmodel():
    rows = benchmark.benchmark_inference(_tiny(), batch_sizes=(1, 3), steps=2, warmup=1)
    assert [(r["runtime"], r["batch_size"]) for r in rows] == [("jax", 1), ("savedmodel", 1), ("jax", 3),
                                                               ("savedmodel", 3)]
    for r in rows:
        assert r["images_per_sec"] == pytest.approx(r["batch_size"] / r["median_s"])
        assert r["latency_ms"] == pytest.approx(1000 * r["median_s"])


@pytest.mark.slow
def test_benchmark_cli_writes_every_section(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "benchmark.py"), f"--config={TINY}", "--steps=2", "--warmup=1",
         "--threads=1", "--pipeline_batches=2", "--frame_size=96", "--inference_batch_sizes=1,2",
         "--dtype=bfloat16", "--peak_tflops=1", f"--config.data.data_dir={tmp_path}", f"--output={out}"],
        cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.load(open(out))
    sections = [r["section"] for r in rows]
    assert sections[0] == "environment" and sections.count("train") == 1 and "pipeline" in sections
    assert sections.count("inference") == 4 and sections[-1] == "summary"
    train = rows[sections.index("train")]
    assert train["dtype"] == "bfloat16" and train["utilisation"] > 0
    assert "pipeline_over_train_projected" in rows[-1] and "savedmodel_over_jax_b2" in rows[-1]
    assert "img/s" in proc.stdout
    bad = subprocess.run([sys.executable, str(REPO / "tools" / "benchmark.py"), f"--config={TINY}",
                          "--sections=train,bogus"], cwd=REPO, capture_output=True, text=True)
    assert bad.returncode != 0 and "bogus" in bad.stderr
