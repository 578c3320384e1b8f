"""Pick the demo's input picture: the given photo when it exists, else a synthetic test frame.

    python tools/demo_image.py --data_dir=TFDS_DIR [--image=photo.jpg] --output=demo_input.png
"""

import os

from absl import flags

from c2f_vol import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("image", "", "A photo to use when present.")
flags.DEFINE_string("data_dir", None, "TFDS data_dir holding c2f_synthetic/procedural.")
flags.DEFINE_string("output", None, "Where to write the picture (PNG).")
flags.mark_flags_as_required(["data_dir", "output"])


def main(argv):
    del argv
    import cv2

    if FLAGS.image and os.path.isfile(FLAGS.image):
        image = cv2.imread(FLAGS.image)
        source = FLAGS.image
    else:
        from c2f_vol.data import pipeline

        builder = pipeline.load_builder("c2f_synthetic/procedural", FLAGS.data_dir)
        example = next(builder.as_dataset(split="test").take(1).as_numpy_iterator())
        image = example["image"][..., ::-1]
        source = "the first c2f_synthetic/procedural test frame"
    if image is None:
        raise SystemExit(f"error: could not read {FLAGS.image}")
    cv2.imwrite(FLAGS.output, image)
    print(f"Demo input: {source} -> {FLAGS.output}")


if __name__ == "__main__":
    cli.run(main)
