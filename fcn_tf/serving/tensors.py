"""Tensors on the wire: ``TensorProto`` for gRPC, TF Serving's JSON (``{"b64": ...}``) for REST.

Protos go through TensorFlow's own :func:`tf.make_ndarray` and :func:`tf.make_tensor_proto`
(one copy each way, numeric tensors as raw ``tensor_content`` bytes).

>>> proto = to_proto(np.arange(6, dtype="uint8").reshape(2, 3))
>>> from_proto(proto, "images").tolist()
[[0, 1, 2], [3, 4, 5]]
>>> spec = tf.TensorSpec([None], tf.string)
>>> from_json([{"b64": "aGk="}, "plain"], spec, "image_bytes").tolist()
[b'hi', b'plain']
>>> to_json(np.array([b"\\x00"], object), "image_bytes")
[{'b64': 'AA=='}]
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from google.protobuf.message import Message
from tensorflow.core.framework import tensor_pb2

from fcn_tf.serving.errors import invalid

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "from_json",
    "from_proto",
    "message_size_options",
    "message_to_json",
    "to_json",
    "to_proto",
]

# A 36 Mpx image (fcn_tf.export's default pixel budget) is 108 MB as uint8 RGB; gRPC's default
# of 4 MB would refuse any photograph over 1.3 Mpx sent as pixels.
DEFAULT_MAX_MESSAGE_BYTES = 256 * 2**20


def message_size_options(max_bytes: int) -> list[tuple[str, int]]:
    """gRPC channel/server options raising both message limits to ``max_bytes``.

    >>> message_size_options(8)[0]
    ('grpc.max_send_message_length', 8)
    """
    return [
        ("grpc.max_send_message_length", max_bytes),
        ("grpc.max_receive_message_length", max_bytes),
    ]


def to_proto(array: Any) -> tensor_pb2.TensorProto:
    """``array`` (numpy, tensor, nested lists) as a ``TensorProto``.

    >>> proto = to_proto(np.zeros((2, 3), "uint8"))
    >>> tf.as_dtype(proto.dtype).name, [d.size for d in proto.tensor_shape.dim]
    ('uint8', [2, 3])
    >>> len(proto.tensor_content)
    6
    """
    return tf.make_tensor_proto(array)


def from_proto(proto: tensor_pb2.TensorProto, key: str) -> np.ndarray:
    """The array in ``proto``; a malformed proto is an INVALID_ARGUMENT naming ``key``.

    >>> from_proto(to_proto([1.5, 2.0]), "scores")
    array([1.5, 2. ], dtype=float32)
    >>> proto = to_proto(np.zeros((2, 3), "uint8"))
    >>> proto.tensor_content = b"?"  # 1 byte for 6 values
    >>> from_proto(proto, "images")
    Traceback (most recent call last):
    ...
    fcn_tf.serving.errors.ServingError: INVALID_ARGUMENT: input 'images' is not a readable ...
    """
    try:
        return tf.make_ndarray(proto)
    except (TypeError, ValueError) as error:
        raise invalid(f"input '{key}' is not a readable TensorProto: {error}") from None


def from_json(value: Any, spec: tf.TensorSpec, key: str) -> np.ndarray:
    """JSON ``value`` (nested lists) as an array of ``spec``'s dtype, checked value by value.

    Strings are ``{"b64": "..."}`` objects (binary) or JSON strings; numbers must fit the
    dtype: ``300`` for uint8 or ``0.5`` for an integer tensor is an error, as in TF Serving.

    >>> spec = tf.TensorSpec([None, 2], tf.uint8)
    >>> from_json([[0, 255]], spec, "images")
    array([[  0, 255]], dtype=uint8)
    >>> from_json([[0, 300]], spec, "images")
    Traceback (most recent call last):
    ...
    fcn_tf.serving.errors.ServingError: INVALID_ARGUMENT: ... values 0..300 do not fit uint8
    """
    if spec.dtype == tf.string:
        return _strings(value, key)
    try:
        array = np.asarray(value)
    except ValueError:
        raise invalid(f"input '{key}': nested lists of unequal lengths") from None
    dtype = spec.dtype.as_numpy_dtype
    kind = np.dtype(dtype).kind
    allowed = {"b": "b", "i": "biu", "u": "biu", "f": "biuf"}.get(kind, "")
    if array.dtype.kind not in allowed:
        raise invalid(f"input '{key}' must be {spec.dtype.name} values, got {array.dtype} ones")
    if kind in "iu" and array.size:
        info = np.iinfo(dtype)
        if array.min() < info.min or array.max() > info.max:
            raise invalid(
                f"input '{key}': values {array.min()}..{array.max()} do not fit {spec.dtype.name}"
            )
    return array.astype(dtype, copy=False)


def _strings(value: Any, key: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=object)
    except ValueError:
        raise invalid(f"input '{key}': nested lists of unequal lengths") from None
    flat = [_string(item, key) for item in array.reshape(-1)]
    out = np.empty(len(flat), dtype=object)
    out[:] = flat
    return out.reshape(array.shape)


def _string(item: Any, key: str) -> bytes:
    if isinstance(item, str):
        return item.encode("utf-8")
    if isinstance(item, dict) and set(item) == {"b64"} and isinstance(item["b64"], str):
        # As TF Serving (absl::Base64Unescape): whitespace, e.g. MIME line breaks, is skipped
        # and the padding may be left out.
        text = "".join(item["b64"].split())
        if "=" not in text:
            text += "=" * (-len(text) % 4)
        try:
            return base64.b64decode(text, validate=True)
        except binascii.Error as error:
            raise invalid(f"input '{key}': bad base64 ({error})") from None
    raise invalid(f"input '{key}' must hold strings or {{'b64': ...}} objects, got {item!r:.60}")


def to_json(array: np.ndarray, name: str, binary: bool | None = None) -> Any:
    """``array`` as JSON values. Strings become ``{"b64": ...}`` when ``binary``, or (``None``)
    when the tensor is named ``*_bytes``, as TF Serving writes binary outputs; else text.

    >>> to_json(np.array([[3, 0]], "uint8"), "class_ids")
    [[3, 0]]
    >>> words = np.array([b"cat"], object)
    >>> to_json(words, "label"), to_json(words, "label", binary=True)
    (['cat'], [{'b64': 'Y2F0'}])
    """
    if array.dtype != object and array.dtype.kind != "S":
        return array.tolist()
    binary = name.endswith("_bytes") if binary is None else binary

    def encode(item: bytes) -> Any:
        if binary:
            return {"b64": base64.b64encode(item).decode("ascii")}
        return item.decode("utf-8", errors="replace")

    return np.asarray(np.frompyfunc(encode, 1, 1)(array), dtype=object).tolist()


def message_to_json(message: Message) -> dict:
    """A proto as TF Serving's REST API writes it: proto field names, defaults included.

    >>> from tensorflow_serving.apis import model_pb2
    >>> message_to_json(model_pb2.ModelSpec(name="fcn"))
    {'name': 'fcn', 'signature_name': ''}
    """
    return json_format.MessageToDict(
        message, always_print_fields_with_no_presence=True, preserving_proto_field_name=True
    )
