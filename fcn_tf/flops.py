"""FLOPs of a Keras model on one input size, counted analytically from its layers' shapes.

The count is independent of any profiler: every layer's concrete input and output shapes come
from running the model symbolically on the given input shape (no arithmetic is done), and the
FLOPs follow from the kernel shapes:

* ``flops`` (what :func:`count_flops` returns by default): 2 x multiply-accumulates of
  ``Conv*``, ``Conv*Transpose``, ``DepthwiseConv*``, ``SeparableConv*`` and ``Dense``: the work
  a matrix-multiply engine does, and what a roofline against matmul speed compares. A
  transposed convolution counts every kernel tap of every *input* cell, its true MAC count; a
  bilinear upsampler's ``C x C`` diagonal kernel is counted dense, because that is what the
  kernel computes, zeros included.
* ``elementwise``: one FLOP per output element for bias adds, per input of a merge (``Add``),
  per window element of pooling, two per element for ``Preprocess``, ``Rescaling`` and
  inference batch norm. ReLU, dropout, crops and pads count nothing.

:func:`tf_profiler_flops` gives TensorFlow's own count (``tf.compat.v1.profiler``) of a traced
graph for comparison. The two agree exactly on ``Conv2D``, ``MatMul``, pooling and elementwise
ops (TF counts no ReLU either); TF estimates ``Conv2DBackpropInput`` (a transposed convolution)
as ``2 * output_elements * kh * kw * C_in / stride**2``, which exceeds the true MAC count by
``(output_size / (stride * input_size))**2``: a few percent on large maps, more on tiny ones.
A :class:`~fcn_tf.models.layers.FixedConv2DTranspose` runs as a sub-pixel ``Conv2D`` over
its input padded by ``kernel / stride - 1`` cells, which TF counts on the padded size.

>>> model = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(4, 3)])
>>> count_flops(model, (10, 10, 3))   # 8x8 outputs x 4 channels x 27 taps x 2
13824
>>> count_flops(model, (10, 10, 3), elementwise=True)   # plus one bias add per output
14080
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import keras

from fcn_tf.models.layers import Preprocess

__all__ = ["LayerFlops", "count_flops", "layer_flops", "tf_profiler_flops"]

_FORWARD = (
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.DepthwiseConv1D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv1D,
    keras.layers.SeparableConv2D,
    keras.layers.Dense,
)
_TRANSPOSED = (
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
)
_POOLING = (
    keras.layers.MaxPooling1D,
    keras.layers.MaxPooling2D,
    keras.layers.MaxPooling3D,
    keras.layers.AveragePooling1D,
    keras.layers.AveragePooling2D,
    keras.layers.AveragePooling3D,
)
_GLOBAL_POOLING = (
    keras.layers.GlobalMaxPooling1D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.GlobalMaxPooling3D,
    keras.layers.GlobalAveragePooling1D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalAveragePooling3D,
)
_MERGES = (
    keras.layers.Add,
    keras.layers.Subtract,
    keras.layers.Multiply,
    keras.layers.Average,
    keras.layers.Maximum,
    keras.layers.Minimum,
)
_AFFINE = (Preprocess, keras.layers.Rescaling, keras.layers.BatchNormalization)


@dataclasses.dataclass(frozen=True)
class LayerFlops:
    """One layer call's work on one input size (see the module docstring for what counts).

    >>> net = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="c")])
    >>> (row,) = layer_flops(net, (8, 8, 3))
    >>> row.name, row.output_shape, row.flops == 2 * 6 * 6 * 4 * 3 * 3 * 3
    ('c', (1, 6, 6, 4), True)
    """

    name: str
    layer_type: str
    output_shape: tuple[int, ...]
    flops: int
    elementwise: int


def _size(shape: Sequence[int]) -> int:
    return math.prod(int(d) for d in shape)


def _channels(layer: keras.layers.Layer, shape: Sequence[int]) -> int:
    # Dense has no data_format: its features are always last.
    return int(shape[1] if getattr(layer, "data_format", None) == "channels_first" else shape[-1])


def _kernel_size(layer: keras.layers.Layer) -> int:
    if isinstance(layer, (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)):
        return _size(layer.depthwise_kernel.shape) + _size(layer.pointwise_kernel.shape)
    if isinstance(layer, (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)):
        return _size(layer.kernel.shape)
    return _size(layer.kernel.shape)


def _one_layer(layer, in_shapes: list[tuple[int, ...]], out_shape: tuple[int, ...]) -> tuple:
    """``(flops, elementwise)`` of one call of ``layer`` on inputs of ``in_shapes``."""
    out = _size(out_shape)
    if isinstance(layer, _FORWARD):
        # Every output position (all but the channel axis) runs the whole kernel once:
        # taps x C_in / groups x C_out multiply-accumulates, i.e. the kernel's size.
        positions = out // _channels(layer, out_shape)
        bias = out if layer.use_bias else 0
        return 2 * positions * _kernel_size(layer), bias
    if isinstance(layer, _TRANSPOSED):
        # Every input cell scatters the whole kernel; 'valid' outputs keep all the products.
        positions = _size(in_shapes[0]) // _channels(layer, in_shapes[0])
        bias = out if layer.use_bias else 0
        return 2 * positions * _size(layer.kernel.shape), bias
    if isinstance(layer, _POOLING):
        return 0, out * _size(layer.pool_size)
    if isinstance(layer, _GLOBAL_POOLING):
        return 0, _size(in_shapes[0])
    if isinstance(layer, _MERGES):
        return 0, out * (len(in_shapes) - 1)
    if isinstance(layer, _AFFINE):
        return 0, 2 * out
    return 0, 0


def _graph_nodes(model: keras.Model) -> list:
    """The nodes of ``model``'s graph in topological order (depth-first post-order)."""
    seen, order = set(), []
    stack = [(t._keras_history, False) for t in reversed(model.outputs)]
    while stack:
        (operation, node_index, _), parents_done = stack.pop()
        node = operation._inbound_nodes[node_index]
        if parents_done:
            order.append(node)
        elif id(node) not in seen:
            seen.add(id(node))
            stack.append(((operation, node_index, 0), True))
            stack.extend((t._keras_history, False) for t in reversed(node.input_tensors))
    return order


def _full_shape(model: keras.Model, input_shape: Sequence[int]) -> tuple[int, ...]:
    rank = len(model.inputs[0].shape)
    shape = tuple(int(d) for d in input_shape)
    if len(shape) == rank - 1:
        shape = (1, *shape)
    if len(shape) != rank:
        raise ValueError(f"input_shape {tuple(input_shape)} does not fit input rank {rank}")
    return shape


def layer_flops(model: keras.Model, input_shape: Sequence[int]) -> list[LayerFlops]:
    """Per-layer FLOPs of a single-input functional ``model`` on inputs of ``input_shape``.

    ``input_shape`` is ``(H, W, C)`` (batch 1) or ``(B, H, W, C)``. Nested models are expanded
    into their layers, named ``outer/inner``.

    >>> from fcn_tf.models import build_fcn
    >>> model = build_fcn(3, 32, backbone_options={"width": 1 / 32, "fc_units": 8})
    >>> rows = {row.name: row for row in layer_flops(model, (64, 64, 3))}
    >>> rows["fc6"].output_shape, rows["fc6"].flops   # 3x3 cells x 7x7x16x8 MACs x 2
    ((1, 3, 3, 8), 112896)
    >>> rows["upscore"].flops   # 3x3 score cells x 64x64x3x3 kernel x 2
    663552
    """
    if len(model.inputs) != 1:
        raise ValueError(
            f"layer_flops counts single-input models, {model.name} has {len(model.inputs)}"
        )
    shape = _full_shape(model, input_shape)
    nodes = [n for n in _graph_nodes(model) if not isinstance(n.operation, keras.layers.InputLayer)]
    tensors = {}
    for node in nodes:
        for tensor in (*node.input_tensors, *node.output_tensors):
            tensors.setdefault(id(tensor), tensor)
    keys = list(tensors)
    # A probe returning every intermediate tensor, evaluated on shapes only: no arithmetic.
    probe = keras.Model(model.inputs, [tensors[k] for k in keys])
    specs = probe.compute_output_spec(keras.KerasTensor(shape, dtype=model.inputs[0].dtype))
    shapes = {k: tuple(int(d) for d in spec.shape) for k, spec in zip(keys, specs, strict=True)}

    rows = []
    for node in nodes:
        layer = node.operation
        in_shapes = [shapes[id(t)] for t in node.input_tensors]
        out_shape = shapes[id(node.output_tensors[0])]
        if isinstance(layer, keras.Model):
            rows += [
                dataclasses.replace(row, name=f"{layer.name}/{row.name}")
                for row in layer_flops(layer, in_shapes[0])
            ]
            continue
        flops, elementwise = _one_layer(layer, in_shapes, out_shape)
        rows.append(LayerFlops(layer.name, type(layer).__name__, out_shape, flops, elementwise))
    return rows


def count_flops(model: keras.Model, input_shape: Sequence[int], elementwise: bool = False) -> int:
    """FLOPs (2 x MACs) of ``model`` on inputs of ``input_shape``, plus elementwise if asked.

    >>> from fcn_tf.models import build_fcn
    >>> model = build_fcn(21, 8, backbone_options={"width": 1 / 32, "fc_units": 8})
    >>> count_flops(model, (64, 64, 3)) < count_flops(model, (64, 64, 3), elementwise=True)
    True
    """
    rows = layer_flops(model, input_shape)
    return sum(row.flops + (row.elementwise if elementwise else 0) for row in rows)


def tf_profiler_flops(model: keras.Model, input_shape: Sequence[int]) -> dict[str, int]:
    """TensorFlow's profiler's FLOPs of ``model(x, training=False)``, by op type (TF only).

    The graph of a ``tf.function`` traced for the full input shape, so every shape is static;
    ``tf.compat.v1.profiler`` then counts ops it has a formula for (see the module docstring).

    >>> model = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(4, 3)])
    >>> tf_profiler_flops(model, (10, 10, 3))
    {'BiasAdd': 256, 'Conv2D': 13824}
    """
    import tensorflow as tf

    shape = _full_shape(model, input_shape)
    graph = (
        tf.function(lambda x: model(x, training=False), autograph=False)
        .get_concrete_function(tf.TensorSpec(shape, model.inputs[0].dtype))
        .graph
    )
    options = (
        tf.compat.v1.profiler.ProfileOptionBuilder(
            tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
        )
        .with_empty_output()
        .build()
    )
    # The "op" view is a chain: each op type's node holds the next as its only child.
    counts, node = {}, tf.compat.v1.profiler.profile(graph, cmd="op", options=options)
    while node.children:
        (node,) = node.children
        if node.float_ops:
            counts[node.name] = int(node.float_ops)
    return dict(sorted(counts.items()))
