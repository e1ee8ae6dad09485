"""Export a trained model for TF Serving: ``python serving/export.py --checkpoint RUN
--model-base-path DIR [--version N]``.

``--checkpoint`` is a run folder (its ``model.keras``, else its best or latest checkpoint), a
``.keras`` file, or a checkpoint prefix or folder of a run. The SavedModel appears as
``DIR/<version>/`` in one rename (the next version when ``--version`` is not given), so a
server watching ``DIR`` never loads part of it. Prints the version folder and its
signatures as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys


def _parser() -> argparse.ArgumentParser:
    from fcn_tf.export.constants import DEFAULT_MAX_PIXELS

    parser = argparse.ArgumentParser(
        prog="python serving/export.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        metavar="RUN_OR_CKPT",
        help="a run folder, a .keras file, or a checkpoint prefix or folder of a run",
    )
    parser.add_argument(
        "--model-base-path", required=True, metavar="DIR", help="the folder TF Serving watches"
    )
    parser.add_argument("--version", type=int, help="version number; none: the next free one")
    parser.add_argument(
        "--probabilities", action="store_true", help="add the float32 softmax signature"
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help="most pixels (H x W) of one image; larger ones are refused before decoding",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from fcn_tf.export import export_checkpoint, read_metadata

    try:
        folder = export_checkpoint(
            args.checkpoint,
            args.model_base_path,
            args.version,
            probabilities=args.probabilities,
            max_pixels=args.max_pixels,
        )
    except (OSError, ValueError) as error:  # a bad path or argument: its message says which
        print(f"serving/export.py: error: {error}", file=sys.stderr)
        return 1
    metadata = read_metadata(folder)
    report = {
        "version_dir": folder,
        "num_classes": metadata["num_classes"],
        "class_ids_dtype": metadata["class_ids_dtype"],
        "signatures": metadata["signatures"],
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
