"""The serving signatures of a segmentation model, as functions of a Keras model.

Every function takes dynamic batch, height and width and runs the model with
``training=False``; names of inputs and outputs are the contract's
(:mod:`fcn_tf.export.constants`).

>>> import numpy as np
>>> from fcn_tf.models import build_fcn
>>> model = build_fcn(3, 32, backbone_options={"width": 1 / 32, "fc_units": 8})
>>> out = class_ids_fn(model, max_pixels=10**6)(np.zeros((2, 20, 30, 3), np.uint8))
>>> out["class_ids"].dtype.name, out["class_ids"].shape.as_list()
('uint8', [2, 20, 30])
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import tensorflow as tf

from fcn_tf.export import constants
from fcn_tf.export.decode import decode_rgb, image_size
from fcn_tf.inference import class_dtype, class_ids

__all__ = [
    "IMAGES_SPEC",
    "IMAGE_BYTES_SPEC",
    "class_ids_fn",
    "image_bytes_fn",
    "num_classes_of",
    "probabilities_fn",
]

IMAGES_SPEC = tf.TensorSpec([None, None, None, 3], tf.uint8, name=constants.INPUT_IMAGES)
IMAGE_BYTES_SPEC = tf.TensorSpec([None], tf.string, name=constants.INPUT_IMAGE_BYTES)


def num_classes_of(model: keras.Model) -> int:
    """The number of classes a model scores (its output's last axis).

    >>> num_classes_of(keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(7, 1)]))
    7
    """
    outputs = getattr(model, "outputs", None)  # a subclassed model has none: run it once
    classes = outputs[0].shape[-1] if outputs else model(tf.zeros((1, 32, 32, 3))).shape[-1]
    if classes is None:
        raise ValueError(f"model {model.name!r}: its output's last axis (the classes) is unknown")
    return int(classes)


def _checked_images(images: tf.Tensor, max_pixels: int) -> tf.Tensor:
    """The images as float32 after checking them in the graph, where TF Serving feeds tensors
    without comparing them to the signature."""
    shape = tf.shape(images)
    pixels = tf.cast(shape[1], tf.int64) * tf.cast(shape[2], tf.int64)
    checks = [
        tf.debugging.assert_equal(
            shape[3], 3, message=f"{constants.INPUT_IMAGES} must be RGB: [B, H, W, 3]"
        ),
        tf.debugging.assert_less_equal(
            pixels,
            tf.constant(max_pixels, tf.int64),
            message=f"{constants.INPUT_IMAGES}: H x W exceeds the limit of {max_pixels} pixels",
        ),
    ]
    with tf.control_dependencies(checks):
        return tf.cast(images, tf.float32)


def _unless_empty(images: tf.Tensor, compute: Callable, dtype, trailing: tuple) -> tf.Tensor:
    """``compute()``, or an empty ``[0, H, W, *trailing]`` result for an empty batch (the
    network's convolutions refuse a batch of none)."""
    shape = tf.shape(images)
    empty = tf.concat([[0], shape[1:3], tf.constant(trailing, tf.int32)], 0)
    return tf.cond(shape[0] > 0, compute, lambda: tf.zeros(empty, dtype))


def class_ids_fn(model: keras.Model, max_pixels: int) -> Callable[[tf.Tensor], dict]:
    """``serving_default``: uint8 RGB ``[B, H, W, 3]`` -> ``class_ids`` ``[B, H, W]``.

    >>> scorer = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(300, 1)])
    >>> out = class_ids_fn(scorer, max_pixels=100)(tf.zeros((0, 8, 9, 3), tf.uint8))  # no images
    >>> out["class_ids"].dtype.name, out["class_ids"].shape.as_list()   # past 256 classes: int32
    ('int32', [0, 8, 9])
    """
    dtype = class_dtype(num_classes_of(model))

    def serving_default(images: tf.Tensor) -> dict[str, tf.Tensor]:
        floats = _checked_images(images, max_pixels)
        ids = _unless_empty(floats, lambda: class_ids(model, dtype, floats), dtype, ())
        return {constants.OUTPUT_CLASS_IDS: ids}

    return serving_default


def probabilities_fn(model: keras.Model, max_pixels: int) -> Callable[[tf.Tensor], dict]:
    """``probabilities``: uint8 RGB ``[B, H, W, 3]`` -> float32 softmax ``[B, H, W, C]``.

    >>> scorer = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(4, 1)])
    >>> out = probabilities_fn(scorer, max_pixels=100)(tf.zeros((1, 5, 6, 3), tf.uint8))
    >>> out["probabilities"].shape.as_list(), out["probabilities"][0, 0, 0].numpy().tolist()
    ([1, 5, 6, 4], [0.25, 0.25, 0.25, 0.25])
    """

    def probabilities(images: tf.Tensor) -> dict[str, tf.Tensor]:
        floats = _checked_images(images, max_pixels)

        def softmax() -> tf.Tensor:
            # In float32 whatever the model computes in (mixed precision).
            return tf.nn.softmax(tf.cast(model(floats, training=False), tf.float32))

        classes = (num_classes_of(model),)
        probabilities = _unless_empty(floats, softmax, tf.float32, classes)
        return {constants.OUTPUT_PROBABILITIES: probabilities}

    return probabilities


def image_bytes_fn(model: keras.Model, max_pixels: int) -> Callable[[tf.Tensor], dict]:
    """``predict_image_bytes``: encoded PNG/JPEG strings ``[B]`` -> ``class_ids``
    ``[B, H_max, W_max]`` (``PAD_CLASS_ID`` beyond each image) and ``image_size`` ``[B, 2]``.

    Every header is checked before any image is decoded; then images are decoded and run one
    at a time, each at its own size, so one image's result is the same alone or in a batch and
    memory holds one image's activations. With exactly 256 classes id 255 is a class and also
    ``PAD_CLASS_ID``: ``image_size``, not the value, tells padding apart.

    >>> scorer = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(2, 1)])
    >>> pngs = [tf.io.encode_png(tf.zeros((h, w, 3), tf.uint8)) for h, w in [(4, 6), (5, 3)]]
    >>> out = image_bytes_fn(scorer, max_pixels=100)(tf.stack(pngs))
    >>> out["image_size"].numpy().tolist(), out["class_ids"].shape.as_list()
    ([[4, 6], [5, 3]], [2, 5, 6])
    >>> out["class_ids"][1, 0].numpy().tolist()   # the second image's first row, then padding
    [0, 0, 0, 255, 255, 255]
    """
    dtype = class_dtype(num_classes_of(model))

    def predict_image_bytes(image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        indices = tf.range(tf.size(image_bytes))
        sizes = tf.map_fn(
            lambda item: image_size(item[0], item[1], max_pixels),
            (image_bytes, indices),
            fn_output_signature=tf.TensorSpec([2], tf.int32),
        )
        largest = tf.reduce_max(tf.concat([sizes, tf.zeros([1, 2], tf.int32)], 0), axis=0)
        # Every image is padded to the largest height and width: a wide and a tall image,
        # each within the limit, would otherwise ask for far more than it.
        padded_pixels = tf.cast(largest[0], tf.int64) * tf.cast(largest[1], tf.int64)
        fits = tf.debugging.assert_less_equal(
            padded_pixels,
            tf.constant(max_pixels, tf.int64),
            message=f"{constants.INPUT_IMAGE_BYTES}: the batch pads to the largest height x "
            f"largest width, which exceeds the limit of {max_pixels} pixels; send images of "
            "such different shapes in separate requests",
        )

        def one(item: tuple[tf.Tensor, tf.Tensor, tf.Tensor]) -> tf.Tensor:
            contents, index, size = item
            image = decode_rgb(contents, index)
            labels = class_ids(model, dtype, tf.cast(image, tf.float32)[tf.newaxis])[0]
            missing = largest - size
            return tf.pad(
                labels, [[0, missing[0]], [0, missing[1]]], constant_values=constants.PAD_CLASS_ID
            )

        def run_all() -> tf.Tensor:
            return tf.map_fn(
                one,
                (image_bytes, indices, sizes),
                fn_output_signature=tf.TensorSpec([None, None], dtype),
                parallel_iterations=1,
            )

        with tf.control_dependencies([sizes, fits]):
            # Stacking no elements of unknown shape fails: an empty request has its own branch.
            padded = tf.cond(tf.size(image_bytes) > 0, run_all, lambda: tf.zeros([0, 0, 0], dtype))
        return {constants.OUTPUT_CLASS_IDS: padded, constants.OUTPUT_IMAGE_SIZE: sizes}

    return predict_image_bytes
