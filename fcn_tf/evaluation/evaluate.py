"""Evaluate a model on a split of TFRecords: the paper's four metrics and per-class IU.

Every image is scored whole, at its own size, and one confusion matrix is summed over the
split (pixels with the ignore label left out), as the authors' score code does; the metrics
are :func:`fcn_tf.scores` of it. A Keras model and its SavedModel export give the same
numbers: both get the records' uint8 pixels.

>>> import tempfile
>>> from fcn_tf.data.convert import convert
>>> from fcn_tf.models import build_fcn
>>> records = tempfile.mkdtemp()
>>> _ = convert("synthetic", records, "val", verbose=False, count=2, height=32, width=32)
>>> model = build_fcn(6, 32, backbone_options={"width": 1 / 32, "fc_units": 8})
>>> report = evaluate(model, records + "/*.tfrecord", verbose=0)
>>> report["images"], sorted(report["per_class_iu"])[:2]
(2, ['background', 'bar'])
"""

from __future__ import annotations

import math
import os
from typing import Any

import keras
import numpy as np

from fcn_tf.evaluation.models import open_model
from fcn_tf.evaluation.records import split_info
from fcn_tf.metrics import SCORE_NAMES, confusion_matrix, scores

__all__ = [
    "CONFUSION_PNG",
    "METRICS_JSON",
    "confusion_of",
    "evaluate",
    "format_report",
    "write_report",
]

METRICS_JSON, CONFUSION_PNG = "metrics.json", "confusion_matrix.png"


def finite_or_none(value: float) -> float | None:
    """A score for JSON, which has no NaN: ``None`` for a class never seen nor predicted.

    >>> finite_or_none(0.5), finite_or_none(float("nan"))
    (0.5, None)
    """
    return float(value) if math.isfinite(value) else None


def confusion_of(
    segmenter: Any,
    files: list[str],
    num_classes: int,
    ignore_label: int,
    count: int | None = None,
    verbose: int = 1,
) -> np.ndarray:
    """The ``[C, C]`` confusion matrix of ``segmenter`` over the records ``files``.

    >>> import tempfile
    >>> from fcn_tf.data.convert import convert
    >>> records = tempfile.mkdtemp()
    >>> info = convert("synthetic", records, "val", verbose=False, count=2, height=16, width=16)
    >>> files = [os.path.join(records, name) for name in info["files"]]
    >>> background = lambda images: np.zeros(images.shape[:3], np.uint8)   # predicts class 0
    >>> confusion = confusion_of(background, files, 6, 255, verbose=0)
    >>> confusion.shape, int(confusion.sum()), int(confusion[:, 1:].sum())   # 2 x 16 x 16
    ((6, 6), 512, 0)
    """
    from fcn_tf.data.pipeline import corrupt_records_as_value_errors, load

    confusion = np.zeros((num_classes, num_classes), np.int64)
    bar = keras.utils.Progbar(count, verbose=verbose, unit_name="image")
    with corrupt_records_as_value_errors():
        for images, labels in load(files, training=False, image_dtype="uint8"):
            predicted = segmenter(images.numpy())
            confusion += confusion_matrix(labels.numpy(), predicted, num_classes, ignore_label)
            bar.add(1)
    return confusion


def evaluate(
    model: Any,
    data: str,
    out_dir: str | None = None,
    num_classes: int | None = None,
    verbose: int = 1,
) -> dict[str, Any]:
    """Score ``model`` on the records matching ``data``; return the report.

    Args:
        model: anything :func:`fcn_tf.evaluation.open_model` takes (a Keras model, a
            ``.keras`` file, a run folder, a checkpoint, a SavedModel).
        data: TFRecord files or a glob pattern; class names and the ignore label come from
            the ``dataset.json`` beside them.
        out_dir: when given, ``metrics.json`` (the report) and ``confusion_matrix.png``
            (row-normalised, labelled) are written there, atomically.
        num_classes: for records without a ``dataset.json``.
        verbose: 1 shows a progress bar.

    The report holds the four metrics, ``per_class_iu`` and ``per_class_accuracy`` by class
    name (``None`` where undefined), the confusion matrix, the image count and the sources.

    >>> import tempfile
    >>> from fcn_tf.data.convert import convert
    >>> records, out = tempfile.mkdtemp(), tempfile.mkdtemp()
    >>> _ = convert("synthetic", records, "val", verbose=False, count=1, height=16, width=16)
    >>> scorer = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(6, 1)])
    >>> report = evaluate(scorer, records + "/*.tfrecord", out, verbose=0)
    >>> report["images"], report["class_names"][:2], sorted(os.listdir(out))
    (1, ['background', 'disc'], ['confusion_matrix.png', 'metrics.json'])
    """
    segmenter = open_model(model)
    info = split_info(
        data,
        num_classes,
        default_num_classes=segmenter.num_classes,
        default_class_names=segmenter.class_names,
    )
    if segmenter.num_classes is not None and segmenter.num_classes != info.num_classes:
        raise ValueError(
            f"{segmenter.source} scores {segmenter.num_classes} classes, but {data} has "
            f"{info.num_classes} ({', '.join(info.class_names[:5])}...)"
        )
    confusion = confusion_of(
        segmenter, info.files, info.num_classes, info.ignore_label, info.split.count, verbose
    )
    result = scores(confusion)
    report: dict[str, Any] = {name: finite_or_none(result[name]) for name in SCORE_NAMES}
    for key in ("per_class_iu", "per_class_accuracy"):
        report[key] = dict(zip(info.class_names, map(finite_or_none, result[key]), strict=True))
    report.update(
        images=int(info.split.count),
        model=segmenter.source,
        model_kind=segmenter.kind,
        data=data,
        ignore_label=info.ignore_label,
        class_names=info.class_names,
        confusion_matrix=confusion.tolist(),
    )
    if out_dir is not None:
        write_report(report, out_dir)
    return report


def write_report(report: dict[str, Any], out_dir: str) -> None:
    """``metrics.json`` and ``confusion_matrix.png`` of a report into ``out_dir``.

    >>> import json, pathlib, tempfile
    >>> out = tempfile.mkdtemp()
    >>> report = {"model": "runs/fcn8s", "images": 2, "class_names": ["bg", "cat"],
    ...           "confusion_matrix": [[3, 1], [0, 2]]}
    >>> write_report(report, out)
    >>> sorted(os.listdir(out)), json.loads(pathlib.Path(out, METRICS_JSON).read_text()) == report
    (['confusion_matrix.png', 'metrics.json'], True)
    """
    from fcn_tf.evaluation.pictures import confusion_figure, save_figure
    from fcn_tf.files import write_json

    os.makedirs(out_dir, exist_ok=True)
    write_json(os.path.join(out_dir, METRICS_JSON), report)
    title = f"{os.path.basename(os.path.normpath(report['model']))} on {report['images']} images"
    figure = confusion_figure(np.asarray(report["confusion_matrix"]), report["class_names"], title)
    save_figure(figure, os.path.join(out_dir, CONFUSION_PNG))


def format_report(report: dict[str, Any]) -> str:
    """The four metrics and a per-class IU table, as text.

    >>> report = dict(scores(np.array([[3, 1], [0, 0]])), model="fcn8s", data="val/*", images=1)
    >>> report.update(per_class_iu={"bg": 0.75, "cat": 0.0},
    ...               per_class_accuracy={"bg": 0.75, "cat": None})   # no true "cat" pixel
    >>> print(format_report(report))
    fcn8s on val/* (1 images):
      pixel_accuracy         0.7500
      mean_accuracy          0.7500
      mean_iu                0.3750
      frequency_weighted_iu  0.7500
    <BLANKLINE>
      class  IU      accuracy
      bg   0.7500  0.7500
      cat  0.0000  -
    """

    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    lines = [f"{report['model']} on {report['data']} ({report['images']} images):"]
    lines += [f"  {name:<22} {number(report[name])}" for name in SCORE_NAMES]
    width = max(len(name) for name in report["per_class_iu"])
    lines.append(f"\n  {'class':<{width}}  IU      accuracy")
    for name, iu in report["per_class_iu"].items():
        accuracy = report["per_class_accuracy"][name]
        lines.append(f"  {name:<{width}}  {number(iu)}  {number(accuracy)}")
    return "\n".join(lines)
