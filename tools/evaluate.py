"""Evaluate a checkpoint or a SavedModel on a TFDS split (Human3.6M test by default).

    python tools/evaluate.py --workdir=DIR [--flip_test] [--root_depth=gt|limbs] [--frame_stride=5]
    python tools/evaluate.py --saved_model=DIR --dataset=human36m --data_dir=TFDS_DIR --bone_lengths=DIR/bone_lengths_mm.json

Prints the per-action Protocol #1 / #2 table and writes everything as JSON
(keys mpjpe_mm, pa_mpjpe_mm, per_action, per_joint, frames, config, ...).
"""

import os

from absl import app, flags, logging

from c2f_vol import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Training workdir to evaluate (its latest checkpoint).")
flags.DEFINE_string("saved_model", None, "Or: an exported SavedModel folder.")
flags.DEFINE_string("dataset", None, "TFDS name; default: the workdir config's dataset, else human36m.")
flags.DEFINE_string("data_dir", None, "TFDS data_dir; default: the workdir config's.")
flags.DEFINE_string("split", None, "Split; default: the config's eval split ('test').")
flags.DEFINE_integer("frame_stride", 1, "Evaluate every N-th example of the stored split (stored strides apply first).",
                     lower_bound=1)
flags.DEFINE_list("subjects", [], "Only these subjects (e.g. S9,S11).")
flags.DEFINE_list("actions", [], "Only these actions (e.g. Walking,Eating).")
flags.DEFINE_bool("flip_test", False, "Average with the prediction for the mirrored crop.")
flags.DEFINE_enum("root_depth", "gt", ["gt", "limbs"], "Root depth: ground truth, or the limb-length search.")
flags.DEFINE_integer("batch_size", 32, "Evaluation batch size.", lower_bound=1)
flags.DEFINE_integer("restore_step", None, "Evaluate this checkpoint step (default: the newest readable one).")
flags.DEFINE_string("output", None, "JSON output path (default: WORKDIR/eval.json or ./eval.json).")
flags.DEFINE_bool("baseline", False, "Also report the error of always predicting the training mean pose.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if bool(FLAGS.workdir) == bool(FLAGS.saved_model):
        raise app.UsageError("give exactly one of --workdir or --saved_model")
    from c2f_vol import evaluation, export, fileio, metrics, workdir
    from c2f_vol.data import data_config as data_config_lib, pipeline, stats
    from c2f_vol.errors import UserError

    # The cheap checks first: the config or the SavedModel's record of its data, the output, the dataset,
    # the filters; the checkpoint is restored only then.
    if FLAGS.workdir:
        config = workdir.read_config(FLAGS.workdir)
        data = config.data
    else:
        served = export.ServedModel(FLAGS.saved_model)
        # The crops the model was trained on, as its export recorded them; human36m unless --dataset says otherwise.
        data = data_config_lib.resolve_data_config(served.metadata.get("data") or {"name": "human36m"})
    output = FLAGS.output or os.path.join(FLAGS.workdir or ".", "eval.json")
    fileio.check_writable(output, "--output")
    for flag, key in ((FLAGS.dataset, "name"), (FLAGS.data_dir, "data_dir"), (FLAGS.split, "eval_split")):
        if flag:
            data[key] = flag
    builder = pipeline.load_builder(data.name, data.data_dir)
    split = data.eval_split
    if FLAGS.subjects or FLAGS.actions or split not in builder.info.splits:
        present = pipeline.split_values(builder, split)
        for flag, key in ((FLAGS.subjects, "subject"), (FLAGS.actions, "action")):
            unknown = sorted(set(flag) - set(present[key]))
            if unknown:
                raise UserError(f"--{key}s: {', '.join(unknown)} not in {data.name}:{split}, which has "
                                f"{', '.join(present[key])}")
    if FLAGS.workdir:
        restored = workdir.restore(FLAGS.workdir, config, step=FLAGS.restore_step)
        predict_fn = restored.network.predict_fn(restored.variables)
        input_size = restored.network.codec.input_size
        bones = stats.read_bone_lengths(FLAGS.workdir) if FLAGS.root_depth == "limbs" else None
        source = {"workdir": os.path.abspath(FLAGS.workdir), "checkpoint_step": restored.step}
    else:
        if FLAGS.restore_step is not None:
            raise UserError("--restore_step picks a checkpoint of a --workdir; a SavedModel has one set of weights")
        predict_fn, input_size, bones = served.predict_fn(), served.input_size, served.bone_lengths_mm
        source = {"saved_model": served.path}
    total = builder.info.splits[split].num_examples
    batches = pipeline.eval_batches(builder, data, input_size, FLAGS.batch_size, frame_stride=FLAGS.frame_stride,
                                    subjects=FLAGS.subjects, actions=FLAGS.actions)
    with cli.Progress(f"evaluating {data.name}:{split}", -(-total // FLAGS.frame_stride), unit="frames") as bar:
        result = evaluation.evaluate(predict_fn, batches, flip_test=FLAGS.flip_test, root_depth=FLAGS.root_depth,
                                     bone_lengths_mm=bones, progress=bar)
    result.update(source=source, flip_test=FLAGS.flip_test, frame_stride=FLAGS.frame_stride,
                  subjects=FLAGS.subjects, actions=FLAGS.actions, dataset=data.name, split=split,
                  config=config.to_dict() if FLAGS.workdir else {"data": data.to_dict()})
    print(metrics.format_table(result, ["mpjpe_mm", "pa_mpjpe_mm"]))
    print(f"PCK3D@150mm {result['pck3d_150mm']:.3f}   AUC {result['auc']:.3f}   root depth: {FLAGS.root_depth}")
    if FLAGS.root_depth == "limbs":
        g = result["gt_root_depth"]
        print(f"limb-length root depth: MPJPE {result['mpjpe_mm']:.1f} mm, PA-MPJPE {result['pa_mpjpe_mm']:.1f} mm, "
              f"root depth error {result['root_depth_error_mm']['mean']:.0f} mm (mean); "
              f"ground-truth root depth: MPJPE {g['mpjpe_mm']:.1f} mm, PA-MPJPE {g['pa_mpjpe_mm']:.1f} mm")
    if FLAGS.baseline:
        train_poses, _ = stats.load_poses(builder, data.train_split, 5000)
        base = evaluation.mean_pose_baseline(train_poses, *stats.load_poses(builder, split))
        result["mean_pose_baseline"] = {k: base[k] for k in ("mpjpe_mm", "pa_mpjpe_mm", "frames")}
        print(f"Model:              MPJPE {result['mpjpe_mm']:7.1f} mm   PA-MPJPE {result['pa_mpjpe_mm']:7.1f} mm")
        print(f"Mean-pose baseline: MPJPE {base['mpjpe_mm']:7.1f} mm   PA-MPJPE {base['pa_mpjpe_mm']:7.1f} mm")
        gt_mpjpe = result["gt_root_depth"]["mpjpe_mm"] if FLAGS.root_depth == "limbs" else result["mpjpe_mm"]
        result["mean_pose_baseline"]["ratio_gt_root"] = gt_mpjpe / base["mpjpe_mm"]
        print(f"Model / baseline (MPJPE, ground-truth root): {gt_mpjpe / base['mpjpe_mm']:.3f}")
    fileio.write_json(output, result, sort_keys=True)
    logging.info("Wrote %s", output)
    print(f"Metrics JSON: {os.path.abspath(output)}")


if __name__ == "__main__":
    cli.run(main)
