"""Benchmark the train step, the input pipeline and inference; print a table and write JSON.

    python tools/benchmark.py --config=configs/synthetic_cpu.py --output=bench.json
    python tools/benchmark.py --config=configs/h36m_paper.py --batch_size=64 --dtype=bfloat16 \
        --peak_tflops=989 --sections=train,inference --inference_runtimes=jax --profile_dir=/tmp/trace

On a host without TensorFlow, `--sections=train` and `--inference_runtimes=jax` need none of it.
Every GPU row at once (both h36m configs, batch 32 and 64, bf16 and float32, PyTorch twin, profile):
benchmarks/gpu.sh (benchmarks/README.md).

Any config field can be overridden as in training (`--config.model.features=128`).
See c2f_vol/benchmark.py for what each figure means and how it is timed.
"""

import os

from absl import app, flags
from ml_collections import config_flags

from c2f_vol import cli

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/*.py[:variant]).", lock_config=True)
flags.DEFINE_list("sections", ["train", "pipeline", "inference"], "Which of train, pipeline, inference to run.")
flags.DEFINE_integer("batch_size", None, "Global train batch size (default: the config's).")
flags.DEFINE_enum("dtype", None, ["float32", "bfloat16"], "Compute dtype (default: the config's model.dtype).")
flags.DEFINE_integer("steps", 20, "Timed calls per measurement (train steps, inference batches).")
flags.DEFINE_integer("warmup", 3, "Untimed calls before timing.")
flags.DEFINE_float("peak_tflops", 0.0, "Device peak in TFLOP/s for utilisation (e.g. 989: H100 SXM dense bf16).")
flags.DEFINE_string("profile_dir", None, "Write a jax.profiler trace of 3 train steps here, and report its top ops.")
flags.DEFINE_list("threads", ["1"], "tf.data thread counts to measure the pipeline at.")
flags.DEFINE_integer("pipeline_batches", 50, "Batches timed per pipeline measurement.")
flags.DEFINE_integer("frame_size", 0, "When the dataset is not prepared, the pipeline reads rendered stand-ins shaped like "
                     "what the config's dataset stores (human36m: 256² person crops); > 0 renders whole frames of "
                     "this side instead (and is used even when the dataset is prepared).")
flags.DEFINE_integer("host_cores", 16, "Cores of the GPU host, for the pipeline-vs-train-step projection.")
flags.DEFINE_list("inference_batch_sizes", ["1", "32"], "Batch sizes for the inference section.")
flags.DEFINE_list("inference_runtimes", ["jax", "savedmodel"], "What the inference section times: jax and/or "
                  "savedmodel (the SavedModel needs TensorFlow).")
flags.DEFINE_string("saved_model", None, "Time this exported SavedModel (default: export the benchmark's model).")
flags.DEFINE_string("output", None, "Write the results as JSON here.")
flags.DEFINE_integer("cpu_devices", 0, "On a CPU-only host, split the CPU into this many data-parallel devices for the "
                     "train step (0: one device over all cores), as tools/train.py does.")
flags.mark_flags_as_required(["config"])


def _ints(values, name):
    try:
        out = [int(v) for v in values]
    except ValueError:
        raise app.UsageError(f"--{name} takes integers; got {values}")
    if not out or min(out) < 1:
        raise app.UsageError(f"--{name} takes integers >= 1; got {values}")
    return out


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    unknown = sorted(set(FLAGS.sections) - {"train", "pipeline", "inference"})
    if unknown or not FLAGS.sections:
        raise app.UsageError(f"--sections takes train, pipeline, inference; got {FLAGS.sections}")
    config = FLAGS.config
    if FLAGS.batch_size is not None:
        config.batch_size = FLAGS.batch_size
    import jax

    from c2f_vol import benchmark, fileio, sharding

    sharding.use_cpu_devices(config.batch_size, FLAGS.cpu_devices)
    if FLAGS.dtype is not None:
        config.model.dtype = FLAGS.dtype
    results = [{"section": "environment", "backend": jax.default_backend(),
                "devices": [d.device_kind for d in jax.devices()], "jax": jax.__version__,
                "cpu_count": os.cpu_count(), "config": FLAGS["config"].value and FLAGS["config"].config_filename,
                "overrides": {"batch_size": config.batch_size, "dtype": config.model.dtype}}]
    print(f"backend {jax.default_backend()} {results[0]['devices']}  config {results[0]['config']}")

    def report(rows):
        rows = rows if isinstance(rows, list) else [rows]
        results.extend(rows)
        print(benchmark.format_table(rows), flush=True)

    train_row = None
    if "train" in FLAGS.sections:
        train_row = benchmark.benchmark_train(config, steps=FLAGS.steps, warmup=FLAGS.warmup,
                                              peak_tflops=FLAGS.peak_tflops, profile_dir=FLAGS.profile_dir)
        report(train_row)
        if FLAGS.profile_dir:
            report(benchmark.profile_summary(FLAGS.profile_dir, top=10, steps=3))
    pipe_rows = []
    if "pipeline" in FLAGS.sections:
        for n in _ints(FLAGS.threads, "threads"):
            pipe_rows.append(benchmark.benchmark_pipeline(config, threads=n, batches=FLAGS.pipeline_batches,
                                                          frame_size=FLAGS.frame_size))
            report(pipe_rows[-1])
    infer_rows = []
    if "inference" in FLAGS.sections:
        runtimes = sorted(set(FLAGS.inference_runtimes))
        if not runtimes or set(runtimes) - {"jax", "savedmodel"}:
            raise app.UsageError(f"--inference_runtimes takes jax, savedmodel; got {FLAGS.inference_runtimes}")
        infer_rows = benchmark.benchmark_inference(
            config, batch_sizes=_ints(FLAGS.inference_batch_sizes, "inference_batch_sizes"), steps=FLAGS.steps,
            warmup=FLAGS.warmup, saved_model=FLAGS.saved_model, runtimes=tuple(runtimes))
        report(infer_rows)
    summary = benchmark.summarize(train_row, pipe_rows, infer_rows, host_cores=FLAGS.host_cores)
    if summary:
        report(summary)
    if FLAGS.output:
        fileio.write_json(FLAGS.output, results)
        print(f"wrote {FLAGS.output}")


if __name__ == "__main__":
    cli.run(main, tensorflow=False)
