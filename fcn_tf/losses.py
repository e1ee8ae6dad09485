"""Per-pixel softmax cross-entropy for semantic segmentation.

Backend-agnostic: only ``keras.ops`` is used, so the loss also runs on JAX and PyTorch.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

__all__ = ["NORMALIZE_MODES", "SegmentationCrossEntropy", "cell_mask"]

NORMALIZE_MODES = ("none", "valid", "batch")


@keras.saving.register_keras_serializable(package="fcn_tf")
class SegmentationCrossEntropy(keras.losses.Loss):
    """Softmax cross-entropy between logits ``[B,H,W,C]`` and integer labels ``[B,H,W]``.

    Labels may also be ``[B,H,W,1]``. Pixels whose label equals ``ignore_label`` or lies
    outside ``[0, C)`` contribute nothing to the value or the gradient (they are masked, not
    an error, so stray label values cannot crash a long run); their logits may even be
    non-finite. Everything is computed in float32, also for float16/bfloat16 logits.

    Args:
        ignore_label: label value to skip (e.g. the VOC boundary label 255), or ``None`` to
            skip only labels outside ``[0, C)``.
        normalize: ``"none"`` sums the loss over valid pixels and images;
            ``"valid"`` averages over valid pixels (0 when there are none);
            ``"batch"`` divides the sum by the batch size ``B``: Caffe's ``normalize: false``
            (``BATCH_SIZE``), the reference solver's summed loss (it needs a correspondingly
            tiny learning rate); at batch 1 it equals ``"none"``.
        sample_probability: loss sampling (paper, section 3.4): each ``cell_size`` x
            ``cell_size`` cell of pixels (the trainer uses the output stride; the grid is the
            label map's, not the final layer's cells) keeps its loss terms with this
            probability and drops them otherwise, a
            fresh draw at every call; kept terms are divided by the probability, so the
            expected value is the unsampled loss (the normaliser is not changed). 1 (the
            default) is whole-image training, exactly the unsampled loss.
        cell_size: side of a sampled cell in pixels; cells are aligned with the top-left
            corner of the label map (a partial cell at the bottom or right is one cell).
        seed: seed of the sampling draws (a ``keras.random.SeedGenerator``, whose state is
            ``seed_generator``); ``None`` is random.

    ``sample_weight`` (per pixel ``[B,H,W]``/``[B,H,W,1]``, or per image ``[B]``) scales each
    pixel's term; following Keras' convention it does not change the normaliser (valid-pixel
    count or ``B``).

    Under ``tf.distribute`` the ``"valid"``/``"batch"`` values are normalised per replica
    and scaled by ``1/num_replicas`` like Keras' built-in losses, while ``"none"`` is left
    unscaled so the summed replica gradients equal the gradient of the global-batch sum.

    >>> import numpy as np
    >>> logits = np.zeros((1, 2, 2, 4), "float32")  # uniform: each pixel costs ln 4
    >>> labels = np.array([[[0, 1], [2, 255]]])
    >>> round(float(SegmentationCrossEntropy()(labels, logits)), 4)
    1.3863
    >>> round(float(SegmentationCrossEntropy(normalize="none")(labels, logits)), 4)
    4.1589
    >>> sampled = SegmentationCrossEntropy(normalize="none", sample_probability=0.5, seed=1)
    >>> round(float(sampled(labels, logits)) / np.log(4), 4) in (0.0, 2.0, 4.0, 6.0)
    True
    """

    def __init__(
        self,
        ignore_label: int | None = 255,
        normalize: str = "valid",
        name: str = "segmentation_cross_entropy",
        sample_probability: float = 1.0,
        cell_size: int = 1,
        seed: int | None = None,
    ) -> None:
        if not 0.0 < float(sample_probability) <= 1.0:
            raise ValueError(f"sample_probability must be in (0, 1], got {sample_probability!r}")
        if int(cell_size) < 1:
            raise ValueError(f"cell_size must be a positive integer, got {cell_size!r}")
        if normalize not in NORMALIZE_MODES:
            raise ValueError(
                f"normalize must be one of {NORMALIZE_MODES}, got {normalize!r}. Use 'none' "
                "for Caffe's normalize: false, 'valid' for the mean over non-ignored pixels, "
                "'batch' for the sum divided by the batch size."
            )
        # "sum_over_batch_size" divides by the element count and applies Keras' tf.distribute
        # 1/num_replicas scaling; `call` pre-multiplies by the element count to cancel the
        # former. "none" must stay unscaled: replica gradients are summed, matching a sum.
        reduction = "sum" if normalize == "none" else "sum_over_batch_size"
        # float32 is fixed: a float16 loss dtype would make the base class cast and sum the
        # per-pixel values in float16, which overflows on full-resolution images.
        super().__init__(name=name, reduction=reduction, dtype="float32")
        self.ignore_label = None if ignore_label is None else int(ignore_label)
        self.normalize = normalize
        self.sample_probability = float(sample_probability)
        self.cell_size = int(cell_size)
        self.seed = None if seed is None else int(seed)
        # Only a sampling loss owns random state: plain losses stay variable-free, so they can
        # still be created anywhere, inside a traced function too.
        self.seed_generator = (
            keras.random.SeedGenerator(self.seed) if self.sample_probability < 1.0 else None
        )

    def __call__(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        if sample_weight is not None:
            y_pred = ops.convert_to_tensor(y_pred)
            sample_weight = ops.convert_to_tensor(sample_weight)
            # The base class would broadcast per-image weights [B] against the width axis.
            while len(sample_weight.shape) < len(y_pred.shape) - 1:
                sample_weight = ops.expand_dims(sample_weight, axis=-1)
        return super().__call__(y_true, y_pred, sample_weight=sample_weight)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        logits = ops.cast(y_pred, "float32")
        labels = ops.cast(y_true, "int32")
        if len(labels.shape) == len(logits.shape):
            labels = ops.squeeze(labels, axis=-1)
        num_classes = ops.shape(logits)[-1]

        valid = ops.logical_and(labels >= 0, labels < num_classes)
        if self.ignore_label is not None:
            valid = ops.logical_and(valid, ops.not_equal(labels, self.ignore_label))
        # Masking the logits as well as the result keeps inf/NaN logits at ignored pixels
        # out of both the forward value and the backward pass (0 * NaN would be NaN).
        safe_labels = ops.where(valid, labels, 0)
        safe_logits = ops.where(ops.expand_dims(valid, -1), logits, 0.0)
        pixel_loss = ops.sparse_categorical_crossentropy(
            safe_labels, safe_logits, from_logits=True, axis=-1
        )
        pixel_loss = ops.where(valid, pixel_loss, 0.0)
        if self.seed_generator is not None:
            shape = ops.shape(labels)
            keep = cell_mask(shape, self.sample_probability, self.cell_size, self.seed_generator)
            pixel_loss = pixel_loss * keep / self.sample_probability

        if self.normalize == "none":
            return pixel_loss
        if self.normalize == "valid":
            denominator = ops.maximum(ops.sum(ops.cast(valid, "float32")), 1.0)
        else:
            denominator = ops.cast(ops.shape(logits)[0], "float32")
        num_elements = ops.cast(ops.size(pixel_loss), "float32")
        return pixel_loss * (num_elements / denominator)

    def get_config(self) -> dict[str, Any]:
        config = {"name": self.name, "ignore_label": self.ignore_label, "normalize": self.normalize}
        # Whole-image losses keep the config they always had; sampling ones add every field.
        if self.sample_probability < 1.0:
            config.update(
                sample_probability=self.sample_probability, cell_size=self.cell_size, seed=self.seed
            )
        return config


def cell_mask(shape: Any, probability: float, cell_size: int, seed: Any = None) -> Any:
    """A float32 0/1 mask of ``shape`` ``(B, H, W)`` made of whole ``cell_size`` x
    ``cell_size`` cells (from the top-left corner), each 1 with ``probability``.

    ``seed`` is an int, a ``keras.random.SeedGenerator`` or ``None`` (Keras' global one).

    >>> mask = ops.convert_to_numpy(cell_mask((1, 4, 6), 0.5, 2, seed=3))
    >>> mask.shape, bool((mask[0, ::2, ::2] == mask[0, 1::2, 1::2]).all())
    ((1, 4, 6), True)
    """
    batch, height, width = shape[0], shape[1], shape[2]
    cells = (batch, -(-height // cell_size), -(-width // cell_size))
    keep = ops.cast(keras.random.uniform(cells, seed=seed) < probability, "float32")
    if cell_size > 1:
        keep = ops.repeat(ops.repeat(keep, cell_size, axis=1), cell_size, axis=2)
    return keep[:, :height, :width]
