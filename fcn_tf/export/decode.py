"""Encoded images to RGB inside the serving graph, checked before they are decoded.

A request's bytes are untrusted: a 0.4 MB PNG can decode to 1.2 GB. So each image's header is
read first (PNG: the IHDR chunk, parsed here from the bytes; JPEG:
``tf.io.extract_jpeg_shape``, which reads the markers only) and the image is refused with
``INVALID_ARGUMENT`` when its height x width exceeds the pixel budget, before any pixel is
decoded. Errors from these checks name the image's index in the request, except a JPEG
header too broken for ``extract_jpeg_shape``, whose own message does not.

What decodes, all to 8-bit RGB:

* JPEG: gray, YCbCr and CMYK (libjpeg converts them to RGB).
* PNG of bit depth 1 to 8: gray, RGB and palette images; gray+alpha and RGBA images whose
  pixels are all opaque, and palette images with a transparent entry that no pixel uses (the
  alpha channel is then dropped without loss). A transparent pixel has no defined colour, so
  such images are refused: flatten them onto a background first. (A gray or RGB PNG's
  colour-key transparency, a ``tRNS`` chunk without an alpha channel, is ignored, as
  TensorFlow's decoder ignores it.)
* Refused: 16-bit PNGs (in segmentation data these are depth or label maps, not photographs;
  reducing them to 8 bits would predict on a different image), other formats, and data that
  is truncated or corrupt (the decoders' own ``INVALID_ARGUMENT`` errors).

>>> import numpy as np
>>> png = tf.io.encode_png(np.zeros((5, 7, 1), np.uint8))
>>> image_size(png, 0, max_pixels=100).numpy().tolist()
[5, 7]
>>> decode_rgb(png, 0).shape
TensorShape([5, 7, 3])
"""

from __future__ import annotations

import tensorflow as tf

__all__ = ["decode_rgb", "image_size"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"
# Signature (8), chunk length (4), "IHDR" (4), width, height (4 each), bit depth, colour type.
_PNG_HEADER_BYTES = 26


def _check(
    condition: tf.Tensor, index: tf.Tensor, message: str, *values: tf.Tensor
) -> tf.Operation:
    """An assertion raising ``INVALID_ARGUMENT`` with ``image_bytes[index]: message``;
    ``{}`` in ``message`` are filled with ``values``."""
    text = tf.strings.format("image_bytes[{}]: " + message, (index, *values))
    return tf.debugging.Assert(condition, [text])


def _after(checks: list, value: tf.Tensor) -> tf.Tensor:
    # Decoders are pure ops: only a data dependency makes them wait for the checks.
    with tf.control_dependencies(checks):
        return tf.identity(value)


def _is_png(contents: tf.Tensor) -> tf.Tensor:
    return tf.equal(tf.strings.substr(contents, 0, len(PNG_SIGNATURE)), PNG_SIGNATURE)


def _is_jpeg(contents: tf.Tensor) -> tf.Tensor:
    return tf.equal(tf.strings.substr(contents, 0, len(JPEG_SIGNATURE)), JPEG_SIGNATURE)


def _png_header(contents: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
    """``[height, width]`` from a PNG's IHDR chunk, after checking it is one we decode."""
    # Padded so that the slices below exist even in a short (truncated) string.
    header = tf.strings.substr(contents, 0, _PNG_HEADER_BYTES) + b"\0" * _PNG_HEADER_BYTES
    width_height = tf.io.decode_raw(tf.strings.substr(header, 16, 8), tf.int32, little_endian=False)
    depth_type = tf.io.decode_raw(tf.strings.substr(header, 24, 2), tf.uint8)
    depth, colour = tf.cast(depth_type[0], tf.int32), tf.cast(depth_type[1], tf.int32)
    checks = [
        _check(
            tf.strings.length(contents) >= _PNG_HEADER_BYTES,
            index,
            "truncated PNG: {} bytes, shorter than its header",
            tf.strings.length(contents),
        ),
        _check(
            tf.equal(tf.strings.substr(header, 12, 4), b"IHDR"),
            index,
            "corrupt PNG: the first chunk is not IHDR",
        ),
        _check(
            tf.reduce_all(width_height > 0),
            index,
            "corrupt PNG: IHDR width x height is {} x {}",
            width_height[0],
            width_height[1],
        ),
        _check(
            depth <= 8,
            index,
            "{}-bit PNG refused: the model takes 8-bit RGB (convert it first)",
            depth,
        ),
        _check(
            tf.reduce_any(tf.equal(colour, [0, 2, 3, 4, 6])),
            index,
            "corrupt PNG: unknown colour type {}",
            colour,
        ),
    ]
    return _after(checks, width_height[::-1])


def _jpeg_header(contents: tf.Tensor) -> tf.Tensor:
    return tf.io.extract_jpeg_shape(contents, output_type=tf.int32)[:2]


def image_size(contents: tf.Tensor, index: tf.Tensor | int, max_pixels: int) -> tf.Tensor:
    """``[height, width]`` int32 of one encoded PNG or JPEG, read from its header only.

    Raises ``InvalidArgumentError`` (when run) for other formats, corrupt headers, PNGs this
    module does not decode, and images of more than ``max_pixels`` pixels.

    >>> import numpy as np
    >>> image_size(tf.io.encode_jpeg(np.zeros((30, 40, 3), np.uint8)), 0, 10**6).numpy()
    array([30, 40], dtype=int32)
    """
    index = tf.convert_to_tensor(index)
    is_png, is_jpeg = _is_png(contents), _is_jpeg(contents)
    known = _check(
        is_png | is_jpeg,
        index,
        "neither PNG nor JPEG (the first bytes are {})",
        tf.strings.substr(contents, 0, 4),
    )
    contents = _after([known], contents)
    size = tf.cond(is_png, lambda: _png_header(contents, index), lambda: _jpeg_header(contents))
    pixels = tf.cast(size[0], tf.int64) * tf.cast(size[1], tf.int64)
    budget = _check(
        pixels <= max_pixels,
        index,
        "{} x {} = {} pixels exceeds the limit of {} pixels",
        size[0],
        size[1],
        pixels,
        tf.constant(max_pixels, tf.int64),
    )
    return _after([budget], size)


def _decode_png(contents: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
    # The file's own channels: asking libpng for 4 fills a low-bit-depth palette or gray
    # image's alpha with 2**depth - 1, not 255 (TF 2.21).
    image = tf.io.decode_png(contents, channels=0, dtype=tf.uint8)
    channels = tf.shape(image)[-1]
    colours = channels - (1 - channels % 2)  # gray+alpha and RGBA end in their alpha
    opaque = _check(
        tf.reduce_all(tf.equal(image[..., colours:], 255)),
        index,
        "PNG with transparent pixels refused: flatten it onto a background first",
    )
    shape = tf.concat([tf.shape(image)[:2], [3]], 0)
    return _after([opaque], tf.broadcast_to(image[..., :colours], shape))


def decode_rgb(contents: tf.Tensor, index: tf.Tensor | int) -> tf.Tensor:
    """One encoded PNG or JPEG as uint8 RGB ``[H, W, 3]``; check it with :func:`image_size`
    first, which this does not repeat.

    >>> import numpy as np
    >>> gray_alpha = np.stack([np.full((2, 3), 90, np.uint8), np.full((2, 3), 255, np.uint8)], -1)
    >>> decode_rgb(tf.io.encode_png(gray_alpha), 0)[0, 0].numpy().tolist()   # opaque: alpha dropped
    [90, 90, 90]
    >>> try:
    ...     decode_rgb(tf.io.encode_png(np.zeros((1, 1, 2), np.uint8)), 4)   # alpha 0
    ... except tf.errors.InvalidArgumentError as error:
    ...     print(error.message)
    Expected ... b'image_bytes[4]: PNG with transparent pixels refused: flatten it onto a ...'
    """
    index = tf.convert_to_tensor(index)
    image = tf.cond(
        _is_png(contents),
        lambda: _decode_png(contents, index),
        lambda: tf.io.decode_jpeg(contents, channels=3),
    )
    image.set_shape([None, None, 3])
    return image
