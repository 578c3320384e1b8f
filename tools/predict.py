"""3D pose for your own image.

    python tools/predict.py --model=WORKDIR_OR_SAVEDMODEL --image=photo.jpg [--bbox=x,y,w,h] \
        [--focal_px=F] [--volume_joint=RWrist] [--output_json=out.json] [--output_png=out.png]
"""

import json
import os
import sys

from absl import app, flags

from c2f_vol import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "A training workdir or an exported SavedModel folder.")
flags.DEFINE_string("image", None, "A JPEG or PNG image.")
flags.DEFINE_string("bbox", None, "Person box x,y,w,h in pixels; the whole image when omitted.")
flags.DEFINE_float("focal_px", None, "Focal length in pixels; assumed from a default field of view when omitted.")
flags.DEFINE_string("volume_joint", None, "Also show this joint's predicted volume slice (name or 0-16).")
flags.DEFINE_string("output_json", None, "Where to write the JSON (default: IMAGE.pose.json beside the image).")
flags.DEFINE_string("output_png", None, "Where to write the picture (default: IMAGE.pose.png beside the image).")
flags.mark_flags_as_required(["model", "image"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    import cv2

    from c2f_vol import predict

    try:
        # Check the image and box before loading the model, so mistakes are reported at once.
        image = predict.load_image(FLAGS.image)
        predict.parse_bbox(FLAGS.bbox, image.shape[1], image.shape[0])
        if not os.path.exists(FLAGS.model):
            raise predict.UserInputError(f"--model={FLAGS.model}: no such file or folder")
        if predict.is_saved_model(FLAGS.model):
            cli.import_tensorflow()  # only a SavedModel needs TensorFlow
        model = predict.open_model(FLAGS.model)
        result, picture = predict.predict_image(model, FLAGS.image, FLAGS.bbox, FLAGS.focal_px, FLAGS.volume_joint)
    except (predict.UserInputError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    stem = os.path.splitext(FLAGS.image)[0]
    out_json = FLAGS.output_json or stem + ".pose.json"
    out_png = FLAGS.output_png or stem + ".pose.png"
    with open(out_json, "w") as f:
        json.dump(result, f, indent=2)
    if not cv2.imwrite(out_png, picture[..., ::-1]):
        print(f"error: could not write {out_png}", file=sys.stderr)
        sys.exit(1)
    print(f"JSON: {os.path.abspath(out_json)}")
    print(f"PNG:  {os.path.abspath(out_png)}")
    print(f"3D:   root-relative mm; camera-frame with focal length {result['focal_px_source']}")


if __name__ == "__main__":
    cli.run(main, tensorflow=False)
