"""Receptive-field arithmetic: where each blob's pixels sit relative to the input.

FCN aligns score maps of different strides by cropping (the Caffe ``Crop`` layer). The offsets
are not magic numbers: each layer maps output coordinates affinely to input coordinates, and
composing those maps along the graph gives every blob's position, as Caffe's ``coord_map.py``
does for the reference nets. The maps are one-dimensional because every FCN layer is isotropic.

>>> pool = conv_map(kernel=2, stride=2, pad=0)   # a 2x2/2 pooling
>>> pool.scale, pool.shift
(Fraction(1, 2), Fraction(-1, 4))
>>> conv_map(kernel=3, stride=1, pad=1)          # a padded 3x3 convolution moves nothing
CoordMap(scale=Fraction(1, 1), shift=Fraction(0, 1))
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import keras

__all__ = [
    "CoordMap",
    "conv_map",
    "coord_map_of",
    "crop_offset",
    "deconv_map",
    "relative_map",
    "trace",
    "upsampling_kernel_size",
]


@dataclasses.dataclass(frozen=True)
class CoordMap:
    """The affine map ``y = scale * x + shift`` from a blob's coordinates to another's.

    >>> CoordMap(Fraction(1, 2), Fraction(1)).then(CoordMap(Fraction(4), Fraction(-1)))
    CoordMap(scale=Fraction(2, 1), shift=Fraction(3, 1))
    """

    scale: Fraction = Fraction(1)
    shift: Fraction = Fraction(0)

    def then(self, other: CoordMap) -> CoordMap:
        """The map that applies ``self`` first, then ``other``."""
        return CoordMap(other.scale * self.scale, other.scale * self.shift + other.shift)

    def inverse(self) -> CoordMap:
        """The map back: ``x = (y - shift) / scale``."""
        return CoordMap(1 / self.scale, -self.shift / self.scale)


IDENTITY = CoordMap()


def conv_map(kernel: int, stride: int, pad: int) -> CoordMap:
    """Input to output coordinates of a convolution or pooling (``pad`` before the input).

    A 3x3 stride-2 convolution without padding centres output cell ``j`` on input pixel
    ``2 j + 1``:

    >>> conv_map(3, 2, 0).inverse()
    CoordMap(scale=Fraction(2, 1), shift=Fraction(1, 1))
    """
    return CoordMap(Fraction(1, stride), Fraction(2 * pad - (kernel - 1), 2 * stride))


def deconv_map(kernel: int, stride: int, crop: int = 0) -> CoordMap:
    """Input to output coordinates of a transposed convolution that drops ``crop`` leading rows.

    The reference's 2x upsampler (kernel 4, stride 2) puts input pixel ``i`` at output
    ``2 i + 1.5``:

    >>> deconv_map(4, 2)
    CoordMap(scale=Fraction(2, 1), shift=Fraction(3, 2))
    """
    return CoordMap(Fraction(stride), Fraction(kernel - 1, 2) - crop)


def same_pad_before(kernel: int, stride: int) -> int:
    """Pixels TensorFlow's SAME padding adds before the input (the smaller half).

    Exact when the input size is a multiple of the stride (backbones that need it pad their
    input to a multiple of 32).

    >>> same_pad_before(3, 1), same_pad_before(3, 2), same_pad_before(2, 2)
    (1, 0, 0)
    """
    return max(kernel - stride, 0) // 2


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def _conv_like(layer: keras.layers.Layer, kernel, stride, dilation=1) -> CoordMap:
    (k, k2), (s, s2), (d, d2) = _pair(kernel), _pair(stride), _pair(dilation)
    if (k, s, d) != (k2, s2, d2):
        raise ValueError(f"{layer.name}: anisotropic kernel, stride or dilation is not supported")
    k = (k - 1) * d + 1  # the footprint of a dilated kernel
    pad = 0 if layer.padding == "valid" else same_pad_before(k, s)
    return conv_map(k, s, pad)


# Layers whose output pixel i depends only on input pixel i (or that take no spatial input).
_POINTWISE = (
    keras.layers.InputLayer,
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.Dropout,
    keras.layers.SpatialDropout2D,
    keras.layers.Rescaling,
    keras.layers.Normalization,
    keras.layers.Add,
    keras.layers.Multiply,
    keras.layers.Concatenate,
    keras.layers.Identity,
)


def coord_map_of(layer: keras.layers.Layer) -> CoordMap:
    """Input to output coordinates of one Keras layer.

    Known pointwise layers map to the identity; a layer that changes geometry in a way this
    module does not know raises, rather than yield a silently misaligned crop.

    >>> coord_map_of(keras.layers.ZeroPadding2D(100))
    CoordMap(scale=Fraction(1, 1), shift=Fraction(100, 1))
    >>> coord_map_of(keras.layers.Conv2D(1, 3, dilation_rate=2))   # a 5x5 footprint
    CoordMap(scale=Fraction(1, 1), shift=Fraction(-2, 1))
    """
    if hasattr(layer, "coord_map"):
        return layer.coord_map()
    if isinstance(layer, _POINTWISE):
        return IDENTITY
    if isinstance(layer, keras.layers.ZeroPadding2D):
        (top, _), (left, _) = layer.padding
        if top != left:
            raise ValueError(f"{layer.name}: anisotropic padding {layer.padding}")
        return CoordMap(shift=Fraction(top))
    if isinstance(layer, keras.layers.Cropping2D):
        (top, _), (left, _) = layer.cropping
        if top != left:
            raise ValueError(f"{layer.name}: anisotropic cropping {layer.cropping}")
        return CoordMap(shift=-Fraction(top))
    if isinstance(layer, keras.layers.Conv2DTranspose):
        if layer.padding != "valid" or max(layer.dilation_rate) != 1:
            raise ValueError(f"{layer.name}: only undilated 'valid' transposed convolutions")
        (kh, kw), (sh, sw) = layer.kernel_size, layer.strides
        if kh != kw or sh != sw:
            raise ValueError(f"{layer.name}: anisotropic kernel or stride is not supported")
        return deconv_map(kh, sh)
    if hasattr(layer, "pool_size"):
        return _conv_like(layer, layer.pool_size, layer.strides)
    if hasattr(layer, "kernel_size"):  # Conv2D, DepthwiseConv2D, SeparableConv2D, ...
        return _conv_like(layer, layer.kernel_size, layer.strides, layer.dilation_rate)
    raise ValueError(
        f"{layer.name}: no coordinate map for {type(layer).__name__}; give it a coord_map() "
        "method or build the backbone from known layers"
    )


def trace(tensor: keras.KerasTensor) -> CoordMap:
    """Compose the maps from the model input to a symbolic Keras tensor along its first inputs.

    >>> x = keras.Input((None, None, 3))
    >>> y = keras.layers.MaxPooling2D(2, padding="same")(keras.layers.ZeroPadding2D(100)(x))
    >>> trace(y)
    CoordMap(scale=Fraction(1, 2), shift=Fraction(199, 4))
    """
    operation, node_index, _ = tensor._keras_history
    node = operation._inbound_nodes[node_index]
    total = IDENTITY
    while node.parent_nodes:
        total = coord_map_of(node.operation).then(total)
        node = node.parent_nodes[0]
    return total


def relative_map(source: keras.KerasTensor, target: keras.KerasTensor) -> CoordMap:
    """The map from ``target``'s coordinates to ``source``'s (both traced from one input).

    >>> x = keras.Input((None, None, 3))
    >>> relative_map(keras.layers.MaxPooling2D(2)(x), x)
    CoordMap(scale=Fraction(1, 2), shift=Fraction(-1, 4))
    """
    return trace(target).inverse().then(trace(source))


def crop_offset(source: keras.KerasTensor, target: keras.KerasTensor) -> int:
    """Offset at which ``source`` is cropped so that ``source[offset + i]`` sits on ``target[i]``.

    This is the Caffe ``Crop`` layer's offset; negative when ``target`` is the larger blob.

    >>> x = keras.Input((None, None, 3))
    >>> crop_offset(keras.layers.ZeroPadding2D(5)(x), x)
    5
    """
    rel = relative_map(source, target)
    if rel.scale != 1 or rel.shift.denominator != 1:
        raise ValueError(f"blobs are not aligned on one pixel grid (map {rel})")
    return int(rel.shift)


def upsampling_kernel_size(
    factor: int, source: keras.KerasTensor, target: keras.KerasTensor
) -> int:
    """Bilinear kernel size that upsamples ``source`` by ``factor`` onto ``target``'s pixels.

    The reference uses ``2 * factor``, which lands on integer offsets when the source cells are
    centred between target pixels (VGG's 2x2 pooling). Backbones whose cells fall on pixels
    (strided 3x3 or 1x1 convolutions) need the odd size ``2 * factor - 1`` instead.

    >>> x = keras.Input((None, None, 3))
    >>> upsampling_kernel_size(2, keras.layers.MaxPooling2D(2)(x), x)
    4
    >>> upsampling_kernel_size(2, keras.layers.Conv2D(1, 1, strides=2)(x), x)
    3
    """
    rel = relative_map(source, target)
    if rel.scale != Fraction(1, factor):
        raise ValueError(f"source is not {factor}x coarser than target (map {rel})")
    residue = (factor * rel.shift) % 1
    return 2 * factor if residue == Fraction(1, 2) else 2 * factor - 1
