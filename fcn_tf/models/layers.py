"""Layers the reference nets need and Keras lacks; ``keras.ops`` only, all serializable."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import keras
from keras import ops

from fcn_tf.models.geometry import CoordMap

__all__ = ["Crop", "FixedConv2DTranspose", "PadToMultiple", "Preprocess"]


@keras.saving.register_keras_serializable(package="fcn_tf")
class Preprocess(keras.layers.Layer):
    """Raw RGB pixels (0..255, any dtype) to what a backbone was trained on.

    ``y = (x[..., ::-1] if reverse_channels else x) - mean) * scale``: Caffe models take BGR
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


@keras.saving.register_keras_serializable(package="fcn_tf")
class FixedConv2DTranspose(keras.layers.Conv2DTranspose):
    """A ``Conv2DTranspose`` that never trains, as Caffe's ``lr_mult: 0``.

    Unlike ``trainable=False`` on a plain layer, ``model.trainable = True`` (the usual unfreeze
    after training a head) does not make it trainable again.

    >>> layer = FixedConv2DTranspose(2, 4, strides=2, use_bias=False)
    >>> layer.trainable = True
    >>> layer.trainable
    False
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
