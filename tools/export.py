"""Export a trained workdir's latest checkpoint as a TensorFlow SavedModel (CPU and CUDA).

    python tools/export.py --workdir=DIR [--output=DIR/saved_model] [--platforms=cpu,cuda]
"""

import os

from absl import app, flags, logging

from c2f_vol import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Training workdir (config.json, checkpoints/, bone_lengths_mm.json).")
flags.DEFINE_string("output", None, "SavedModel folder to write (default: WORKDIR/saved_model).")
flags.DEFINE_list("platforms", ["cpu", "cuda"], "Platforms the SavedModel can be served on.")
flags.DEFINE_integer("restore_step", None, "Export this checkpoint step (default: the newest readable one).")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from c2f_vol import export, fileio, workdir
    from c2f_vol.data import stats

    output = FLAGS.output or os.path.join(FLAGS.workdir, "saved_model")
    fileio.check_writable(output, "--output", folder_output=True)
    restored = workdir.restore(FLAGS.workdir, step=FLAGS.restore_step)
    step = restored.step
    out = export.export_saved_model(restored.network, restored.variables, stats.read_bone_lengths(FLAGS.workdir),
                                    output, platforms=FLAGS.platforms)
    logging.info("Exported step %d", step)
    print(f"SavedModel (step {step}): {out}")


if __name__ == "__main__":
    cli.run(main)
