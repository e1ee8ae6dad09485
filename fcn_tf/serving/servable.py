"""One loaded SavedModel version: its signatures, checked inputs, and the SignatureDefs that
GetModelMetadata returns.

Inputs are checked against each signature's ``TensorSpec`` before anything runs, because a
loaded signature silently casts a float32 array to its uint8 input; what passes runs the
concrete function directly, and TensorFlow's own errors (an image over the pixel budget,
corrupt bytes) become the status codes TF Serving would send.

>>> import tempfile
>>> from fcn_tf.export import export_saved_model
>>> from fcn_tf.models import build_fcn
>>> model = build_fcn(3, 32, backbone_options={"width": 1 / 32, "fc_units": 8})
>>> servable = load_version(export_saved_model(model, tempfile.mkdtemp()), 1)
>>> sorted(servable.signatures)
['predict_image_bytes', 'serving_default']
>>> out = servable.signature("serving_default").run({"images": np.zeros((1, 9, 7, 3), "uint8")})
>>> out["class_ids"].shape
(1, 9, 7)
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from fcn_tf.export import constants, read_metadata
from fcn_tf.serving.errors import ServingError, from_tf_error, invalid

__all__ = ["Servable", "Signature", "load_version", "read_signature_defs"]

# Cheap first call at load time, so that the first request does not pay for lazy set-up.
_WARMUP_SIDE = 32  # pixels, or less where the export's max_pixels is smaller


@dataclasses.dataclass(frozen=True)
class Signature:
    """A callable signature of a loaded version, with the specs its inputs must meet.

    >>> spec = {"images": tf.TensorSpec([None, None, None, 3], tf.uint8)}
    >>> argmax = lambda images: {"class_ids": tf.argmax(images, -1)}
    >>> signature = Signature("serving_default", argmax, spec, ("class_ids",))
    >>> signature.run({"images": np.zeros((1, 2, 5, 3), "uint8")})["class_ids"].shape
    (1, 2, 5)
    >>> signature.run({"images": np.zeros((2, 5, 3), "uint8")})
    Traceback (most recent call last):
    ...
    fcn_tf.serving.errors.ServingError: INVALID_ARGUMENT: input 'images' must be uint8
    [?, ?, ?, 3], got uint8 [2, 5, 3]
    """

    name: str
    function: Any  # the loaded ConcreteFunction
    inputs: Mapping[str, tf.TensorSpec]
    outputs: tuple[str, ...]
    max_pixels: int | None = None

    def check_keys(self, keys: Iterable[str]) -> None:
        """Raise INVALID_ARGUMENT unless ``keys`` are the signature's inputs."""
        keys = set(keys)
        missing, unknown = sorted(set(self.inputs) - keys), sorted(keys - set(self.inputs))
        if missing or unknown:
            raise invalid(
                f"signature '{self.name}' takes inputs {sorted(self.inputs)}; "
                f"missing {missing}, unknown {unknown}"
            )

    def check(self, inputs: Mapping[str, np.ndarray]) -> None:
        """Raise INVALID_ARGUMENT naming the input that does not match the signature."""
        self.check_keys(inputs)
        for key, spec in self.inputs.items():
            _check_input(key, spec, inputs[key], self.max_pixels)

    def run(
        self, inputs: Mapping[str, np.ndarray], output_filter: Iterable[str] = ()
    ) -> dict[str, np.ndarray]:
        """The signature's outputs (those in ``output_filter``, when given) as arrays."""
        self.check(inputs)
        wanted = list(output_filter) or list(self.outputs)
        unknown = sorted(set(wanted) - set(self.outputs))
        if unknown:
            raise invalid(f"signature '{self.name}' has no outputs {unknown}: {self.outputs}")
        try:
            results = self.function(**inputs)
        except tf.errors.OpError as error:
            raise _clean(from_tf_error(error)) from None
        return {name: results[name].numpy() for name in wanted}


def _check_input(key: str, spec: tf.TensorSpec, array: np.ndarray, max_pixels: int | None):
    expected = f"{spec.dtype.name} {spec.shape.as_list()}".replace("None", "?")
    if spec.dtype == tf.string:
        dtype_ok = array.dtype == object or array.dtype.kind == "S"
    else:
        dtype_ok = array.dtype == spec.dtype.as_numpy_dtype
    if not dtype_ok or not spec.shape.is_compatible_with(array.shape):
        got = "string" if array.dtype.kind in "OS" else array.dtype.name
        raise invalid(f"input '{key}' must be {expected}, got {got} {list(array.shape)}")
    if max_pixels and key == constants.INPUT_IMAGES and array.ndim == 4:
        height, width = array.shape[1:3]
        if height * width > max_pixels:
            raise invalid(
                f"input '{key}': {height} x {width} = {height * width} pixels exceeds the "
                f"limit of {max_pixels} pixels"
            )


_NODE_NOISE = re.compile(r"\s*\[\[\{\{node [^\n]*|\s*\[Op:[^\n]*")


def _clean(error: ServingError) -> ServingError:
    """The error without TensorFlow's graph boilerplate: the assertion's own message."""
    text = error.message
    if "assertion failed:" in text:
        text = text[text.index("assertion failed:") :]
    elif "<stack traces unavailable>" in text:
        text = text.split("<stack traces unavailable>", 1)[1]
    text = _NODE_NOISE.sub("", text).strip()
    return ServingError(error.code, text or error.message)


@dataclasses.dataclass(frozen=True)
class Servable:
    """A loaded version: the SavedModel object (which owns the variables), its signatures,
    its SignatureDefs and the export's ``assets/fcn_tf.json`` (empty if it has none).

    >>> Servable(1, "/models/fcn/1", None, {}, {}, {}).signature("")
    Traceback (most recent call last):
    ...
    fcn_tf.serving.errors.ServingError: FAILED_PRECONDITION: serving signature key
    "serving_default" not found; this version has []
    """

    version: int
    path: str
    loaded: Any
    signatures: Mapping[str, Signature]
    signature_defs: Mapping[str, meta_graph_pb2.SignatureDef]
    metadata: Mapping[str, Any]

    def signature(self, name: str) -> Signature:
        """The signature ``name`` (``""`` is ``serving_default``); FAILED_PRECONDITION if none,
        as TF Serving answers for an unknown signature key."""
        name = name or constants.SERVING_DEFAULT
        if name not in self.signatures:
            raise ServingError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f'serving signature key "{name}" not found; this version has '
                f"{sorted(self.signatures)}",
            )
        return self.signatures[name]


def read_signature_defs(path: str) -> dict[str, meta_graph_pb2.SignatureDef]:
    """The SignatureDefs of the SavedModel in ``path`` (its serving MetaGraph), as stored.

    >>> import tempfile
    >>> saved_model = saved_model_pb2.SavedModel()
    >>> graph = saved_model.meta_graphs.add(meta_info_def={"tags": ["serve"]})
    >>> graph.signature_def["serving_default"].method_name = "tensorflow/serving/predict"
    >>> path = tempfile.mkdtemp()
    >>> with open(os.path.join(path, "saved_model.pb"), "wb") as file:
    ...     _ = file.write(saved_model.SerializeToString())
    >>> {key: d.method_name for key, d in read_signature_defs(path).items()}
    {'serving_default': 'tensorflow/serving/predict'}
    """
    with open(os.path.join(path, "saved_model.pb"), "rb") as file:
        saved_model = saved_model_pb2.SavedModel.FromString(file.read())
    for meta_graph in saved_model.meta_graphs:
        if "serve" in meta_graph.meta_info_def.tags:
            return dict(meta_graph.signature_def)
    raise ValueError(f"{path}: no MetaGraph tagged 'serve'")


def _read_metadata(path: str) -> dict[str, Any]:
    try:
        return read_metadata(path)
    except FileNotFoundError:  # any SavedModel serves; only fcn_tf exports describe themselves
        return {}


def _takes_probe(signature: Signature, side: int) -> bool:
    # Only a uint8 image signature that accepts any size (fcn_tf's) is warmed up: a SavedModel
    # of another input dtype or a fixed size still serves, just without the warm-up call.
    if list(signature.inputs) != [constants.INPUT_IMAGES]:
        return False
    spec = signature.inputs[constants.INPUT_IMAGES]
    return spec.dtype == tf.uint8 and spec.shape.is_compatible_with([1, side, side, 3])


def load_version(path: str, version: int, warmup: bool = True) -> Servable:
    """Load the SavedModel in ``path`` completely (variables, signatures, a warm-up call of
    ``serving_default`` on a small image when ``warmup``), ready to answer.

    >>> import keras, tempfile
    >>> from fcn_tf.export import export_saved_model
    >>> model = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(3, 1)])
    >>> servable = load_version(export_saved_model(model, tempfile.mkdtemp()), 1)
    >>> servable.version, sorted(servable.signatures)
    (1, ['predict_image_bytes', 'serving_default'])
    >>> images = np.zeros((2, 4, 6, 3), "uint8")
    >>> servable.signature("").run({"images": images})["class_ids"].shape
    (2, 4, 6)
    """
    loaded = tf.saved_model.load(path)
    metadata = _read_metadata(path)
    max_pixels = metadata.get("max_pixels")
    signatures = {}
    for name, function in loaded.signatures.items():
        signatures[name] = Signature(
            name=name,
            function=function,
            inputs=dict(function.structured_input_signature[1]),
            outputs=tuple(sorted(function.structured_outputs)),
            max_pixels=max_pixels,
        )
    default = signatures.get(constants.SERVING_DEFAULT)
    side = min(_WARMUP_SIDE, math.isqrt(max_pixels)) if max_pixels else _WARMUP_SIDE
    if warmup and default is not None and _takes_probe(default, side):
        default.run({constants.INPUT_IMAGES: np.zeros((1, side, side, 3), np.uint8)})
    return Servable(
        version=version,
        path=path,
        loaded=loaded,
        signatures=signatures,
        signature_defs=read_signature_defs(path),
        metadata=metadata,
    )
