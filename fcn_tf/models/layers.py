"""Layers the reference nets need and Keras lacks; ``keras.ops`` only, all serializable."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import keras
from keras import ops

from fcn_tf.models.geometry import CoordMap

__all__ = [
    "Crop",
    "FixedConv2DTranspose",
    "PadToMultiple",
    "Preprocess",
    "subpixel_conv_transpose",
]


@keras.saving.register_keras_serializable(package="fcn_tf")
class Preprocess(keras.layers.Layer):
    """Raw RGB pixels (0..255, any dtype) to what a backbone was trained on.

    ``y = ((x[..., ::-1] if reverse_channels else x) - mean) * scale``: Caffe models take BGR
    minus the ImageNet mean, Keras' MobileNetV2 takes ``x / 127.5 - 1``.

    >>> layer = Preprocess(mean=(1.0, 2.0, 3.0), scale=2.0, reverse_channels=True)
    >>> [float(v) for v in layer(ops.convert_to_tensor([[[[10.0, 20.0, 30.0]]]]))[0, 0, 0]]
    [58.0, 36.0, 14.0]
    """

    def __init__(
        self,
        mean: Sequence[float] = (0.0, 0.0, 0.0),
        scale: float | Sequence[float] = 1.0,
        reverse_channels: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.mean = tuple(float(m) for m in mean)
        self.scale = float(scale) if isinstance(scale, (int, float)) else tuple(map(float, scale))
        self.reverse_channels = bool(reverse_channels)

    def build(self, input_shape: tuple) -> None:
        channels = input_shape[-1]
        if channels is not None and len(self.mean) != channels:
            raise ValueError(
                f"{self.name}: mean has {len(self.mean)} values for {channels} input channels"
            )
        super().build(input_shape)

    def call(self, inputs: Any) -> Any:
        x = ops.cast(inputs, self.compute_dtype)
        if self.reverse_channels:
            x = ops.flip(x, axis=-1)
        mean = ops.convert_to_tensor(self.mean, dtype=self.compute_dtype)
        scale = ops.convert_to_tensor(self.scale, dtype=self.compute_dtype)
        return (x - mean) * scale

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def coord_map(self) -> CoordMap:
        return CoordMap()

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "mean": list(self.mean),
            "scale": self.scale if isinstance(self.scale, float) else list(self.scale),
            "reverse_channels": self.reverse_channels,
        }


@keras.saving.register_keras_serializable(package="fcn_tf")
class Crop(keras.layers.Layer):
    """Caffe's ``Crop``: ``inputs[0][:, o:o+H, o:o+W]`` where ``H, W`` are ``inputs[1]``'s.

    Where ``inputs[0]`` ends first the result is shorter, as the slice is (Caffe refuses):
    :func:`fcn_tf.models.fcn.build_fcn` then cuts the other map to the overlap too.

    >>> x, ref = ops.ones((1, 10, 12, 2)), ops.ones((1, 4, 5, 3))
    >>> tuple(Crop(offset=3)([x, ref]).shape)
    (1, 4, 5, 2)
    >>> tuple(Crop(offset=8)([x, ref]).shape)
    (1, 2, 4, 2)
    """

    def __init__(self, offset: int, **kwargs):
        super().__init__(**kwargs)
        if offset < 0:
            raise ValueError(f"crop offset must be >= 0, got {offset}")
        self.offset = int(offset)

    def call(self, inputs: Any) -> Any:
        x, reference = inputs
        shape = ops.shape(reference)
        o = self.offset
        return ops.cast(x[:, o : o + shape[1], o : o + shape[2], :], self.compute_dtype)

    def compute_output_shape(self, input_shapes: Sequence[tuple]) -> tuple:
        x_shape, ref_shape = input_shapes
        sides = [
            r if x is None or r is None else max(0, min(r, x - self.offset))
            for x, r in zip(x_shape[1:3], ref_shape[1:3], strict=True)
        ]
        return (x_shape[0], *sides, x_shape[3])

    def coord_map(self) -> CoordMap:
        return CoordMap(shift=-Fraction(self.offset))

    def get_config(self) -> dict:
        return {**super().get_config(), "offset": self.offset}


@keras.saving.register_keras_serializable(package="fcn_tf")
class PadToMultiple(keras.layers.Layer):
    """Zero-pad height and width at the bottom and right up to a multiple of ``multiple``.

    Keeps every stride-2 stage of a backbone on even sizes, where TensorFlow's SAME padding and
    Keras applications' fixed paddings place cells the same way for every input size.

    >>> tuple(PadToMultiple(32)(ops.ones((1, 33, 64, 3))).shape)
    (1, 64, 64, 3)
    """

    def __init__(self, multiple: int, **kwargs):
        super().__init__(**kwargs)
        self.multiple = int(multiple)

    def call(self, inputs: Any) -> Any:
        shape = ops.shape(inputs)
        pad_h = (-shape[1]) % self.multiple
        pad_w = (-shape[2]) % self.multiple
        return ops.pad(inputs, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]])

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        def up(n):
            return None if n is None else -(-n // self.multiple) * self.multiple

        return (input_shape[0], up(input_shape[1]), up(input_shape[2]), input_shape[3])

    def coord_map(self) -> CoordMap:
        return CoordMap()  # padding goes after the image: no pixel moves

    def get_config(self) -> dict:
        return {**super().get_config(), "multiple": self.multiple}


def subpixel_conv_transpose(inputs: Any, kernel: Any, strides: Sequence[int]) -> Any:
    """``ops.conv_transpose(inputs, kernel, strides)`` (valid padding) as a sub-pixel convolution.

    Output pixel ``s a + r`` of a stride-``s`` transposed convolution only meets the kernel taps
    ``r, r + s, ...``: one ordinary convolution with ``s x s`` times the output channels (the
    taps regrouped by ``r``) over the zero-padded input computes every residue at once, and a
    depth-to-space reshuffle interleaves them. Same MACs, but XLA lowers a strided transposed
    convolution as a convolution over the input dilated with ``s - 1`` zeros, ``s x s`` times
    the work (a 64x64 stride-32 upsampler of 21 channels: 731 ms against 14 ms on 2 CPU cores).
    ``inputs`` is ``[B, H, W, C_in]``, ``kernel`` ``[kh, kw, C_out, C_in]`` as Keras stores it.

    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(2, 5, 7, 3)).astype("float32")
    >>> kernel = np.random.default_rng(1).normal(size=(5, 6, 4, 3)).astype("float32")
    >>> y = subpixel_conv_transpose(x, kernel, (2, 4))
    >>> tuple(y.shape)
    (2, 13, 30, 4)
    >>> bool(np.allclose(y, ops.conv_transpose(x, kernel, (2, 4)), atol=1e-5))
    True
    """
    (sh, sw), (kh, kw, c_out, c_in) = strides, kernel.shape
    mh, mw = -(-kh // sh), -(-kw // sw)  # taps per residue, the kernel padded to a multiple
    taps = ops.pad(kernel, [[0, mh * sh - kh], [0, mw * sw - kw], [0, 0], [0, 0]])
    taps = ops.reshape(taps, (mh, sh, mw, sw, c_out, c_in))
    # Tap j of residue r weighs input cell a - j: a correlation with the taps reversed.
    taps = ops.flip(taps, axis=(0, 2))
    taps = ops.transpose(taps, (0, 2, 5, 1, 3, 4))
    taps = ops.reshape(taps, (mh, mw, c_in, sh * sw * c_out))
    padded = ops.pad(inputs, [[0, 0], [mh - 1, mh - 1], [mw - 1, mw - 1], [0, 0]])
    cells = ops.conv(padded, taps, padding="valid", data_format="channels_last")
    # Sizes from the input, not from `cells`: oneDNN's convolution of an empty batch returns
    # its input's shape.
    batch, height, width = ops.shape(inputs)[:3]
    rows, cols = height + mh - 1, width + mw - 1
    # Depth-to-space by hand: ops.depth_to_space takes square blocks only, and was no faster.
    cells = ops.reshape(cells, (batch, rows, cols, sh, sw, c_out))
    outputs = ops.reshape(
        ops.transpose(cells, (0, 1, 3, 2, 4, 5)), (batch, rows * sh, cols * sw, c_out)
    )
    # A kernel padded to a multiple of the stride adds outputs past the true end; one smaller
    # than the stride keeps them, zeros, as Keras' output length (H - 1) s + max(k, s) does.
    extra_h, extra_w = mh * sh - max(kh, sh), mw * sw - max(kw, sw)
    return outputs[:, : rows * sh - extra_h, : cols * sw - extra_w]


@keras.saving.register_keras_serializable(package="fcn_tf")
class FixedConv2DTranspose(keras.layers.Conv2DTranspose):
    """A ``Conv2DTranspose`` that never trains, as Caffe's ``lr_mult: 0``.

    Unlike ``trainable=False`` on a plain layer, ``model.trainable = True`` (the usual unfreeze
    after training a head) does not make it trainable again. With valid padding (the FCN
    upsamplers') it computes through :func:`subpixel_conv_transpose`: the same outputs for
    any kernel, and no slow path under XLA.

    >>> layer = FixedConv2DTranspose(2, 4, strides=2, use_bias=False)
    >>> layer.trainable = True
    >>> layer.trainable
    False
    >>> tuple(layer(ops.ones((1, 3, 5, 2))).shape)
    (1, 8, 12, 2)
    """

    def __init__(self, *args, **kwargs):
        kwargs["trainable"] = False
        super().__init__(*args, **kwargs)

    @property
    def trainable(self) -> bool:
        return False

    @trainable.setter
    def trainable(self, value: bool) -> None:
        keras.layers.Layer.trainable.fset(self, False)

    def call(self, inputs: Any) -> Any:
        plain = (
            self.padding == "valid"
            and self.output_padding is None
            and tuple(self.dilation_rate) == (1, 1)
            and self.data_format == "channels_last"
        )
        if not plain:
            return super().call(inputs)
        outputs = subpixel_conv_transpose(inputs, self.kernel, self.strides)
        if self.use_bias:
            outputs = ops.add(outputs, self.bias)
        return outputs if self.activation is None else self.activation(outputs)
