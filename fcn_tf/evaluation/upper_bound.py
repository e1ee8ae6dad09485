"""Upper bounds on mean IU at a prediction stride (FCN paper, appendix A).

The best a network predicting one label per ``f x f`` cell could score: each ground truth is
downsampled by ``f`` and upsampled back by nearest neighbour, and the result is scored against
the original. The paper gives, on a subset of PASCAL VOC 2011 val, mean IU 98.5, 96.4, 92.8,
86.1, 73.3 and 50.9 for factors 4, 8, 16, 32, 64 and 128 (:data:`PAPER_VOC`).

Downsampling (``method``):

* ``"nearest"`` (default): the label at the centre of each cell (row and column
  ``start + size // 2`` of the cell's extent, so partial cells at the bottom and right use
  their own centre). Where that centre is not scored (the ignore label), the cell takes its
  most frequent scored label instead: a network always predicts some class.
* ``"mode"``: the most frequent scored label of each cell (ties to the smaller id), the best a
  coarse predictor can do for pixel accuracy.

>>> label = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2], [2, 2, 2, 255]])
>>> coarsen(label, 2, num_classes=3)
array([[0, 0, 1, 1],
       [0, 0, 1, 1],
       [2, 2, 2, 2],
       [2, 2, 2, 2]])
>>> round(upper_bound([label], [1, 4], num_classes=3)[4]["mean_iu"], 4)  # all "2": 7/15 / 3
0.1556
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import keras
import numpy as np

from fcn_tf.metrics import confusion_matrix, scores

__all__ = [
    "METHODS",
    "PAPER_VOC",
    "coarsen",
    "record_labels",
    "upper_bound",
    "upper_bound_of_records",
]

METHODS = ("nearest", "mode")

# Appendix A of the paper: factor -> mean IU (%) on a subset of PASCAL VOC 2011 val.
PAPER_VOC = {128: 50.9, 64: 73.3, 32: 86.1, 16: 92.8, 8: 96.4, 4: 98.5}


def _cells(array: np.ndarray, factor: int, fill: Any) -> np.ndarray:
    """``[H, W]`` to ``[ceil(H/f), ceil(W/f), f*f]`` blocks, padded with ``fill``."""
    height, width = array.shape
    rows, cols = -(-height // factor), -(-width // factor)
    padded = np.full((rows * factor, cols * factor), fill, array.dtype)
    padded[:height, :width] = array
    blocks = padded.reshape(rows, factor, cols, factor).transpose(0, 2, 1, 3)
    return blocks.reshape(rows, cols, factor * factor)


def _centres(size: int, factor: int) -> np.ndarray:
    starts = np.arange(0, size, factor)
    return starts + (np.minimum(starts + factor, size) - starts) // 2


def coarsen(
    label: np.ndarray,
    factor: int,
    num_classes: int,
    ignore_label: int | None = 255,
    method: str = "nearest",
) -> np.ndarray:
    """``label [H, W]`` downsampled by ``factor`` (see the module docstring) and upsampled
    back by nearest neighbour to ``[H, W]``: class ids in ``[0, num_classes)``.

    >>> label = np.array([[1, 1], [1, 0]])   # one 2 x 2 cell, centre (1, 1)
    >>> coarsen(label, 2, 2).tolist(), coarsen(label, 2, 2, method="mode").tolist()
    ([[0, 0], [0, 0]], [[1, 1], [1, 1]])
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if int(factor) < 1:
        raise ValueError(f"factor must be a positive integer, got {factor!r}")
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"label must be [H, W], got shape {label.shape}")
    label = label.astype(np.int64)
    height, width = label.shape
    scored = (label >= 0) & (label < num_classes)
    if ignore_label is not None:
        scored &= label != ignore_label
    blocks = _cells(np.where(scored, label, -1), factor, -1)
    counts = np.stack([(blocks == c).sum(axis=-1) for c in range(num_classes)], axis=-1)
    coarse = counts.argmax(axis=-1)
    if method == "nearest":
        rows, cols = np.ix_(_centres(height, factor), _centres(width, factor))
        coarse = np.where(scored[rows, cols], label[rows, cols], coarse)
    return np.repeat(np.repeat(coarse, factor, axis=0), factor, axis=1)[:height, :width]


def upper_bound(
    labels: Iterable[np.ndarray],
    factors: Sequence[int],
    num_classes: int,
    ignore_label: int | None = 255,
    method: str = "nearest",
) -> dict[int, dict[str, Any]]:
    """:func:`fcn_tf.scores` of every factor, from one confusion matrix per factor summed over
    all ``labels`` (``[H, W]`` maps, any sizes).

    >>> bounds = upper_bound([np.array([[1, 1], [1, 0]])], [1, 2], num_classes=2)
    >>> bounds[1]["pixel_accuracy"], bounds[2]["pixel_accuracy"]   # factor 2: all 0, 1 of 4
    (1.0, 0.25)
    """
    confusions = {int(f): np.zeros((num_classes, num_classes), np.int64) for f in factors}
    for label in labels:
        for factor, confusion in confusions.items():
            coarse = coarsen(label, factor, num_classes, ignore_label, method)
            confusion += confusion_matrix(label, coarse, num_classes, ignore_label)
    return {factor: scores(confusion) for factor, confusion in confusions.items()}


def record_labels(
    files: Sequence[str], count: int | None = None, verbose: int = 1
) -> Iterator[np.ndarray]:
    """The label maps ``[H, W]`` of TFRecord ``files``, in order, with a progress bar over
    ``count`` records (``None``: a bar without a total).

    >>> import glob, tempfile
    >>> from fcn_tf.data.convert import convert
    >>> records = tempfile.mkdtemp()
    >>> _ = convert("synthetic", records, "val", verbose=False, count=2, height=16, width=12)
    >>> labels = record_labels(glob.glob(records + "/*.tfrecord"), 2, verbose=0)
    >>> [(label.shape, label.dtype.name) for label in labels]
    [((16, 12), 'int32'), ((16, 12), 'int32')]
    """
    from fcn_tf.data.pipeline import corrupt_records_as_value_errors, load

    bar = keras.utils.Progbar(count, verbose=verbose, unit_name="image")
    with corrupt_records_as_value_errors():
        for _, label in load(files, training=False):
            yield label.numpy()[0]
            bar.add(1)


def upper_bound_of_records(
    pattern: str,
    factors: Sequence[int],
    method: str = "nearest",
    num_classes: int | None = None,
    verbose: int = 1,
) -> dict[int, dict[str, Any]]:
    """:func:`upper_bound` over the records matching ``pattern`` (classes and ignore label
    from their ``dataset.json``, or ``num_classes``).

    >>> import tempfile
    >>> from fcn_tf.data.convert import convert
    >>> records = tempfile.mkdtemp()
    >>> _ = convert("synthetic", records, "val", verbose=False, count=1, height=16, width=16)
    >>> bounds = upper_bound_of_records(records + "/*.tfrecord", [1, 4], verbose=0)
    >>> sorted(bounds), bounds[1]["mean_iu"], bounds[4]["mean_iu"] < 1.0   # cells lose edges
    ([1, 4], 1.0, True)
    """
    from fcn_tf.evaluation.records import split_info

    info = split_info(pattern, num_classes)
    labels = record_labels(info.files, info.split.count, verbose)
    return upper_bound(labels, factors, info.num_classes, info.ignore_label, method)
