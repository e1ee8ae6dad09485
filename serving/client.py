"""Segment images through a model server (TF Serving or serving/local_server.py).

Each image file goes to the server as its encoded bytes (``predict_image_bytes``: the server
decodes it), or decoded here with ``--pixels`` (``serving_default``); the colourised mask is
written to ``--out`` as ``<image stem>.png``.

Usage::

    python serving/client.py --server localhost:8500 --model fcn photo.jpg street.png
    python serving/client.py --rest http://localhost:8501 --model fcn --label stable *.jpg
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported lazily below, so --help answers without loading TensorFlow
    import numpy as np

    from fcn_tf.serving.client import Client


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--server", metavar="HOST:PORT", help="gRPC address (TF Serving: 8500)")
    where.add_argument("--rest", metavar="URL", help="REST address, e.g. http://HOST:8501")
    parser.add_argument("--model", required=True, help="the model's name on the server")
    version = parser.add_mutually_exclusive_group()
    version.add_argument("--version", type=int, help="a version number (default: newest)")
    version.add_argument("--label", help="a version label of the server's model config")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    parser.add_argument("--out", default="masks", help="folder for the colourised masks")
    parser.add_argument(
        "--palette", choices=["voc", "camvid"], default="voc", help="colours of the classes"
    )
    parser.add_argument("--pixels", action="store_true", help="decode here and send uint8 pixels")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="PNG or JPEG files")
    return parser.parse_args(argv)


def segment(client: Client, path: str, pixels: bool) -> np.ndarray:
    """Class ids of one image file: sent encoded, or decoded here with ``pixels`` (upright by
    its EXIF orientation, 16-bit scaled to 8, as ``training/predict.py`` reads images)."""
    from fcn_tf.evaluation.predict import read_image

    if pixels:
        return client.predict(read_image(path))
    with open(path, "rb") as file:
        (class_ids,) = client.predict_bytes([file.read()])
    return class_ids


def write_mask(path: str, class_ids: np.ndarray, colours: np.ndarray) -> None:
    """The colourised mask as a PNG, atomically."""
    from fcn_tf.files import write_png
    from fcn_tf.palette import colorize

    write_png(path, colorize(class_ids, colours))


def describe(path: str, mask: str, class_ids: np.ndarray, seconds: float) -> dict:
    """One image's line of the summary: size, time and the share of each class."""
    import numpy as np

    ids, counts = np.unique(class_ids, return_counts=True)
    shares = {int(i): round(float(c) / class_ids.size, 4) for i, c in zip(ids, counts, strict=True)}
    top = sorted(shares.items(), key=lambda item: -item[1])[:4]
    print(
        f"{path}: {class_ids.shape[0]}x{class_ids.shape[1]} in {seconds * 1e3:.0f} ms -> {mask} "
        f"(classes {', '.join(f'{i}: {s:.1%}' for i, s in top)})"
    )
    return {
        "image": path,
        "mask": mask,
        "size": list(class_ids.shape),
        "seconds": seconds,
        "class_shares": shares,
    }


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from fcn_tf.data.converters import camvid
    from fcn_tf.evaluation.predict import unique_stems
    from fcn_tf.palette import palette_for
    from fcn_tf.serving.client import GrpcClient, RestClient
    from fcn_tf.serving.errors import ServingError

    if args.server:
        client = GrpcClient(args.server, args.model, args.version, args.label, args.timeout)
    else:
        client = RestClient(args.rest, args.model, args.version, args.label, args.timeout)
    colours = palette_for(camvid.CLASS_NAMES if args.palette == "camvid" else [])
    os.makedirs(args.out, exist_ok=True)
    summary = []
    with client:
        for path, stem in zip(args.images, unique_stems(args.images), strict=True):
            start = time.perf_counter()
            try:
                class_ids = segment(client, path, args.pixels)
            except (ServingError, OSError) as error:  # a message naming the file, no traceback
                sys.exit(f"{path}: {error}")
            except ValueError as error:  # an unreadable image: the message names the file
                sys.exit(str(error))
            seconds = time.perf_counter() - start
            mask = os.path.join(args.out, stem + ".png")
            write_mask(mask, class_ids, colours)
            summary.append(describe(path, mask, class_ids, seconds))
    total = sum(row["seconds"] for row in summary)
    print(
        f"{len(summary)} images in {total:.2f} s ({len(summary) / max(total, 1e-9):.2f} images/s)"
    )
    return summary


if __name__ == "__main__":
    main()
