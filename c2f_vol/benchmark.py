"""Benchmarks: the train step, the input pipeline and inference (JAX and SavedModel).

`tools/benchmark.py` is the command line; the functions here return plain
dicts (JSON-ready) so tests can check them.

Timing rules, shared by every section:
  * warm-up calls (compilation, caches, thread pools) are never timed;
  * every timed call ends with its results on the host or `block_until_ready`,
    so a figure is the time a caller waits, not the time to enqueue work;
  * step times are reported as median, min and max; images/s is batch / median.

Train-step figures come from the same jitted step `train.Trainer` trains with.
It is also traced and compiled ahead of time (`jit.trace(...).lower().compile()`)
for the compile time, XLA's cost analysis (FLOPs), XLA's memory plan of that
executable and the model FLOPs of the traced program (`jaxpr_matmul_flops`);
the timed calls go through the jitted function itself, as training does. Inputs are random tensors of the right shapes: the
step's cost does not depend on pixel values, and the input pipeline is
measured on its own. The initial state is `Trainer.init_state()`'s, computed
eagerly on the host (`on_host`) and placed on the mesh.

`profile_summary` reads a `jax.profiler` trace (no TensorFlow): the top ops by
device time, or by host time on a CPU-only backend. benchmarks/gpu.sh runs
every GPU row of the project with these functions (benchmarks/README.md).
"""

from __future__ import annotations

import contextlib
import glob
import gzip
import json
import os
import statistics
import tempfile
import time
from typing import Any, Callable

import jax
import numpy as np

from c2f_vol import inference, sharding, skeleton, train, train_state
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


def _sub_jaxprs(value):
    if hasattr(value, "eqns"):
        yield value
    elif hasattr(value, "jaxpr") and hasattr(value.jaxpr, "eqns"):  # a ClosedJaxpr
        yield value.jaxpr
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _sub_jaxprs(v)


def jaxpr_matmul_flops(jaxpr) -> float:
    """2 x the multiply-adds of every convolution and dot_general in a (closed) jaxpr: the model's FLOPs
    as the program is written, before XLA rewrites it (sub-jaxprs counted; a scan's body times its
    length, the larger branch of a cond, a while body once). For a train step this is the usual
    "model FLOPs" (forward + backward, about 3x the forward's), which a utilisation can be taken of
    independently of how XLA's cost analysis counts the compiled program.
    """
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    total = 0.0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "conv_general_dilated":
            kernel = eqn.invars[1].aval.shape
            rhs = eqn.params["dimension_numbers"].rhs_spec  # (out features, in features per group, spatial...)
            per_output = kernel[rhs[1]] * float(np.prod([kernel[d] for d in rhs[2:]]))
            total += 2.0 * float(np.prod(eqn.outvars[0].aval.shape)) * per_output
        elif name == "dot_general":
            (contract, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            total += 2.0 * float(np.prod(eqn.outvars[0].aval.shape)) * float(np.prod([lhs[d] for d in contract]))
        subs = [j for v in eqn.params.values() for j in _sub_jaxprs(v)]
        if not subs:
            continue
        counts = [jaxpr_matmul_flops(j) for j in subs]
        if name == "scan":
            total += float(eqn.params.get("length", 1)) * sum(counts)
        elif name == "cond":
            total += max(counts)
        else:
            total += sum(counts)
    return total


def device_peak_bytes() -> int | None:
    """Peak bytes in use on the first local device since start-up (None where the backend does not track it)."""
    stats = jax.local_devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return int(peak) if peak is not None else None


def on_host(fn: Callable[[], Any]):
    """`fn()` computed eagerly on the host CPU backend (its arrays live there until placed).

    Used for the benchmarks' initial variables and train state: jit-compiling the initialiser of the
    53.6 M released model (one XLA program of ~1,500 random initialisers) took 55 s on a 2-core CPU,
    eager initialisation on the host 11 s the first time in a process; where the accelerator would
    have compiled that program for every benchmarked row.
    """
    try:
        cpu = jax.local_devices(backend="cpu")[0]
    except RuntimeError:  # no CPU backend (JAX_PLATFORMS names only the accelerator): the default device
        return fn()
    with jax.default_device(cpu):
        return fn()


def benchmark_train(config, *, steps: int = 20, warmup: int = 3, peak_tflops: float = 0.0,
                    profile_dir: str | None = None, profile_steps: int = 3,
                    on_compiled: Callable[[dict], None] | None = None) -> dict:
    """Time the training step of `config` at its global `batch_size`.

    Returns step times, images/s, compile time, XLA's FLOPs per step, achieved
    TFLOP/s, utilisation of `peak_tflops` (one device's peak, when > 0; the
    mesh's peak is that times the device count), the same from the model FLOPs
    of the traced step (`jaxpr_matmul_flops`: convolutions and matmuls as
    written; XLA's count of the compiled step can differ from it: on the CPU it
    is ~1.5x for the released model) and memory: XLA's plan for the
    step on one device and, where the backend tracks it, the first device's
    peak bytes in use.
    With `profile_dir`, a `jax.profiler` trace of `profile_steps` further steps
    is written there (`profile_summary` reads it).
    `on_compiled`, if given, is called with the row's figures known once the step
    is compiled (compile time, FLOPs, memory plan), before any step runs: a caller
    that may be stopped during the timed steps can keep them.
    """
    trainer = train.Trainer(config)
    batch_size = int(config.batch_size)
    trainer_batch = trainer.put(random_train_batch(trainer.codec, batch_size, config.seed))
    # The state `trainer.init_state()` makes (the same initial values), built on the host and replicated
    # onto the mesh as that function's output is.
    state = jax.device_put(on_host(lambda: train_state.create(trainer.network, trainer.tx)),
                           sharding.replicated(trainer.mesh))
    t0 = time.perf_counter()
    traced = trainer.train_step.trace(state, trainer_batch)
    compiled = traced.lower().compile()
    compile_s = time.perf_counter() - t0  # trace + lower + compile
    devices = trainer.mesh.devices.size
    result = {
        "section": "train",
        "batch_size": batch_size,
        "dtype": str(config.model.dtype),
        "arch": str(config.model.arch),
        "loss": str(config.loss.kind),
        "backend": jax.default_backend(),
        "device_kind": jax.local_devices()[0].device_kind,
        "devices": devices,
        "params": trainer.network.num_params,
        "compile_s": compile_s,
    }
    # XLA's analyses describe one device's program of the SPMD step: FLOPs are scaled to the whole mesh.
    flops = _cost_flops(compiled)
    result["flops_per_step"] = flops * devices if flops else None
    # The traced step is the global (whole-mesh) computation.
    result["model_flops_per_step"] = jaxpr_matmul_flops(traced.jaxpr) or None
    result["memory_plan_bytes_per_device"] = _memory_plan(compiled)
    if on_compiled is not None:
        on_compiled(dict(result))

    def step():
        # The jitted function, as training calls it (its C++ fast path), not the AOT object.
        nonlocal state
        state, metrics = trainer.train_step(state, trainer_batch)
        jax.block_until_ready(metrics["loss"])

    times = time_calls(step, steps, warmup)
    if profile_dir and profile_steps > 0:
        with jax.profiler.trace(profile_dir):
            for _ in range(profile_steps):
                step()
    result.update(_summary(times, batch_size))
    flops = result["flops_per_step"]
    result["tflops_per_sec"] = flops / result["median_s"] / 1e12 if flops else None
    result["peak_tflops"] = peak_tflops or None  # per device
    result["utilisation"] = (result["tflops_per_sec"] / (peak_tflops * devices)
                             if flops and peak_tflops > 0 else None)
    model_flops = result["model_flops_per_step"]
    result["model_tflops_per_sec"] = model_flops / result["median_s"] / 1e12 if model_flops else None
    result["model_utilisation"] = (result["model_tflops_per_sec"] / (peak_tflops * devices)
                                   if model_flops and peak_tflops > 0 else None)
    result["device_peak_bytes"] = device_peak_bytes()
    return result


# ---------------------------------------------------------------------------
# Profile summary.

# Lines of a device plane that the profiler derives from the others (one event per step or per
# module): counted in neither the ops nor the kernels.
_DERIVED_LINES = ("XLA Modules", "Steps", "Framework Name Scope", "Framework Ops", "Source code",
                  "XLA TraceMe", "TensorFlow Name Scope", "TensorFlow Ops")


# Host events of the CPU runtime's own bookkeeping (thread pools, waits, rendezvous of the devices'
# threads), left out of a host profile's ops.
_HOST_RUNTIME_EVENTS = ("ThreadpoolListener", "ThunkExecutor", "Wait", "Rendezvous", "InvokeRendezvous", "end: ")


def _trace_events(trace_dir: str):
    """(plane, line, name, duration_ns, stats) of every event of the newest trace under `trace_dir`.

    Reads the XSpace protobuf (`*.xplane.pb`) with `jax.profiler.ProfileData`; where that reader is
    missing, the trace-viewer JSON (`*.trace.json.gz`) that the profiler writes beside it. Neither
    needs TensorFlow or TensorBoard. Returns (path read, events).
    """
    runs = sorted(glob.glob(os.path.join(trace_dir, "plugins", "profile", "*")), key=os.path.getmtime)
    if not runs:
        raise FileNotFoundError(f"no jax.profiler trace under {trace_dir} (expected plugins/profile/<run>/)")
    run = runs[-1]
    xplanes = sorted(glob.glob(os.path.join(run, "*.xplane.pb")))
    reader = getattr(jax.profiler, "ProfileData", None)
    if xplanes and reader is not None:
        events = []
        for path in xplanes:
            for plane in reader.from_file(path).planes:
                for line in plane.lines:
                    for e in line.events:
                        events.append((plane.name, line.name, e.name, float(e.duration_ns), e.stats))
        return xplanes[0], events
    jsons = sorted(glob.glob(os.path.join(run, "*.trace.json.gz"))) or sorted(
        glob.glob(os.path.join(run, "perfetto_trace.json.gz")))
    if not jsons:
        raise FileNotFoundError(f"no *.xplane.pb reader and no *.trace.json.gz in {run}")
    with gzip.open(jsons[0], "rt") as fh:
        trace = json.load(fh)
    planes, lines, events = {}, {}, []
    for ev in trace.get("traceEvents", []):
        if ev.get("ph") == "M" and ev.get("name") == "process_name":
            planes[ev.get("pid")] = ev.get("args", {}).get("name", "")
        elif ev.get("ph") == "M" and ev.get("name") == "thread_name":
            lines[(ev.get("pid"), ev.get("tid"))] = ev.get("args", {}).get("name", "")
    for ev in trace.get("traceEvents", []):
        if ev.get("ph") == "X":
            events.append((planes.get(ev.get("pid"), ""), lines.get((ev.get("pid"), ev.get("tid")), ""),
                           ev.get("name", ""), 1000.0 * float(ev.get("dur", 0.0)), ev.get("args", {}).items()))
    return jsons[0], events


def _top(named_durations, top: int, total_ns: float) -> list[dict]:
    agg: dict[str, list] = {}
    for name, dur, detail in named_durations:
        entry = agg.setdefault(name, [0.0, 0, detail])
        entry[0] += dur
        entry[1] += 1
    rows = sorted(agg.items(), key=lambda kv: -kv[1][0])[:top]
    return [{"name": name, "total_ms": ns / 1e6, "count": n, "share": ns / total_ns if total_ns else None,
             **({"detail": detail} if detail else {})} for name, (ns, n, detail) in rows]


def profile_summary(trace_dir: str, top: int = 10, steps: int = 0) -> dict:
    """The ops that took the most time in the newest `jax.profiler` trace under `trace_dir`.

    On a GPU or TPU the device planes are read: ops are the events of their `XLA Ops` line (one
    per HLO op executed), or, where the trace has no such line, the kernels on the stream lines
    grouped by the HLO op each kernel belongs to (its `hlo_op` stat; the kernel's name otherwise);
    kernels are the stream lines' events by kernel name. On a CPU-only backend, where no device
    plane holds events, the host plane's XLA runtime threads are read instead (`source` 'host':
    nested regions are each counted, so shares can add up to more than 1). `total_ms` is the time
    summed over the events counted; with `steps`, `per_step_ms` divides it by them.
    """
    path, events = _trace_events(trace_dir)
    device = [e for e in events if e[0].startswith("/device:") and e[3] > 0]
    if device:
        source = "device"
        op_events = [e for e in device if e[1] == "XLA Ops"]
        stream_events = [e for e in device if e[1] != "XLA Ops" and e[1] not in _DERIVED_LINES]

        def op_of(e):
            stats = dict(e[4])
            return str(stats.get("hlo_op") or e[2])

        # Detail: an XLA op's HLO text where the trace has it; for ops read off the streams, a kernel's name.
        ops_in = ([(e[2], e[3], str(dict(e[4]).get("long_name", ""))[:160]) for e in op_events] if op_events
                  else [(op_of(e), e[3], e[2][:120]) for e in stream_events])
        kernels_in = [(e[2], e[3], "") for e in stream_events]
    else:
        source = "host"
        host = [e for e in events if e[0].startswith("/host:CPU") and e[1] != "python" and e[3] > 0
                and not e[2].startswith(_HOST_RUNTIME_EVENTS)]
        ops_in, kernels_in = [(e[2], e[3], "") for e in host], []
    total_ns = sum(d for _, d, _ in ops_in)
    lines: dict[str, int] = {}
    for e in (device or events):
        key = f"{e[0]} | {e[1]}"
        lines[key] = lines.get(key, 0) + 1
    out = {"section": "profile", "source": source, "trace": path, "events": len(events),
           "lines": dict(sorted(lines.items(), key=lambda kv: -kv[1])[:20]),
           "total_ms": total_ns / 1e6, "steps": steps or None,
           "per_step_ms": total_ns / 1e6 / steps if steps else None,
           "top_ops": _top(ops_in, top, total_ns)}
    if kernels_in:
        out["top_kernels"] = _top(kernels_in, top, sum(d for _, d, _ in kernels_in))
    return out


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
                        saved_model: str | None = None, runtimes=("jax", "savedmodel")) -> list[dict]:
    """Images/s and per-batch latency of the jitted JAX model and of the reloaded SavedModel.

    Both run the `serving_default` computation (crop-frame joints and confidence)
    from a host uint8 batch to host results. They are timed in alternating
    blocks (`time_interleaved`), so a change in the machine's load during the
    run affects both alike and their ratio stays fair. Weights are freshly initialised unless `saved_model` names an
    exported model of the same config. `runtimes=("jax",)` times JAX alone and needs no
    TensorFlow. JAX rows carry the compile time of that batch size's executable.
    """
    unknown = sorted(set(runtimes) - {"jax", "savedmodel"})
    if unknown or not runtimes:
        raise ValueError(f"runtimes are 'jax' and/or 'savedmodel'; got {list(runtimes)}")
    network = inference.Network(config)
    s = network.codec.input_size
    jax_fn = network.jitted_crop_fn()
    # One device, as a served model runs.
    variables = jax.device_put(on_host(network.init_variables), jax.local_devices()[0])
    rng = np.random.default_rng(config.seed)
    rows = []
    with contextlib.ExitStack() as stack:
        served = None
        if "savedmodel" in runtimes:
            from c2f_vol import export  # function-level: keeps TensorFlow off the TF-free train section

            served = export.ServedModel(stack.enter_context(_saved_model_dir(network, variables, saved_model)))
        for b in batch_sizes:
            images = rng.integers(0, 256, (b, s, s, 3), dtype=np.uint8)
            t0 = time.perf_counter()
            jax_fn.lower(variables, images).compile()  # the jitted function's own cache keeps it
            compile_s = time.perf_counter() - t0
            calls = {}
            if "jax" in runtimes:
                calls["jax"] = lambda: jax.device_get(jax_fn(variables, images))
            if served is not None:
                calls["savedmodel"] = lambda: served.crop(images)
            rounds = min(4, steps) if len(calls) > 1 else 1
            for runtime, times in time_interleaved(calls, steps, warmup, rounds=rounds).items():
                rows.append({"section": "inference", "runtime": runtime, "batch_size": b,
                             "dtype": str(config.model.dtype), **_summary(times, b),
                             "latency_ms": 1000 * statistics.median(times),
                             **({"compile_s": compile_s} if runtime == "jax" else {})})
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
                f"MFU {_fmt(r.get('model_utilisation'), '.1%')}  "
                f"mem {_fmt(mem and mem / 2**30, '.2f')} GiB")
        elif r["section"] == "pipeline":
            lines.append(f"pipeline  batch {r['batch_size']:>4} threads {r['threads']:>2}  {r['images_per_sec']:9.1f} "
                         f"img/s  ({r['images_per_sec_per_thread']:.1f} per thread; {r['source']})")
        elif r["section"] == "inference":
            lines.append(f"infer     batch {r['batch_size']:>4} {r['runtime']:>10}  {r['images_per_sec']:9.1f} img/s  "
                         f"latency {r['latency_ms']:8.2f} ms (min {1000 * r['min_s']:.2f}, max {1000 * r['max_s']:.2f})")
        elif r["section"] == "profile":
            per = f" ({r['per_step_ms']:.2f} ms per step)" if r.get("per_step_ms") else ""
            lines.append(f"profile   {r['source']} time {r['total_ms']:.2f} ms{per}; top ops:")
            for k, op in enumerate(r["top_ops"], 1):
                lines.append(f"  {k:>2}. {op['total_ms']:9.3f} ms  {_fmt(op['share'], '6.1%')}  x{op['count']:<5d} "
                             f"{op['name'][:90]}")
        elif r["section"] == "summary":
            lines.append("summary   " + "  ".join(f"{k} {_fmt(v, '.2f')}" for k, v in r.items() if k != "section"))
    return "\n".join(lines)
