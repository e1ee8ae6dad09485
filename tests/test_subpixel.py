"""The fixed upsampler's sub-pixel path against TF's and Keras' own transposed convolutions."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from fcn_tf.models import BilinearUpsampling
from fcn_tf.models.layers import FixedConv2DTranspose, subpixel_conv_transpose

# (input h, w, kernel h, w, stride h, w): kernels a multiple of the stride (the FCN's 2s),
# odd (2s - 1, the ResNet alignment), smaller than the stride, and unequal per axis.
CASES = [
    (5, 7, 4, 4, 2, 2),
    (4, 6, 3, 3, 2, 2),
    (3, 3, 7, 7, 4, 4),
    (6, 5, 16, 16, 8, 8),
    (2, 3, 63, 63, 32, 32),
    (4, 4, 3, 3, 4, 4),
    (1, 1, 5, 6, 2, 4),
    (5, 4, 2, 9, 1, 3),
]


def kernel_and_input(case, c_in=3, c_out=4, batch=2):
    h, w, kh, kw, _, _ = case
    rng = np.random.default_rng(sum(case))
    x = rng.normal(size=(batch, h, w, c_in)).astype("float32")
    kernel = rng.normal(size=(kh, kw, c_out, c_in)).astype("float32")
    return x, kernel


def keras_length(n, k, s):
    """Keras' valid transposed-convolution length: a kernel smaller than the stride still
    steps a whole stride per input cell."""
    return (n - 1) * s + max(k, s)


@pytest.mark.parametrize("case", CASES)
def test_equals_tensorflows_transposed_convolution(case):
    x, kernel = kernel_and_input(case)
    strides = case[4:]
    expected = tf.nn.conv2d_transpose(
        x,
        kernel,
        output_shape=[
            x.shape[0],
            keras_length(x.shape[1], kernel.shape[0], strides[0]),
            keras_length(x.shape[2], kernel.shape[1], strides[1]),
            kernel.shape[2],
        ],
        strides=strides,
        padding="VALID",
    )
    got = subpixel_conv_transpose(x, kernel, strides)
    assert tuple(got.shape) == tuple(expected.shape)
    np.testing.assert_allclose(got, expected, atol=1e-5 * float(np.abs(expected).max()))


@pytest.mark.parametrize("case", CASES)
def test_equals_keras_conv_transpose_in_shape_and_value(case):
    x, kernel = kernel_and_input(case)
    expected = ops.conv_transpose(x, kernel, case[4:], padding="valid")
    got = subpixel_conv_transpose(x, kernel, case[4:])
    assert tuple(got.shape) == tuple(expected.shape)
    np.testing.assert_allclose(got, expected, atol=1e-5 * float(ops.max(ops.abs(expected))))


def brute_force(x, kernel, strides):
    """The definition, one input cell at a time: each scatters the whole kernel."""
    (b, h, w, _), (kh, kw, c_out, _) = x.shape, kernel.shape
    out = np.zeros((b, keras_length(h, kh, strides[0]), keras_length(w, kw, strides[1]), c_out))
    for p in range(h):
        for q in range(w):
            rows = slice(p * strides[0], p * strides[0] + kh)
            cols = slice(q * strides[1], q * strides[1] + kw)
            out[:, rows, cols] += np.einsum("bi,hwoi->bhwo", x[:, p, q], kernel)
    return out


@pytest.mark.parametrize("case", CASES)
def test_equals_a_brute_force_scatter(case):
    x, kernel = kernel_and_input(case, batch=1)
    got = subpixel_conv_transpose(x, kernel, case[4:])
    assert tuple(got.shape) == brute_force(x, kernel, case[4:]).shape
    np.testing.assert_allclose(got, brute_force(x, kernel, case[4:]), atol=1e-4)


def test_empty_batch_keeps_the_output_shape():
    x, kernel = kernel_and_input((3, 3, 4, 4, 2, 2), batch=0)
    assert tuple(subpixel_conv_transpose(x, kernel, (2, 2)).shape) == (0, 8, 8, 4)


def test_layer_equals_keras_conv2d_transpose_with_bias_and_activation():
    x, _ = kernel_and_input((5, 6, 6, 6, 3, 3))
    options = dict(strides=3, activation="relu", bias_initializer="random_normal")
    plain = keras.layers.Conv2DTranspose(4, 6, **options)
    fixed = FixedConv2DTranspose(4, 6, **options)
    plain.build(x.shape)
    fixed.build(x.shape)
    fixed.set_weights(plain.get_weights())
    assert float(ops.max(ops.abs(fixed.bias))) > 0
    np.testing.assert_allclose(fixed(x), plain(x), atol=1e-5)


@pytest.fixture
def subpixel_calls(monkeypatch):
    """Counts the layer's calls of the sub-pixel path (its fallback computes the same values)."""
    from fcn_tf.models import layers

    calls = []

    def spy(*args):
        calls.append(args[2])
        return subpixel_conv_transpose(*args)

    monkeypatch.setattr(layers, "subpixel_conv_transpose", spy)
    return calls


def test_valid_padding_takes_the_subpixel_path(subpixel_calls):
    x, _ = kernel_and_input((5, 6, 3, 3, 4, 4))
    layer = FixedConv2DTranspose(4, 3, strides=4)
    assert tuple(layer(x).shape) == tuple(layer.compute_output_shape(x.shape)) == (2, 20, 24, 4)
    assert subpixel_calls == [(4, 4)]


@pytest.mark.parametrize(
    "options",
    [
        {"padding": "same"},
        {"output_padding": 1},
        {"dilation_rate": 2, "strides": 1},
        {"data_format": "channels_first"},
    ],
)
def test_other_configurations_take_keras_own_path(options, subpixel_calls):
    x, _ = kernel_and_input((5, 6, 4, 4, 2, 2))
    options = {"strides": 2, **options}
    plain = keras.layers.Conv2DTranspose(4, 4, **options)
    fixed = FixedConv2DTranspose(4, 4, **options)
    shape = (2, 3, 5, 6) if "data_format" in options else x.shape
    x = x.reshape(shape)
    plain.build(shape)
    fixed.build(shape)
    fixed.set_weights(plain.get_weights())
    np.testing.assert_allclose(fixed(x), plain(x), atol=1e-5)
    assert subpixel_calls == []


def test_channels_last_layer_under_a_channels_first_default():
    x, _ = kernel_and_input((5, 6, 4, 4, 2, 2))
    previous = keras.config.image_data_format()
    keras.config.set_image_data_format("channels_first")
    try:
        plain = keras.layers.Conv2DTranspose(4, 4, strides=2, data_format="channels_last")
        fixed = FixedConv2DTranspose(4, 4, strides=2, data_format="channels_last")
        plain.build(x.shape)
        fixed.build(x.shape)
        fixed.set_weights(plain.get_weights())
        np.testing.assert_allclose(fixed(x), plain(x), atol=1e-5)
    finally:
        keras.config.set_image_data_format(previous)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_dynamic_shapes_gradients_and_xla(jit_compile):
    """Unknown sizes in a traced function, the input gradient (what training uses), XLA."""
    layer = FixedConv2DTranspose(5, 16, strides=8, kernel_initializer=BilinearUpsampling())
    reference = keras.layers.Conv2DTranspose(5, 16, strides=8)
    layer.build((None, None, None, 5))
    reference.build((None, None, None, 5))
    reference.set_weights(layer.get_weights())

    def outputs_and_gradient(which, x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = which(x)
            loss = tf.reduce_sum(y * tf.sin(y))
        return y, tape.gradient(loss, x)

    traced = tf.function(
        lambda x: outputs_and_gradient(layer, x),
        input_signature=[tf.TensorSpec([None, None, None, 5])],
        jit_compile=jit_compile,
    )
    for shape in [(1, 4, 6, 5), (3, 9, 2, 5)]:
        x = tf.random.stateless_normal(shape, seed=(1, shape[1]))
        got, got_gradient = traced(x)
        expected, expected_gradient = outputs_and_gradient(reference, x)
        assert tuple(got.shape) == (shape[0], (shape[1] - 1) * 8 + 16, (shape[2] - 1) * 8 + 16, 5)
        np.testing.assert_allclose(got, expected, atol=1e-5)
        np.testing.assert_allclose(got_gradient, expected_gradient, atol=1e-4)


def test_mixed_precision_computes_in_bfloat16():
    x, kernel = kernel_and_input((3, 4, 4, 4, 2, 2), c_in=4)
    layer = FixedConv2DTranspose(4, 4, strides=2, dtype="mixed_bfloat16", use_bias=False)
    layer.build(x.shape)
    layer.set_weights([kernel])
    y = layer(x)
    assert y.dtype == "bfloat16"
    expected = ops.conv_transpose(x, kernel, 2)
    np.testing.assert_allclose(ops.cast(y, "float32"), expected, rtol=0.05, atol=0.1)
