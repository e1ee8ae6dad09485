"""Dense output from a strided net: shift-and-stitch and filter rarefaction (paper, 3.2).

A net of output stride ``f`` predicts one cell per ``f x f`` pixels. *Shift-and-stitch* runs
it on the ``f^2`` shifted copies of the input and interleaves the outputs into a map of
stride 1. *Filter rarefaction* computes the same map in one pass: every stride becomes 1, and
every later filter (convolution or pooling) is dilated by the product ``d`` of the strides
before it, its weights unchanged (the paper's ``f'_ij = f_{i/d, j/d}`` when ``d`` divides
``i`` and ``j``, else 0).

Shift convention: shift ``(dy, dx)``, ``0 <= dy, dx < f``, feeds the net the input moved up by
``dy`` and left by ``dx`` (``x[:, dy:, dx:]``, zero-filled at the bottom and right so every
copy keeps the input's size), and its output cell ``(i, j)`` becomes dense pixel
``(f*i + dy, f*j + dx)``. Dense pixel ``n`` then sees input pixels ``n + r`` for the same
offsets ``r`` as the rarefied net's pixel ``n``: the two agree wherever neither net's
padding reaches, i.e. away from the bottom and right borders by the receptive field (the
zero fill), and from the top and left by the padding's reach plus ``f - 1`` (a shifted copy
starts ``dy`` rows into the image, so its padding lies inside it).

``same``-padded strided layers are exact when their input sizes are multiples of their
strides (as :mod:`fcn_tf.models.geometry` assumes; always true of 2x2/2 pooling).

>>> x = keras.Input((None, None, 1))
>>> y = keras.layers.MaxPooling2D(2, padding="same")(keras.layers.Conv2D(1, 3, padding="same")(x))
>>> net = keras.Model(x, y)
>>> images = np.random.default_rng(0).normal(size=(1, 8, 8, 1)).astype("float32")
>>> stitched = ops.convert_to_numpy(shift_and_stitch(net, images, 2))
>>> dense = ops.convert_to_numpy(rarefy(net)(images))
>>> stitched.shape, dense.shape, bool(np.allclose(stitched[:, 2:6, 2:6], dense[:, 2:6, 2:6]))
((1, 8, 8, 1), (1, 8, 8, 1), True)
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
from keras import ops

from fcn_tf.models.geometry import IDENTITY, coord_map_of, same_pad_before

__all__ = ["DilatedPooling2D", "rarefy", "shift_and_stitch"]


def shift_and_stitch(model: Callable[[Any], Any], images: Any, factor: int) -> Any:
    """The dense ``[B, f*h, f*w, C]`` output of ``model`` (output stride ``factor``, outputs
    ``[B, h, w, C]``) from its ``factor**2`` shifted inputs (see the module docstring).

    ``model`` is a Keras model or any callable on ``[B, H, W, channels]`` batches; the ``f``
    shifts of one row go through it as one batch.

    >>> subsample = lambda x: x[:, ::4, ::4]   # a "net" of stride 4 that predicts its input
    >>> x = np.arange(2 * 8 * 12, dtype="float32").reshape(2, 8, 12, 1)
    >>> bool((ops.convert_to_numpy(shift_and_stitch(subsample, x, 4)) == x).all())
    True
    """
    if isinstance(factor, bool) or not isinstance(factor, numbers.Integral) or factor < 1:
        raise ValueError(f"factor must be a positive integer, got {factor!r}")
    factor = int(factor)
    images = ops.convert_to_tensor(images)
    if len(images.shape) != 4:
        raise ValueError(f"images must be [B, H, W, channels], got shape {images.shape}")
    batch = ops.shape(images)[0]
    rows = []
    for dy in range(factor):
        shifted = [
            ops.pad(images[:, dy:, dx:], [[0, 0], [0, dy], [0, dx], [0, 0]]) for dx in range(factor)
        ]
        outputs = ops.convert_to_tensor(model(ops.concatenate(shifted, axis=0)))
        _, height, width, channels = ops.shape(outputs)
        # [f*B, h, w, C] (dx-major) -> [B, h, w, f, C]: shift dx sits beside cell column j.
        outputs = ops.reshape(outputs, (factor, batch, height, width, channels))
        rows.append(ops.transpose(outputs, (1, 2, 3, 0, 4)))
    stacked = ops.stack(rows, axis=2)  # [B, h, f (dy), w, f (dx), C]
    return ops.reshape(stacked, (batch, height * factor, width * factor, channels))


@keras.saving.register_keras_serializable(package="fcn_tf")
class DilatedPooling2D(keras.layers.Layer):
    """Max or average pooling of window ``pool_size`` with stride 1, dilated by ``dilation``,
    after explicit ``padding`` ``((top, bottom), (left, right))``: the rarefied form of a
    strided pooling (Keras' pooling layers have no dilation). Padding never wins a maximum
    and is left out of averages, as in TensorFlow's ``same`` pooling.

    >>> x = np.arange(6, dtype="float32").reshape(1, 1, 6, 1)
    >>> pooled = DilatedPooling2D((1, 2), dilation=2, mode="average")(x)
    >>> ops.convert_to_numpy(pooled)[0, 0, :, 0].tolist()
    [1.0, 2.0, 3.0, 4.0]
    """

    def __init__(
        self,
        pool_size: int | tuple[int, int],
        dilation: int = 1,
        mode: str = "max",
        padding: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0)),
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if mode not in ("max", "average"):
            raise ValueError(f"mode must be 'max' or 'average', got {mode!r}")
        self.pool_size = _pair(pool_size)
        self.dilation = int(dilation)
        self.mode = mode
        self.padding = tuple(tuple(int(p) for p in side) for side in padding)

    def _windows(self, x: Any) -> list[Any]:
        (kh, kw), d = self.pool_size, self.dilation
        span_h, span_w = (kh - 1) * d, (kw - 1) * d
        return [
            x[:, i * d : (i * d - span_h) or None, j * d : (j * d - span_w) or None]
            for i in range(kh)
            for j in range(kw)
        ]

    def call(self, inputs: Any) -> Any:
        pads = [[0, 0], list(self.padding[0]), list(self.padding[1]), [0, 0]]
        if self.mode == "max":
            # Every window holds at least one input pixel, so -inf never comes out.
            windows = self._windows(ops.pad(inputs, pads, constant_values=float("-inf")))
            result = windows[0]
            for window in windows[1:]:
                result = ops.maximum(result, window)
            return result
        total = sum(self._windows(ops.pad(inputs, pads)))
        ones = ops.pad(ops.ones_like(inputs[:1, :, :, :1]), pads)
        return total / sum(self._windows(ones))

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        def size(n, pad, k):
            return None if n is None else n + sum(pad) - (k - 1) * self.dilation

        batch, height, width, channels = input_shape
        (kh, kw), (pad_h, pad_w) = self.pool_size, self.padding
        return batch, size(height, pad_h, kh), size(width, pad_w, kw), channels

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "pool_size": self.pool_size,
            "dilation": self.dilation,
            "mode": self.mode,
            "padding": self.padding,
        }


def _pair(value: Any) -> tuple[int, int]:
    return (int(value), int(value)) if np.isscalar(value) else (int(value[0]), int(value[1]))


def _dense_padding(kernel, stride, dilation, factor: int) -> tuple:
    """``((top, bottom), (left, right))`` of the rarefied layer for a ``same`` one: the
    original's leading pad, in dense pixels, and the rest of the footprint after."""
    sides = []
    for k, s, e in zip(kernel, stride, dilation, strict=True):
        footprint = (k - 1) * e + 1
        before = same_pad_before(footprint, s)
        sides.append((before * factor, (footprint - 1 - before) * factor))
    return tuple(sides)


def _rarefied_conv(layer: keras.layers.Layer, factor: int) -> tuple[list, int]:
    config = layer.get_config()
    kernel, stride = _pair(layer.kernel_size), _pair(layer.strides)
    dilation = _pair(layer.dilation_rate)
    if stride[0] != stride[1]:
        raise ValueError(f"{layer.name}: anisotropic strides {stride} are not supported")
    config.update(strides=1, dilation_rate=(dilation[0] * factor, dilation[1] * factor))
    padded = []
    if layer.padding == "same":
        sides = _dense_padding(kernel, stride, dilation, factor)
        # Keras' own "same" centres the footprint, which is the original's layout only
        # without stride and for odd footprints.
        if stride[0] != 1 or any(before != after for before, after in sides):
            padded = [keras.layers.ZeroPadding2D(sides, name=f"{layer.name}_rarefied_pad")]
            config["padding"] = "valid"
    return [*padded, layer.__class__.from_config(config)], stride[0]


def _rarefied_pool(layer: keras.layers.Layer, factor: int) -> tuple[list, int]:
    if not isinstance(layer, keras.layers.MaxPooling2D | keras.layers.AveragePooling2D):
        raise ValueError(f"{layer.name}: only 2-D max and average pooling can be rarefied")
    kernel, stride = _pair(layer.pool_size), _pair(layer.strides)
    if stride[0] != stride[1]:
        raise ValueError(f"{layer.name}: anisotropic strides {stride} are not supported")
    if layer.padding == "same":
        padding = _dense_padding(kernel, stride, (1, 1), factor)
    else:
        padding = ((0, 0), (0, 0))
    mode = "max" if isinstance(layer, keras.layers.MaxPooling2D) else "average"
    pool = DilatedPooling2D(kernel, factor, mode, padding, name=layer.name)
    return [pool], stride[0]


def _scaled(layer: keras.layers.Layer, attribute: str, factor: int) -> tuple[list, int]:
    config = layer.get_config()
    config[attribute] = tuple(tuple(p * factor for p in side) for side in getattr(layer, attribute))
    return [layer.__class__.from_config(config)], 1


def _rarefied(layer: keras.layers.Layer, factor: int) -> tuple[list, int]:
    """The layers replacing ``layer`` whose input has stride ``factor``, and its stride."""
    if hasattr(layer, "pool_size"):
        return _rarefied_pool(layer, factor)
    if isinstance(layer, keras.layers.Conv2DTranspose):
        raise ValueError(f"{layer.name}: upsampling cannot be rarefied; rarefy the net below it")
    if hasattr(layer, "kernel_size"):
        return _rarefied_conv(layer, factor)
    if isinstance(layer, keras.layers.ZeroPadding2D):
        return _scaled(layer, "padding", factor)
    if isinstance(layer, keras.layers.Cropping2D):
        return _scaled(layer, "cropping", factor)
    if coord_map_of(layer) != IDENTITY:  # raises for layers geometry does not know
        raise ValueError(f"{layer.name}: {type(layer).__name__} moves pixels; cannot rarefy it")
    return [layer.__class__.from_config(layer.get_config())], 1


def rarefy(model: keras.Model) -> keras.Model:
    """A copy of ``model`` with every stride set to 1 and every later convolution and pooling
    dilated by the product of the strides before it, weights copied (filter rarefaction).

    Its output has stride 1: :func:`shift_and_stitch` of ``model`` computed in one pass.
    ``model`` is a functional or sequential Keras model of convolutions, poolings, paddings
    and pointwise layers (activations, normalisation, dropout, merges of equal strides);
    upsampling and crops raise, so rarefy the net below them (e.g. an FCN up to
    ``score_fr``). Strided ``same`` layers are laid out as the original's on inputs whose
    sizes are multiples of their strides.

    >>> net = keras.Sequential([keras.Input((None, None, 1)), keras.layers.Conv2D(1, 3, strides=2)])
    >>> dense = rarefy(net)
    >>> dense(np.zeros((1, 9, 9, 1), "float32")).shape, net(np.zeros((1, 9, 9, 1))).shape
    (TensorShape([1, 7, 7, 1]), TensorShape([1, 4, 4, 1]))
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"rarefy needs a Keras model, got {type(model).__name__}")
    if isinstance(model, keras.Sequential):  # its graph, as a functional model of its layers
        model = keras.Model(model.inputs, model.outputs, name=model.name)
    new_inputs = [
        keras.Input(batch_shape=t.shape, dtype=t.dtype, name=t._keras_history.operation.name)
        for t in model.inputs
    ]
    values = {id(t): new for t, new in zip(model.inputs, new_inputs, strict=True)}
    strides = {id(t): 1 for t in model.inputs}
    for layer in model.operations:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        nodes = [n for n in layer._inbound_nodes if all(id(t) in values for t in n.input_tensors)]
        if len(nodes) != 1:
            raise ValueError(f"{layer.name}: a layer called more than once cannot be rarefied")
        node = nodes[0]
        factors = {strides[id(t)] for t in node.input_tensors}
        if len(factors) != 1:
            raise ValueError(f"{layer.name}: merges inputs of different strides {sorted(factors)}")
        factor = factors.pop()
        replacements, stride = _rarefied(layer, factor)
        args, kwargs = node.arguments.fill_in(values)
        outputs = replacements[0](*args, **kwargs)
        for extra in replacements[1:]:
            outputs = extra(outputs)
        replacements[-1].set_weights(layer.get_weights())
        for old, new in zip(node.output_tensors, keras.tree.flatten(outputs), strict=True):
            values[id(old)], strides[id(old)] = new, factor * stride
    outputs = [values[id(t)] for t in model.outputs]
    new_inputs = new_inputs[0] if len(new_inputs) == 1 else new_inputs
    return keras.Model(
        new_inputs, outputs[0] if len(outputs) == 1 else outputs, name=f"{model.name}_rarefied"
    )
