"""Export a Keras segmentation model as a SavedModel version for TF Serving.

The SavedModel holds the model's variables and the signatures of
:mod:`fcn_tf.export.constants`, traced once for any batch, height and width; it loads with
TensorFlow alone (``tf.saved_model.load``, TF Serving), without this package or Keras.
Beside the graph, ``assets/fcn_tf.json`` describes it (class names, signatures, limits).

>>> import os, tempfile
>>> from fcn_tf.models import build_fcn
>>> model = build_fcn(3, 32, backbone_options={"width": 1 / 32, "fc_units": 8})
>>> folder = export_saved_model(model, tempfile.mkdtemp())
>>> os.path.basename(folder), read_metadata(folder)["num_classes"]
('1', 3)
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import tensorflow as tf

from fcn_tf.export import constants
from fcn_tf.export.signatures import (
    IMAGE_BYTES_SPEC,
    IMAGES_SPEC,
    class_ids_fn,
    image_bytes_fn,
    num_classes_of,
    probabilities_fn,
)
from fcn_tf.export.versions import publish_version
from fcn_tf.files import write_json
from fcn_tf.inference import class_dtype

__all__ = ["METADATA_DIR", "export_saved_model", "metadata_path", "read_metadata"]

METADATA_DIR = constants.METADATA_DIR


def metadata_path(version_dir: str) -> str:
    """Where a version folder keeps its :data:`~fcn_tf.export.constants.ASSETS_METADATA`.

    >>> metadata_path("models/fcn8s/3")
    'models/fcn8s/3/assets/fcn_tf.json'
    """
    return os.path.join(version_dir, METADATA_DIR, constants.ASSETS_METADATA)


def read_metadata(version_dir: str) -> dict[str, Any]:
    """The description an export wrote into ``version_dir``; errors name the file.

    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> os.mkdir(os.path.join(folder, METADATA_DIR))
    >>> write_json(metadata_path(folder), {"num_classes": 3})
    >>> read_metadata(folder)
    {'num_classes': 3}
    >>> read_metadata(tempfile.mkdtemp())
    Traceback (most recent call last):
    ...
    FileNotFoundError: .../assets/fcn_tf.json: missing: ... is not an fcn_tf export
    """
    path = metadata_path(version_dir)
    try:
        with open(path) as file:
            return json.load(file)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing: {version_dir} is not an fcn_tf export") from None


def _signatures(model: keras.Model, probabilities: bool, max_pixels: int) -> dict:
    """Signature name -> (function, input spec)."""
    signatures = {
        constants.SERVING_DEFAULT: (class_ids_fn(model, max_pixels), IMAGES_SPEC),
        constants.PREDICT_IMAGE_BYTES: (image_bytes_fn(model, max_pixels), IMAGE_BYTES_SPEC),
    }
    if probabilities:
        signatures[constants.PROBABILITIES] = (probabilities_fn(model, max_pixels), IMAGES_SPEC)
    return signatures


class _Servable(tf.Module):
    """What the SavedModel holds: the model's variables, once, and the signature functions.

    Not ``keras.export.ExportArchive``: it stores every variable twice, as the Keras wrapper
    and as the ``tf.Variable`` the traced functions capture (keras-team/keras#23553), which
    doubles the files and a server's memory. Tracking the captured ``tf.Variable`` itself
    lets the checkpoint write each one once.
    """

    def __init__(self, model: keras.Model, functions: Mapping[str, tuple]) -> None:
        super().__init__(name="fcn_tf_servable")
        # On the TensorFlow backend a Keras variable's ``value`` is its tf.Variable.
        self.model_variables = [variable.value for variable in model.variables]
        self.signature_names = tuple(functions)
        for name, (fn, spec) in functions.items():
            setattr(self, name, tf.function(fn, input_signature=[spec], autograph=False))

    def concrete_functions(self) -> dict[str, tf.types.experimental.ConcreteFunction]:
        """Signature name -> its one trace (traced on the first call)."""
        return {name: getattr(self, name).get_concrete_function() for name in self.signature_names}


def _describe(signature: tf.types.experimental.ConcreteFunction) -> dict[str, Any]:
    def spec(tensor_spec) -> dict[str, Any]:
        return {"dtype": tensor_spec.dtype.name, "shape": tensor_spec.shape.as_list()}

    # The functions take their inputs positionally; each TensorSpec carries its name.
    inputs = tf.nest.flatten(signature.structured_input_signature)
    return {
        "inputs": {s.name: spec(s) for s in inputs},
        "outputs": {name: spec(s) for name, s in signature.structured_outputs.items()},
    }


def _metadata(
    model: keras.Model,
    class_names: Sequence[str],
    max_pixels: int,
    signatures: Mapping[str, Any],
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    import fcn_tf
    from fcn_tf.palette import palette_for

    num_classes = num_classes_of(model)
    return {
        "model": model.name,
        "num_classes": num_classes,
        "class_names": list(class_names),
        # RGB per class id (the first 256 ids), as fcn_tf.palette colours masks.
        "palette": palette_for(class_names)[:num_classes].tolist(),
        "class_ids_dtype": class_dtype(num_classes).name,
        "pad_class_id": constants.PAD_CLASS_ID,
        "max_pixels": max_pixels,
        "signatures": {name: _describe(fn) for name, fn in signatures.items()},
        "versions": {
            "fcn_tf": fcn_tf.__version__,
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
        },
        "exported": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **dict(extra),
    }


def _class_names(model: keras.Model, class_names: Sequence[str] | None) -> list[str]:
    num_classes = num_classes_of(model)
    if class_names is None:
        return [f"class_{index}" for index in range(num_classes)]
    if len(class_names) != num_classes:
        raise ValueError(
            f"{len(class_names)} class names for a model of {num_classes} classes: "
            f"{list(class_names)[:5]}..."
        )
    return [str(name) for name in class_names]


_PROBE_SIZE = (33, 35)  # odd sides, not multiples of any stride


def _check_segmenter(model: keras.Model) -> None:
    """The signatures promise one score per input pixel: refuse a model that does not keep
    the input's size (a trunk without its upsampling, a rarefied ``score_fr``)."""
    logits = model(tf.zeros((1, *_PROBE_SIZE, 3)), training=False)
    if tuple(logits.shape[1:3]) != _PROBE_SIZE:
        raise ValueError(
            f"{model.name}: a {_PROBE_SIZE[0]}x{_PROBE_SIZE[1]} input gives "
            f"{logits.shape[1]}x{logits.shape[2]} scores; exported models must map "
            "[B, H, W, 3] images to [B, H, W, C] logits"
        )


def check_max_pixels(max_pixels: int) -> None:
    """Refuse a pixel budget the graph's int64 arithmetic cannot hold.

    >>> check_max_pixels(2**63)
    Traceback (most recent call last):
    ...
    ValueError: max_pixels must be an integer in [1, 2**63 - 1], got 9223372036854775808
    """
    valid = isinstance(max_pixels, int) and not isinstance(max_pixels, bool)
    if not valid or not 1 <= max_pixels <= 2**63 - 1:
        raise ValueError(f"max_pixels must be an integer in [1, 2**63 - 1], got {max_pixels!r}")


def export_saved_model(
    model: keras.Model,
    model_base_path: str,
    version: int | None = None,
    *,
    probabilities: bool = False,
    max_pixels: int = constants.DEFAULT_MAX_PIXELS,
    class_names: Sequence[str] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> str:
    """Write ``model`` as version ``version`` of ``model_base_path`` in TF Serving's layout.

    Args:
        model: RGB 0..255 ``[B, H, W, 3]`` -> logits ``[B, H, W, C]``, any H and W.
        model_base_path: the folder TF Serving's ``--model_base_path`` names.
        version: the version number; ``None`` takes the next one (1 in an empty folder).
        probabilities: add the ``probabilities`` signature (float32 softmax ``[B, H, W, C]``;
            a 21-class 500x500 map is 21 MB per image, so it is opt-in).
        max_pixels: the most pixels (height x width) of one image any signature runs on;
            ``predict_image_bytes`` checks it in the header, before decoding.
        class_names: one per class, for ``assets/fcn_tf.json`` (``class_<i>`` by default).
        metadata: more fields for ``assets/fcn_tf.json`` (for example the checkpoint).

    Returns:
        The version folder, ``model_base_path/<version>``.

    Raises:
        FileExistsError: the version exists (versions are never overwritten).

    The folder is written under a hidden temporary name and renamed when complete, so a
    server watching ``model_base_path`` never loads part of it; on failure nothing is left.

    >>> import tempfile
    >>> scorer = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(2, 1)])
    >>> folder = export_saved_model(scorer, tempfile.mkdtemp(), 5, class_names=["bg", "cat"],
    ...                             probabilities=True)
    >>> os.path.basename(folder), read_metadata(folder)["class_names"]
    ('5', ['bg', 'cat'])
    >>> served = tf.saved_model.load(folder)   # TensorFlow alone: no Keras, no fcn_tf
    >>> outputs = served.signatures["probabilities"](images=tf.zeros((1, 2, 3, 3), tf.uint8))
    >>> outputs["probabilities"].shape.as_list(), sorted(served.signatures)[0]
    ([1, 2, 3, 2], 'predict_image_bytes')
    """
    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            f"SavedModel export needs Keras' tensorflow backend, not {keras.backend.backend()!r}"
        )
    check_max_pixels(max_pixels)
    _check_segmenter(model)
    names = _class_names(model, class_names)
    servable = _Servable(model, _signatures(model, probabilities, max_pixels))
    signatures = servable.concrete_functions()
    description = _metadata(model, names, max_pixels, signatures, metadata or {})

    def write(folder: str) -> None:
        tf.saved_model.save(servable, folder, signatures=signatures)
        os.makedirs(os.path.join(folder, METADATA_DIR), exist_ok=True)
        write_json(metadata_path(folder), description)

    return publish_version(model_base_path, write, version)
