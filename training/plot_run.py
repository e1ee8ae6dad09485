"""Training curves of a run: ``python training/plot_run.py RUN [--out FILE]``.

Reads the run folder's ``metrics.jsonl`` and draws loss and mean IU against updates, train
and validation on one figure, into ``RUN/curves.png`` (or ``--out``), written atomically.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python training/plot_run.py", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("run", help="a run folder (it holds metrics.jsonl)")
    parser.add_argument("--out", help="the PNG to write (default: RUN/curves.png)")
    args = parser.parse_args(argv)
    from fcn_tf.evaluation.pictures import write_curves

    try:
        print(write_curves(args.run, args.out))
    except (OSError, ValueError) as error:  # not a run folder, or a bad metrics line
        print(f"training/plot_run.py: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
