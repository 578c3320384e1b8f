"""The coarse-to-fine ablation on the synthetic data: depth schedules x losses, test MPJPE / PA-MPJPE.

    python tools/ablate.py --data_dir=workdir/tensorflow_datasets --workdir=workdir/ablation
    python tools/ablate.py ... --grid=stacks4 --steps=600    # 4 stacks: (1, 2, 4, 16) against (16, 16, 16, 16)

Builds c2f_synthetic/procedural into --data_dir first if it is not there. Prints a table and writes
ablation.json and ablation.png (learning curves) into --workdir. A finished run is read back, not retrained.
"""

import os

from absl import app, flags

from c2f_vol import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("config", "configs/synthetic_cpu.py", "Base config file; each run overrides depth bins and loss.")
flags.DEFINE_string("workdir", None, "Folder for the runs, ablation.json and ablation.png.")
flags.DEFINE_string("data_dir", None, "TFDS data_dir holding (or to hold) c2f_synthetic/procedural.")
flags.DEFINE_enum("grid", "stacks2", ["stacks2", "stacks4"], "Depth schedules to compare.")
flags.DEFINE_list("losses", [], "Loss names to run (default: all of c2f_vol.ablation.LOSSES).")
flags.DEFINE_integer("steps", 1000, "Training steps per run: the budget. Each run costs about steps x 16 / 89 s "
                     "of training on 2 AVX2 cores (4x less on AVX-512) plus about a minute of compiling and "
                     "evaluation, so the default grid (6 runs) stays within 30 minutes on 2 AVX2 cores.")
flags.DEFINE_integer("eval_points", 4, "Test evaluations per run (the learning curve's points).")
flags.mark_flags_as_required(["workdir", "data_dir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    import jax

    from c2f_vol import ablation, config as config_lib, sharding
    from c2f_vol.data import builders

    base = config_lib.load(FLAGS.config)
    sharding.use_cpu_devices(base.batch_size, 0)
    data_dir = os.path.abspath(os.path.expanduser(FLAGS.data_dir))
    builders.build(base.data.name, data_dir)
    rows = ablation.run_grid(FLAGS.config, FLAGS.workdir, grid=FLAGS.grid, losses=FLAGS.losses or None,
                             steps=FLAGS.steps, eval_points=FLAGS.eval_points, data_dir=data_dir)
    json_path = os.path.join(FLAGS.workdir, "ablation.json")
    png_path = os.path.join(FLAGS.workdir, "ablation.png")
    ablation.write_outputs(rows, json_path, png_path, meta=dict(
        config=FLAGS.config, grid=FLAGS.grid, steps=FLAGS.steps, devices=str(jax.devices())))
    print(ablation.format_table(rows))
    print(f"Wrote {os.path.abspath(json_path)} and {os.path.abspath(png_path)}")


if __name__ == "__main__":
    cli.run(main)
