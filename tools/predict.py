"""3D pose for your own image.

    python tools/predict.py --model=WORKDIR_OR_SAVEDMODEL --image=photo.jpg [--bbox=x,y,w,h] \
        [--focal_px=F] [--distortion=k1,k2,k3,p1,p2] [--volume_joint=RWrist] [--output_json=out.json] [--output_png=out.png] \
        [--max_pixels=50000000]

Every check of what was given (image, box, focal length, joint, output paths) runs before the model is
loaded; a mistake is reported as one line `error: ...`. The JSON and the PNG are written together
(each atomically) at the end, or not at all.
"""

import os
import sys

from absl import app, flags

from c2f_vol import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "A training workdir or an exported SavedModel folder.")
flags.DEFINE_string("image", None, "A JPEG or PNG image.")
flags.DEFINE_string("bbox", None, "Person box x,y,w,h in pixels; the whole image when omitted.")
flags.DEFINE_float("focal_px", None, "Focal length in pixels; assumed from a default field of view when omitted.")
flags.DEFINE_string("distortion", None, "The camera's lens distortion k1,k2,k3,p1,p2 (c2f_vol.camera's model), "
                    "undone before lifting to 3D; a pinhole camera when omitted.")
flags.DEFINE_string("volume_joint", None, "Also show this joint's predicted volume slice (name or 0-16).")
flags.DEFINE_string("output_json", None, "Where to write the JSON (default: IMAGE.pose.json beside the image).")
flags.DEFINE_string("output_png", None, "Where to write the picture (default: IMAGE.pose.png beside the image).")
flags.DEFINE_integer("max_pixels", None, "Refuse larger images (width x height), read from the file's header "
                     "before decoding; default 50000000 (c2f_vol.predict.MAX_PIXELS).")
flags.mark_flags_as_required(["model", "image"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from c2f_vol import predict

    # Everything given is checked before the model loads (seconds), so mistakes are reported at once;
    # cli.run prints a user mistake (predict.UserInputError, a missing file) as one line, exit 2.
    max_pixels = predict.MAX_PIXELS if FLAGS.max_pixels is None else FLAGS.max_pixels
    if max_pixels <= 0:
        raise predict.UserInputError(f"--max_pixels={max_pixels}: must be > 0")
    image = predict.load_image(FLAGS.image, max_pixels)  # decoded once, predicted on below
    predict.parse_bbox(FLAGS.bbox, image.shape[1], image.shape[0])
    predict.intrinsics_for(image.shape[1], image.shape[0], FLAGS.focal_px)
    predict.parse_distortion(FLAGS.distortion)
    if FLAGS.volume_joint:
        predict.joint_index(FLAGS.volume_joint)
    stem = os.path.splitext(FLAGS.image)[0]
    out_json = FLAGS.output_json or stem + ".pose.json"
    out_png = FLAGS.output_png or stem + ".pose.png"
    predict.check_output_path(out_json, "--output_json")
    predict.check_output_path(out_png, "--output_png", picture=True)
    if os.path.abspath(out_json) == os.path.abspath(out_png):
        raise predict.UserInputError(f"--output_json and --output_png are the same file {out_json}")
    if not os.path.exists(FLAGS.model):
        raise predict.UserInputError(f"--model={FLAGS.model}: no such file or folder")
    if predict.is_saved_model(FLAGS.model):
        if FLAGS.volume_joint:
            raise predict.UserInputError("--volume_joint needs a training workdir: a SavedModel returns "
                                         "joints, not volumes")
        cli.import_tensorflow()  # only a SavedModel needs TensorFlow
    model = predict.open_model(FLAGS.model)
    result, picture = predict.predict_image(model, image, FLAGS.bbox, FLAGS.focal_px, FLAGS.volume_joint,
                                            image_path=FLAGS.image, distortion=FLAGS.distortion)
    del image
    try:
        predict.write_outputs(out_json, result, out_png, picture)
    except (predict.UserInputError, OSError) as e:  # e.g. a full disk: neither file is left behind
        print(f"error: could not write the outputs: {e}", file=sys.stderr)
        sys.exit(1)
    print(f"JSON: {os.path.abspath(out_json)}")
    print(f"PNG:  {os.path.abspath(out_png)}")
    print(f"3D:   root-relative mm; camera-frame with focal length {result['focal_px_source']}")


if __name__ == "__main__":
    cli.run(main, tensorflow=False)
