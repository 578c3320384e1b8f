"""Train a model: python tools/train.py --config=configs/X.py --workdir=DIR [--config.x=...]."""

from absl import app, flags, logging
from ml_collections import config_flags

from c2f_vol import cli

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/*.py[:variant]).", lock_config=True)
flags.DEFINE_string("workdir", None, "Folder for checkpoints, TensorBoard events and config.json.")
flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize() first (one process per host).")
flags.DEFINE_integer("cpu_devices", 0, "On a CPU-only host, split the CPU into this many data-parallel devices "
                     "(0: one per core, as many as divide the batch). Ignored by GPU/TPU backends.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    import jax

    from c2f_vol import sharding

    sharding.use_cpu_devices(FLAGS.config.batch_size, FLAGS.cpu_devices)
    if FLAGS.multihost:
        jax.distributed.initialize()
    from c2f_vol import train

    logging.info("JAX %d processes, %d devices: %s", jax.process_count(), jax.device_count(), jax.devices())
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
    cli.run(main)
