"""Upper bounds on IU (FCN paper, appendix A): ``python training/upper_bound.py --data PATTERN``.

Downsamples every ground truth of the split by each factor, upsamples it back by nearest
neighbour, and prints the paper's four metrics of that against the original, per factor, beside
the paper's mean IU on PASCAL VOC 2011 val. ``--json FILE`` also writes them (atomically).
"""

from __future__ import annotations

import argparse
import math
import os
import sys

DEFAULT_FACTORS = [4, 8, 16, 32, 64, 128]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python training/upper_bound.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--data", required=True, metavar="PATTERN", help="TFRecord files")
    parser.add_argument("--factors", type=int, nargs="+", default=DEFAULT_FACTORS)
    parser.add_argument("--method", choices=["nearest", "mode"], default="nearest",
                        help="label of a cell: its centre's, or its most frequent")  # fmt: skip
    parser.add_argument("--num-classes", type=int, help="when no dataset.json names them")
    parser.add_argument("--json", metavar="FILE", help="also write the table as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _percent(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def format_table(results: dict, paper: dict) -> str:
    """The per-factor table as text (percentages, as in the paper)."""
    lines = [
        "| factor | mean IU | pixel acc. | mean acc. | f.w. IU | paper, VOC mean IU |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for factor, result in results.items():
        row = [str(factor)] + [
            _percent(result[key])
            for key in ("mean_iu", "pixel_accuracy", "mean_accuracy", "frequency_weighted_iu")
        ]
        row.append(str(paper.get(factor, "-")))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from fcn_tf.evaluation.evaluate import finite_or_none
    from fcn_tf.evaluation.upper_bound import PAPER_VOC, upper_bound_of_records
    from fcn_tf.files import write_json

    # Checked first: the split may take minutes to go through.
    folder = os.path.dirname(os.path.abspath(args.json)) if args.json else None
    if folder and not os.path.isdir(folder):
        print(f"training/upper_bound.py: error: --json {args.json}: no folder {folder}",
              file=sys.stderr)  # fmt: skip
        return 1
    try:
        results = upper_bound_of_records(
            args.data, args.factors, args.method, args.num_classes, verbose=0 if args.quiet else 1
        )
        print(f"\nUpper bounds ({args.method} downsampling) on {args.data}:")
        print(format_table(results, PAPER_VOC))
        if args.json:
            keys = ("pixel_accuracy", "mean_accuracy", "mean_iu", "frequency_weighted_iu")
            # NaN (a metric with no pixels to score) is not JSON: null instead.
            table = {str(f): {k: finite_or_none(r[k]) for k in keys} for f, r in results.items()}
            write_json(args.json, {"data": args.data, "method": args.method, "factors": table})
    except (OSError, ValueError) as error:  # no such records, a corrupt one, no class count
        print(f"training/upper_bound.py: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
