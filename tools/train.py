"""Train a model: python tools/train.py --config=configs/X.py --workdir=DIR [--config.x=...].

Several processes (one per host, or several on one host) train one model together when started with
`--multihost` (a cluster JAX detects: SLURM, Open MPI, TPU pods, ...) or with the explicit trio
`--coordinator_address=HOST:PORT --num_processes=N --process_id=I` on every process. All of them must
get the same config and the same `--workdir` (a shared file system): process 0 writes config.json,
the bone lengths and TensorBoard events; the checkpoints are saved by all together through orbax.
"""

import json
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from c2f_vol import cli

FLAGS = flags.FLAGS
PREEMPTED_EXIT_CODE = 143  # stopped by SIGTERM after saving a checkpoint; rerun to resume
config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/*.py[:variant]).", lock_config=True)
flags.DEFINE_string("workdir", None, "Folder for checkpoints, TensorBoard events and config.json. Every process "
                    "of a multi-process run must be given the same one, on a file system they all see.")
flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize() first with the cluster's settings "
                  "auto-detected (SLURM, Open MPI, TPU pods, ...; one process per host). Implied by "
                  "--coordinator_address/--num_processes/--process_id, which set them explicitly instead.")
flags.DEFINE_string("coordinator_address", None, "HOST:PORT of process 0, where the coordination service "
                    "listens (every process passes the same one). Given with --num_processes and "
                    "--process_id; implies --multihost without auto-detection.")
flags.DEFINE_integer("num_processes", None, "How many processes train together (with --coordinator_address).")
flags.DEFINE_integer("process_id", None, "This process's index in [0, num_processes); 0 is the coordinator "
                     "and the one that writes config.json and TensorBoard events.")
flags.DEFINE_integer("heartbeat_timeout", 30, "Multi-process runs: seconds without a heartbeat after which a "
                     "process counts as dead, and the others stop with an error instead of waiting forever. "
                     "Also bounds the wait for all processes to join at start (5 x this) and to leave at the "
                     "end (10 x this: one may finish its last evaluation much later than another).")
flags.DEFINE_integer("cpu_devices", 0, "On a CPU-only host, split the CPU into this many data-parallel devices "
                     "(0: one device over all cores, the faster layout measured; N must divide the batch). Ignored by "
                     "GPU/TPU backends.")
flags.DEFINE_integer("restore_step", None, "Resume from this checkpoint step (default: the newest readable one).")
flags.mark_flags_as_required(["config", "workdir"])


def _distributed_args() -> dict | None:
    """jax.distributed.initialize's arguments from the flags (None: one process); raises UsageError."""
    explicit = {"coordinator_address": FLAGS.coordinator_address, "num_processes": FLAGS.num_processes,
                "process_id": FLAGS.process_id}
    given = [k for k, v in explicit.items() if v is not None]
    if FLAGS.heartbeat_timeout < 1:
        raise app.UsageError(f"--heartbeat_timeout must be >= 1 second; got {FLAGS.heartbeat_timeout}")
    timeouts = dict(heartbeat_timeout_seconds=FLAGS.heartbeat_timeout,
                    initialization_timeout=5 * FLAGS.heartbeat_timeout,
                    shutdown_timeout_seconds=10 * FLAGS.heartbeat_timeout)
    if not given:
        return timeouts if FLAGS.multihost else None
    if len(given) < 3:
        missing = ", ".join(f"--{k}" for k in explicit if k not in given)
        raise app.UsageError(f"--coordinator_address, --num_processes and --process_id go together; missing {missing} "
                             "(or pass none of them and --multihost to auto-detect a cluster)")
    host, sep, port = FLAGS.coordinator_address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise app.UsageError(f"--coordinator_address must be HOST:PORT with a port in 1..65535 (e.g. "
                             f"10.0.0.1:12345); got {FLAGS.coordinator_address!r}")
    if FLAGS.num_processes < 1:
        raise app.UsageError(f"--num_processes must be >= 1; got {FLAGS.num_processes}")
    if not 0 <= FLAGS.process_id < FLAGS.num_processes:
        raise app.UsageError(f"--process_id must be in [0, {FLAGS.num_processes}) for --num_processes="
                             f"{FLAGS.num_processes}; got {FLAGS.process_id}")
    return dict(explicit, **timeouts)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    distributed = _distributed_args()  # before JAX starts, so a wrong flag costs nothing
    import jax

    from c2f_vol import sharding

    sharding.use_cpu_devices(FLAGS.config.batch_size, FLAGS.cpu_devices)
    if distributed is not None:
        # Cross-process collectives on the CPU backend (GPU/TPU use NCCL/ICI and ignore this).
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(**distributed)
    from c2f_vol import train

    logging.info("JAX process %d of %d, %d devices (%d local): %s", jax.process_index(), jax.process_count(),
                 jax.device_count(), jax.local_device_count(), jax.devices())
    out = train.train_and_evaluate(FLAGS.config, FLAGS.workdir, restore_step=FLAGS.restore_step)
    if out["preempted"]:
        # Not 0: the run is not finished. 143 (128 + SIGTERM) is what a shell reports for a job SIGTERM
        # ended, so schedulers and retry loops treat it as "stopped, run again" (the rerun resumes).
        sys.exit(PREEMPTED_EXIT_CODE)
    if out["eval"]:
        summary = {k: out["eval"][k] for k in ("mpjpe_mm", "pa_mpjpe_mm", "frames") if k in out["eval"]}
        logging.info("final evaluation at step %d: %s", out["step"], json.dumps(summary, sort_keys=True))


if __name__ == "__main__":
    cli.run(main)
