"""The record schema: one ``tf.train.Example`` per image, with TF Model Garden's keys.

| key | type | content |
| --- | --- | --- |
| ``image/encoded`` | bytes | the image file (JPEG or PNG) as read, not re-encoded |
| ``image/format`` | bytes | ``jpeg`` or ``png`` |
| ``image/height``, ``image/width`` | int64 | the image's size |
| ``image/filename`` | bytes | the source file's name, for error messages and outputs |
| ``image/segmentation/class/encoded`` | bytes | 8-bit single-channel PNG of class ids |
| ``image/segmentation/class/format`` | bytes | ``png`` |
| ``image/depth/encoded`` | bytes | optional 16-bit PNG (RGB-D data, e.g. NYUDv2) |
| ``image/segmentation/geometric/encoded`` | bytes | optional 8-bit PNG (SIFT Flow geometry) |

Encoding is numpy and Pillow (converters run outside TensorFlow graphs); decoding is TensorFlow,
for the tf.data pipeline.
"""

from __future__ import annotations

import dataclasses
import io
import os

import numpy as np
import tensorflow as tf
from PIL import Image

__all__ = [
    "DEPTH",
    "GEOMETRIC",
    "Sample",
    "decode_example",
    "encode_example",
    "encode_png",
    "image_format",
]

IMAGE = "image/encoded"
FORMAT = "image/format"
HEIGHT = "image/height"
WIDTH = "image/width"
FILENAME = "image/filename"
LABEL = "image/segmentation/class/encoded"
LABEL_FORMAT = "image/segmentation/class/format"
DEPTH = "image/depth/encoded"
GEOMETRIC = "image/segmentation/geometric/encoded"


@dataclasses.dataclass
class Sample:
    """One image with its labels, ready to be written.

    ``image`` is an encoded JPEG or PNG file's bytes (kept as is: no quality lost, no time
    spent) or an ``[H, W, 3]`` uint8 array (encoded as PNG). ``label`` is ``[H, W]`` uint8.

    >>> sample = Sample("cat.png", np.zeros((2, 3, 3), np.uint8), np.ones((2, 3), np.uint8))
    >>> sample.filename, sample.label.shape, sample.depth, sample.origin
    ('cat.png', (2, 3), None, '')
    """

    filename: str
    image: bytes | np.ndarray
    label: np.ndarray
    depth: np.ndarray | None = None
    geometric: np.ndarray | None = None
    origin: str = ""  # the source files, for error messages; the filename when empty


def encode_png(array: np.ndarray) -> bytes:
    """PNG bytes of a uint8 (gray or RGB) or uint16 (gray) array.

    >>> encode_png(np.zeros((2, 3), np.uint8))[:4]
    b'\\x89PNG'
    """
    array = np.asarray(array)
    if array.dtype == np.uint16:
        if array.ndim != 2:
            raise ValueError(f"16-bit PNGs here are single-channel, got shape {array.shape}")
        # Explicit little-endian bytes: Pillow's I;16 mode, whatever the platform's order.
        image = Image.frombytes("I;16", array.shape[::-1], np.asarray(array, "<u2").tobytes())
    elif array.dtype == np.uint8:
        image = Image.fromarray(array)
    else:
        raise TypeError(f"PNG encoding takes uint8 or uint16 arrays, not {array.dtype}")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def image_format(encoded: bytes) -> str:
    """``jpeg`` or ``png`` from a file's magic bytes.

    >>> image_format(encode_png(np.zeros((1, 1), np.uint8)))
    'png'
    """
    if encoded[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if encoded[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    raise ValueError("not a JPEG or PNG file")


def _bytes(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int(value: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))


def encode_example(sample: Sample, height: int, width: int) -> bytes:
    """A serialized ``tf.train.Example`` of ``sample``, whose image is ``height`` x ``width``.

    >>> sample = Sample("a.png", np.zeros((2, 3, 3), np.uint8), np.ones((2, 3), np.uint8))
    >>> feature = tf.train.Example.FromString(encode_example(sample, 2, 3)).features.feature
    >>> len(feature), feature[FORMAT].bytes_list.value, feature[WIDTH].int64_list.value
    (7, [b'png'], [3])
    """
    if isinstance(sample.image, np.ndarray):
        encoded = encode_png(sample.image)
    else:
        encoded = bytes(sample.image)
    features = {
        IMAGE: _bytes(encoded),
        FORMAT: _bytes(image_format(encoded).encode()),
        HEIGHT: _int(height),
        WIDTH: _int(width),
        # fsencode: a name os.listdir gave with undecodable bytes is stored as those bytes.
        FILENAME: _bytes(os.fsencode(sample.filename)),
        LABEL: _bytes(encode_png(np.asarray(sample.label, np.uint8))),
        LABEL_FORMAT: _bytes(b"png"),
    }
    if sample.depth is not None:
        features[DEPTH] = _bytes(encode_png(np.asarray(sample.depth, np.uint16)))
    if sample.geometric is not None:
        features[GEOMETRIC] = _bytes(encode_png(np.asarray(sample.geometric, np.uint8)))
    example = tf.train.Example(features=tf.train.Features(feature=features))
    # Map fields serialize in arbitrary order unless asked: shards must not depend on workers.
    return example.SerializeToString(deterministic=True)


_FEATURES = {
    IMAGE: tf.io.FixedLenFeature((), tf.string),
    FORMAT: tf.io.FixedLenFeature((), tf.string, default_value=""),
    HEIGHT: tf.io.FixedLenFeature((), tf.int64, default_value=-1),
    WIDTH: tf.io.FixedLenFeature((), tf.int64, default_value=-1),
    FILENAME: tf.io.FixedLenFeature((), tf.string, default_value=""),
    LABEL: tf.io.FixedLenFeature((), tf.string),
    DEPTH: tf.io.FixedLenFeature((), tf.string, default_value=""),
    GEOMETRIC: tf.io.FixedLenFeature((), tf.string, default_value=""),
}


def decode_example(serialized: tf.Tensor, depth: bool = False, geometric: bool = False) -> dict:
    """Parse and decode one record: ``image`` uint8 ``[H, W, 3]``, ``label`` uint8 ``[H, W]``.

    Also ``filename``; ``depth`` (uint16 ``[H, W]``) and ``geometric`` (uint8) when asked.

    >>> sample = Sample("a.png", np.full((2, 3, 3), 7, np.uint8), np.ones((2, 3), np.uint8))
    >>> decoded = decode_example(tf.constant(encode_example(sample, 2, 3)))
    >>> decoded["image"].shape, int(decoded["label"][1, 2]), decoded["filename"].numpy()
    (TensorShape([2, 3, 3]), 1, b'a.png')
    """
    parsed = tf.io.parse_single_example(serialized, _FEATURES)
    image = tf.io.decode_image(parsed[IMAGE], channels=3, expand_animations=False)
    label = tf.io.decode_png(parsed[LABEL], channels=1)[..., 0]
    decoded = {"image": image, "label": label, "filename": parsed[FILENAME]}
    if depth:
        decoded["depth"] = tf.io.decode_png(parsed[DEPTH], channels=1, dtype=tf.uint16)[..., 0]
    if geometric:
        decoded["geometric"] = tf.io.decode_png(parsed[GEOMETRIC], channels=1)[..., 0]
    return decoded
