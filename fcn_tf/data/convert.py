"""Convert a dataset to sharded TFRecords: ``python -m fcn_tf.data.convert DATASET ...``.

Example: ``python -m fcn_tf.data.convert camvid --root ../shared/datasets/camvid --split val
--out records/camvid/val --shards 4 --workers 2``. Options a dataset does not take are ignored.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
from collections.abc import Sequence

from fcn_tf.data.converters import CONVERTERS, get_converter
from fcn_tf.data.converters.voc import is_list_file
from fcn_tf.data.writer import BadSampleError, write_dataset

__all__ = ["SAME_BYTES_OPTIONS", "convert", "main"]

# Options of convert() that change how the records are made, not their bytes (tested).
SAME_BYTES_OPTIONS = ("workers",)


def convert(
    dataset: str,
    out: str,
    split: str,
    shards: int = 1,
    workers: int = 1,
    skip_bad: bool = False,
    verbose: bool = True,
    **options,
) -> dict:
    """Build the ``dataset`` converter from the ``options`` it takes and write its records.

    Options that only other datasets take are ignored (the CLI's flags are shared); a name no
    dataset takes is an error, so a typo never converts with defaults.

    >>> import tempfile
    >>> out = tempfile.mkdtemp()
    >>> metadata = convert("synthetic", out, "val", 2, verbose=False, count=3, height=8, width=8)
    >>> metadata["count"], metadata["files"]
    (3, ['val-00000-of-00002.tfrecord', 'val-00001-of-00002.tfrecord'])
    >>> convert("synthetic", out, "val", colour="red")
    Traceback (most recent call last):
    ...
    ValueError: synthetic: unknown option(s) ['colour']; the converters take [...]
    """
    converter_class = get_converter(dataset)
    accepted = inspect.signature(converter_class).parameters
    given = {k: v for k, v in options.items() if v is not None}
    _check_option_names(dataset, given.keys() - accepted.keys())
    kwargs = {k: v for k, v in given.items() if k in accepted}
    missing = [
        name
        for name, parameter in accepted.items()
        if parameter.default is inspect.Parameter.empty
        and parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
        and name not in kwargs
        and name != "split"
    ]
    if missing:
        flags = ", ".join("--" + name.replace("_", "-") for name in missing)
        raise ValueError(f"{dataset} needs {flags}")
    converter = converter_class(split=split, **kwargs)
    # A split may be a list file's path (VOC's seg11valid): name the shards after its stem.
    name = os.path.splitext(os.path.basename(split))[0] if is_list_file(split) else split
    return write_dataset(converter, out, name, shards, workers, skip_bad, verbose)


def _check_option_names(dataset: str, names: set[str]) -> None:
    if not names:
        return
    known = {
        name
        for other in CONVERTERS
        for name in inspect.signature(get_converter(other)).parameters
        if name != "split"
    }
    unknown = sorted(names - known)
    if unknown:
        raise ValueError(
            f"{dataset}: unknown option(s) {unknown}; the converters take {sorted(known)}"
        )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fcn_tf.data.convert", description=__doc__)
    parser.add_argument("dataset", choices=sorted(CONVERTERS))
    parser.add_argument("--root", help="the dataset's folder, in its original layout")
    parser.add_argument("--split", required=True, help="e.g. train, val, seg11valid")
    parser.add_argument("--out", required=True, help="folder for the shards and dataset.json")
    parser.add_argument("--shards", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1, help="processes reading and encoding")
    parser.add_argument("--skip-bad", action="store_true", help="skip bad samples, list them")
    extra = parser.add_argument_group("dataset options")
    extra.add_argument("--count", type=int, help="synthetic: number of images")
    extra.add_argument("--height", type=int, help="synthetic: image height")
    extra.add_argument("--width", type=int, help="synthetic: image width")
    extra.add_argument("--seed", type=int, help="synthetic: seed")
    extra.add_argument("--year", help="voc: VOC2011 or VOC2012 folder name")
    extra.add_argument("--voc-root", help="pascal_context: the VOCdevkit or VOC2010 folder")
    extra.add_argument("--palette", help="folder: palette file for RGB masks")
    extra.add_argument("--num-classes", type=int, help="folder: number of classes")
    extra.add_argument("--class-names", help="folder: comma-separated class names")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: convert, print a JSON summary and return 0, or print the error and 1.

    >>> import contextlib, io, tempfile
    >>> with contextlib.redirect_stdout(io.StringIO()) as stdout:  # the progress bar too
    ...     code = main(["synthetic", "--split", "val", "--out", tempfile.mkdtemp(), "--count",
    ...                  "2", "--height", "8", "--width", "8"])
    >>> print(code, stdout.getvalue().splitlines()[-1])
    0 {"name": "synthetic", "split": "val", "count": 2,
       "files": ["val-00000-of-00001.tfrecord"], "skipped": 0}
    """
    args = vars(_parser().parse_args(argv))
    dataset, out, split = args.pop("dataset"), args.pop("out"), args.pop("split")
    try:
        metadata = convert(dataset, out, split, **args)
    except (BadSampleError, OSError, ValueError) as error:
        # OSError: an unusable --out (a file, a read-only place) as well as missing input.
        print(f"error: {error}", file=sys.stderr)
        return 1
    summary = {k: metadata[k] for k in ("name", "split", "count", "files")}
    summary["skipped"] = len(metadata["skipped"])
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
