"""Crop offsets and kernel sizes follow from the layer geometry, as in the reference nets."""

from fractions import Fraction

import keras
import numpy as np
import pytest
from conftest import TINY_VGG
from helpers import randomize

from fcn_tf.models import build_fcn
from fcn_tf.models.geometry import CoordMap, crop_offset, trace
from fcn_tf.models.layers import FixedConv2DTranspose

# The reference nets' crop offsets (voc-fcn32s/16s/8s net.py) and upsampling kernels.
REFERENCE = {
    32: ({"score": 19}, {"upscore": 64}),
    16: ({"score_pool4c": 5, "score": 27}, {"upscore2": 4, "upscore16": 32}),
    8: (
        {"score_pool4c": 5, "score_pool3c": 9, "score": 31},
        {"upscore2": 4, "upscore_pool4": 4, "upscore8": 16},
    ),
}


def caffe_coord_map(layers):
    """Caffe's coord_map.py, written out independently: compose (scale, shift) per layer."""
    scale, shift = Fraction(1), Fraction(0)
    for kind, kernel, stride, pad in layers:
        if kind == "deconv":
            a, b = Fraction(stride), Fraction(kernel - 1, 2) - pad
        else:
            a, b = Fraction(1, stride), Fraction(pad - Fraction(kernel - 1, 2), stride)
        scale, shift = a * scale, a * shift + b
    return scale, shift


def reference_trunk(until: int):
    """The reference VGG16 layer table up to pool``until``, then fc6 when until is 5."""
    table = [("conv", 3, 1, 100), ("conv", 3, 1, 1), ("pool", 2, 2, 0)]
    table += [("conv", 3, 1, 1)] * 2 + [("pool", 2, 2, 0)]
    for _ in range(3):
        table += [("conv", 3, 1, 1)] * 3 + [("pool", 2, 2, 0)]
    pools = [i for i, layer in enumerate(table) if layer[0] == "pool"]
    return table[: pools[until - 1] + 1]


@pytest.mark.parametrize("stride", [32, 16, 8])
def test_caffe_geometry_gives_reference_offsets_and_kernels(stride):
    offsets, kernels = REFERENCE[stride]
    model = build_fcn(3, stride, geometry="caffe", backbone_options=TINY_VGG)
    assert {n: model.get_layer(n).offset for n in offsets} == offsets
    assert {n: model.get_layer(n).kernel_size[0] for n in kernels} == kernels


@pytest.mark.parametrize(("pool", "layer"), [(3, "pool3"), (4, "pool4"), (5, "pool5")])
def test_trace_matches_caffe_coord_map(pool, layer):
    model = build_fcn(3, 8, geometry="caffe", backbone_options=TINY_VGG)
    scale, shift = caffe_coord_map(reference_trunk(pool))
    assert trace(model.get_layer(layer).output) == CoordMap(scale, shift)


def test_fcn32s_offset_by_hand():
    # pool5 = (x + 99) / 32 - 31/64; fc6 (7x7 valid) shifts by -3; upscore (64/32) by 31.5.
    scale, shift = caffe_coord_map([*reference_trunk(5), ("conv", 7, 1, 0), ("deconv", 64, 32, 0)])
    assert (scale, shift) == (1, 19)


def test_crop_offset_refuses_misaligned_blobs():
    x = keras.Input((None, None, 3))
    pooled = keras.layers.MaxPooling2D(2)(x)
    with pytest.raises(ValueError, match="not aligned"):
        crop_offset(pooled, x)


# Input sizes for which every pooling of the geometry sees even sizes, so that the network is
# mirror-symmetric when its kernels are: caffe needs 198 + H divisible by 32, same needs 32 | H.
SYMMETRIC_SIZES = {"caffe": (58, 90), "same": (64, 96)}


@pytest.mark.parametrize("geometry", ["caffe", "same"])
@pytest.mark.parametrize("stride", [32, 16, 8])
def test_alignment_is_centred_flip_equivariance(geometry, stride):
    """With mirror-symmetric kernels, flipping the input flips the output iff crops are centred.

    An offset off by even one pixel breaks the equality, so this checks every crop and every
    upsampling kernel size empirically, independently of the coordinate-map arithmetic.
    """
    rng = np.random.default_rng(stride)
    model = build_fcn(3, stride, geometry=geometry, backbone_options=TINY_VGG)
    randomize(model, rng, symmetric=True)
    h, w = SYMMETRIC_SIZES[geometry]
    x = rng.uniform(0, 255, (1, h, w, 3)).astype("float32")
    y = model(x, training=False).numpy()
    assert np.abs(y).max() > 0
    for axis in (1, 2):
        flipped = model(np.flip(x, axis), training=False).numpy()
        np.testing.assert_allclose(
            flipped, np.flip(y, axis), rtol=1e-4, atol=1e-4 * np.abs(y).max()
        )


def test_misaligned_crop_breaks_flip_equivariance():
    """The test above can fail: shift the final crop by one pixel and the symmetry is gone."""
    rng = np.random.default_rng(1)
    model = build_fcn(3, 32, geometry="caffe", backbone_options=TINY_VGG)
    randomize(model, rng, symmetric=True)
    config = model.get_config()
    for layer in config["layers"]:
        if layer["name"] == "score":
            layer["config"]["offset"] += 1
    shifted = keras.Model.from_config(config)
    shifted.set_weights(model.get_weights())
    x = rng.uniform(0, 255, (1, 58, 58, 3)).astype("float32")
    y = shifted(x, training=False).numpy()
    flipped = shifted(np.flip(x, 1), training=False).numpy()
    assert not np.allclose(flipped, np.flip(y, 1), rtol=1e-3, atol=1e-3 * np.abs(y).max())


@pytest.mark.parametrize("stride", [32, 16, 8])
def test_resnet50_alignment_flip_equivariance(stride):
    """ResNet50's cells sit on pixels 32j: centred, and so mirror-symmetric, at sizes 32k + 1.

    That is where the odd (2f - 1) upsampling kernels must land exactly on the input grid.
    """
    rng = np.random.default_rng(stride)
    model = build_fcn(3, stride, backbone="resnet50")
    randomize(model, rng, symmetric=True)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, _ = layer.get_weights()
            layer.set_weights([gamma, beta, mean, np.ones_like(gamma)])
    x = rng.uniform(0, 255, (1, 97, 65, 3)).astype("float32")
    y = model(x, training=False).numpy()
    scale = np.abs(y).max()
    assert scale > 0
    for axis in (1, 2):
        flipped = model(np.flip(x, axis), training=False).numpy()
        np.testing.assert_allclose(flipped, np.flip(y, axis), rtol=1e-3, atol=1e-4 * scale)


def test_mobilenet_v2_cells_by_hand():
    """Conv1 (3x3/2 SAME on even sizes) and each later (0, 1)-padded 3x3/2 put cell j at s*j+s-1."""
    model = build_fcn(3, 8, backbone="mobilenet_v2", backbone_options={"alpha": 0.35})
    for stride, layer in {8: "block_5_add", 16: "block_12_add", 32: "out_relu"}.items():
        cell_to_pixel = trace(model.get_layer(layer).output).inverse()
        assert cell_to_pixel == CoordMap(Fraction(stride), Fraction(stride - 1))


def test_unknown_geometry_raises_instead_of_misaligning():
    x = keras.Input((None, None, 3))
    upsampled = keras.layers.UpSampling2D(2)(x)
    with pytest.raises(ValueError, match="UpSampling2D"):
        trace(upsampled)
    inner = keras.Sequential([keras.layers.Conv2D(3, 3, strides=2)])
    with pytest.raises(ValueError, match="no coordinate map"):
        trace(inner(x))


@pytest.mark.parametrize(
    "layer, message",
    [
        (keras.layers.Conv2DTranspose(3, (4, 6), strides=2), "anisotropic kernel or stride"),
        (keras.layers.Conv2DTranspose(3, 4, strides=(2, 3)), "anisotropic kernel or stride"),
        (FixedConv2DTranspose(3, 4, strides=(2, 4)), "anisotropic kernel or stride"),
        (keras.layers.Cropping2D(((1, 0), (3, 0))), "anisotropic cropping"),
    ],
)
def test_anisotropic_upsampling_or_cropping_raises(layer, message):
    """One map serves both axes: a layer that moves rows and columns apart cannot be traced."""
    x = keras.Input((None, None, 3))
    with pytest.raises(ValueError, match=message):
        trace(layer(x))
