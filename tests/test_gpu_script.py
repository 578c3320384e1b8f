"""benchmarks/gpu.sh and gpu_bench.py on the CPU (so the GPU run works the first time a GPU is there):
the row plan, the deadline, the report, the PyTorch twin against c2f_vol, and one whole run with
TensorFlow, OpenCV and tensorflow-datasets made unimportable."""

import importlib.util
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO

BENCH = REPO / "benchmarks"
SHIM = BENCH / "blocked_imports"  # its sitecustomize makes tensorflow, tensorflow_datasets and cv2 look absent
TINY = "configs/synthetic_cpu.py:tiny"
# The tiny config as the paper model's rows run it: the released arch, the heatmap loss, the paper's targets.
TINY_PAPER = ["model.arch=released", "loss.kind=heatmap", "codec.target=paper"]
HAVE_TORCH = importlib.util.find_spec("torch") is not None
NO_TORCH = "torch is not importable here (put a torch install on PYTHONPATH, e.g. PYTHONPATH=/tmp/torchpkgs)"


def _load(name: str):
    """A benchmarks/ script as a module, loaded once per process (torch_reference defines absl flags)."""
    key = f"_c2f_benchmarks_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


gpu_bench = _load("gpu_bench")  # imports neither JAX nor torch


def _shim_env(**extra) -> dict:
    """The environment of a child that cannot import tensorflow, tensorflow_datasets or cv2."""
    path = [str(SHIM), str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(path), **extra)


def test_plan_runs_the_paper_bf16_b64_pair_and_its_profile_first():
    jobs = gpu_bench.plan(gpu_bench.parse_args([]))
    keys = [(j.kind, j.model, j.dtype, j.batch_size) for j in jobs]
    assert keys[:3] == [("train", "paper", "bfloat16", 64), ("torch_train", "paper", "bfloat16", 64),
                        ("inference", "paper", "config", None)]
    assert [j.profile for j in jobs].count(True) == 1 and jobs[0].profile
    # Every (model, dtype, batch) once for each runtime; bf16 rows before float32, batch 64 before 32.
    for kind in ("train", "torch_train"):
        rows = [k[1:] for k in keys if k[0] == kind]
        assert sorted(rows) == sorted((m, d, b) for m in ("paper", "integral") for d in ("bfloat16", "float32")
                                      for b in (64, 32))
        assert [r[1] for r in rows] == ["bfloat16"] * 4 + ["float32"] * 4
        assert [r[2] for r in rows[:4]] == [64, 64, 32, 32]
    assert len(keys) == 17
    # The same construction at other flags: the first pair, then inference.
    small = gpu_bench.plan(gpu_bench.parse_args(["--models=integral", "--dtypes=float32", "--batch_sizes=2",
                                                 "--profile_steps=0"]))
    assert [(j.kind, j.model) for j in small] == [("train", "integral"), ("torch_train", "integral"),
                                                  ("inference", "integral")]
    assert not any(j.profile for j in small)
    with pytest.raises(SystemExit):
        gpu_bench.parse_args(["--dtypes=float16"])


_HANGS_AFTER_COMPILING = ("import json, sys, time; json.dump({'section': 'train', 'status': 'compiled', "
                          "'compile_s': 1.5}, open(sys.argv[1], 'w')); time.sleep(60)")


def test_the_deadline_kills_a_running_row_and_skips_what_cannot_fit(tmp_path, monkeypatch):
    monkeypatch.delenv("C2F_BENCH_T0", raising=False)
    args = gpu_bench.parse_args([f"--work_dir={tmp_path}", f"--out_dir={tmp_path / 'out'}", "--deadline_s=4",
                                 "--torch=off", "--models=paper", "--dtypes=float32", "--batch_sizes=2",
                                 '--estimate_s={"train": 1, "inference": 100}'])
    run = gpu_bench.Run(args)
    # A JAX child that compiles, then never finishes its timed steps.
    monkeypatch.setattr(run, "_jax_command", lambda job, result: [sys.executable, "-c", _HANGS_AFTER_COMPILING,
                                                                  result])
    t0 = time.time()
    report = run.run()
    assert time.time() - t0 < 15  # killed at the deadline, not after the child's 60 s
    rows = {r["section"]: r for r in report["rows"]}
    train = rows["train"]
    assert train["status"] == "killed" and "deadline" in train["reason"] and "timed steps" in train["reason"]
    assert train["compile_s"] == 1.5  # what the row measured before it was killed is kept
    assert rows["torch_train"]["status"] == "skipped" and "--torch=off" in rows["torch_train"]["reason"]
    assert rows["inference"]["status"] == "skipped" and "not started" in rows["inference"]["reason"]
    # The outputs exist and say why each row is missing.
    saved = json.loads((tmp_path / "out" / "gpu_bench.json").read_text())
    assert [r["status"] for r in saved["rows"]] == ["killed", "skipped", "skipped"]
    table = (tmp_path / "out" / "gpu_bench.md").read_text()
    assert "Not measured:" in table and "killed at the 4 s deadline" in table
    assert saved["targets"] is None  # no bfloat16 paper row was planned


def _report():
    env = {"device_kind": "NVIDIA H200", "packages": {"jax": "0.11.2", "flax": "0.12.8", "torch": "2.11.0"},
           "steps": 10, "warmup": 2, "peak_tflops": 989.0, "peak_tflops_float32": 989.0,
           "started": "2026-12-01T00:00:00+00:00"}
    train = {"section": "train", "status": "ok", "model": "paper", "dtype": "bfloat16", "batch_size": 64,
             "images_per_sec": 800.0, "median_s": 0.08, "min_s": 0.079, "max_s": 0.0815, "compile_s": 41.25,
             "flops_per_step": 3.14e13, "tflops_per_sec": 392.5, "utilisation": 0.397, "model_utilisation": 0.265,
             "device_peak_bytes": 40 * 2**30,
             "memory_plan_bytes_per_device": {"total": 39 * 2**30}}
    torch_row = {"section": "torch_train", "status": "ok", "model": "paper", "dtype": "bfloat16", "batch_size": 64,
                 "images_per_sec": 500.0, "step_time_s": {"median": 0.128}, "peak_allocated_bytes": 50 * 2**30}
    skipped = {"section": "train", "status": "skipped", "model": "integral", "dtype": "float32", "batch_size": 32,
               "reason": "not started: 10 s left"}
    infer = {"section": "inference", "status": "ok", "model": "paper", "dtype": "config",
             "rows": [{"batch_size": 1, "dtype": "bfloat16", "images_per_sec": 150.0, "latency_ms": 6.667,
                       "min_s": 0.0066, "max_s": 0.0070, "compile_s": 12.0}]}
    profile = {"section": "profile", "status": "ok", "model": "paper", "dtype": "bfloat16", "batch_size": 64,
               "source": "device", "steps": 3, "total_ms": 240.0,
               "top_ops": [{"name": "fusion.12", "total_ms": 30.0, "count": 3, "share": 0.125, "detail": "a | b"}]}
    rows = [train, torch_row, infer, profile, skipped]
    args = gpu_bench.parse_args([])
    return gpu_bench.build_report(env, rows, args)


def test_the_report_pairs_jax_and_torch_and_checks_the_targets():
    report = _report()
    assert report["comparisons"] == [{"model": "paper", "dtype": "bfloat16", "batch_size": 64,
                                      "jax_images_per_sec": 800.0, "torch_images_per_sec": 500.0,
                                      "jax_over_torch": 1.6}]
    t = report["targets"]
    assert t["row"] == "paper bfloat16 batch 64" and t["utilisation_met"] is False and t["jax_over_torch_met"] is True
    lines = gpu_bench.format_tables(report).splitlines()
    assert lines[0].startswith("c2f_vol GPU benchmark: NVIDIA H200; jax 0.11.2, flax 0.12.8, torch 2.11.0;")
    header = ("| model | dtype | batch | JAX img/s | step ms median (min–max) | compile s | GFLOP/step | TFLOP/s "
              "| util | MFU | peak GiB | torch img/s | torch step ms | torch peak GiB | JAX / torch |")
    i = lines.index(header)
    assert lines[i + 2] == ("| paper | bf16 | 64 | 800.0 | 80.0 (79.0–81.5) | 41.2 | 31,400 | 392.5 | 39.7% | 26.5% "
                            "| 40.0 | 500.0 | 128.0 | 50.0 | 1.60× |")
    assert lines[i + 3] == "| integral | f32 | 32 | skipped | – | – | – | – | – | – | – | – | – | – | – |"
    assert "| paper | bf16 | 1 | 150.0 | 6.67 (6.60–7.00) | 12.0 |" in lines
    assert "| 1 | `fusion.12` | 10.00 | 12.5% | 3 | a / b |" in lines
    text = "\n".join(lines)
    assert ("utilisation 39.7% of XLA's FLOPs (target ≥ 40%: NOT met; of the model FLOPs 26.5%); JAX / torch 1.60× "
            "(target ≥ 1.5×: met)") in text
    assert "- JAX integral f32 b32: skipped: not started: 10 s left" in text


def test_train_step_and_inference_import_without_tensorflow_opencv_or_tfds():
    code = ("import importlib.util, sys\n"
            "from c2f_vol import benchmark, config, inference, sharding, train\n"
            "loaded = sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'tensorflow_datasets', 'cv2'})\n"
            "assert not loaded, loaded\n"
            "assert importlib.util.find_spec('tensorflow') is None\n"
            "try:\n    import cv2\nexcept ModuleNotFoundError:\n    print('blocked')\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_shim_env(), capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "blocked", proc.stderr[-3000:]


# ---------------------------------------------------------------------------
# The PyTorch twin against c2f_vol (torch only where it is importable).


def _torch_codec(codec) -> dict:
    return {"input_size": codec.input_size, "heatmap_size": list(codec.heatmap_size),
            "depth_bins": list(codec.depth_bins), "depth_range_mm": codec.depth_range_mm, "sigma": codec.sigma,
            "sigma_z_min": codec.sigma_z_min, "target": codec.target, "paper_window": codec.paper_window}


@pytest.mark.skipif(not HAVE_TORCH, reason=NO_TORCH)
@pytest.mark.parametrize("kind, mix, target, bins", [
    ("heatmap", "js", "paper", (1, 2, 4, 16)),      # configs/h36m_paper.py's loss and targets
    ("both", "js", "continuous", (1, 2, 4, 16)),    # configs/h36m_integral.py's
    ("integral", "js", "continuous", (2, 16)),
    ("both", "mse", "paper", (2, 16)),
])
def test_torch_losses_are_c2f_vols(kind, mix, target, bins):
    import torch

    from c2f_vol import config as config_lib, losses
    from c2f_vol.codec import VolumeCodec

    ref = _load("torch_reference")
    c = config_lib.load(str(REPO / TINY), {
        "codec.depth_bins": bins, "codec.heatmap_size": (16, 16), "codec.input_size": 64, "codec.target": target,
        "model.num_stacks": len(bins), "loss.kind": kind, "loss.mix_heatmap": mix, "loss.heatmap_weight": 0.7,
        "loss.stack_weights": tuple(0.5 + i for i in range(len(bins)))})
    codec = VolumeCodec.for_experiment(c)
    rng = np.random.default_rng(3)
    b = 3
    # Logits shaped like a trained model's (peaks) and joints in and outside the crop; one sample is padding.
    logits = [rng.normal(0, 1.5, (b, 17, d, 16, 16)).astype(np.float32) for d in bins]
    joints = rng.uniform(-4, 68, (b, 17, 2)).astype(np.float32)
    depth = rng.uniform(-1100, 1100, (b, 17)).astype(np.float32)
    mask = np.array([1.0, 0.0, 1.0], np.float32)
    want, _ = losses.compute_loss(logits, {"joints_uv": joints, "depth_rel_mm": depth, "mask": mask}, codec, c.loss)
    got = ref.compute_loss([torch.from_numpy(x) for x in logits], torch.from_numpy(joints), torch.from_numpy(depth),
                           torch.from_numpy(mask), _torch_codec(codec), c.loss.to_dict())
    assert float(got) == pytest.approx(float(want), rel=2e-6)
    # Its Gaussian targets are the codec's, voxel for voxel.
    coords = codec.encode(joints, depth)
    for level in range(len(bins)):
        np.testing.assert_allclose(ref.gaussian_targets(torch.from_numpy(np.asarray(coords[level])), level,
                                                        _torch_codec(codec)).numpy(),
                                   np.asarray(codec.gaussian_targets(coords[level], level)), atol=1e-6)


def _random_flax_model(c, codec, seed: int = 1):
    """The config's Flax model with random values in every parameter and statistic (biases, BatchNorm
    scales, shifts and running statistics too, so that each of them is checked; quicker than Flax's
    initialisers)."""
    import jax
    from flax import nnx

    from c2f_vol import model

    graphdef, state = nnx.split(nnx.eval_shape(lambda: model.create_model(c.model, codec)))
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = [str(p.key) for p in path if hasattr(p, "key")][-1]
        if name == "kernel":
            return (rng.normal(0.0, 1.0, leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1]))).astype(np.float32)
        if name in ("scale", "var"):
            return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
        return rng.normal(0.0, 0.1, leaf.shape).astype(np.float32)  # bias, mean

    return nnx.merge(graphdef, jax.tree_util.tree_map_with_path(fill, state))


@pytest.mark.skipif(not HAVE_TORCH, reason=NO_TORCH)
@pytest.mark.parametrize("overrides", [TINY_PAPER, []], ids=["released", "uniform"])
def test_torch_network_is_the_flax_model(overrides):
    """Same parameter names, shapes and count, and with the Flax weights the same logits, with BatchNorm's
    running statistics and with the batch's."""
    import jax
    import torch
    from flax import nnx

    from c2f_vol import config as config_lib, model
    from c2f_vol.codec import VolumeCodec

    ref = _load("torch_reference")
    c = config_lib.load(str(REPO / TINY), dict(o.split("=") for o in overrides))
    codec = VolumeCodec.for_experiment(c)
    flax_model = _random_flax_model(c, codec)

    def table(kind):
        return {".".join(str(p.key) for p in path if hasattr(p, "key")): np.asarray(leaf)
                for path, leaf in jax.tree_util.tree_flatten_with_path(nnx.state(flax_model, kind))[0]}

    params = table(nnx.Param)
    net = ref.build_network({**config_lib.base_config().model.to_dict(), **dict(c.model)}, _torch_codec(codec))
    assert ref.check_against_flax(net, {k: list(v.shape) for k, v in params.items()}) == model.count_params(flax_model)
    ref.load_flax_weights(net, {**params, **table(nnx.BatchStat)})
    images = np.random.default_rng(0).integers(0, 256, (2, codec.input_size, codec.input_size, 3), dtype=np.uint8)
    forward = nnx.jit(lambda m, x: m(x))
    for mode in ("eval", "train"):
        getattr(flax_model, mode)()
        want = forward(flax_model, images)
        with torch.no_grad():
            got = getattr(net, mode)()(torch.from_numpy(images), torch.channels_last)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g.shape == w.shape
            np.testing.assert_allclose(g.numpy(), np.asarray(w), rtol=1e-4, atol=1e-4, err_msg=mode)
    # A mismatch is caught: one parameter left out.
    with pytest.raises(SystemExit, match="missing"):
        ref.check_against_flax(net, {**{k: list(v.shape) for k, v in params.items()}, "heads.0.extra": [1]})


@pytest.mark.skipif(not HAVE_TORCH, reason=NO_TORCH)
def test_torch_builds_the_paper_models_53_6m_parameters():
    import jax
    from flax import nnx

    from c2f_vol import config as config_lib, model
    from c2f_vol.codec import VolumeCodec

    ref = _load("torch_reference")
    c = config_lib.load(str(REPO / "configs" / "h36m_paper.py"))
    codec = VolumeCodec.for_experiment(c)
    abstract = nnx.eval_shape(lambda: model.create_model(c.model, codec))
    shapes = {".".join(str(p.key) for p in path if hasattr(p, "key")): list(leaf.shape)
              for path, leaf in jax.tree_util.tree_flatten_with_path(nnx.state(abstract, nnx.Param))[0]}
    import torch

    with torch.device("meta"):  # shapes only: no memory, no initialisation
        net = ref.build_network({**config_lib.base_config().model.to_dict(), **dict(c.model)}, _torch_codec(codec))
    assert ref.check_against_flax(net, shapes) == 53_585_847 == model.count_params(abstract)


# ---------------------------------------------------------------------------
# One whole run on the CPU, through gpu.sh, with TensorFlow, OpenCV and tensorflow-datasets blocked.


@pytest.mark.slow  # about 1.5 minutes on 2 cores: a process per JAX row, each compiling its step
def test_gpu_sh_takes_every_row_type_on_the_cpu(tmp_path):
    out = tmp_path / "out"
    cmd = ["bash", str(BENCH / "gpu.sh"), f"--paper={TINY}", f"--integral={TINY}", "--batch_sizes=2",
           "--dtypes=bfloat16", "--inference_batch_sizes=1,2", "--steps=2", "--warmup=1", "--peak_tflops=1",
           "--torch_threads=1", f"--work_dir={tmp_path / 'work'}", f"--out_dir={out}"]
    cmd += [f"--paper_override={o}" for o in TINY_PAPER]
    env = _shim_env(PYTHON=sys.executable, SITE=str(tmp_path / "site"))
    env.pop("C2F_BENCH_T0", None)
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "check_env: ok" in proc.stderr
    report = json.loads((out / "gpu_bench.json").read_text())
    rows = report["rows"]
    assert [r["section"] for r in rows] == ["train", "profile", "torch_train", "inference", "train", "torch_train"]
    for r in (r for r in rows if r["section"] == "train"):
        assert r["status"] == "ok", r
        assert r["images_per_sec"] > 0 and r["flops_per_step"] > 0 and r["compile_s"] > 0
        assert r["tflops_per_sec"] > 0 and r["utilisation"] > 0 and r["dtype"] == "bfloat16"
        assert r["model_flops_per_step"] > 0 and r["model_utilisation"] > 0
        assert r["min_s"] <= r["median_s"] <= r["max_s"] and r["n"] == 2
        assert r["memory_plan_bytes_per_device"]["total"] > 0
    assert [(r["model"], r["arch"], r["loss"]) for r in rows if r["section"] == "train"] == [
        ("paper", "released", "heatmap"), ("integral", "uniform", "both")]
    profile = rows[1]
    assert profile["status"] == "ok" and profile["source"] == "host" and profile["steps"] == 3
    assert 1 <= len(profile["top_ops"]) <= 10 and profile["total_ms"] > 0
    assert all(op["total_ms"] > 0 and op["count"] > 0 for op in profile["top_ops"])
    inference = rows[3]
    assert inference["status"] == "ok" and [x["batch_size"] for x in inference["rows"]] == [1, 2]
    assert all(x["images_per_sec"] > 0 and x["compile_s"] > 0 and x["runtime"] == "jax" for x in inference["rows"])
    table = (out / "gpu_bench.md").read_text()
    assert "| model | dtype | batch | JAX img/s |" in table and "| JAX inference |" in table
    assert "Profile of paper bf16 batch 2" in table and table in proc.stdout
    assert (out / "gpu_bench.log").stat().st_size > 0
    torch_rows = [r for r in rows if r["section"] == "torch_train"]
    if not HAVE_TORCH:
        assert all(r["status"] == "skipped" and "not importable" in r["reason"] for r in torch_rows)
        pytest.skip(f"the torch rows were recorded as skipped; their measured values are unchecked: {NO_TORCH}")
    for r in torch_rows:
        assert r["status"] == "ok", r
        assert r["images_per_sec"] > 0 and r["param_count"] == r["param_count_c2f_vol"] and r["dtype"] == "bfloat16"
    assert [c["model"] for c in report["comparisons"]] == ["paper", "integral"]
    assert all(c["jax_over_torch"] > 0 for c in report["comparisons"])
    assert report["targets"]["jax_over_torch"] is not None
