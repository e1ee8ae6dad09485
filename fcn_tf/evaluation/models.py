"""Class ids from a trained model, whatever form it was saved in.

:func:`open_model` accepts

* a Keras model in memory;
* a ``.keras`` file, a run folder (its ``model.keras``, else its best checkpoint), or a
  checkpoint prefix or folder (the network rebuilt from the run's ``config.yaml``), as
  :func:`fcn_tf.export.load_model_for_export` reads them;
* a SavedModel of :func:`fcn_tf.export.export_saved_model`: a version folder (it holds
  ``saved_model.pb``) or a model base path (its highest version). It is called through its
  ``serving_default`` signature, uint8 images in, class ids out, as TF Serving would.

Either way the result is a :class:`Segmenter`: uint8 RGB ``[B, H, W, 3]`` in, class ids
``[B, H, W]`` out, with the class names the run or the export recorded (or ``None``).

>>> from fcn_tf.models import build_fcn
>>> segmenter = open_model(build_fcn(3, 32, backbone_options={"width": 1 / 32, "fc_units": 8}))
>>> segmenter(np.zeros((1, 20, 24, 3), np.uint8)).shape, segmenter.num_classes
((1, 20, 24), 3)
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

__all__ = ["Segmenter", "open_model", "saved_model_dir"]

_SAVED_MODEL = "saved_model.pb"


@dataclasses.dataclass
class Segmenter:
    """A model as a function from uint8 images ``[B, H, W, 3]`` to class ids ``[B, H, W]``.

    >>> zeros = Segmenter(lambda x: np.zeros(x.shape[:3], np.uint8), 2, None, "zeros", "keras")
    >>> zeros(np.ones((1, 4, 5, 3))).shape
    (1, 4, 5)
    >>> zeros(np.ones((4, 5, 3)))
    Traceback (most recent call last):
    ...
    ValueError: images must be [B, H, W, 3], got shape (4, 5, 3)
    """

    predict: Callable[[np.ndarray], np.ndarray]
    num_classes: int | None
    class_names: list[str] | None
    source: str
    kind: str  # "keras" or "saved_model"

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be [B, H, W, 3], got shape {images.shape}")
        return np.asarray(self.predict(images.astype(np.uint8, copy=False)))


def saved_model_dir(path: str) -> str | None:
    """The SavedModel version folder ``path`` names (itself, or a base path's highest
    version), or ``None`` when ``path`` is not a SavedModel.

    >>> import tempfile
    >>> base = tempfile.mkdtemp()
    >>> for version in ("2", "10"):
    ...     os.mkdir(os.path.join(base, version))
    ...     open(os.path.join(base, version, _SAVED_MODEL), "w").close()
    >>> os.path.relpath(saved_model_dir(base), base), saved_model_dir(tempfile.mkdtemp())
    ('10', None)
    """
    if os.path.isfile(os.path.join(path, _SAVED_MODEL)):
        return path
    if not os.path.isdir(path):
        return None
    from fcn_tf.export.versions import version_folders

    folders = [
        os.path.join(path, name)
        for _, name in sorted(version_folders(path).items())
        if os.path.isfile(os.path.join(path, name, _SAVED_MODEL))
    ]
    return folders[-1] if folders else None


def _from_keras(model: keras.Model, source: str, class_names: list[str] | None) -> Segmenter:
    from fcn_tf.inference import predict_classes

    return Segmenter(
        predict=lambda images: predict_classes(model, images),
        num_classes=int(model.outputs[0].shape[-1]),
        class_names=class_names,
        source=source,
        kind="keras",
    )


def _from_saved_model(folder: str) -> Segmenter:
    import tensorflow as tf

    from fcn_tf.export import constants, read_metadata

    loaded = tf.saved_model.load(folder)
    if constants.SERVING_DEFAULT not in loaded.signatures:
        raise ValueError(f"{folder}: the SavedModel has no {constants.SERVING_DEFAULT} signature")
    try:
        metadata = read_metadata(folder)
    except FileNotFoundError:
        metadata = {}

    def predict(images: np.ndarray) -> np.ndarray:
        # Looked up through `loaded` so the closure keeps the object owning the variables.
        signature = loaded.signatures[constants.SERVING_DEFAULT]
        outputs = signature(**{constants.INPUT_IMAGES: tf.constant(images, tf.uint8)})
        return outputs[constants.OUTPUT_CLASS_IDS].numpy()

    return Segmenter(
        predict=predict,
        num_classes=metadata.get("num_classes"),
        class_names=metadata.get("class_names"),
        source=folder,
        kind="saved_model",
    )


def open_model(model: Any) -> Segmenter:
    """A :class:`Segmenter` for ``model`` (see the module docstring); errors name the path.

    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "model.keras")
    >>> keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(4, 1)]).save(path)
    >>> segmenter = open_model(path)
    >>> segmenter.kind, segmenter.num_classes, segmenter.class_names, segmenter.source == path
    ('keras', 4, None, True)
    """
    if isinstance(model, Segmenter):
        return model
    if isinstance(model, keras.Model):
        return _from_keras(model, model.name, None)
    path = os.fspath(model)
    if not os.path.exists(path) and not os.path.exists(f"{path}.index"):
        raise FileNotFoundError(f"{path}: no such model file, folder or checkpoint")
    folder = saved_model_dir(path)
    if folder is not None:
        return _from_saved_model(folder)
    from fcn_tf.export import load_model_for_export, run_class_names

    return _from_keras(load_model_for_export(path), path, run_class_names(path))
