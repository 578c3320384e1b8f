"""Benchmarks: the train step, the input pipeline and inference (JAX and SavedModel).

`tools/benchmark.py` is the command line; the functions here return plain
dicts (JSON-ready) so tests can check them.

Timing rules, shared by every section:
  * warm-up calls (compilation, caches, thread pools) are never timed;
  * every timed call ends with its results on the host or `block_until_ready`,
    so a figure is the time a caller waits, not the time to enqueue work;
  * step times are reported as median, min and max; images/s is batch / median.

Train-step figures come from the same jitted step `train.Trainer` trains with.
It is also compiled ahead of time (`jit.lower(...).compile()`) for the compile
time, XLA's cost analysis (FLOPs) and XLA's memory plan of that executable;
the timed calls go through the jitted function itself, as training does. Inputs are random tensors of the right shapes: the
step's cost does not depend on pixel values, and the input pipeline is
measured on its own.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
import time
from typing import Any, Callable

import jax
import numpy as np

from c2f_vol import inference, skeleton, train
from c2f_vol.codec import VolumeCodec


def random_train_batch(codec, batch_size: int, seed: int = 0) -> dict:
    """A host batch with the shapes and value ranges of `pipeline.train_dataset`'s TRAIN_KEYS."""
    rng = np.random.default_rng(seed)
    s = codec.input_size
    depth = rng.uniform(-0.8, 0.8, (batch_size, 17)) * codec.depth_range_mm
    depth[:, 0] = 0.0
    return {
        "image": rng.integers(0, 256, (batch_size, s, s, 3), dtype=np.uint8),
        "joints_uv": rng.uniform(0.1 * s, 0.9 * s, (batch_size, 17, 2)).astype(np.float32),
        "depth_rel_mm": depth.astype(np.float32),
        "mask": np.ones((batch_size,), np.float32),
    }


def _summary(times: list[float], batch: int) -> dict:
    med = statistics.median(times)
    return {"median_s": med, "min_s": min(times), "max_s": max(times), "n": len(times),
            "images_per_sec": batch / med}


def time_interleaved(calls: dict[str, Callable[[], Any]], steps: int, warmup: int,
                     rounds: int = 1) -> dict[str, list[float]]:
    """Seconds of each of `steps` timed calls per name, after `warmup` untimed calls of each.

    With rounds > 1 the timed calls come in `rounds` blocks that alternate
    between the functions (A A A B B B A A A B B B ...), so a change in the
    machine's load during the run affects all of them alike; each block starts
    with one untimed call, which lets the previous runtime's thread pool go
    idle. Each function must block until its work is done.
    """
    if steps < 1 or warmup < 0 or rounds < 1:
        raise ValueError(f"need steps >= 1, warmup >= 0 and rounds >= 1; got {steps}, {warmup}, {rounds}")
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for r in range(rounds):
        block = steps // rounds + (r < steps % rounds)
        for name, fn in calls.items():
            if rounds > 1:
                fn()
            for _ in range(block):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    return times


def time_calls(fn: Callable[[], Any], steps: int, warmup: int) -> list[float]:
    """Seconds of each of `steps` calls of `fn` after `warmup` untimed ones; fn must block until done."""
    return time_interleaved({"fn": fn}, steps, warmup)["fn"]


def _cost_flops(compiled) -> float | None:
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):  # older JAX: one dict per computation
        cost = cost[0] if cost else None
    if not cost or "flops" not in cost:
        return None
    return float(cost["flops"])


def _memory_plan(compiled) -> dict:
    mem = compiled.memory_analysis()
    if mem is None:
        return {}
    plan = {k: int(getattr(mem, f"{k}_size_in_bytes", 0)) for k in ("argument", "output", "temp", "alias")}
    # What the executable needs at once: inputs + outputs + scratch, minus donated inputs reused as outputs.
    plan["total"] = plan["argument"] + plan["output"] + plan["temp"] - plan["alias"]
    return plan


def device_peak_bytes() -> int | None:
    """Peak bytes in use on the first local device since start-up (None where the backend does not track it)."""
    stats = jax.local_devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return int(peak) if peak is not None else None


def benchmark_train(config, *, steps: int = 20, warmup: int = 3, peak_tflops: float = 0.0,
                    profile_dir: str | None = None) -> dict:
    """Time the training step of `config` at its global `batch_size`.

    Returns step times, images/s, compile time, XLA's FLOPs per step, achieved
    TFLOP/s, utilisation of `peak_tflops` (one device's peak, when > 0; the
    mesh's peak is that times the device count) and memory: XLA's plan for the
    step on one device and, where the backend tracks it, the first device's
    peak bytes in use.
    With `profile_dir`, a `jax.profiler` trace of 3 further steps is written there.
    """
    trainer = train.Trainer(config)
    batch_size = int(config.batch_size)
    trainer_batch = trainer.put(random_train_batch(trainer.codec, batch_size, config.seed))
    state = trainer.init_state()
    t0 = time.perf_counter()
    compiled = trainer.train_step.lower(state, trainer_batch).compile()
    compile_s = time.perf_counter() - t0

    def step():
        # The jitted function, as training calls it (its C++ fast path), not the AOT object.
        nonlocal state
        state, metrics = trainer.train_step(state, trainer_batch)
        jax.block_until_ready(metrics["loss"])

    times = time_calls(step, steps, warmup)
    if profile_dir:
        with jax.profiler.trace(profile_dir):
            for _ in range(3):
                step()
    result = {
        "section": "train",
        "batch_size": batch_size,
        "dtype": str(config.model.dtype),
        "loss": str(config.loss.kind),
        "devices": trainer.mesh.devices.size,
        "params": trainer.network.num_params,
        "compile_s": compile_s,
        **_summary(times, batch_size),
    }
    # XLA's analyses describe one device's program of the SPMD step: FLOPs are scaled to the whole mesh.
    flops = _cost_flops(compiled)
    flops = flops * result["devices"] if flops else None
    result["flops_per_step"] = flops
    result["tflops_per_sec"] = flops / result["median_s"] / 1e12 if flops else None
    result["peak_tflops"] = peak_tflops or None  # per device
    result["utilisation"] = (result["tflops_per_sec"] / (peak_tflops * result["devices"])
                             if flops and peak_tflops > 0 else None)
    result["memory_plan_bytes_per_device"] = _memory_plan(compiled)
    result["device_peak_bytes"] = device_peak_bytes()
    return result


# ---------------------------------------------------------------------------
# Input pipeline.


def benchmark_pipeline(config, *, threads: int, batches: int = 50, frame_size: int = 0,
                       num_examples: int = 64) -> dict:
    """Images/s of the full training pipeline (read, decode, augment, warp, batch) alone.

    Reads the config's dataset when it is prepared in config.data.data_dir;
    otherwise `num_examples` rendered stand-ins for it held in memory
    (`c2f_vol.data.stand_ins.stand_in_examples`; the JSON's `source` says which). `threads` bounds
    tf.data's thread pool.
    """
    # Here, not at the top: the pipeline and its stand-ins load TensorFlow; `import c2f_vol.benchmark` does not.
    from c2f_vol.data import pipeline, stand_ins

    if threads < 1:
        raise ValueError(f"threads must be >= 1; got {threads}")
    data_config = pipeline.resolve_data_config(config.data)
    data_config.threads = threads
    data_config.num_parallel_calls = threads
    data_config.shuffle_buffer = min(int(data_config.shuffle_buffer), 1000)
    size = VolumeCodec.for_experiment(config).input_size
    batch_size = int(config.batch_size) // jax.process_count()
    try:
        builder = pipeline.load_builder(config.data.name, config.data.data_dir)
    except FileNotFoundError:
        builder = None
    if builder is not None and frame_size <= 0:
        ds = pipeline.train_dataset(builder, config.data.train_split, data_config, size, batch_size=batch_size,
                                    seed=config.seed)
        source = f"{config.data.name}:{config.data.train_split} in {builder.data_dir}"
    else:
        examples, source = stand_ins.stand_in_examples(config.data.name, num_examples, config.seed, frame_size)
        ds = pipeline.train_dataset_from_examples(examples.cache(), data_config, size, batch_size=batch_size,
                                                  seed=config.seed)
    ips = pipeline.measure_throughput(ds, batches)
    return {"section": "pipeline", "threads": threads, "batch_size": batch_size, "input_size": size,
            "source": source, "batches": batches, "images_per_sec": ips,
            "images_per_sec_per_thread": ips / threads}


# ---------------------------------------------------------------------------
# Inference.


@contextlib.contextmanager
def _saved_model_dir(network, variables, path: str | None):
    if path:
        yield path
        return
    from c2f_vol import export  # function-level: keeps TensorFlow off the TF-free train section

    with tempfile.TemporaryDirectory(prefix="c2f_bench_") as tmp:
        # Bone lengths only feed the camera_frame signature, which is not timed here.
        bones = np.full((len(skeleton.BONES),), 250.0, np.float32)
        yield export.export_saved_model(network, variables, bones, os.path.join(tmp, "saved_model"))


def benchmark_inference(config, *, batch_sizes=(1, 32), steps: int = 20, warmup: int = 3,
                        saved_model: str | None = None) -> list[dict]:
    """Images/s and per-batch latency of the jitted JAX model and of the reloaded SavedModel.

    Both run the `serving_default` computation (crop-frame joints and confidence)
    from a host uint8 batch to host results. They are timed in alternating
    blocks (`time_interleaved`), so a change in the machine's load during the
    run affects both alike and their ratio stays fair. Weights are freshly initialised unless `saved_model` names an
    exported model of the same config.
    """
    from c2f_vol import export  # function-level: keeps TensorFlow off the TF-free train section

    network = inference.Network(config)
    s = network.codec.input_size
    jax_fn = network.jitted_crop_fn()
    # One device, as a served model runs.
    variables = jax.device_put(network.init_variables(), jax.local_devices()[0])
    rng = np.random.default_rng(config.seed)
    rows = []
    with _saved_model_dir(network, variables, saved_model) as path:
        served = export.ServedModel(path)
        for b in batch_sizes:
            images = rng.integers(0, 256, (b, s, s, 3), dtype=np.uint8)
            calls = {"jax": lambda: jax.device_get(jax_fn(variables, images)),
                     "savedmodel": lambda: served.crop(images)}
            for runtime, times in time_interleaved(calls, steps, warmup, rounds=min(4, steps)).items():
                rows.append({"section": "inference", "runtime": runtime, "batch_size": b, **_summary(times, b),
                             "latency_ms": 1000 * statistics.median(times)})
    return rows


# ---------------------------------------------------------------------------
# Report.


def summarize(train_row: dict | None, pipeline_rows: list[dict], inference_rows: list[dict],
              host_cores: int = 16) -> dict | None:
    """Ratios between sections measured in the same run.

    pipeline_over_train_projected: the pipeline's images/s per thread (measured at
      the fewest threads) times `host_cores`, over the train step's images/s; a
      projection that assumes the pipeline scales linearly with cores.
    savedmodel_over_jax_b{N}: SavedModel images/s over JAX images/s at batch N.
    """
    out = {}
    if train_row and pipeline_rows:
        per_thread = min(pipeline_rows, key=lambda r: r["threads"])["images_per_sec_per_thread"]
        out["pipeline_over_train_projected"] = per_thread * host_cores / train_row["images_per_sec"]
        out["projected_host_cores"] = host_cores
    by_key = {(r["runtime"], r["batch_size"]): r["images_per_sec"] for r in inference_rows}
    for (runtime, b), ips in sorted(by_key.items()):
        if runtime == "savedmodel" and ("jax", b) in by_key:
            out[f"savedmodel_over_jax_b{b}"] = ips / by_key[("jax", b)]
    return {"section": "summary", **out} if out else None


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def format_table(results: list[dict]) -> str:
    """A plain-text table: one line per measured row."""
    lines = []
    for r in results:
        if r["section"] == "train":
            mem = r["device_peak_bytes"] or r["memory_plan_bytes_per_device"].get("total")
            lines.append(
                f"train     batch {r['batch_size']:>4} {r['dtype']:>8} x{r['devices']} dev  {r['images_per_sec']:9.1f} img/s  "
                f"step {1000 * r['median_s']:8.1f} ms (min {1000 * r['min_s']:.1f}, max {1000 * r['max_s']:.1f})  "
                f"compile {r['compile_s']:.1f} s  {_fmt(r['flops_per_step'] and r['flops_per_step'] / 1e9, '.1f')} "
                f"GFLOP/step  {_fmt(r['tflops_per_sec'], '.3f')} TFLOP/s  util {_fmt(r['utilisation'], '.1%')}  "
                f"mem {_fmt(mem and mem / 2**30, '.2f')} GiB")
        elif r["section"] == "pipeline":
            lines.append(f"pipeline  batch {r['batch_size']:>4} threads {r['threads']:>2}  {r['images_per_sec']:9.1f} "
                         f"img/s  ({r['images_per_sec_per_thread']:.1f} per thread; {r['source']})")
        elif r["section"] == "inference":
            lines.append(f"infer     batch {r['batch_size']:>4} {r['runtime']:>10}  {r['images_per_sec']:9.1f} img/s  "
                         f"latency {r['latency_ms']:8.2f} ms (min {1000 * r['min_s']:.2f}, max {1000 * r['max_s']:.2f})")
        elif r["section"] == "summary":
            lines.append("summary   " + "  ".join(f"{k} {_fmt(v, '.2f')}" for k, v in r.items() if k != "section"))
    return "\n".join(lines)
