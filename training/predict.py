"""Predict masks: ``python training/predict.py --model MODEL IMAGES_OR_FOLDERS --out DIR``.

MODEL is a ``.keras`` file, a run folder, a checkpoint, or a SavedModel export. Writes, per
image, a colourised mask, an overlay on the image and a legend of the classes present
(``--raw``: also the class ids as a gray PNG). Any image size; EXIF orientation is applied;
grayscale and RGBA images are converted to RGB.
"""

from __future__ import annotations

import argparse
import sys


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python training/predict.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="model, run folder, checkpoint or export")
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER")
    parser.add_argument("--out", required=True, help="folder for the pictures")
    parser.add_argument("--palette", choices=["auto", "voc", "camvid"], default="auto")
    parser.add_argument("--raw", action="store_true", help="also write class ids as gray PNGs")
    parser.add_argument("--alpha", type=float, default=0.5, help="mask weight in the overlay")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from fcn_tf.evaluation.predict import predict_images

    options = {"palette": args.palette, "raw": args.raw, "alpha": args.alpha}
    try:
        results = predict_images(
            args.model, args.inputs, args.out, verbose=0 if args.quiet else 1, **options
        )
    except (OSError, ValueError) as error:  # a bad path or image: its message says which
        print(f"training/predict.py: error: {error}", file=sys.stderr)
        return 1
    for result in results:
        height, width = result["size"]
        print(f"{result['path']} ({width}x{height}): {', '.join(result['classes'])}")
    print(f"Wrote {sum(len(r['files']) for r in results)} files into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
