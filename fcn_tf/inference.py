"""Fast batch inference for FCN models with TensorFlow: logits or class ids for any image size.

:class:`Predictor` wraps a Keras model in one ``tf.function`` whose input signature is
``[None, None, None, 3]`` float32, so it is traced once for every batch size and image size,
and runs the model with ``training=False``.

Whether to compile with XLA is measured, not assumed (``benchmarks/inference.py``, 2-core
Sapphire Rapids, TF 2.21 with oneDNN; see :func:`default_jit_compile`): XLA runs VGG16 FCNs
1.1-2x faster than TensorFlow's oneDNN kernels, because those re-lay-out every weight on
every call (537 MB for VGG16, 411 MB of it fc6); it runs MobileNetV2 FCNs 2.4-6.5x slower
(depthwise convolutions) and ResNet50 FCNs no faster. With the oneDNN weight cache on
(``TF_ONEDNN_ASSUME_FROZEN_WEIGHTS=1``), oneDNN beats XLA everywhere measured, VGG16 included.
On a 2-core AMD EPYC the two paths tie for VGG16 at 500x500 (XLA/oneDNN latency 0.94-1.02);
there XLA had been 1.3-1.55x slower for FCN-8s and FCN-32s until the fixed final upsampler
became a sub-pixel convolution (:class:`fcn_tf.models.layers.FixedConv2DTranspose`).

XLA's other cost: it compiles one executable per concrete input shape. The trace is shared,
but every new ``(B, H, W)`` pays a compilation (0.3-0.5 s for full-width VGG16 FCNs on 2
cores) and keeps one more executable in memory. That is cheap for fixed-size serving or a
dataset with few distinct sizes; for a stream of all-different sizes, pass
``jit_compile=False`` (TensorFlow's kernels compile nothing) or resize the inputs to a few
sizes first.

>>> from fcn_tf.models import build_fcn
>>> model = build_fcn(4, 8, backbone_options={"width": 1 / 32, "fc_units": 8})
>>> predictor = Predictor(model)
>>> tuple(predictor(np.zeros((2, 40, 30, 3), "float32")).shape)
(2, 40, 30, 4)
>>> labels = predictor.predict_classes(np.zeros((37, 21, 3), "uint8"))   # one image
>>> labels.dtype.name, tuple(labels.shape)
('uint8', (37, 21))
"""

from __future__ import annotations

import functools
import os
import weakref

import keras
import numpy as np
import tensorflow as tf
from numpy.typing import ArrayLike

__all__ = [
    "LARGE_WEIGHTS_BYTES",
    "Predictor",
    "class_dtype",
    "class_ids",
    "default_jit_compile",
    "onednn_weights_frozen",
    "predict_classes",
]

# Below this much weight, re-laying weights out per call costs oneDNN less than XLA loses on
# its slower convolutions: ResNet50 FCNs (94 MiB) tie, VGG16 FCNs (512 MiB) gain 1.1-1.7x.
LARGE_WEIGHTS_BYTES = 256 * 2**20

_DEPTHWISE = (
    keras.layers.DepthwiseConv1D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv1D,
    keras.layers.SeparableConv2D,
)


def onednn_weights_frozen() -> bool:
    """Whether TensorFlow's oneDNN kernels cache their re-laid-out weights in this process.

    True when oneDNN is on and ``TF_ONEDNN_ASSUME_FROZEN_WEIGHTS`` is ``1``/``true``. TensorFlow
    reads that variable once, at its first oneDNN convolution, and then reuses each kernel's
    first weights forever: set it only in processes that never change weights after their
    first inference (a server that loads a model and predicts), never where a model trains.

    >>> os.environ.get("TF_ONEDNN_ASSUME_FROZEN_WEIGHTS") is None and onednn_weights_frozen()
    False
    """
    try:
        from tensorflow.python.util import _pywrap_util_port

        onednn = bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):  # the private module moved: trust the environment
        onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1").strip().lower() in ("1", "true")
    frozen = os.environ.get("TF_ONEDNN_ASSUME_FROZEN_WEIGHTS", "0").strip().lower()
    return onednn and frozen in ("1", "true")


def default_jit_compile(model: keras.Model) -> bool:
    """XLA or not for ``model``: the faster path measured by ``benchmarks/inference.py``.

    * oneDNN weight cache on (:func:`onednn_weights_frozen`): no XLA. VGG16 FCN-8s caffe at
      500x500 runs in 1.12-1.14 s without XLA, 1.30-1.33 s with (fp32 matmul roofline: 1.0 s);
      11-12 of 12 VGG16 configurations were faster without.
    * depthwise or separable convolutions: no XLA (MobileNetV2 FCN-8s: 2.4-6.5x slower).
    * at least :data:`LARGE_WEIGHTS_BYTES` of weights: XLA (VGG16 FCNs: all 12 configurations
      1.1-2x faster; 1.28-1.40 s against 2.2-2.5 s for the case above).
    * otherwise no XLA: ResNet50 FCN-8s ran 3-5 % faster without it.

    >>> scorer = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(2, 3)])
    >>> default_jit_compile(scorer)   # small weights: TensorFlow's own kernels
    False
    """
    if onednn_weights_frozen():
        return False
    if any(isinstance(layer, _DEPTHWISE) for layer in _all_layers(model)):
        return False
    weight_bytes = sum(int(np.prod(w.shape)) * np.dtype(w.dtype).itemsize for w in model.weights)
    return weight_bytes >= LARGE_WEIGHTS_BYTES


def _all_layers(model: keras.Model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


_SIGNATURE = [tf.TensorSpec([None, None, None, 3], tf.float32, name="images")]


def _as_batch(images) -> tuple[tf.Tensor, bool]:
    """``images`` as a float32 ``[B, H, W, 3]`` tensor, and whether a batch axis was added."""
    images = tf.convert_to_tensor(images)
    if images.dtype != tf.float32:
        images = tf.cast(images, tf.float32)
    if images.shape.rank not in (3, 4) or images.shape[-1] != 3:
        raise ValueError(f"images must be [H, W, 3] or [B, H, W, 3], got shape {images.shape}")
    if images.shape.rank == 3:
        return images[tf.newaxis], True
    return images, False


def _logits(model: keras.Model, images: tf.Tensor) -> tf.Tensor:
    return model(images, training=False)


def class_dtype(num_classes: int) -> tf.DType:
    """The dtype of class ids: uint8 when they fit in 8 bits (a quarter of int32's memory: a
    VOC validation set holds 1449 maps), int32 beyond.

    >>> class_dtype(21).name, class_dtype(256).name, class_dtype(300).name
    ('uint8', 'uint8', 'int32')
    """
    return tf.uint8 if num_classes <= 256 else tf.int32


def class_ids(model: keras.Model, dtype: tf.DType, images: tf.Tensor) -> tf.Tensor:
    """The argmax of ``model``'s logits on float ``images``, as ``dtype`` class ids.

    >>> scorer = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(2, 1)])
    >>> scorer.set_weights([np.array([[[[1, 0], [0, 1], [0, 0]]]], "float32"), np.zeros(2)])
    >>> class_ids(scorer, tf.uint8, tf.constant([[[[1.0, 2.0, 0.0], [3.0, 1.0, 0.0]]]])).numpy()
    array([[[1, 0]]], dtype=uint8)
    """
    # Compiled with the model: under XLA the argmax fuses into the last layer's loop.
    labels = tf.argmax(model(images, training=False), axis=-1, output_type=tf.int32)
    return tf.cast(labels, dtype)


class Predictor:
    """A model's inference path: one ``tf.function`` for all sizes, XLA where that is faster.

    Args:
        model: maps float RGB 0..255 ``[B, H, W, 3]`` to logits ``[B, H, W, C]``.
        jit_compile: compile with XLA; ``None`` chooses by :func:`default_jit_compile`. XLA
            compiles once per input shape (see the module docstring).

    >>> from fcn_tf.models import build_fcn
    >>> predictor = Predictor(build_fcn(3, 32, backbone_options={"width": 1 / 32,
    ...                                                           "fc_units": 8}),
    ...                       jit_compile=False)
    >>> for size in (24, 33, 50):
    ...     _ = predictor(np.zeros((1, size, size, 3), "float32"))
    >>> predictor.tracing_count   # one trace served all three sizes
    1
    """

    def __init__(self, model: keras.Model, jit_compile: bool | None = None) -> None:
        self.model = model
        if jit_compile is None:
            jit_compile = default_jit_compile(model)
        self.jit_compile = bool(jit_compile)
        self.num_classes = int(model.outputs[0].shape[-1])
        self.class_dtype = class_dtype(self.num_classes)

        # Partials, not methods or closures: TensorFlow's retracing warning counts traces per
        # code object, so every Predictor's one trace would add up across instances.
        options = {
            "input_signature": _SIGNATURE,
            "jit_compile": self.jit_compile,
            "autograph": False,
        }
        self._logits = tf.function(functools.partial(_logits, model), **options)
        self._classes = tf.function(
            functools.partial(class_ids, model, self.class_dtype), **options
        )

    @property
    def tracing_count(self) -> int:
        """How many times the logits function was traced (1 after any number of sizes)."""
        return self._logits.experimental_get_tracing_count()

    def __call__(self, images) -> tf.Tensor:
        """Logits ``[B, H, W, C]`` (``[H, W, C]`` for one ``[H, W, 3]`` image), float32.

        ``images`` is RGB 0..255, any real dtype, an array or a tensor.
        """
        batch, added = _as_batch(images)
        logits = self._logits(batch)
        return logits[0] if added else logits

    def predict_classes(self, images: ArrayLike) -> tf.Tensor:
        """Class ids ``[B, H, W]`` (``[H, W]`` for one image): uint8, or int32 past 256 classes.

        >>> scorer = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(300, 1)])
        >>> predictor = Predictor(scorer, jit_compile=False)
        >>> predictor.predict_classes(np.zeros((1, 16, 16, 3), "float32")).dtype.name
        'int32'
        """
        batch, added = _as_batch(images)
        labels = self._classes(batch)
        return labels[0] if added else labels


_PREDICTORS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def predict_classes(
    model: keras.Model, images: ArrayLike, jit_compile: bool | None = None
) -> np.ndarray:
    """Class ids of ``images`` as a numpy array, via a :class:`Predictor` cached per model.

    The cache keeps one traced (and, with XLA, compiled per shape) function per model and
    ``jit_compile``, so repeated calls do not retrace; it holds the model weakly.

    >>> from fcn_tf.models import build_fcn
    >>> model = build_fcn(5, 16, backbone_options={"width": 1 / 32, "fc_units": 8})
    >>> labels = predict_classes(model, np.full((2, 20, 24, 3), 128, "uint8"))
    >>> labels.dtype, labels.shape, bool((labels < 5).all())
    (dtype('uint8'), (2, 20, 24), True)
    """
    jit = default_jit_compile(model) if jit_compile is None else bool(jit_compile)
    predictors = _PREDICTORS.setdefault(model, {})
    if jit not in predictors:
        # A proxy: a strong reference from the value would keep the weak key alive forever.
        predictors[jit] = Predictor(weakref.proxy(model), jit_compile=jit)
    return predictors[jit].predict_classes(images).numpy()
