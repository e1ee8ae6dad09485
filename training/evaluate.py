"""Evaluate a model: ``python training/evaluate.py --model MODEL --data PATTERN [--out DIR]``.

MODEL is a ``.keras`` file, a run folder, a checkpoint, or a SavedModel export (a version
folder or its base path). Prints the paper's four metrics and per-class IU, and writes
``metrics.json`` and ``confusion_matrix.png`` (rows normalised) into ``--out``.
"""

from __future__ import annotations

import argparse
import sys


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python training/evaluate.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="model, run folder, checkpoint or export")
    parser.add_argument("--data", required=True, metavar="PATTERN", help="TFRecord files")
    parser.add_argument("--out", default="evaluation", help="folder for the report files")
    parser.add_argument("--num-classes", type=int, help="when no dataset.json names them")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from fcn_tf.evaluation.evaluate import CONFUSION_PNG, METRICS_JSON, evaluate, format_report

    try:
        report = evaluate(
            args.model, args.data, args.out, args.num_classes, verbose=0 if args.quiet else 1
        )
    except (OSError, ValueError) as error:  # a bad path or argument: its message says which
        print(f"training/evaluate.py: error: {error}", file=sys.stderr)
        return 1
    print(format_report(report))
    print(f"\nWrote {args.out}/{METRICS_JSON} and {args.out}/{CONFUSION_PNG}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
