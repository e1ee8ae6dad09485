"""Segmentation scores from a confusion matrix (FCN paper, section 5.1).

With ``n_ij`` the number of pixels of class ``i`` predicted as ``j`` and ``t_i = sum_j n_ij``:

* pixel accuracy ``sum_i n_ii / sum_i t_i``
* mean accuracy ``mean_i n_ii / t_i``
* mean IU ``mean_i n_ii / (t_i + sum_j n_ji - n_ii)``
* frequency weighted IU ``(sum_k t_k)^-1 sum_i t_i n_ii / (t_i + sum_j n_ji - n_ii)``

Classes whose denominator is 0 are left out of the means (``nanmean``), as in the authors'
score code. :func:`confusion_matrix` and :func:`scores` are NumPy helpers for offline
evaluation; :class:`ConfusionMatrix` is the streaming Keras metric (``keras.ops`` only).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

__all__ = ["SCORE_NAMES", "ConfusionMatrix", "MeanIU", "confusion_matrix", "scores"]

SCORE_NAMES = ("pixel_accuracy", "mean_accuracy", "mean_iu", "frequency_weighted_iu")


def confusion_matrix(
    labels: Any, predictions: Any, num_classes: int, ignore_label: int | None = 255
) -> np.ndarray:
    """Count ``n_ij`` (label ``i`` predicted as ``j``) into an int64 ``[C, C]`` matrix.

    ``labels`` and ``predictions`` are class-id arrays with the same number of elements.
    Pixels with label ``ignore_label`` or outside ``[0, num_classes)`` are skipped; a
    prediction outside that range at a counted pixel raises ``ValueError``.

    >>> confusion_matrix([0, 0, 1, 255], [0, 1, 1, 0], num_classes=2)
    array([[1, 1],
           [0, 1]])
    """
    labels = np.asarray(labels).ravel()
    predictions = np.asarray(predictions).ravel()
    if labels.shape != predictions.shape:
        raise ValueError(
            f"labels and predictions differ in size: {labels.size} vs {predictions.size}"
        )
    valid = (labels >= 0) & (labels < num_classes)
    if ignore_label is not None:
        valid &= labels != ignore_label
    labels = labels[valid].astype(np.int64)
    predictions = predictions[valid].astype(np.int64)
    if predictions.size and (predictions.min() < 0 or predictions.max() >= num_classes):
        raise ValueError(f"predictions must lie in [0, {num_classes})")
    counts = np.bincount(num_classes * labels + predictions, minlength=num_classes**2)
    return counts.reshape(num_classes, num_classes)


def _nanmean(values: np.ndarray) -> float:
    # np.nanmean warns on all-NaN input; an empty evaluation is not worth a warning.
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else float("nan")


def scores(confusion: np.ndarray) -> dict[str, Any]:
    """Paper metrics from a ``[C, C]`` confusion matrix (rows: labels, columns: predictions).

    Returns python floats for ``pixel_accuracy``, ``mean_accuracy``, ``mean_iu`` and
    ``frequency_weighted_iu`` (NaN if nothing was counted), plus float64 arrays
    ``per_class_iu`` and ``per_class_accuracy`` (NaN where the denominator is 0).

    >>> s = scores(np.array([[3, 1], [0, 2]]))
    >>> s["pixel_accuracy"], s["mean_accuracy"], s["mean_iu"]  # 5/6, (3/4+1)/2, (3/4+2/3)/2
    (0.8333..., 0.875, 0.7083...)
    """
    hist = np.asarray(confusion, dtype=np.float64)
    if hist.ndim != 2 or hist.shape[0] != hist.shape[1]:
        raise ValueError(f"confusion must be a square matrix, got shape {hist.shape}")
    if np.any(hist < 0):
        raise ValueError("confusion must not contain negative counts")
    hits = np.diag(hist)
    label_totals = hist.sum(axis=1)
    union = label_totals + hist.sum(axis=0) - hits
    total = hist.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        per_class_accuracy = hits / label_totals
        per_class_iu = hits / union
    if total > 0:
        pixel_accuracy = float(hits.sum() / total)
        # t_i > 0 implies a non-zero union, so no NaN IU enters the weighted sum.
        present = label_totals > 0
        fw_iu = float((label_totals[present] * per_class_iu[present]).sum() / total)
    else:
        pixel_accuracy = fw_iu = float("nan")
    return {
        "pixel_accuracy": pixel_accuracy,
        "mean_accuracy": _nanmean(per_class_accuracy),
        "mean_iu": _nanmean(per_class_iu),
        "frequency_weighted_iu": fw_iu,
        "per_class_iu": per_class_iu,
        "per_class_accuracy": per_class_accuracy,
    }


def _scores_from_counts(confusion: Any) -> dict[str, Any]:
    """``keras.ops`` twin of :func:`scores`; undefined values are 0, as Keras metrics do."""
    hist = ops.cast(confusion, "float32")
    hits = ops.diagonal(hist)
    label_totals = ops.sum(hist, axis=1)
    union = label_totals + ops.sum(hist, axis=0) - hits
    total = ops.sum(hist)
    iu = ops.divide_no_nan(hits, union)
    accuracy = ops.divide_no_nan(hits, label_totals)
    return {
        "pixel_accuracy": ops.divide_no_nan(ops.sum(hits), total),
        "mean_accuracy": ops.divide_no_nan(
            ops.sum(accuracy), ops.sum(ops.cast(label_totals > 0, "float32"))
        ),
        "mean_iu": ops.divide_no_nan(ops.sum(iu), ops.sum(ops.cast(union > 0, "float32"))),
        "frequency_weighted_iu": ops.divide_no_nan(ops.sum(label_totals * iu), total),
    }


@keras.saving.register_keras_serializable(package="fcn_tf")
class ConfusionMatrix(keras.metrics.Metric):
    """Streaming confusion matrix whose ``result()`` is one of the paper's scores.

    ``update_state(y_true, y_pred, sample_weight=None)`` takes labels ``[B,H,W]`` (or
    ``[B,H,W,1]``) and either scores/logits ``[B,H,W,C]`` (argmax is taken) or class ids of
    the labels' shape. Pixels labelled ``ignore_label`` or outside ``[0, C)`` are skipped,
    and so are pixels whose predicted id is outside ``[0, C)``.

    Counts are accumulated in int64: float32 is exact only to 2^24 per cell, which the
    background cell of a VOC split exceeds, and float64 is missing on some accelerators.
    (JAX without ``jax_enable_x64`` stores int32, exact to 2^31 per cell.) The state is
    a sum-aggregated variable, so under ``tf.distribute`` the replicas' counts add up.
    ``sample_weight`` (per pixel, or per image ``[B]``) multiplies counts; each pixel's weight
    is rounded to an integer: meant for 0/1 masks or integer multiplicities.

    Args:
        num_classes: number of classes ``C``.
        score: which of ``SCORE_NAMES`` ``result()`` reports (0 when undefined).
        ignore_label: label value to skip, or ``None`` to skip only out-of-range labels.
        name: metric name; defaults to ``score``.
        dtype: dtype of ``result()``.

    >>> m = ConfusionMatrix(num_classes=2)
    >>> m.update_state([[0, 0, 1, 255]], [[0, 1, 1, 1]])
    >>> round(float(m.result()), 4)  # mean(1/2, 1/2)
    0.5
    >>> m.confusion_matrix()
    array([[1, 1],
           [0, 1]])
    >>> round(m.scores()["pixel_accuracy"], 4)
    0.6667
    """

    def __init__(
        self,
        num_classes: int,
        score: str = "mean_iu",
        ignore_label: int | None = 255,
        name: str | None = None,
        dtype: Any = None,
    ) -> None:
        if score not in SCORE_NAMES:
            raise ValueError(f"score must be one of {SCORE_NAMES}, got {score!r}")
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        super().__init__(name=name or score, dtype=dtype)
        self.num_classes = int(num_classes)
        self.score = score
        self.ignore_label = None if ignore_label is None else int(ignore_label)
        self.confusion = self.add_variable(
            shape=(self.num_classes, self.num_classes),
            initializer="zeros",
            dtype="int64",
            aggregation="sum",
            name="confusion",
        )

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        num_classes = self.num_classes
        labels = ops.convert_to_tensor(y_true)
        predictions = ops.convert_to_tensor(y_pred)
        same_rank = len(labels.shape) == len(predictions.shape)
        # One class: [B,H,W,1] float predictions are its scores, not class ids.
        scores_of_one = num_classes == 1 and keras.backend.is_float_dtype(predictions.dtype)
        if same_rank and labels.shape[-1] == 1 and (predictions.shape[-1] != 1 or scores_of_one):
            labels = ops.squeeze(labels, axis=-1)  # [B,H,W,1] labels with [B,H,W,C] scores
        if len(predictions.shape) == len(labels.shape) + 1:
            predictions = ops.argmax(predictions, axis=-1)
        label_shape = ops.shape(labels)
        labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
        predictions = ops.reshape(ops.cast(predictions, "int32"), (-1,))

        valid = ops.logical_and(labels >= 0, labels < num_classes)
        valid = ops.logical_and(valid, ops.logical_and(predictions >= 0, predictions < num_classes))
        if self.ignore_label is not None:
            valid = ops.logical_and(valid, ops.not_equal(labels, self.ignore_label))
        # Skipped pixels go to an extra bin that is dropped. segment_sum with a fixed
        # num_segments keeps the output static-shaped, so the update compiles under XLA and
        # JAX; ops.bincount does not (TF sizes its output by the data's maximum).
        overflow_bin = num_classes * num_classes
        index = ops.where(valid, labels * num_classes + predictions, overflow_bin)
        if sample_weight is None:
            ones = ops.ones_like(index)
            counts = ops.segment_sum(ones, index, num_segments=overflow_bin + 1)
        else:
            # Rounded per pixel and summed as integers: a float32 sum stops at 2^24 a cell.
            weights = ops.cast(ops.round(_broadcast_weights(sample_weight, label_shape)), "int32")
            counts = ops.segment_sum(weights, index, num_segments=overflow_bin + 1)
        counts = ops.reshape(ops.cast(counts[:overflow_bin], "int64"), (num_classes, num_classes))
        self.confusion.assign_add(counts)

    def result(self) -> Any:
        return ops.cast(_scores_from_counts(self.confusion)[self.score], self.dtype)

    def reset_state(self) -> None:
        self.confusion.assign(ops.zeros(self.confusion.shape, dtype=self.confusion.dtype))

    def confusion_matrix(self) -> np.ndarray:
        """The accumulated ``[C, C]`` counts as an int64 NumPy array."""
        return np.asarray(ops.convert_to_numpy(self.confusion)).astype(np.int64)

    def scores(self) -> dict[str, Any]:
        """All of :func:`scores` for the accumulated counts (NaN, not 0, when undefined)."""
        return scores(self.confusion_matrix())

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "score": self.score,
            "ignore_label": self.ignore_label,
        }


@keras.saving.register_keras_serializable(package="fcn_tf")
class MeanIU(ConfusionMatrix):
    """:class:`ConfusionMatrix` reporting mean IU, logged as ``mean_iu``.

    >>> m = MeanIU(num_classes=2)
    >>> m.update_state([[0, 1, 1]], [[0, 1, 0]])
    >>> round(float(m.result()), 4)  # mean(1/2, 1/2)
    0.5
    """

    def __init__(
        self,
        num_classes: int,
        ignore_label: int | None = 255,
        name: str = "mean_iu",
        dtype: Any = None,
    ) -> None:
        super().__init__(
            num_classes, score="mean_iu", ignore_label=ignore_label, name=name, dtype=dtype
        )

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        del config["score"]
        return config


def _broadcast_weights(sample_weight: Any, label_shape: tuple) -> Any:
    """Flatten weights shaped like the labels (maybe with a trailing 1) or per image ``[B]``."""
    weights = ops.cast(ops.convert_to_tensor(sample_weight), "float32")
    if len(weights.shape) == len(label_shape) + 1 and weights.shape[-1] == 1:
        weights = ops.squeeze(weights, axis=-1)
    # Per-image weights would broadcast against the last (width) axis; align them with B.
    while len(weights.shape) < len(label_shape):
        weights = ops.expand_dims(weights, axis=-1)
    return ops.reshape(ops.broadcast_to(weights, label_shape), (-1,))
