"""The CPU train step against PyTorch eager, in alternating pairs: one command, one JSON, one table.

The JAX step is compiled once in this process; the PyTorch twin (`torch_reference.py --serve`, the same
network, loss and optimiser step) answers in a child process. Each pair times `--steps` JAX steps, then
`--steps` torch steps (a fresh torch model each time, after `--torch_warmup` untimed steps), so the two
sides of a pair share the machine's speed of that moment; the CPU of a shared VM drifts by ±20% within
minutes. The JAX side is idle while torch runs and the other way round. Each pair times PyTorch in both of
its layouts, channels-last and NCHW, and takes its ratio against the faster of the two: neither wins
everywhere (on the AVX2 class NCHW won for the paper model, channels-last for synthetic_cpu).
`--torch_layout=nchw` (or `=channels_last`) times that layout only.

    PYTHONPATH=/tmp/torchpkgs .venv/bin/python benchmarks/cpu_pairs.py --config=configs/synthetic_cpu.py \\
        --batch_size=16 --pairs=5 --steps=20
    PYTHONPATH=/tmp/torchpkgs .venv/bin/python benchmarks/cpu_pairs.py --config=configs/h36m_paper.py \\
        --batch_size=2 --dtype=float32 --pairs=5 --steps=3 --output=paper_pairs.json \\
        [--torch_layout=nchw] [--torch_huge_pages]

torch is not a project dependency: install it in a folder of its own (`pip install --target DIR
torch==2.13.0`) and put DIR on PYTHONPATH. The row records the CPU's class (AVX-512 or AVX2 only), since
XLA's CPU convolutions differ by about 4x between them, and the JSON the XLA_FLAGS the JAX side ran with
(on the AVX2 class `sharding.use_cpu_devices` turns XLA's YNNPACK kernels off, as training does).
Like the tools, this command restarts itself with malloc's huge pages (`hostcpu.restart_with_huge_pages`);
the torch side runs with the environment it was started with, or with the same GLIBC_TUNABLES under
`--torch_huge_pages`. The JSON records both.
"""

from __future__ import annotations

import importlib.util
import json
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # also when this file is loaded by path
from bench_overrides import parse_overrides  # noqa: E402

from c2f_vol import hostcpu  # noqa: E402  (no JAX)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCH_REFERENCE = os.path.join(REPO, "benchmarks", "torch_reference.py")
RESULT_PREFIX = "C2F_TORCH_RESULT "
LAYOUTS = {"channels_last": False, "nchw": True}  # torch_reference.py's --no_channels_last per layout

FLAGS = flags.FLAGS
flags.DEFINE_string("config", "configs/synthetic_cpu.py", "path/to/config.py[:variant].")
flags.DEFINE_multi_string("override", [], "KEY=VALUE config override for both sides (repeatable).")
flags.DEFINE_integer("batch_size", None, "Batch size (default: the config's).", lower_bound=1)
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype of both sides.")
flags.DEFINE_integer("pairs", 5, "Alternating pairs (JAX block, then torch block).", lower_bound=1)
flags.DEFINE_integer("steps", 20, "Timed steps per block.", lower_bound=1)
flags.DEFINE_integer("warmup", 3, "Untimed JAX steps after compiling (the torch side warms up per block).",
                     lower_bound=0)
flags.DEFINE_integer("torch_warmup", 2, "Untimed torch steps at the start of each torch block.", lower_bound=0)
flags.DEFINE_integer("torch_threads", None, "torch.set_num_threads (default: all usable cores).", lower_bound=1)
flags.DEFINE_float("pause_s", 2.0, "Idle seconds before each block, so that neither side's threads are still "
                   "spinning when the other starts (torch's OpenMP threads spin-wait after their work).",
                   lower_bound=0.0)
flags.DEFINE_integer("timeout_s", 1800, "Longest wait for one torch block.", lower_bound=1)
flags.DEFINE_bool("torch_huge_pages", False, "Give the torch side the JAX side's GLIBC_TUNABLES (malloc's huge pages, "
                  "hostcpu.restart_with_huge_pages) instead of the environment this command was started with.")
flags.DEFINE_multi_enum("torch_layout", list(LAYOUTS), list(LAYOUTS),
                        "PyTorch's activation layout (repeatable; default both): each pair times one torch block per "
                        "layout, in an order that rotates from pair to pair, and its ratio is against the faster one.")
flags.DEFINE_string("output", None, "Write the JSON here.")


def torch_importable() -> bool:
    """Whether `import torch` would find it, without importing it (its thread pools stay out of this process)."""
    try:
        return importlib.util.find_spec("torch") is not None
    except ImportError:
        return False


class TorchServer:
    """`torch_reference.py --serve` in a child process: one JSON request in, one result line out."""

    def __init__(self, timeout_s: float):
        cmd = [sys.executable, TORCH_REFERENCE, "--serve", "--device=cpu"]
        self.timeout_s = timeout_s
        self.env = dict(os.environ) if FLAGS.torch_huge_pages else hostcpu.environ_before_restart()
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, env=self.env)
        self.answers: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            if line.startswith(RESULT_PREFIX):
                self.answers.put(json.loads(line[len(RESULT_PREFIX):]))
        self.answers.put(None)

    def ask(self, request: dict) -> dict:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        try:
            answer = self.answers.get(timeout=self.timeout_s)
        except queue.Empty:
            raise SystemExit(f"torch_reference.py gave no answer in {self.timeout_s} s to {request}")
        if answer is None:
            raise SystemExit(f"torch_reference.py ended (exit code {self.proc.wait()}) before answering {request}")
        if "error" in answer:
            raise SystemExit(f"torch_reference.py failed: {answer['error']}\n{answer.get('traceback', '')}")
        return answer

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.write("\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=60)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not torch_importable():
        raise app.UsageError("torch is not importable: install it in a folder of its own "
                             "(pip install --target DIR torch==2.13.0) and put DIR on PYTHONPATH")
    import jax

    from c2f_vol import benchmark, config as config_lib, sharding, train, train_state

    overrides = parse_overrides(FLAGS.override)
    config = config_lib.load(FLAGS.config, overrides)
    config.batch_size = FLAGS.batch_size or config.batch_size
    config.model.dtype = FLAGS.dtype
    batch = int(config.batch_size)
    sharding.use_cpu_devices(batch, 0)
    machine = hostcpu.cpu_class()
    print(f"CPU: {machine['model']} ({machine['class']}, {machine['cores']} cores); jax {jax.__version__}",
          flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        server = TorchServer(FLAGS.timeout_s)
        request = {"config": FLAGS.config, "override": list(FLAGS.override), "batch_size": batch,
                   "dtype": FLAGS.dtype, "steps": FLAGS.steps, "warmup": FLAGS.torch_warmup, "device": "cpu",
                   "threads": FLAGS.torch_threads, "c2f_cache": os.path.join(tmp, "c2f.json")}
        # The torch side reads the config and checks its parameters against the Flax model once, now.
        server.ask({"prepare": [{k: request[k] for k in ("config", "override", "c2f_cache")}], "device": "cpu"})

        trainer = train.Trainer(config)
        data = trainer.put(benchmark.random_train_batch(trainer.codec, batch, config.seed))
        state = jax.device_put(benchmark.on_host(lambda: train_state.create(trainer.network, trainer.tx)),
                               sharding.replicated(trainer.mesh))

        def step():
            nonlocal state
            state, metrics = trainer.train_step(state, data)
            jax.block_until_ready(metrics["loss"])

        t0 = time.perf_counter()
        step()
        compile_s = time.perf_counter() - t0
        print(f"JAX first step (compile and run) {compile_s:.1f} s", flush=True)
        for _ in range(FLAGS.warmup):
            step()
        layouts = list(dict.fromkeys(FLAGS.torch_layout))
        pairs = []
        for k in range(FLAGS.pairs):
            time.sleep(FLAGS.pause_s)
            jax_s = statistics.median(benchmark.time_calls(step, FLAGS.steps, 0))
            by_layout = {}
            for layout in layouts[k % len(layouts):] + layouts[:k % len(layouts)]:
                time.sleep(FLAGS.pause_s)
                torch_result = server.ask(dict(request, no_channels_last=LAYOUTS[layout]))
                torch_s = torch_result["step_time_s"]["median"]
                by_layout[layout] = {"torch_images_per_sec": batch / torch_s, "torch_step_s": torch_s,
                                     "ratio": torch_s / jax_s, "channels_last": torch_result["channels_last"]}
            fastest = min(layouts, key=lambda name: by_layout[name]["torch_step_s"])
            pairs.append({"jax_images_per_sec": batch / jax_s, "jax_step_s": jax_s, **by_layout[fastest],
                          "torch_layout": fastest, "torch_by_layout": by_layout})
            print(f"pair {k + 1}/{FLAGS.pairs}: JAX {batch / jax_s:.3f} images/s, "
                  + ", ".join(f"torch {name} {by_layout[name]['torch_images_per_sec']:.3f} images/s "
                              f"(JAX / torch {by_layout[name]['ratio']:.2f}x)" for name in layouts), flush=True)
        server.close()

    ratios = [p["ratio"] for p in pairs]
    result = {"config": FLAGS.config, "overrides": list(FLAGS.override), "batch_size": batch, "dtype": FLAGS.dtype,
              "steps_per_block": FLAGS.steps, "cpu": machine, "jax": jax.__version__,
              "torch": torch_result.get("torch_version"), "torch_threads": torch_result.get("threads"),
              "torch_layouts": layouts,
              "xla_flags": os.environ.get("XLA_FLAGS", ""),
              "glibc_tunables": {"jax": os.environ.get("GLIBC_TUNABLES", ""),
                                 "torch": server.env.get("GLIBC_TUNABLES", "")},
              "jax_first_step_s": compile_s, "pairs": pairs, "median_ratio": statistics.median(ratios),
              "median_ratio_by_layout": {name: statistics.median(p["torch_by_layout"][name]["ratio"] for p in pairs)
                                         for name in layouts},
              "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}
    jax_ips = [p["jax_images_per_sec"] for p in pairs]
    rows = [(name, [p["torch_by_layout"][name] for p in pairs]) for name in layouts]
    if len(layouts) > 1:
        rows.append(("the faster layout of each pair", pairs))
    print("\n| step | CPU | pairs | PyTorch layout | JAX images/s | PyTorch eager images/s | JAX / PyTorch per pair "
          "| median |\n| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, sides in rows:
        torch_ips = [side["torch_images_per_sec"] for side in sides]
        row_ratios = [side["ratio"] for side in sides]
        print(f"| `{os.path.basename(FLAGS.config)}`, batch {batch}, {FLAGS.dtype} | {machine['class']} | {len(pairs)} "
              f"| {name} | {min(jax_ips):.3g}–{max(jax_ips):.3g} | {min(torch_ips):.3g}–{max(torch_ips):.3g} "
              f"| {', '.join(f'{r:.2f}' for r in row_ratios)} | **{statistics.median(row_ratios):.2f}×** |")
    if FLAGS.output:
        with open(FLAGS.output, "w") as fh:
            json.dump(result, fh, indent=2)
        print(f"wrote {FLAGS.output}")


if __name__ == "__main__":
    hostcpu.restart_with_huge_pages()  # as the tools' cli.run does; the torch side: --torch_huge_pages
    app.run(main)
