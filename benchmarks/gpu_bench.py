"""Every GPU row of the benchmark in one command: c2f_vol's train step (JAX) and its PyTorch eager twin,
JAX inference, and a profile of the paper model's step. `benchmarks/gpu.sh` runs it; see benchmarks/README.md.

Rows, in the order they run (the most important first), for each dtype of --dtypes, then each batch
size of --batch_sizes, then each model (paper, integral):
  * train (JAX): c2f_vol.benchmark.benchmark_train, the jitted step `train.Trainer` trains with: images/s,
    step time (median, min, max), compile time, XLA's FLOPs, TFLOP/s, utilisation of --peak_tflops,
    XLA's memory plan and the device's peak bytes in use;
  * torch_train: benchmarks/torch_reference.py, the same network, loss and optimiser step in PyTorch eager
    (channels-last, bf16 autocast for bfloat16 rows), and the JAX / torch images/s ratio;
  * after the first pair, inference (JAX): c2f_vol.benchmark.benchmark_inference at --inference_batch_sizes,
    the paper model in its config's dtype;
  * the first JAX row (by default the paper model, bfloat16, batch 64) also takes a jax.profiler trace of
    --profile_steps further steps, summarised as the top ten ops by device time (`profile` row).

Each JAX row runs in a process of its own (the device's peak memory is per process, and nothing of one row's
allocations is left for the next; XLA_PYTHON_CLIENT_PREALLOCATE=false so JAX takes only what it uses);
the torch rows run in one separate server process (benchmarks/torch_reference.py --serve) that frees its
cached memory after each row. Nothing here imports JAX or torch itself.

Time: a global deadline (--deadline_s, counted from gpu.sh's start) stops the run: a row is started only
if the time left covers what a row of its kind took so far (--estimate_s before the first), a running row is
killed at the deadline, and every row not measured is recorded with the reason. The JSON and the table are
rewritten after every row, so a run stopped from outside still leaves what it measured.

Outputs (in --out_dir: $OUT when set, else --work_dir): gpu_bench.json (environment, rows, comparisons,
targets), gpu_bench.md (the tables), gpu_bench.log (the children's output) and profile.xplane.pb (the
trace, when it is small enough to bring back).

Workers (`--worker=...`) are this file run in a child process; they need no TensorFlow, OpenCV or
tensorflow-datasets (c2f_vol's train step and inference import none of them).
"""

from __future__ import annotations

import argparse
import datetime
import glob
import importlib.metadata
import importlib.util
import json
import os
import platform
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)  # bench_overrides, also when this file is loaded by path (the tests)
from bench_overrides import parse_overrides  # noqa: E402
TORCH_REFERENCE = os.path.join(REPO, "benchmarks", "torch_reference.py")
TORCH_RESULT_PREFIX = "C2F_TORCH_RESULT "  # torch_reference.RESULT_PREFIX (that module imports torch)
MODELS = ("paper", "integral")
PACKAGES = ("jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda12-plugin", "flax", "optax", "orbax-checkpoint",
            "ml_collections", "numpy", "absl-py", "torch", "tensorflow", "tensorflow-cpu")
# Seconds a row of each kind is assumed to take before one has run (a JAX train row of the 53.6 M paper
# model: process start ~8 s, compile 30-60 s, 12 steps; a torch row: ~5 s start-up and 12 steps).
DEFAULT_ESTIMATES = {"train": 70.0, "torch_train": 20.0, "inference": 60.0}
TARGETS = {"utilisation": 0.40, "jax_over_torch": 1.5}  # issue 14, for paper bf16 at the largest batch


def _csv(cast):
    def parse(text):
        try:
            values = [cast(v) for v in text.split(",") if v.strip()]
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e))
        if not values:
            raise argparse.ArgumentTypeError("needs at least one value")
        return values
    return parse


def _dtypes(text):
    values = _csv(str)(text)
    bad = sorted(set(values) - {"bfloat16", "float32"})
    if bad:
        raise argparse.ArgumentTypeError(f"dtypes are bfloat16 and float32; got {bad}")
    return values


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--paper", default="configs/h36m_paper.py", help="config of the paper model rows")
    p.add_argument("--integral", default="configs/h36m_integral.py", help="config of the integral model rows")
    p.add_argument("--paper_override", action="append", default=[], metavar="KEY=VALUE",
                   help="config override of the paper rows (repeatable)")
    p.add_argument("--integral_override", action="append", default=[], metavar="KEY=VALUE",
                   help="config override of the integral rows (repeatable)")
    p.add_argument("--models", type=_csv(str), default=list(MODELS), help="which of paper, integral")
    p.add_argument("--batch_sizes", type=_csv(int), default=[64, 32], help="train batch sizes, in run order")
    p.add_argument("--dtypes", type=_dtypes, default=["bfloat16", "float32"], help="compute dtypes, in run order")
    p.add_argument("--inference_batch_sizes", type=_csv(int), default=[1, 32])
    p.add_argument("--steps", type=int, default=10, help="timed steps (and inference batches) per row")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--profile_steps", type=int, default=3, help="steps traced after the first JAX row (0: none)")
    p.add_argument("--peak_tflops", type=float, default=0.0,
                   help="one device's peak TFLOP/s for utilisation (989: H100/H200 SXM dense bf16)")
    p.add_argument("--peak_tflops_float32", type=float, default=0.0,
                   help="the peak for float32 rows (e.g. 494 for dense TF32); 0: --peak_tflops")
    p.add_argument("--deadline_s", type=float, default=450.0,
                   help="seconds from the start (gpu.sh's, else this script's) after which no row runs")
    p.add_argument("--estimate_s", type=json.loads, default=None,
                   help='JSON {kind: seconds} a row takes before one has run; default ' + json.dumps(DEFAULT_ESTIMATES))
    p.add_argument("--torch", choices=["auto", "off"], default="auto",
                   help="auto: torch rows where torch is importable (else recorded as skipped)")
    p.add_argument("--torch_device", choices=["auto", "cuda", "cpu"], default="auto")
    p.add_argument("--torch_threads", type=int, default=0, help="torch CPU threads (0: torch_reference's default)")
    p.add_argument("--work_dir", default="/tmp/c2f_gpu_bench", help="row results, caches and the trace")
    p.add_argument("--out_dir", default=os.environ.get("OUT") or None,
                   help="where the JSON, table, log and trace go (default: $OUT, else --work_dir)")
    p.add_argument("--python", default=sys.executable, help="the Python the children run under")
    # Worker mode (a child process of the run).
    p.add_argument("--worker", choices=["train", "inference", "check_env"], help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument("--override", action="append", default=[], help=argparse.SUPPRESS)
    p.add_argument("--batch_size", type=int, help=argparse.SUPPRESS)
    p.add_argument("--dtype", help=argparse.SUPPRESS)
    p.add_argument("--profile_dir", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--spawned_at", type=float, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.profile_steps < 0 or args.deadline_s <= 0:
        p.error("need --steps >= 1, --warmup >= 0, --profile_steps >= 0 and --deadline_s > 0")
    if min(args.batch_sizes + args.inference_batch_sizes) < 1:
        p.error("batch sizes must be >= 1")
    bad = sorted(set(args.models) - set(MODELS))
    if bad or not args.models:
        p.error(f"--models takes paper and/or integral; got {args.models}")
    args.estimates = {**DEFAULT_ESTIMATES, **(args.estimate_s or {})}
    args.out_dir = args.out_dir or args.work_dir
    return args


# ---------------------------------------------------------------------------
# Workers: run in child processes; they import JAX and c2f_vol.


def _write_json(path: str, obj) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        json.dump(obj, fh, indent=1)
    os.replace(tmp, path)


def _worker_config(args):
    from c2f_vol import config as config_lib, sharding

    config = config_lib.load(os.path.join(REPO, args.config), parse_overrides(args.override))
    if args.batch_size:
        config.batch_size = args.batch_size
    if args.dtype:
        config.model.dtype = args.dtype
    # CPU-only hosts: one JAX device per core (as tools/benchmark.py); GPU hosts are unaffected.
    sharding.use_cpu_devices(int(config.batch_size))
    return config


def worker_train(args) -> None:
    import jax

    from c2f_vol import benchmark

    config = _worker_config(args)
    float32 = config.model.dtype == "float32" and args.peak_tflops_float32
    peak = args.peak_tflops_float32 if float32 else args.peak_tflops
    spawned = args.spawned_at or time.time()
    timeline = {"imports": time.time() - spawned}  # seconds since the process was started

    def compiled(partial):
        timeline["compiled"] = time.time() - spawned
        _write_json(args.result, {**partial, "status": "compiled", "timeline_s": timeline})

    t0 = time.perf_counter()
    row = benchmark.benchmark_train(config, steps=args.steps, warmup=args.warmup, peak_tflops=peak,
                                    profile_dir=args.profile_dir, profile_steps=args.profile_steps,
                                    on_compiled=compiled)
    row["status"] = "ok"
    row["jax_version"] = jax.__version__
    if args.profile_dir and args.profile_steps:
        t1 = time.perf_counter()
        try:
            row["profile"] = benchmark.profile_summary(args.profile_dir, top=10, steps=args.profile_steps)
        except Exception as e:  # the row stands without its profile
            row["profile"] = {"status": "failed", "reason": f"{type(e).__name__}: {e}"}
        row["profile_summary_s"] = time.perf_counter() - t1
    row["worker_s"] = time.perf_counter() - t0
    timeline["done"] = time.time() - spawned
    row["timeline_s"] = timeline
    _write_json(args.result, row)


def worker_inference(args) -> None:
    config = _worker_config(args)
    from c2f_vol import benchmark

    rows = benchmark.benchmark_inference(config, batch_sizes=tuple(args.inference_batch_sizes), steps=args.steps,
                                         warmup=args.warmup, runtimes=("jax",))
    _write_json(args.result, {"status": "ok", "rows": rows})


def worker_check_env(args) -> None:
    """On the CPU: c2f_vol's train step and inference build and run under this Python's packages."""
    import jax

    jax.config.update("jax_platforms", "cpu")
    from c2f_vol import benchmark, config as config_lib, inference, sharding, train, train_state

    for spec in (args.paper, args.integral):
        network = inference.Network(config_lib.load(os.path.join(REPO, spec)))
        print(f"check_env: {spec}: {network.num_params:,} parameters", file=sys.stderr)
    tiny = config_lib.load(os.path.join(REPO, "configs/synthetic_cpu.py:tiny"), {"batch_size": 1})
    trainer = train.Trainer(tiny)
    state = jax.device_put(benchmark.on_host(lambda: train_state.create(trainer.network, trainer.tx)),
                           sharding.replicated(trainer.mesh))
    state, metrics = trainer.train_step(state, trainer.put(benchmark.random_train_batch(trainer.codec, 1)))
    loss = float(metrics["loss"])
    if loss != loss:
        raise SystemExit("check_env: the tiny train step gave a NaN loss")
    import flax
    import optax

    print(f"check_env: ok (jax {jax.__version__}, flax {flax.__version__}, optax {optax.__version__}; tiny step "
          f"loss {loss:.4f})", file=sys.stderr)


# ---------------------------------------------------------------------------
# The run: plan, children, deadline.


class Job:
    def __init__(self, kind: str, model: str, dtype: str, batch_size: int | None = None, profile: bool = False):
        self.kind, self.model, self.dtype, self.batch_size, self.profile = kind, model, dtype, batch_size, profile

    @property
    def key(self) -> str:
        b = f"_b{self.batch_size}" if self.batch_size else ""
        return f"{self.kind}_{self.model}_{self.dtype}{b}"

    def row(self, args, **fields) -> dict:
        out = {"section": self.kind, "runtime": "torch" if self.kind == "torch_train" else "jax",
               "model": self.model, "config": model_spec(args, self.model),
               "overrides": model_overrides(args, self.model), "dtype": self.dtype}
        if self.batch_size:
            out["batch_size"] = self.batch_size
        else:
            out["batch_sizes"] = list(args.inference_batch_sizes)
        return {**out, **fields}


def model_spec(args, model: str) -> str:
    return args.paper if model == "paper" else args.integral


def model_overrides(args, model: str) -> list[str]:
    return list(args.paper_override if model == "paper" else args.integral_override)


def plan(args) -> list[Job]:
    """The rows in run order: per dtype, per batch size, per model a JAX row and its torch peer; the very
    first JAX row carries the profile, and the inference row follows the first pair."""
    jobs = []
    for dtype in args.dtypes:
        for b in args.batch_sizes:
            for model in args.models:
                jobs.append(Job("train", model, dtype, b, profile=not jobs and args.profile_steps > 0))
                jobs.append(Job("torch_train", model, dtype, b))
                if len(jobs) == 2:
                    first = args.models[0]
                    jobs.append(Job("inference", first, "config"))
    return jobs


def _pythonpath(exclude: str | None = None) -> str:
    parts = [REPO] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if exclude:
        parts = [p for p in parts if os.path.abspath(p) != os.path.abspath(exclude)]
    return os.pathsep.join(dict.fromkeys(parts))


def torch_location() -> str | None:
    """The directory torch is imported from (without importing it), or None where it is not importable."""
    try:
        spec = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    return os.path.dirname(os.path.dirname(spec.origin))


class Run:
    """The orchestrator: runs the plan's rows in children under the deadline, keeps the outputs current."""

    def __init__(self, args):
        self.args = args
        self.t0 = float(os.environ.get("C2F_BENCH_T0") or time.time())
        self.deadline = self.t0 + args.deadline_s
        os.makedirs(args.work_dir, exist_ok=True)
        os.makedirs(args.out_dir, exist_ok=True)
        self.rows_dir = os.path.join(args.work_dir, "rows")
        shutil.rmtree(self.rows_dir, ignore_errors=True)
        os.makedirs(self.rows_dir)
        self.trace_dir = os.path.join(args.work_dir, "trace")
        shutil.rmtree(self.trace_dir, ignore_errors=True)
        self.log_path = os.path.join(args.out_dir, "gpu_bench.log")
        self.log = open(self.log_path, "w", buffering=1)
        self.rows: list[dict] = []
        self.walls: dict[str, list[float]] = {}
        self.torch_dir = torch_location() if args.torch == "auto" else None
        self.torch = None  # (the torch server process, its answers), started on first use
        self._torch_pending = 0  # answers the server owes for requests other than the current row's
        self.child = None  # the JAX row's process while it runs
        self.environment = self._environment()

    # -- helpers --------------------------------------------------------

    def left(self) -> float:
        return self.deadline - time.time()

    def say(self, msg: str) -> None:
        line = f"[{time.time() - self.t0:6.1f} s] {msg}"
        print(line, flush=True)
        self.log.write(line + "\n")

    def _environment(self) -> dict:
        versions = {}
        for name in PACKAGES:
            try:
                versions[name] = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                pass
        env = {"section": "environment", "python": sys.version.split()[0], "executable": self.args.python,
               "platform": platform.platform(), "cpu_count": os.cpu_count(), "packages": versions,
               "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "deadline_s": self.args.deadline_s, "steps": self.args.steps, "warmup": self.args.warmup,
               "peak_tflops": self.args.peak_tflops or None,
               "peak_tflops_float32": self.args.peak_tflops_float32 or self.args.peak_tflops or None,
               "torch_location": self.torch_dir,
               "env": {k: os.environ[k] for k in ("XLA_FLAGS", "XLA_PYTHON_CLIENT_PREALLOCATE",
                                                 "XLA_PYTHON_CLIENT_MEM_FRACTION", "JAX_PLATFORMS",
                                                 "CUDA_VISIBLE_DEVICES") if k in os.environ}}
        if shutil.which("nvidia-smi"):
            try:  # a read-only query
                env["nvidia_smi"] = subprocess.run(
                    ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit",
                     "--format=csv,noheader"], capture_output=True, text=True, timeout=20).stdout.strip()
            except (OSError, subprocess.SubprocessError) as e:
                env["nvidia_smi"] = f"failed: {e}"
        return env

    def _estimate(self, kind: str) -> float:
        walls = self.walls.get(kind)
        return max(walls) if walls else self.args.estimates[kind]

    # -- JAX children ---------------------------------------------------

    def _jax_command(self, job: Job, result: str) -> list[str]:
        a = self.args
        cmd = [a.python, os.path.abspath(__file__), f"--worker={job.kind}", f"--config={model_spec(a, job.model)}",
               f"--steps={a.steps}", f"--warmup={a.warmup}", f"--result={result}",
               f"--peak_tflops={a.peak_tflops}", f"--peak_tflops_float32={a.peak_tflops_float32}",
               f"--profile_steps={a.profile_steps if job.profile else 0}",
               "--inference_batch_sizes=" + ",".join(map(str, a.inference_batch_sizes)),
               f"--spawned_at={time.time()}"]
        cmd += [f"--override={o}" for o in model_overrides(a, job.model)]
        if job.batch_size:
            cmd.append(f"--batch_size={job.batch_size}")
        if job.dtype != "config":
            cmd.append(f"--dtype={job.dtype}")
        if job.profile:
            cmd.append(f"--profile_dir={self.trace_dir}")
        return cmd

    def run_jax(self, job: Job) -> dict:
        result = os.path.join(self.rows_dir, job.key + ".json")
        env = dict(os.environ, PYTHONPATH=_pythonpath(exclude=self.torch_dir), PYTHONUNBUFFERED="1")
        # JAX takes device memory as it needs it, up to 90% (one JAX row at a time; the torch server idles
        # meanwhile with its cache emptied), and the device's peak is this row's own.
        env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.90")
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        cmd = self._jax_command(job, result)
        self.log.write(f"\n===== {job.key}: {' '.join(cmd)}\n")
        t0 = time.time()
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=self.log,
                                stderr=subprocess.STDOUT, process_group=0)
        self.child = proc
        try:
            rc = proc.wait(timeout=max(self.left(), 1.0))
        except subprocess.TimeoutExpired:
            _kill(proc)
            rc = None
        finally:
            self.child = None
        wall = time.time() - t0
        data = _read_json(result)
        if rc == 0 and data.get("status") == "ok":
            return {"status": "ok", "wall_s": wall, **data}
        if rc is None:
            phase = "the timed steps (compiled)" if data.get("status") == "compiled" else "start-up or compile"
            reason = f"killed at the {self.args.deadline_s:.0f} s deadline after {wall:.0f} s, during {phase}"
            return {**{k: v for k, v in data.items() if k != "status"}, "status": "killed", "reason": reason,
                    "wall_s": wall}
        return {**{k: v for k, v in data.items() if k != "status"}, "status": "failed", "wall_s": wall,
                "reason": f"exit code {rc}; see gpu_bench.log: {_log_tail(self.log_path)}"}

    # -- torch server ---------------------------------------------------

    def _torch_start(self) -> None:
        a = self.args
        env = dict(os.environ, PYTHONPATH=_pythonpath(), PYTHONUNBUFFERED="1")
        cmd = [a.python, TORCH_REFERENCE, "--serve", f"--device={a.torch_device}", f"--steps={a.steps}",
               f"--warmup={a.warmup}"] + ([f"--threads={a.torch_threads}"] if a.torch_threads else [])
        self.log.write(f"\n===== torch server: {' '.join(cmd)}\n")
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=self.log, text=True, bufsize=1, process_group=0)
        answers: queue.Queue = queue.Queue()

        def read():
            for line in proc.stdout:
                if line.startswith(TORCH_RESULT_PREFIX):
                    answers.put(json.loads(line[len(TORCH_RESULT_PREFIX):]))
                else:
                    self.log.write(line)
            answers.put(None)  # the server ended

        threading.Thread(target=read, daemon=True).start()
        self.torch = (proc, answers)
        # Load both configs' parameter tables (a CPU-only JAX child each) while the first JAX row compiles.
        self._torch_send({"prepare": [{"config": model_spec(a, m), "override": model_overrides(a, m),
                                       "c2f_cache": self._torch_cache(m)} for m in a.models]})
        self._torch_pending = 1  # the prepare answer, read before the first row's

    def _torch_cache(self, model: str) -> str:
        return os.path.join(self.args.work_dir, f"torch_config_{model}.json")

    def _torch_send(self, request: dict) -> None:
        proc, _ = self.torch
        proc.stdin.write(json.dumps(request) + "\n")
        proc.stdin.flush()

    def _torch_answer(self, timeout: float):
        _, answers = self.torch
        try:
            return answers.get(timeout=max(timeout, 1.0))
        except queue.Empty:
            return TimeoutError

    def _torch_stop(self) -> None:
        if self.torch is not None:
            proc, _ = self.torch
            try:
                proc.stdin.close()  # EOF ends the server; a kill only if it does not
                proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
            _kill(proc)
            self.torch = None
            self._torch_pending = 0

    def run_torch(self, job: Job) -> dict:
        a = self.args
        if self.torch is None:
            self._torch_start()
        t0 = time.time()
        try:
            self._torch_send({"config": model_spec(a, job.model), "override": model_overrides(a, job.model),
                              "batch_size": job.batch_size, "dtype": job.dtype,
                              "c2f_cache": self._torch_cache(job.model)})
        except (BrokenPipeError, OSError) as e:
            self._torch_stop()
            return {"status": "failed", "reason": f"the torch server ended: {e}; see gpu_bench.log"}
        answer = None
        while self._torch_pending:
            answer = self._torch_answer(self.left())
            if answer is TimeoutError or answer is None:
                break
            self._torch_pending -= 1
            if "error" in answer:
                self.say(f"torch prepare failed: {answer['error']}")
        if not self._torch_pending:
            answer = self._torch_answer(self.left())
        wall = time.time() - t0
        if answer is TimeoutError:
            self._torch_stop()
            return {"status": "killed", "wall_s": wall,
                    "reason": f"killed at the {a.deadline_s:.0f} s deadline after {wall:.0f} s"}
        if answer is None:
            self._torch_stop()
            return {"status": "failed", "wall_s": wall,
                    "reason": f"the torch server ended; see gpu_bench.log: {_log_tail(self.log_path)}"}
        if "error" in answer:
            return {"status": "failed", "wall_s": wall, "reason": answer["error"],
                    "traceback": answer.get("traceback")}
        return {"status": "ok", "wall_s": wall, **answer}

    # -- the loop ---------------------------------------------------------

    def run(self) -> dict:
        jobs = plan(self.args)
        self.say(f"{len(jobs)} rows planned; deadline {self.args.deadline_s:.0f} s from the start; "
                 f"torch: {self.torch_dir or 'not importable' if self.args.torch == 'auto' else 'off'}")
        if self.torch_dir is not None and any(j.kind == "torch_train" for j in jobs):
            self._torch_start()  # torch's import and the configs' parameter tables load while the first row runs
        for job in jobs:
            row = self.run_job(job)
            self.rows.append(row)
            if row.get("profile") is not None:
                self.rows.append(self._profile_row(job, row.pop("profile")))
            self.say(_one_line(row))
            self.write()
        self._torch_stop()
        self.say(f"done in {time.time() - self.t0:.0f} s; wrote {self.args.out_dir}/gpu_bench.json and gpu_bench.md")
        return self.write()

    def run_job(self, job: Job) -> dict:
        if job.kind == "torch_train" and self.torch_dir is None:
            why = "--torch=off" if self.args.torch == "off" else f"torch is not importable by {self.args.python}"
            return job.row(self.args, status="skipped", reason=why)
        left, need = self.left(), self._estimate(job.kind)
        if left < need:
            return job.row(self.args, status="skipped",
                           reason=f"not started: {max(left, 0):.0f} s left before the {self.args.deadline_s:.0f} s "
                                  f"deadline; a {job.kind} row takes about {need:.0f} s")
        self.say(f"start {job.key} ({left:.0f} s left)")
        out = self.run_torch(job) if job.kind == "torch_train" else self.run_jax(job)
        if out["status"] == "ok":
            profile_s = out.get("profile_summary_s", 0.0) + (3.0 if job.profile else 0.0)
            self.walls.setdefault(job.kind, []).append(out["wall_s"] - profile_s)
        if job.kind == "inference" and out.get("rows"):
            out["rows"] = [dict(r, model=job.model) for r in out["rows"]]
        return job.row(self.args, **{k: v for k, v in out.items() if k not in ("section",)})

    def _profile_row(self, job: Job, profile: dict) -> dict:
        row = job.row(self.args, **profile)
        row["section"] = "profile"
        row.setdefault("status", "ok")
        # The trace itself, to read again elsewhere (also when its summary failed).
        trace = profile.get("trace") or next(iter(sorted(glob.glob(os.path.join(
            self.trace_dir, "plugins", "profile", "*", "*.xplane.pb")))), None)
        if trace and os.path.isfile(trace) and os.path.getsize(trace) <= 15 * 2**20:
            shutil.copy(trace, os.path.join(self.args.out_dir, "profile" + _trace_suffix(trace)))
            row["trace_copy"] = "profile" + _trace_suffix(trace)
        return row

    def write(self) -> dict:
        report = build_report(self.environment, self.rows, self.args)
        _write_json(os.path.join(self.args.out_dir, "gpu_bench.json"), report)
        with open(os.path.join(self.args.out_dir, "gpu_bench.md"), "w") as fh:
            fh.write(format_tables(report) + "\n")
        return report


def _trace_suffix(path: str) -> str:
    return ".xplane.pb" if path.endswith(".xplane.pb") else ".trace.json.gz"


def _kill(proc: subprocess.Popen) -> None:
    """Ends a child this script started, and its own children (it leads a process group of its own, in
    this script's session)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def _read_json(path: str) -> dict:
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {}


def _log_tail(path: str, n: int = 300) -> str:
    try:
        with open(path, errors="replace") as fh:
            text = fh.read()[-n:]
    except OSError:
        return ""
    return " ".join(text.split())


def _one_line(row: dict) -> str:
    what = f"{row['section']} {row['model']} {row['dtype']}" + (f" b{row['batch_size']}" if "batch_size" in row else "")
    if row.get("status") != "ok":
        return f"{what}: {row.get('status')}: {row.get('reason')}"
    if row["section"] == "train":
        return (f"{what}: {row['images_per_sec']:.1f} img/s, step {1000 * row['median_s']:.1f} ms, compile "
                f"{row['compile_s']:.1f} s, util {_fmt(row.get('utilisation'), '.1%')} (MFU "
                f"{_fmt(row.get('model_utilisation'), '.1%')}), wall {row['wall_s']:.0f} s")
    if row["section"] == "torch_train":
        return f"{what}: {row['images_per_sec']:.1f} img/s, wall {row['wall_s']:.0f} s"
    if row["section"] == "inference":
        return what + ": " + ", ".join(f"b{r['batch_size']} {r['images_per_sec']:.1f} img/s" for r in row["rows"])
    if row["section"] == "profile":
        return f"{what}: {len(row.get('top_ops', []))} ops, {row.get('source')} time {row.get('total_ms', 0):.1f} ms"
    return what


# ---------------------------------------------------------------------------
# Report: the JSON and the tables.


def build_report(environment: dict, rows: list[dict], args) -> dict:
    """Environment, rows, the JAX / torch ratio of every pair measured, and the issue's two targets."""
    jax_rows = {(r["model"], r["dtype"], r["batch_size"]): r for r in rows
                if r["section"] == "train" and r.get("status") == "ok"}
    torch_rows = {(r["model"], r["dtype"], r["batch_size"]): r for r in rows
                  if r["section"] == "torch_train" and r.get("status") == "ok"}
    comparisons = []
    for key, j in jax_rows.items():
        if key in torch_rows:
            t = torch_rows[key]
            comparisons.append({"model": key[0], "dtype": key[1], "batch_size": key[2],
                                "jax_images_per_sec": j["images_per_sec"], "torch_images_per_sec": t["images_per_sec"],
                                "jax_over_torch": j["images_per_sec"] / t["images_per_sec"]})
    device = next((r.get("device_kind") for r in rows if r.get("device_kind")), environment.get("device_kind"))
    targets = None
    if "paper" in args.models and "bfloat16" in args.dtypes:
        key = ("paper", "bfloat16", max(args.batch_sizes))
        j, ratio = jax_rows.get(key), next((c["jax_over_torch"] for c in comparisons
                                            if (c["model"], c["dtype"], c["batch_size"]) == key), None)
        util = j.get("utilisation") if j else None
        targets = {"row": f"paper bfloat16 batch {key[2]}", "peak_tflops": args.peak_tflops or None,
                   "utilisation": util, "model_utilisation": j.get("model_utilisation") if j else None,
                   "utilisation_target": TARGETS["utilisation"],
                   "utilisation_met": None if util is None else util >= TARGETS["utilisation"],
                   "jax_over_torch": ratio, "jax_over_torch_target": TARGETS["jax_over_torch"],
                   "jax_over_torch_met": None if ratio is None else ratio >= TARGETS["jax_over_torch"]}
    return {"environment": dict(environment, device_kind=device), "rows": rows, "comparisons": comparisons,
            "targets": targets}


def _fmt(v, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def _gib(v) -> str:
    return "–" if not v else f"{v / 2**30:.1f}"


def _gflop(v) -> str:
    if not v:
        return "–"
    g = v / 1e9
    return f"{g:,.0f}" if g >= 100 else f"{g:.2f}"


def _dt(dtype: str) -> str:
    return {"bfloat16": "bf16", "float32": "f32"}.get(dtype, dtype)


def format_tables(report: dict) -> str:
    """Markdown: the train-step table (JAX and torch side by side), inference, the profile, targets, notes."""
    env, rows = report["environment"], report["rows"]
    pk = env.get("packages", {})
    lines = [f"c2f_vol GPU benchmark: {env.get('device_kind') or '(no JAX row measured)'}; "
             f"jax {pk.get('jax', '?')}, flax {pk.get('flax', '?')}, torch {pk.get('torch', '–')}; "
             f"{env['steps']} timed steps after {env['warmup']} warm-up; peak {_fmt(env.get('peak_tflops'), 'g')} "
             f"TFLOP/s (float32 rows: {_fmt(env.get('peak_tflops_float32'), 'g')}); {env['started']}", ""]
    notes = []
    torch_by_key = {(r["model"], r["dtype"], r["batch_size"]): r for r in rows if r["section"] == "torch_train"}
    lines += ["| model | dtype | batch | JAX img/s | step ms median (min–max) | compile s | GFLOP/step | TFLOP/s "
              "| util | MFU | peak GiB | torch img/s | torch step ms | torch peak GiB | JAX / torch |",
              "|" + " --- |" * 15]
    for r in rows:
        if r["section"] != "train":
            continue
        t = torch_by_key.get((r["model"], r["dtype"], r["batch_size"]), {})
        cells = [r["model"], _dt(r["dtype"]), str(r["batch_size"])]
        if r.get("status") == "ok":
            mem = r.get("device_peak_bytes") or (r.get("memory_plan_bytes_per_device") or {}).get("total")
            cells += [f"{r['images_per_sec']:.1f}",
                      f"{1000 * r['median_s']:.1f} ({1000 * r['min_s']:.1f}–{1000 * r['max_s']:.1f})",
                      f"{r['compile_s']:.1f}", _gflop(r.get("flops_per_step")), _fmt(r.get("tflops_per_sec"), ".1f"),
                      _fmt(r.get("utilisation"), ".1%"), _fmt(r.get("model_utilisation"), ".1%"),
                      _gib(mem) + ("" if r.get("device_peak_bytes") else " (plan)")]
        else:
            cells += [r.get("status", "?")] + ["–"] * 7
            notes.append(f"JAX {r['model']} {_dt(r['dtype'])} b{r['batch_size']}: {r.get('status')}: {r.get('reason')}")
        if t.get("status") == "ok":
            st = t["step_time_s"]
            cells += [f"{t['images_per_sec']:.1f}", f"{1000 * st['median']:.1f}", _gib(t.get("peak_allocated_bytes"))]
        else:
            cells += [t.get("status", "–"), "–", "–"]
            if t:
                notes.append(f"torch {t['model']} {_dt(t['dtype'])} b{t['batch_size']}: {t.get('status')}: "
                             f"{t.get('reason')}")
        ratio = (r["images_per_sec"] / t["images_per_sec"]
                 if r.get("status") == "ok" and t.get("status") == "ok" else None)
        cells.append(_fmt(ratio, ".2f") + ("×" if ratio else ""))
        lines.append("| " + " | ".join(cells) + " |")

    inference = [r for r in rows if r["section"] == "inference"]
    if inference:
        lines += ["", "| JAX inference | dtype | batch | img/s | latency ms median (min–max) | compile s |",
                  "|" + " --- |" * 6]
        for r in inference:
            if r.get("status") != "ok":
                batches = ",".join(map(str, r.get("batch_sizes", [])))
                lines.append(f"| {r['model']} | – | {batches} | {r.get('status')} | – | – |")
                notes.append(f"inference {r['model']}: {r.get('status')}: {r.get('reason')}")
                continue
            for x in r["rows"]:
                lines.append(f"| {r['model']} | {_dt(x['dtype'])} | {x['batch_size']} | {x['images_per_sec']:.1f} | "
                             f"{x['latency_ms']:.2f} ({1000 * x['min_s']:.2f}–{1000 * x['max_s']:.2f}) | "
                             f"{_fmt(x.get('compile_s'), '.1f')} |")

    for r in rows:
        if r["section"] != "profile":
            continue
        if r.get("status") != "ok":
            notes.append(f"profile: {r.get('status')}: {r.get('reason')}")
            continue
        steps = r.get("steps") or 1
        lines += ["", f"Profile of {r['model']} {_dt(r['dtype'])} batch {r['batch_size']}, {steps} steps: top "
                  f"{len(r['top_ops'])} ops by {r['source']} time ({r['total_ms'] / steps:.1f} ms per step in all "
                  f"ops counted)", "", "| # | op | ms per step | share | count | detail |", "|" + " --- |" * 6]
        for k, op in enumerate(r["top_ops"], 1):
            detail = (op.get("detail") or "").replace("|", "/")[:80]
            lines.append(f"| {k} | `{op['name'][:60]}` | {op['total_ms'] / steps:.2f} | {_fmt(op['share'], '.1%')} | "
                         f"{op['count']} | {detail} |")

    tg = report.get("targets")
    if tg:
        lines += ["", f"Targets ({tg['row']}): utilisation {_fmt(tg['utilisation'], '.1%')} of XLA's FLOPs (target ≥ "
                  f"{tg['utilisation_target']:.0%}: {_met(tg['utilisation_met'])}; of the model FLOPs "
                  f"{_fmt(tg.get('model_utilisation'), '.1%')}); JAX / torch "
                  f"{_fmt(tg['jax_over_torch'], '.2f')}× (target ≥ {tg['jax_over_torch_target']}×: "
                  f"{_met(tg['jax_over_torch_met'])})"]
    if notes:
        lines += ["", "Not measured:"] + [f"- {n}" for n in notes]
    return "\n".join(lines)


def _met(flag) -> str:
    return "not measured" if flag is None else ("met" if flag else "NOT met")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        {"train": worker_train, "inference": worker_inference, "check_env": worker_check_env}[args.worker](args)
        return 0
    run = Run(args)

    def stop(signum, frame):  # a SIGTERM from outside: end the children, keep what was written
        raise SystemExit(f"stopped by signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    try:
        report = run.run()
    finally:
        if run.child is not None:
            _kill(run.child)
        run._torch_stop()
    print()
    print(format_tables(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
