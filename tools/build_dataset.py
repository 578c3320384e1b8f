"""Build a dataset into a TFDS data_dir (offline; nothing is downloaded).

    python tools/build_dataset.py --dataset=c2f_synthetic/procedural --data_dir=DIR
    python tools/build_dataset.py --dataset=c2f_synthetic/mocap --manual_dir=../shared/data/mocap --data_dir=DIR
    python tools/build_dataset.py --dataset=human36m --manual_dir=/path/to/h36m --data_dir=DIR
    python tools/build_dataset.py --dataset=mpii --manual_dir=/path/to/mpii --data_dir=DIR

The dataset families are those of `c2f_vol.data.builders.BUILDERS`. One progress bar
counts the examples of all splits (without a terminal, a line now and then). An already
built dataset is left as it is (delete its folder to rebuild).
"""

from absl import app, flags

from c2f_vol import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "c2f_synthetic/procedural", "TFDS name[/config] of the dataset to build.")
flags.DEFINE_string("data_dir", None, "TFDS data_dir to write into.")
flags.DEFINE_string("manual_dir", None, "Folder with the source files (Human3.6M download, MPII release, BVH files).")
flags.mark_flags_as_required(["data_dir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from c2f_vol.data import builders

    info = builders.build(FLAGS.dataset, FLAGS.data_dir, manual_dir=FLAGS.manual_dir)
    for split, n in sorted(info.items()):
        print(f"{FLAGS.dataset} {split}: {n} examples")


if __name__ == "__main__":
    cli.run(main)
