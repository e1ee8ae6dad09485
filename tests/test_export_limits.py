"""Untrusted input to the exported signatures: pixel budget checked in the header before
decoding, channel and bit-depth policy, corrupt and truncated data: all INVALID_ARGUMENT."""

import io
import struct
import zlib

import numpy as np
import pytest
import tensorflow as tf
from helpers import keras_class_ids, pixel_classifier
from PIL import Image

from fcn_tf.export import constants, export_saved_model

MAX_PIXELS = 64 * 64


@pytest.fixture(scope="module")
def model():
    return pixel_classifier(4)


@pytest.fixture(scope="module")
def signatures(model, tmp_path_factory):
    base = str(tmp_path_factory.mktemp("models"))
    return tf.saved_model.load(export_saved_model(model, base, max_pixels=MAX_PIXELS)).signatures


def predict_bytes(signatures, *encoded):
    out = signatures[constants.PREDICT_IMAGE_BYTES](
        **{constants.INPUT_IMAGE_BYTES: tf.constant(list(encoded), tf.string)}
    )
    return out[constants.OUTPUT_CLASS_IDS].numpy(), out[constants.OUTPUT_IMAGE_SIZE].numpy()


def class_ids(model, image):
    return keras_class_ids(model, image[None])[0]


def pil_png(array, mode=None):
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, format="PNG")
    return buffer.getvalue()


def with_ihdr(png, width=None, height=None, depth=None):
    """``png`` with its IHDR fields replaced (and the chunk's CRC made right again)."""
    fields = list(struct.unpack(">IIBBBBB", png[16:29]))
    fields[0] = fields[0] if width is None else width
    fields[1] = fields[1] if height is None else height
    fields[2] = fields[2] if depth is None else depth
    body = b"IHDR" + struct.pack(">IIBBBBB", *fields)
    return png[:12] + body + struct.pack(">I", zlib.crc32(body)) + png[33:]


@pytest.fixture
def image(rng):
    return rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)


def test_within_budget_images_decode(signatures, model, rng):
    largest = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    ids, sizes = predict_bytes(signatures, tf.io.encode_png(largest).numpy())
    np.testing.assert_array_equal(sizes, [[64, 64]])
    np.testing.assert_array_equal(ids[0], class_ids(model, largest))


@pytest.mark.parametrize("encode", [tf.io.encode_png, tf.io.encode_jpeg], ids=["png", "jpeg"])
def test_images_over_the_budget_are_refused_by_their_header(signatures, rng, encode):
    ok = tf.io.encode_png(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).numpy()
    big = encode(rng.integers(0, 256, (65, 64, 3), dtype=np.uint8)).numpy()
    with pytest.raises(
        tf.errors.InvalidArgumentError,
        match=rf"image_bytes\[1\]: 65 x 64 = 4160 pixels exceeds the limit of {MAX_PIXELS}",
    ):
        predict_bytes(signatures, ok, big, ok)


def test_a_huge_claimed_size_is_refused_before_decoding(signatures, image):
    # 100000 x 100000 pixels would decode to 30 GB; the data after the header is garbage, so
    # any decoding attempt would fail with the decoder's message instead of the budget's.
    png = with_ihdr(tf.io.encode_png(image).numpy(), width=100_000, height=100_000)
    png = png[:33] + b"\0garbage" * 10
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"image_bytes\[0\]: 100000 x 100000"):
        predict_bytes(signatures, png)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"GIF89a" + b"\0" * 40, r"image_bytes\[0\]: neither PNG nor JPEG"),
        (b"", r"image_bytes\[0\]: neither PNG nor JPEG"),
        (b"\x89PNG\r\n\x1a\n\0\0", r"image_bytes\[0\]: truncated PNG: 10 bytes"),
        (b"\x89PNG\r\n\x1a\n" + b"\0\0\0\x0dIDAT" + b"\0" * 30, r"the first chunk is not IHDR"),
        (b"\xff\xd8\xff" + b"x" * 100, r"Invalid JPEG data"),
    ],
    ids=["gif", "empty", "short-png", "no-ihdr", "garbage-jpeg"],
)
def test_unknown_and_corrupt_headers_are_invalid_arguments(signatures, data, message):
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        predict_bytes(signatures, data)


def test_zero_sizes_in_the_header_are_refused(signatures, image):
    png = with_ihdr(tf.io.encode_png(image).numpy(), width=0)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"IHDR width x height is 0 x 20"):
        predict_bytes(signatures, png)


@pytest.mark.parametrize("cut", [0.5, 0.9], ids=["half", "tail"])
@pytest.mark.parametrize("encode", [tf.io.encode_png, tf.io.encode_jpeg], ids=["png", "jpeg"])
def test_truncated_images_are_invalid_arguments(signatures, image, encode, cut):
    data = encode(image).numpy()
    with pytest.raises(tf.errors.InvalidArgumentError):
        predict_bytes(signatures, data[: int(len(data) * cut)])


def test_corrupt_image_data_is_an_invalid_argument(signatures, image):
    png = bytearray(tf.io.encode_png(image).numpy())
    png[45:60] = b"\xff" * 15  # inside the IDAT chunk: its CRC no longer matches
    with pytest.raises(tf.errors.InvalidArgumentError, match="PNG"):
        predict_bytes(signatures, bytes(png))


def test_sixteen_bit_pngs_are_refused(signatures, rng):
    gray16 = rng.integers(0, 65536, (20, 30), dtype=np.uint16)
    png = pil_png(gray16)
    assert png[24] == 16  # the IHDR bit depth
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"image_bytes\[0\]: 16-bit PNG"):
        predict_bytes(signatures, png)


def test_gray_palette_and_opaque_alpha_pngs_decode_to_rgb(signatures, model, image):
    gray = image[..., 0]
    opaque = np.full(gray.shape, 255, np.uint8)
    palette_image = Image.fromarray(image).quantize(16)
    buffer = io.BytesIO()
    palette_image.save(buffer, format="PNG")
    palette_rgb = np.asarray(palette_image.convert("RGB"))
    binary = gray > 127
    cases = [
        (pil_png(gray), np.repeat(gray[..., None], 3, -1)),
        (pil_png(binary), np.repeat(binary[..., None] * np.uint8(255), 3, -1)),
        (pil_png(np.dstack([gray, opaque]), "LA"), np.repeat(gray[..., None], 3, -1)),
        (pil_png(np.dstack([image, opaque]), "RGBA"), image),
        (buffer.getvalue(), palette_rgb),
    ]
    assert [tuple(data[24:26]) for data, _ in cases] == [(8, 0), (1, 0), (8, 4), (8, 6), (4, 3)]
    ids, _ = predict_bytes(signatures, *(data for data, _ in cases))
    for index, (_, rgb) in enumerate(cases):
        np.testing.assert_array_equal(ids[index], class_ids(model, rgb), str(index))


@pytest.mark.parametrize("mode", ["LA", "RGBA", "P"])
def test_transparent_pixels_are_refused(signatures, image, mode):
    if mode == "P":  # a palette whose entry 0 is transparent (a tRNS chunk)
        buffer = io.BytesIO()
        Image.fromarray(image).quantize(16).save(buffer, format="PNG", transparency=0)
        png = buffer.getvalue()
    else:
        alpha = np.full(image.shape[:2], 255, np.uint8)
        alpha[3, 4] = 254
        png = pil_png(np.dstack([image[..., :1] if mode == "LA" else image, alpha]), mode)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"image_bytes\[1\]: PNG with transp"):
        predict_bytes(signatures, tf.io.encode_png(image).numpy(), png)


def test_gray_and_cmyk_jpegs_decode_to_rgb(signatures, model, image):
    for source in (Image.fromarray(image[..., 0]), Image.fromarray(image).convert("CMYK")):
        buffer = io.BytesIO()
        source.save(buffer, format="JPEG")
        data = buffer.getvalue()
        ids, _ = predict_bytes(signatures, data)
        expected = class_ids(model, tf.io.decode_jpeg(data, channels=3).numpy())
        np.testing.assert_array_equal(ids[0], expected)


@pytest.mark.parametrize("name", [constants.SERVING_DEFAULT])
def test_tensor_inputs_must_be_rgb_and_within_the_budget(signatures, name):
    signature = signatures[name]
    for shape in [(1, 8, 8, 4), (1, 8, 8, 1)]:
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"images must be RGB"):
            signature(**{constants.INPUT_IMAGES: tf.zeros(shape, tf.uint8)})
    with pytest.raises(tf.errors.InvalidArgumentError, match=rf"exceeds the limit of {MAX_PIXELS}"):
        signature(**{constants.INPUT_IMAGES: tf.zeros((1, 65, 64, 3), tf.uint8)})
    out = signature(**{constants.INPUT_IMAGES: tf.zeros((2, 64, 64, 3), tf.uint8)})
    assert out[constants.OUTPUT_CLASS_IDS].shape == (2, 64, 64)
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected to be a uint8 tensor"):
        signature(**{constants.INPUT_IMAGES: tf.zeros((1, 8, 8, 3), tf.float32)})


def test_a_budget_under_the_warm_up_image_still_loads_and_serves(model, tmp_path, rng):
    from fcn_tf.serving.servable import load_version

    folder = export_saved_model(model, str(tmp_path), max_pixels=500)  # under 32 x 32
    servable = load_version(folder, 1)  # warms up on an image within the budget
    image = rng.integers(0, 256, (1, 20, 25, 3), dtype=np.uint8)
    out = servable.signatures[constants.SERVING_DEFAULT].run({constants.INPUT_IMAGES: image})
    np.testing.assert_array_equal(out[constants.OUTPUT_CLASS_IDS][0], class_ids(model, image[0]))


def test_a_batch_padding_beyond_the_budget_is_refused(signatures, rng):
    # Each within the 4096-pixel budget; padded together, 2 x 4000 x 4000 class ids.
    wide = pil_png(rng.integers(0, 256, (1, 4000, 3), dtype=np.uint8))
    tall = pil_png(rng.integers(0, 256, (4000, 1, 3), dtype=np.uint8))
    for one in (wide, tall):
        assert predict_bytes(signatures, one)[1].tolist() in ([[1, 4000]], [[4000, 1]])
    with pytest.raises(tf.errors.InvalidArgumentError, match="pads to the largest height"):
        predict_bytes(signatures, wide, tall)
