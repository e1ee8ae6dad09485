"""Serving fcn_tf exports: TF Serving clients, and a local stand-in for TF Serving.

* :mod:`~fcn_tf.serving.client`: :class:`GrpcClient` and :class:`RestClient`.
* :mod:`~fcn_tf.serving.server`: :class:`LocalServer` (PredictionService over gRPC, the REST
  API, a version watcher), for tests and development without Docker.
* :mod:`~fcn_tf.serving.config`: TF Serving's model config and batching parameters files.

>>> from fcn_tf.serving import ServingError
>>> import grpc
>>> ServingError(grpc.StatusCode.INVALID_ARGUMENT, "bad").http_status
400
"""

from fcn_tf.serving.client import GrpcClient, RestClient
from fcn_tf.serving.errors import ServingError
from fcn_tf.serving.server import LocalServer

__all__ = ["GrpcClient", "LocalServer", "RestClient", "ServingError"]
