"""The gRPC front: TF Serving's ``PredictionService`` (Predict, GetModelMetadata) and
``ModelService.GetModelStatus`` over a :class:`~fcn_tf.serving.registry.ModelRegistry`.

Every failure is answered with a status code (as TF Serving's: NOT_FOUND for an unknown model
or version, INVALID_ARGUMENT for inputs that do not fit the signature), never by dropping the
connection; an unexpected exception is INTERNAL and logged with its traceback.

>>> from concurrent import futures
>>> server = grpc.server(futures.ThreadPoolExecutor(1))
>>> add_services(server, ModelRegistry([]))
>>> server.stop(None).wait()
True
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from fcn_tf.serving import service
from fcn_tf.serving.errors import ServingError, invalid
from fcn_tf.serving.registry import ModelRegistry
from fcn_tf.serving.tensors import from_proto, to_proto

__all__ = ["ModelService", "PredictionService", "add_services"]

log = logging.getLogger(__name__)
T = TypeVar("T")


def _answer(context: grpc.ServicerContext, call: Callable[[], T]) -> T:
    """``call()``, or the context aborted with the status of its error."""
    try:
        return call()
    except ServingError as error:
        failure = error
    except Exception as error:  # a bug must cost one request, not the server
        log.exception("request failed")
        failure = ServingError(grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}")
    context.abort(failure.code, failure.message)


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict and GetModelMetadata; Classify, Regress and MultiInference stay UNIMPLEMENTED
    (they take ``tf.Example`` inputs, which image models do not).

    >>> class Context:  # grpc's: abort() ends the call with a status
    ...     def abort(self, code, details):
    ...         raise RuntimeError(f"{code.name}: {details}")
    >>> request = predict_pb2.PredictRequest(model_spec={"name": "fcn"})
    >>> request.inputs["images"].CopyFrom(to_proto(tf.zeros((1, 4, 4, 3), tf.uint8)))
    >>> PredictionService(ModelRegistry([]), max_tensor_bytes=16).Predict(request, Context())
    Traceback (most recent call last):
    ...
    RuntimeError: INVALID_ARGUMENT: input 'images' holds 48 bytes, over the limit of 16
    """

    def __init__(self, registry: ModelRegistry, max_tensor_bytes: int) -> None:
        self.registry = registry
        self.max_tensor_bytes = max_tensor_bytes

    def Predict(
        self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext
    ) -> predict_pb2.PredictResponse:
        return _answer(context, lambda: self._predict(request))

    def _predict(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        inputs = {}
        for key, proto in request.inputs.items():
            self._check_size(key, proto)
            inputs[key] = from_proto(proto, key)
        spec = request.model_spec
        servable, signature, outputs = service.predict(
            self.registry, spec, inputs, request.output_filter
        )
        response = predict_pb2.PredictResponse(
            model_spec=service.response_spec(spec.name, servable, signature.name)
        )
        for name, array in outputs.items():
            response.outputs[name].CopyFrom(to_proto(array))
        return response

    def _check_size(self, key: str, proto: Any) -> None:
        # A proto may state a huge shape with one value, which make_ndarray would repeat.
        try:
            itemsize = max(1, tf.dtypes.as_dtype(proto.dtype).size)  # strings: >= 1 byte each
        except TypeError:
            raise invalid(f"input '{key}': unknown dtype enum {proto.dtype}") from None
        size = itemsize
        for dim in proto.tensor_shape.dim:
            if dim.size < 0:
                raise invalid(f"input '{key}': negative dimension {dim.size}")
            size *= dim.size
        if size > self.max_tensor_bytes:
            raise invalid(
                f"input '{key}' holds {size} bytes, over the limit of {self.max_tensor_bytes}"
            )

    def GetModelMetadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, context: grpc.ServicerContext
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        return _answer(context, lambda: self._metadata(request))

    def _metadata(self, request) -> get_model_metadata_pb2.GetModelMetadataResponse:
        servable, definitions = service.signature_def_map(
            self.registry, request.model_spec, request.metadata_field
        )
        response = get_model_metadata_pb2.GetModelMetadataResponse(
            model_spec=service.response_spec(request.model_spec.name, servable)
        )
        response.metadata[service.SIGNATURE_DEF].Pack(definitions)
        return response


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus; HandleReloadConfigRequest stays UNIMPLEMENTED (the watcher reloads).

    >>> class Context:  # grpc's: abort() ends the call with a status
    ...     def abort(self, code, details):
    ...         raise RuntimeError(f"{code.name}: {details}")
    >>> request = get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "fcn"})
    >>> ModelService(ModelRegistry([])).GetModelStatus(request, Context())
    Traceback (most recent call last):
    ...
    RuntimeError: NOT_FOUND: model 'fcn' is not served here; models: []
    """

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    def GetModelStatus(
        self, request: get_model_status_pb2.GetModelStatusRequest, context: grpc.ServicerContext
    ) -> get_model_status_pb2.GetModelStatusResponse:
        return _answer(context, lambda: service.model_status(self.registry, request.model_spec))


def add_services(
    server: grpc.Server, registry: ModelRegistry, max_tensor_bytes: int = 2**31 - 1
) -> None:
    """Register both services of ``registry`` on ``server``.

    >>> from concurrent import futures
    >>> server = grpc.server(futures.ThreadPoolExecutor(1))
    >>> add_services(server, ModelRegistry([]))
    >>> port = server.add_insecure_port("127.0.0.1:0")
    >>> server.start()
    >>> stub = model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
    >>> stub.GetModelStatus.future(get_model_status_pb2.GetModelStatusRequest()).code()
    <StatusCode.NOT_FOUND: (5, 'not found')>
    >>> server.stop(None).wait()
    True
    """
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(registry, max_tensor_bytes), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(registry), server)
