"""Clients of a TF Serving model server (or :mod:`fcn_tf.serving.server`) for fcn_tf exports.

:class:`GrpcClient` speaks gRPC through ``tensorflow_serving.apis``' own stubs;
:class:`RestClient` speaks TF Serving's REST API through ``urllib`` (the module needs the
``serving`` extra either way: it shares the stubs' message types).
Both offer the same calls: :meth:`~Client.predict` (uint8 pixels, ``serving_default``),
:meth:`~Client.predict_bytes` (encoded PNG/JPEG files, ``predict_image_bytes``, each mask
cropped to its image), :meth:`~Client.call` (any signature) and ``metadata()``. Failures
raise :class:`~fcn_tf.serving.errors.ServingError` with the server's status code.

>>> client = GrpcClient("127.0.0.1:1", "fcn", timeout=0.5)
>>> client.predict(np.zeros((4, 4, 3), "uint8"))
Traceback (most recent call last):
...
fcn_tf.serving.errors.ServingError: UNAVAILABLE: ...
>>> client.close()
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    model_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from fcn_tf.export import constants
from fcn_tf.serving.errors import ServingError, from_http_status
from fcn_tf.serving.tensors import (
    DEFAULT_MAX_MESSAGE_BYTES,
    from_proto,
    message_size_options,
    message_to_json,
    to_json,
    to_proto,
)

__all__ = ["Client", "GrpcClient", "RestClient", "crop_to_sizes"]


def crop_to_sizes(class_ids: np.ndarray, sizes: np.ndarray) -> list[np.ndarray]:
    """``predict_image_bytes``'s padded ``[B, H_max, W_max]`` maps, each cropped to its size.

    >>> [m.shape for m in crop_to_sizes(np.zeros((2, 5, 6)), np.array([[5, 2], [3, 6]]))]
    [(5, 2), (3, 6)]
    """
    return [ids[:height, :width] for ids, (height, width) in zip(class_ids, sizes, strict=True)]


def _image_batch(images: Any) -> tuple[np.ndarray, bool]:
    """uint8 ``[B, H, W, 3]`` from one image, a batch or a list of equal-size images; and
    whether it was one image."""
    batch = np.asarray(images)
    if batch.dtype != np.uint8:
        raise ValueError(f"images must be uint8 RGB, got {batch.dtype} (convert 0..255 first)")
    if batch.ndim == 3:
        return batch[np.newaxis], True
    if batch.ndim != 4:
        raise ValueError(f"images must be [H, W, 3] or [B, H, W, 3], got shape {batch.shape}")
    return batch, False


class Client:
    """What both clients do on top of ``call`` (one signature, arrays in and out).

    >>> class Red(Client):  # a stand-in for a server: class 1 wherever red > 0
    ...     def call(self, inputs, signature=constants.SERVING_DEFAULT):
    ...         return {"class_ids": (inputs["images"][..., 0] > 0).astype("uint8")}
    >>> Red("fcn", None, None, timeout=1.0).predict(np.full((2, 3, 3), 9, "uint8"))
    array([[1, 1, 1],
           [1, 1, 1]], dtype=uint8)
    >>> Client("fcn", 3, "stable", timeout=1.0)
    Traceback (most recent call last):
    ...
    ValueError: give a version or a version label, not both
    """

    def __init__(
        self, model: str, version: int | None, version_label: str | None, timeout: float
    ) -> None:
        if version is not None and version_label:
            raise ValueError("give a version or a version label, not both")
        self.model, self.version, self.version_label = model, version, version_label
        self.timeout = timeout

    def close(self) -> None:
        """Release the connection (a no-op where there is none)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def call(
        self, inputs: Mapping[str, Any], signature: str = constants.SERVING_DEFAULT
    ) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def predict(self, images: Any) -> np.ndarray:
        """Class ids ``[B, H, W]`` of uint8 RGB ``images`` (``[H, W]`` for one image)."""
        batch, single = _image_batch(images)
        outputs = self.call({constants.INPUT_IMAGES: batch})
        class_ids = outputs[constants.OUTPUT_CLASS_IDS]
        return class_ids[0] if single else class_ids

    def predict_bytes(self, images: Sequence[bytes]) -> list[np.ndarray]:
        """One class-id map per encoded PNG/JPEG, at that image's own size."""
        contents = np.empty(len(images), dtype=object)
        contents[:] = [bytes(image) for image in images]
        outputs = self.call({constants.INPUT_IMAGE_BYTES: contents}, constants.PREDICT_IMAGE_BYTES)
        return crop_to_sizes(
            outputs[constants.OUTPUT_CLASS_IDS], outputs[constants.OUTPUT_IMAGE_SIZE]
        )


class GrpcClient(Client):
    """A client of ``server`` (``HOST:PORT``, TF Serving's 8500) over gRPC.

    Args:
        server: the server's address.
        model: the model name of the server's config.
        version: ask for this version (default: the newest the server has loaded).
        version_label: or ask for the version this label of the server's config names.
        timeout: seconds per call before it fails with DEADLINE_EXCEEDED.
        max_message_bytes: the largest message sent or received (gRPC's default is 4 MB).

    >>> with GrpcClient("localhost:8500", "fcn", version_label="stable") as client:
    ...     message_to_json(client.model_spec("serving_default"))
    {'name': 'fcn', 'signature_name': 'serving_default', 'version_label': 'stable'}
    """

    def __init__(
        self,
        server: str,
        model: str,
        version: int | None = None,
        version_label: str | None = None,
        timeout: float = 60.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        super().__init__(model, version, version_label, timeout)
        options = message_size_options(max_message_bytes)
        self.channel = grpc.insecure_channel(server, options=options)
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)

    def model_spec(self, signature: str = "") -> model_pb2.ModelSpec:
        """The ``ModelSpec`` of this client's requests."""
        spec = model_pb2.ModelSpec(name=self.model, signature_name=signature)
        if self.version is not None:
            spec.version.value = self.version
        elif self.version_label:
            spec.version_label = self.version_label
        return spec

    def call(
        self,
        inputs: Mapping[str, Any],
        signature: str = constants.SERVING_DEFAULT,
        output_filter: Iterable[str] = (),
    ) -> dict[str, np.ndarray]:
        """The outputs of ``signature`` on ``inputs`` (arrays, sent as they are)."""
        request = predict_pb2.PredictRequest(
            model_spec=self.model_spec(signature), output_filter=list(output_filter)
        )
        for key, value in inputs.items():
            request.inputs[key].CopyFrom(to_proto(value))
        response = self._send(self.stub.Predict, request)
        return {name: from_proto(proto, name) for name, proto in response.outputs.items()}

    def metadata(self) -> dict:
        """The model's SignatureDefs, in the JSON form of TF Serving's REST metadata."""
        request = get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=self.model_spec(), metadata_field=["signature_def"]
        )
        response = self._send(self.stub.GetModelMetadata, request)
        definitions = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(definitions)
        return {
            "model_spec": message_to_json(response.model_spec),
            "metadata": {"signature_def": message_to_json(definitions)},
        }

    def _send(self, method, request):
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as error:
            raise ServingError(error.code(), error.details() or "") from None

    def close(self) -> None:
        self.channel.close()


class RestClient(Client):
    """A client of TF Serving's REST API at ``url`` (``http://HOST:8501``).

    Arrays travel as JSON lists, encoded images as ``{"b64": ...}``; the arguments are
    :class:`GrpcClient`'s, except that ``timeout`` bounds each network operation of a call
    (connecting, sending, each read: HTTP has no call deadline), not the whole call. Output
    dtypes come from the model's metadata (fetched once).

    >>> RestClient("http://serving:8501/", "fcn", version=2).base
    'http://serving:8501/v1/models/fcn/versions/2'
    >>> RestClient("http://127.0.0.1:1", "fcn", timeout=1.0).status()
    Traceback (most recent call last):
    ...
    fcn_tf.serving.errors.ServingError: UNAVAILABLE: http://127.0.0.1:1/v1/models/fcn: ...
    """

    def __init__(
        self,
        url: str,
        model: str,
        version: int | None = None,
        version_label: str | None = None,
        timeout: float = 60.0,
    ) -> None:
        super().__init__(model, version, version_label, timeout)
        self.base = f"{url.rstrip('/')}/v1/models/{model}"
        if version is not None:
            self.base += f"/versions/{version}"
        elif version_label:
            self.base += f"/labels/{version_label}"
        self._outputs: dict[str, dict[str, np.dtype]] = {}

    def call(
        self, inputs: Mapping[str, Any], signature: str = constants.SERVING_DEFAULT
    ) -> dict[str, np.ndarray]:
        """The outputs of ``signature`` on ``inputs`` (columnar request: one JSON per input)."""
        signature = signature or constants.SERVING_DEFAULT
        columns = {
            key: to_json(np.asarray(value), key, binary=True) for key, value in inputs.items()
        }
        body = {"signature_name": signature, "inputs": columns}
        outputs = self._request(f"{self.base}:predict", body)["outputs"]
        dtypes = self._output_dtypes(signature)
        if not isinstance(outputs, dict) or set(outputs) != set(dtypes):
            outputs = {next(iter(dtypes)): outputs}  # one output comes unnamed
        return {name: np.asarray(value, dtypes[name]) for name, value in outputs.items()}

    def metadata(self) -> dict:
        """The model's metadata as the server's REST API returns it."""
        return self._request(f"{self.base}/metadata")

    def status(self) -> dict:
        """The state of the model's versions (``model_version_status``)."""
        return self._request(self.base)

    def _output_dtypes(self, signature: str) -> dict[str, np.dtype]:
        if signature not in self._outputs:
            definitions = self.metadata()["metadata"]["signature_def"]["signature_def"]
            outputs = definitions[signature]["outputs"]
            self._outputs[signature] = {
                name: tf.dtypes.as_dtype(types_pb2.DataType.Value(info["dtype"])).as_numpy_dtype
                for name, info in outputs.items()
            }
        return self._outputs[signature]

    def _request(self, url: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data)
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.load(response)
        except json.JSONDecodeError:
            raise ServingError(grpc.StatusCode.INTERNAL, f"{url}: the reply is not JSON") from None
        except urllib.error.HTTPError as error:
            raise ServingError(from_http_status(error.code), _error_text(error)) from None
        except TimeoutError:
            raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, f"{url}: timed out") from None
        except urllib.error.URLError as error:
            # urllib wraps a timeout while connecting or sending the body.
            code = (
                grpc.StatusCode.DEADLINE_EXCEEDED
                if isinstance(error.reason, TimeoutError)
                else grpc.StatusCode.UNAVAILABLE
            )
            raise ServingError(code, f"{url}: {error.reason}") from None
        except (http.client.HTTPException, ConnectionError) as error:
            # The server went away mid-reply (a restart, a crash): as gRPC would say.
            message = f"{url}: {type(error).__name__}: {error}"
            raise ServingError(grpc.StatusCode.UNAVAILABLE, message) from None


def _error_text(error: urllib.error.HTTPError) -> str:
    text = error.read().decode("utf-8", errors="replace")
    try:
        return json.loads(text)["error"]
    except (ValueError, KeyError, TypeError):
        return text or str(error)
