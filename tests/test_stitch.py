"""Tests for fcn_tf.models.stitch: shift-and-stitch and filter rarefaction (paper, 3.2)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import TINY_VGG
from helpers import randomize
from keras import layers

from fcn_tf.models import build_fcn
from fcn_tf.models.stitch import DilatedPooling2D, rarefy, shift_and_stitch


def _vgg_like() -> keras.Model:
    """Same-padded convolutions and two 2x2/2 poolings (Caffe's round-up): stride 4."""
    x = inputs = keras.Input((None, None, 3))
    x = layers.Conv2D(4, 3, padding="same", activation="relu")(x)
    x = layers.BatchNormalization()(x)
    x = layers.MaxPooling2D(2, padding="same")(x)
    x = layers.Conv2D(5, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D(2, padding="same")(x)
    x = layers.Dropout(0.5)(x)
    x = layers.Conv2D(3, 3, padding="same")(x)
    return keras.Model(inputs, x)


def _strided_residual() -> keras.Model:
    """Valid convolutions, a strided same convolution, average pooling and a residual add."""
    x = inputs = keras.Input((None, None, 2))
    x = layers.Conv2D(4, 3, activation="relu")(x)
    x = layers.Conv2D(4, 3, strides=2, padding="same")(x)
    branch = layers.Conv2D(4, 3, padding="same", activation="relu")(x)
    x = layers.Add()([x, branch])
    x = layers.AveragePooling2D(2)(x)
    x = layers.ZeroPadding2D(1)(x)
    x = layers.Conv2D(2, 2)(x)  # an even kernel: not centred by "same"
    return keras.Model(inputs, x)


def _random(model: keras.Model, seed: int) -> keras.Model:
    rng = np.random.default_rng(seed)
    randomize(model, rng)
    for layer in model.layers:  # moving statistics away from 0/1, so BN really acts
        if isinstance(layer, layers.BatchNormalization):
            gamma, beta, mean, _ = layer.get_weights()
            layer.set_weights(
                [gamma, beta, rng.normal(size=mean.shape), 1 + rng.random(mean.shape)]
            )
    return model


def _images(shape, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def test_interleaving_matches_a_brute_force_loop():
    model, factor = _random(_vgg_like(), 1), 4
    x = _images((2, 20, 23, 3))
    stitched = np.asarray(shift_and_stitch(model, x, factor))
    expected = None
    for dy in range(factor):
        for dx in range(factor):
            shifted = np.pad(x[:, dy:, dx:], [(0, 0), (0, dy), (0, dx), (0, 0)])
            output = np.asarray(model(shifted, training=False))
            if expected is None:
                expected = np.zeros((2, factor * output.shape[1], factor * output.shape[2], 3))
            for i in range(output.shape[1]):
                for j in range(output.shape[2]):
                    expected[:, factor * i + dy, factor * j + dx] = output[:, i, j]
    assert stitched.shape == expected.shape == (2, 20, 24, 3)
    np.testing.assert_allclose(stitched, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("factor", [2.7, "3", 0, True])
def test_factor_must_be_a_positive_integer(factor):
    with pytest.raises(ValueError, match="factor must be a positive integer"):
        shift_and_stitch(lambda batch: batch[:, ::2, ::2], _images((1, 4, 4, 1)), factor)


def test_a_subsampling_net_gives_back_its_input():
    x = _images((1, 10, 13, 2))
    stitched = np.asarray(shift_and_stitch(lambda batch: batch[:, ::4, ::4], x, 4))
    assert stitched.shape == (1, 12, 16, 2)
    np.testing.assert_array_equal(stitched[:, :10, :13], x)
    assert not stitched[:, 10:].any() and not stitched[:, :, 13:].any()  # the zero fill


@pytest.mark.parametrize(
    ("build", "channels", "size", "top", "bottom"),
    [
        # top/left margin: padding reach (1 + 2 + 4) + f - 1; bottom/right: receptive field.
        (_vgg_like, 3, (44, 50), 10, 12),
        # Valid layers pad nothing at the top, but the shifted copies start f - 1 rows in,
        # and ZeroPadding2D(1) at stride 4 reaches 4 more.
        (_strided_residual, 2, (42, 46), 8, 16),
    ],
)
def test_rarefied_net_equals_shift_and_stitch_away_from_borders(build, channels, size, top, bottom):
    model = _random(build(), 2)
    x = _images((2, *size, channels), seed=3)
    stitched = np.asarray(shift_and_stitch(model, x, 4))
    dense = np.asarray(rarefy(model)(x, training=False))
    rows = min(stitched.shape[1], dense.shape[1]) - bottom
    cols = min(stitched.shape[2], dense.shape[2]) - bottom
    assert rows - top > 10 and cols - top > 10
    inner = np.s_[:, top:rows, top:cols]
    np.testing.assert_allclose(dense[inner], stitched[inner], rtol=1e-4, atol=1e-4)
    # Near the borders they differ: the margins are not an empty claim.
    overlap = np.s_[:, : rows + bottom, : cols + bottom]
    assert not np.allclose(dense[overlap], stitched[overlap], atol=1e-4)


def test_rarefied_fcn_trunk_is_dense_and_keeps_the_weights():
    model = build_fcn(3, 32, geometry="same", backbone_options=TINY_VGG)
    trunk = keras.Model(model.input, model.get_layer("score_fr").output)
    dense = rarefy(trunk)
    assert dense(np.zeros((1, 48, 40, 3), "float32")).shape == (1, 48, 40, 3)
    assert trunk(np.zeros((1, 48, 40, 3), "float32")).shape == (1, 2, 2, 3)
    # Each filter is dilated by the product of the strides before it.
    expected = {"conv1_1": 1, "conv2_1": 2, "conv3_3": 4, "conv4_1": 8, "conv5_3": 16, "fc6": 32}
    for name, dilation in expected.items():
        assert dense.get_layer(name).dilation_rate == (dilation, dilation)
        assert dense.get_layer(name).strides == (1, 1)
    assert dense.get_layer("pool5").dilation == 16
    for layer in trunk.layers:
        for a, b in zip(
            layer.get_weights(), dense.get_layer(layer.name).get_weights(), strict=True
        ):
            np.testing.assert_array_equal(a, b)


def test_dilated_pooling_matches_loops():
    x = _images((1, 9, 11, 2), seed=4)
    padding = ((1, 2), (0, 2))  # every window keeps an input pixel, as in rarefied nets
    for mode in ("max", "average"):
        layer = DilatedPooling2D((2, 3), dilation=2, mode=mode, padding=padding)
        got = np.asarray(layer(x))
        assert got.shape == layer.compute_output_shape(x.shape) == (1, 10, 9, 2)
        padded = np.pad(x, [(0, 0), *padding, (0, 0)], constant_values=np.nan)
        for i in range(got.shape[1]):
            for j in range(got.shape[2]):
                window = padded[0, i : i + 3 : 2, j : j + 5 : 2]  # 2x3 taps, 2 apart
                reduce = np.nanmax if mode == "max" else np.nanmean
                np.testing.assert_allclose(got[0, i, j], reduce(window, axis=(0, 1)), rtol=1e-6)


def test_rarefied_model_round_trips_through_keras_files(tmp_path):
    model = _random(_strided_residual(), 5)
    dense = rarefy(model)
    path = str(tmp_path / "dense.keras")
    dense.save(path)
    restored = keras.models.load_model(path)
    x = _images((1, 30, 26, 2), seed=6)
    np.testing.assert_allclose(np.asarray(restored(x)), np.asarray(dense(x)), rtol=1e-6)


def test_what_cannot_be_rarefied_is_named():
    model = build_fcn(3, 32, geometry="same", backbone_options=TINY_VGG)
    with pytest.raises(ValueError, match="upscore"):
        rarefy(model)
    x = keras.Input((None, None, 1))
    coarse = layers.MaxPooling2D(2)(x)
    fine = layers.Conv2D(1, 1)(layers.Cropping2D(((0, 1), (0, 1)))(x))
    with pytest.raises(ValueError, match="different strides"):
        rarefy(keras.Model(x, layers.Add()([coarse, layers.MaxPooling2D(1)(fine)])))
    with pytest.raises(TypeError):
        rarefy(lambda batch: batch)
    with pytest.raises(ValueError, match="factor"):
        shift_and_stitch(lambda batch: batch, np.zeros((1, 4, 4, 1)), 0)


def test_sequential_models_rarefy_too():
    model = keras.Sequential(
        [
            keras.Input((None, None, 2)),
            layers.Conv2D(3, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(2, padding="same"),
            layers.Conv2D(2, 3, padding="same"),
        ]
    )
    _random(model, 7)
    x = _images((1, 24, 26, 2), seed=8)
    dense = np.asarray(rarefy(model)(x))
    stitched = np.asarray(shift_and_stitch(model, x, 2))
    assert dense.shape == stitched.shape == (1, 24, 26, 2)
    np.testing.assert_allclose(dense[:, 4:20, 4:20], stitched[:, 4:20, 4:20], rtol=1e-5, atol=1e-5)
