"""The benchmark library and CLI: timing discipline, XLA figures, pipeline and inference sections."""

import json
import statistics
import subprocess
import sys
import time

import numpy as np
import pytest

from c2f_vol import benchmark, camera, config as config_lib
from conftest import REPO

TINY = str(REPO / "configs" / "synthetic_cpu.py:tiny")


def _tiny(**overrides):
    return config_lib.load(TINY, overrides)


SLEEP_S = 0.015  # the known length of the sleeps the timing tests time


def _recording(fn=None):
    """A call that records its own start and end (perf_counter) around `fn`, and the list it records into."""
    spans = []

    def call():
        t0 = time.perf_counter()
        if fn is not None:
            fn(len(spans))
        spans.append((t0, time.perf_counter()))

    return call, spans


def test_time_calls_reports_the_length_of_each_call():
    call, spans = _recording(lambda i: time.sleep(SLEEP_S))
    t0 = time.perf_counter()
    times = benchmark.time_calls(call, steps=7, warmup=1)
    wall = time.perf_counter() - t0
    assert len(times) == 7 and len(spans) == 8
    inner = [end - start for start, end in spans[1:]]  # the timed calls, measured from inside
    # Each reported time encloses the call it times (the call's own clock sits inside the timer) ...
    assert all(t >= i for t, i in zip(times, inner))
    # ... and adds next to nothing to it: it times the call, not the loop around it.
    assert statistics.median(times) == pytest.approx(statistics.median(inner), abs=2e-3)
    # Seconds, of a sleep of known length (sleep never returns early; a loaded machine may overshoot).
    assert SLEEP_S <= statistics.median(times) < SLEEP_S + 0.010
    assert sum(times) + (spans[0][1] - spans[0][0]) <= wall


def test_time_calls_leaves_the_warmup_calls_untimed():
    def slow_first(i):  # like a first call that compiles: the first two are slow
        time.sleep(0.03 if i < 2 else 0.0)

    call, spans = _recording(slow_first)
    times = benchmark.time_calls(call, steps=3, warmup=2)
    assert len(spans) == 5 and len(times) == 3
    assert max(times) < 0.015, times
    # The same function without warm-up: the slow calls are the first two timed ones.
    call, spans = _recording(slow_first)
    times = benchmark.time_calls(call, steps=3, warmup=0)
    assert min(times[:2]) >= 0.03 and times[2] < 0.015, times


@pytest.mark.parametrize("steps, rounds, order, untimed", [
    # rounds=1: warm-up a b, then all of a's timed calls, then all of b's; only call 0 (warm-up) untimed.
    (4, 1, "ab" + "aaaa" + "bbbb", {0}),
    # rounds>1: per round and function one untimed settle call, then that round's block:
    # each function's calls 0 (warm-up), 1 and 4 (settle) are untimed.
    (4, 2, "ab" + ("a" + "aa" + "b" + "bb") * 2, {0, 1, 4}),
    # The steps % rounds left-over call goes to the first block (5 = 3 + 2): calls 0, 1 and 5 untimed.
    (5, 2, "ab" + "a" + "aaa" + "b" + "bbb" + "a" + "aa" + "b" + "bb", {0, 1, 5}),
])
def test_time_interleaved_alternates_blocks_and_times_only_the_block_calls(steps, rounds, order, untimed):
    log = []

    def make(name):
        count = [0]

        def call():  # the calls that should not be timed sleep; the timed ones return at once
            log.append(name)
            if count[0] in untimed:
                time.sleep(0.02)
            count[0] += 1

        return call

    times = benchmark.time_interleaved({"a": make("a"), "b": make("b")}, steps=steps, warmup=1, rounds=rounds)
    assert "".join(log) == order
    assert {k: len(v) for k, v in times.items()} == {"a": steps, "b": steps}
    assert max(max(v) for v in times.values()) < 0.01, times  # none of the sleeping calls was timed


def test_time_interleaved_with_more_rounds_than_steps_still_times_steps_calls():
    times = benchmark.time_interleaved({"a": lambda: None, "b": lambda: None}, steps=2, warmup=0, rounds=4)
    assert {k: len(v) for k, v in times.items()} == {"a": 2, "b": 2}


@pytest.mark.parametrize("steps, warmup, rounds", [(0, 0, 1), (-1, 0, 1), (1, -1, 1), (1, 0, 0)])
def test_timing_rejects_invalid_arguments_before_calling(steps, warmup, rounds):
    calls = []
    with pytest.raises(ValueError, match="steps >= 1, warmup >= 0 and rounds >= 1"):
        benchmark.time_interleaved({"a": lambda: calls.append(1)}, steps, warmup, rounds)
    if rounds == 1:
        with pytest.raises(ValueError, match="steps >= 1"):
            benchmark.time_calls(lambda: calls.append(1), steps, warmup)
    assert calls == []


def test_summary_of_hand_made_times():
    s = benchmark._summary([0.4, 0.1, 0.3, 0.2], batch=8)
    # The median of an even count is the mean of the middle two; images/s is the batch over it.
    assert s == pytest.approx({"median_s": 0.25, "min_s": 0.1, "max_s": 0.4, "n": 4, "images_per_sec": 32.0})
    # One stalled step moves max, not the median nor images/s.
    s = benchmark._summary([0.1, 5.0, 0.1], batch=4)
    assert s["median_s"] == pytest.approx(0.1) and s["max_s"] == 5.0 and s["images_per_sec"] == pytest.approx(40.0)
    with pytest.raises(ValueError):  # statistics.StatisticsError: no timed call, no row
        benchmark._summary([], batch=4)


def test_summarize_ratios_of_hand_made_rows():
    train = {"images_per_sec": 100.0}
    pipe = [{"threads": 2, "images_per_sec_per_thread": 40.0}, {"threads": 1, "images_per_sec_per_thread": 50.0}]
    infer = [{"runtime": "jax", "batch_size": 32, "images_per_sec": 200.0},
             {"runtime": "savedmodel", "batch_size": 32, "images_per_sec": 170.0},
             {"runtime": "jax", "batch_size": 1, "images_per_sec": 10.0},  # no SavedModel row at batch 1
             {"runtime": "savedmodel", "batch_size": 4, "images_per_sec": 30.0},  # no JAX row at batch 4
             {"runtime": "savedmodel", "batch_size": 2, "images_per_sec": 30.0},
             {"runtime": "jax", "batch_size": 2, "images_per_sec": 20.0}]
    s = benchmark.summarize(train, pipe, infer, host_cores=16)
    # The per-thread rate at the fewest threads (50, not 40) x 16 cores / 100 images/s; SavedModel over JAX
    # only at batch sizes that have both.
    assert s == pytest.approx({"section": "summary", "pipeline_over_train_projected": 8.0, "projected_host_cores": 16,
                               "savedmodel_over_jax_b2": 1.5, "savedmodel_over_jax_b32": 0.85})
    assert benchmark.summarize(train, pipe, [], host_cores=4)["pipeline_over_train_projected"] == pytest.approx(2.0)
    # No train row: no projection, the inference ratios alone.
    assert benchmark.summarize(None, pipe, infer).keys() == {"section", "savedmodel_over_jax_b2",
                                                             "savedmodel_over_jax_b32"}
    assert benchmark.summarize(train, [], infer[:1]) is None
    assert benchmark.summarize(None, [], []) is None


def test_format_table_prints_one_line_per_measured_row():
    train = {"section": "train", "batch_size": 16, "dtype": "bfloat16", "devices": 2, "images_per_sec": 1280.0,
             "median_s": 0.0125, "min_s": 0.012, "max_s": 0.0131, "compile_s": 3.4, "flops_per_step": 2.5e11,
             "tflops_per_sec": 20.0, "utilisation": 0.25, "device_peak_bytes": None,
             "memory_plan_bytes_per_device": {"total": 3 * 2**29}}
    no_xla = {**train, "flops_per_step": None, "tflops_per_sec": None, "utilisation": None,
              "memory_plan_bytes_per_device": {}, "device_peak_bytes": 2**30}
    pipe = {"section": "pipeline", "batch_size": 16, "threads": 2, "images_per_sec": 300.0,
            "images_per_sec_per_thread": 150.0, "source": "in memory"}
    infer = {"section": "inference", "batch_size": 1, "runtime": "savedmodel", "images_per_sec": 50.0,
             "latency_ms": 20.0, "min_s": 0.0195, "max_s": 0.0225}
    summary = {"section": "summary", "savedmodel_over_jax_b1": 0.8512}
    lines = benchmark.format_table([{"section": "environment", "jax": "x"}, train, no_xla, pipe, infer,
                                    summary]).splitlines()
    assert len(lines) == 5  # the environment row is not a measurement
    assert lines[0].split()[:2] == ["train", "batch"]
    for text in ("1280.0 img/s", "step     12.5 ms (min 12.0, max 13.1)", "compile 3.4 s", "250.0 GFLOP/step",
                 "20.000 TFLOP/s", "util 25.0%", "mem 1.50 GiB", "x2 dev"):
        assert text in lines[0], (text, lines[0])
    # Figures XLA did not give print as '-'; the device's peak memory wins over the plan.
    for text in ("- GFLOP/step", "- TFLOP/s", "util -", "mem 1.00 GiB"):
        assert text in lines[1], (text, lines[1])
    assert "300.0 img/s" in lines[2] and "(150.0 per thread; in memory)" in lines[2]
    assert "savedmodel" in lines[3] and "latency    20.00 ms (min 19.50, max 22.50)" in lines[3]
    assert lines[4] == "summary   savedmodel_over_jax_b1 0.85"


@pytest.mark.slow  # compiles and times a real step (~20 s; minutes on AVX2)
def test_train_step_figures_come_from_the_compiled_step():
    rows, walls = [], []
    for b, peak in ((2, 0.5), (4, 0.0)):
        t0 = time.perf_counter()
        rows.append(benchmark.benchmark_train(_tiny(batch_size=b), steps=2, warmup=1, peak_tflops=peak))
        walls.append(time.perf_counter() - t0)
    for r, wall in zip(rows, walls):
        # The compile and the timed steps happened inside the call (in seconds, not ms).
        assert r["n"] == 2 and 0 < r["compile_s"] + r["n"] * r["min_s"] < wall
        assert r["flops_per_step"] > 0 and r["tflops_per_sec"] > 0 and r["memory_plan_bytes_per_device"]["total"] > 0
        assert r["params"] > 1000 and r["dtype"] == "float32"
    # Utilisation needs the device's peak: without one there is none.
    assert rows[0]["utilisation"] > 0 and rows[0]["peak_tflops"] == 0.5
    assert rows[1]["utilisation"] is None and rows[1]["peak_tflops"] is None
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

    from c2f_vol.data import data_config, stand_ins

    size, margin = data_config.STORED_CROP_SIZE, data_config.STORED_BOX_MARGIN  # what the builder stores
    crops, what = stand_ins.stand_in_examples("human36m", 2, seed=1)
    assert f"{size}x{size} person crops (box margin {margin})" in what
    for ex in crops.as_numpy_iterator():
        assert tf.io.decode_jpeg(ex["image"]).shape == (size, size, 3)
        # The builder's box: the joints' larger extent is 1 / box_margin of the side, centred.
        lo, hi = ex["joints_2d"].min(0), ex["joints_2d"].max(0)
        assert (hi - lo).max() == pytest.approx(size / margin, rel=1e-3)
        np.testing.assert_allclose((lo + hi) / 2, [(size - 1) / 2] * 2, atol=0.05)
        # The crop's intrinsics still project the 3D joints onto the 2D joints (the renderer has no distortion).
        np.testing.assert_allclose(camera.project(ex["joints_3d"], ex["intrinsics"]), ex["joints_2d"], atol=0.05)
    frames, what = stand_ins.stand_in_examples("c2f_synthetic/tiny", 1)
    assert "96x96 frames" in what and tf.io.decode_jpeg(next(iter(frames))["image"]).shape == (96, 96, 3)
    with pytest.raises(ValueError, match="no config named 'huge'.*procedural"):
        stand_ins.stand_in_examples("c2f_synthetic/huge", 1)
    with pytest.raises(ValueError, match="frame_size"):
        stand_ins.stand_in_examples("coco", 1)


@pytest.mark.slow  # exports and reloads a SavedModel to time it
def test_inference_times_jax_and_the_reloaded_savedmodel():
    t0 = time.perf_counter()
    rows = benchmark.benchmark_inference(_tiny(), batch_sizes=(1, 3), steps=2, warmup=1)
    wall = time.perf_counter() - t0
    assert [(r["runtime"], r["batch_size"]) for r in rows] == [("jax", 1), ("savedmodel", 1), ("jax", 3),
                                                               ("savedmodel", 3)]
    # Every row's timed calls ran inside the call (in seconds); the latency is in ms, within the call times.
    assert 0 < sum(r["n"] * r["min_s"] for r in rows) < wall
    for r in rows:
        assert r["n"] == 2 and r["min_s"] <= r["latency_ms"] / 1000 <= r["max_s"]


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


def _trace_a_jitted_function(trace_dir):
    import jax
    import jax.numpy as jnp

    f = jax.jit(lambda x: jnp.tanh(x @ x.T).sum())
    x = jnp.ones((128, 128))
    f(x).block_until_ready()
    with jax.profiler.trace(str(trace_dir)):
        for _ in range(3):
            f(x).block_until_ready()


def test_profile_summary_reads_the_trace_without_tensorflow(tmp_path, monkeypatch):
    _trace_a_jitted_function(tmp_path)
    s = benchmark.profile_summary(str(tmp_path), top=3, steps=3)
    # A CPU backend has no device plane: the host's XLA threads are read.
    assert s["section"] == "profile" and s["source"] == "host" and s["trace"].endswith(".xplane.pb")
    assert 1 <= len(s["top_ops"]) <= 3 and s["total_ms"] > 0
    assert s["per_step_ms"] == pytest.approx(s["total_ms"] / 3)
    ops = s["top_ops"]
    assert all(a["total_ms"] >= b["total_ms"] for a, b in zip(ops, ops[1:]))  # most time first
    assert all(op["count"] >= 1 and 0 < op["share"] <= 1 for op in ops)
    assert not any(op["name"].startswith(("ThunkExecutor", "ThreadpoolListener")) for op in ops)
    # Where jax.profiler.ProfileData is missing, the trace-viewer JSON beside the protobuf gives the same ops.
    monkeypatch.setattr(benchmark.jax.profiler, "ProfileData", None)
    from_json = benchmark.profile_summary(str(tmp_path), top=3, steps=3)
    assert from_json["trace"].endswith(".trace.json.gz")
    assert [op["name"] for op in from_json["top_ops"]] == [op["name"] for op in ops]
    assert from_json["total_ms"] == pytest.approx(s["total_ms"], rel=0.01)
    text = benchmark.format_table([s])
    assert text.splitlines()[0].startswith("profile   host time") and ops[0]["name"] in text
    with pytest.raises(FileNotFoundError, match="no jax.profiler trace"):
        benchmark.profile_summary(str(tmp_path / "empty"))


def test_inference_runtimes_are_checked_before_any_work():
    for bad in ((), ("jax", "onnx")):
        with pytest.raises(ValueError, match="runtimes"):
            benchmark.benchmark_inference(_tiny(), runtimes=bad)


@pytest.mark.slow  # compiles the tiny model's step and its inference at two batch sizes
def test_train_reports_its_compiled_figures_early_and_inference_runs_jax_alone():
    seen = []
    row = benchmark.benchmark_train(_tiny(batch_size=2), steps=1, warmup=1, on_compiled=seen.append)
    assert len(seen) == 1 and "median_s" not in seen[0]  # called before any step was timed
    assert {k: row[k] for k in seen[0]} == seen[0] and seen[0]["compile_s"] > 0
    assert row["arch"] == "uniform" and row["loss"] == "both" and row["backend"] == "cpu"
    rows = benchmark.benchmark_inference(_tiny(), batch_sizes=(1, 2), steps=2, warmup=1, runtimes=("jax",))
    assert [(r["runtime"], r["batch_size"]) for r in rows] == [("jax", 1), ("jax", 2)]
    assert all(r["compile_s"] > 0 and r["images_per_sec"] > 0 and r["dtype"] == "float32" for r in rows)


_GPU_XSPACE = '''
planes {
  id: 1
  name: "/device:GPU:0"
  lines {
    id: 1
    name: "Stream #13(Compute)"
    timestamp_ns: 1000
    events { metadata_id: 1 offset_ps: 0 duration_ps: 5000000 stats { metadata_id: 1 str_value: "convolution.2" } }
    events { metadata_id: 2 offset_ps: 6000000 duration_ps: 1000000 stats { metadata_id: 1 str_value: "fusion.1" } }
    events { metadata_id: 1 offset_ps: 8000000 duration_ps: 3000000 stats { metadata_id: 1 str_value: "convolution.2" } }
    events { metadata_id: 4 offset_ps: 12000000 duration_ps: 2000000 stats { metadata_id: 1 str_value: "convolution.7" } }
  }
  lines {
    id: 2
    name: "XLA Modules"
    timestamp_ns: 1000
    events { metadata_id: 3 offset_ps: 0 duration_ps: 14000000 }
  }
  event_metadata { key: 1 value { id: 1 name: "sm90_xmma_fprop_implicit_gemm_bf16" } }
  event_metadata { key: 2 value { id: 2 name: "loop_add_fusion" } }
  event_metadata { key: 3 value { id: 3 name: "jit__train_step" } }
  event_metadata { key: 4 value { id: 4 name: "sm90_xmma_dgrad_implicit_gemm_bf16" } }
  stat_metadata { key: 1 value { id: 1 name: "hlo_op" } }
}
planes {
  id: 2
  name: "/host:CPU"
  lines { id: 3 name: "python" timestamp_ns: 1000 events { metadata_id: 1 offset_ps: 0 duration_ps: 90000000 } }
  event_metadata { key: 1 value { id: 1 name: "train_step" } }
}
'''


def test_profile_summary_reads_a_gpus_kernels_by_hlo_op(tmp_path):
    """A trace shaped like a GPU's (the kernels on stream lines, each naming its HLO op): ops are summed
    over their kernels, kernels by name, the derived module line and the host left out."""
    import jax

    run = tmp_path / "plugins" / "profile" / "2026_12_01"
    run.mkdir(parents=True)
    (run / "gpu.xplane.pb").write_bytes(jax.profiler.ProfileData.text_proto_to_serialized_xspace(_GPU_XSPACE))
    s = benchmark.profile_summary(str(tmp_path), top=10, steps=2)
    assert s["source"] == "device" and s["total_ms"] == pytest.approx(0.011)
    assert s["per_step_ms"] == pytest.approx(0.0055)
    assert [(op["name"], op["count"]) for op in s["top_ops"]] == [("convolution.2", 2), ("convolution.7", 1),
                                                                   ("fusion.1", 1)]
    assert s["top_ops"][0]["total_ms"] == pytest.approx(0.008) and s["top_ops"][0]["share"] == pytest.approx(8 / 11)
    assert s["top_ops"][0]["detail"] == "sm90_xmma_fprop_implicit_gemm_bf16"  # a kernel of the op
    assert [k["name"] for k in s["top_kernels"]] == ["sm90_xmma_fprop_implicit_gemm_bf16",
                                                     "sm90_xmma_dgrad_implicit_gemm_bf16", "loop_add_fusion"]
    assert s["lines"] == {"/device:GPU:0 | Stream #13(Compute)": 4, "/device:GPU:0 | XLA Modules": 1}
