"""Classifier weights into fully convolutional trunks (paper section 3.1).

An ImageNet classifier's fully connected layers are convolutions whose kernels cover their whole
input: VGG16's ``fc1`` (25088 x 4096, a flattened 7x7x512 input) is ``fc6``, a 7x7x512x4096
convolution, and ``fc2`` is ``fc7``, a 1x1 convolution. Copying the weights is a reshape.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping

import keras
import numpy as np

__all__ = ["classifier_model", "transfer_weights"]


def classifier_model(
    application: Callable[..., keras.Model], weights: str, name: str, **options
) -> keras.Model:
    """Build a Keras application and load ``weights``: a file path, or ``"imagenet"``.

    The file may hold the classifier (``include_top=True``) or the convolutional part only;
    ``options`` are the application's own (e.g. MobileNetV2's ``alpha``).

    >>> classifier_model(keras.applications.VGG16, "no/such/vgg16.h5", "vgg16")
    Traceback (most recent call last):
    ...
    FileNotFoundError: backbone_weights: no such file 'no/such/vgg16.h5' for backbone 'vgg16'
    """
    if weights == "imagenet":
        try:
            return application(weights="imagenet", include_top=True, **options)
        except Exception as error:  # Keras raises plain Exception for failed downloads.
            raise RuntimeError(
                f"could not download ImageNet weights for backbone {name!r} ({error}); "
                "offline, pass backbone_weights='/path/to/weights.h5' (a Keras "
                f"{application.__name__} weights file)"
            ) from error
    weights = os.path.expanduser(weights)
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"backbone_weights: no such file {weights!r} for backbone {name!r}")
    errors = []
    for include_top in (True, False):
        model = application(
            weights=None, include_top=include_top, input_shape=(224, 224, 3), **options
        )
        try:
            with warnings.catch_warnings():  # Keras warns about each layer of a layout misfit
                warnings.simplefilter("ignore")
                model.load_weights(weights)
            return model
        except Exception as error:  # the other layout is tried next
            errors.append(f"include_top={include_top}: {error}")
    raise ValueError(
        f"backbone_weights file {weights!r} does not fit Keras {application.__name__}: "
        + "; ".join(errors)
    )


def _convolutionalizes(source: keras.layers.Layer, target: keras.layers.Layer) -> bool:
    """Whether ``source`` is a fully connected layer and ``target`` its convolution."""
    if not (isinstance(source, keras.layers.Dense) and isinstance(target, keras.layers.Conv2D)):
        return False
    kernel, conv_kernel = source.kernel.shape, target.kernel.shape
    return kernel[-1] == conv_kernel[-1] and int(np.prod(conv_kernel[:-1])) == kernel[0]


def transfer_weights(
    source: keras.Model,
    target: keras.Model,
    renames: Mapping[str, str] | None = None,
    *,
    origin: str = "source",
) -> list[str]:
    """Copy weights layer by layer, matched by name; fully connected kernels become convolutions.

    Reshaping a ``Dense`` kernel is all it takes when the convolution covers the flattened
    input; any other shape mismatch is an error.
    Returns the names of the target layers that received weights.

    >>> dense = keras.Sequential([keras.Input((2, 2, 3)), keras.layers.Flatten(),
    ...                           keras.layers.Dense(4, name="fc")])
    >>> conv = keras.Sequential([keras.Input((None, None, 3)),
    ...                          keras.layers.Conv2D(4, 2, name="fc_conv")])
    >>> transfer_weights(dense, conv, {"fc": "fc_conv"})
    ['fc_conv']
    >>> x = np.random.rand(1, 2, 2, 3).astype("float32")
    >>> bool(np.allclose(dense(x), conv(x)[:, 0, 0], atol=1e-5))
    True
    """
    renames = dict(renames or {})
    copied = []
    for layer in source.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        name = renames.get(layer.name, layer.name)
        try:
            target_layer = target.get_layer(name)
        except ValueError:
            continue
        shapes = [tuple(w.shape) for w in target_layer.get_weights()]
        if [w.shape for w in weights] != shapes and not _convolutionalizes(layer, target_layer):
            raise ValueError(
                f"{origin}: layer {layer.name!r} has weights of shapes "
                f"{[w.shape for w in weights]}, which do not fit {name!r} {shapes}"
            )
        target_layer.set_weights([w.reshape(s) for w, s in zip(weights, shapes, strict=True)])
        copied.append(name)
    return copied
