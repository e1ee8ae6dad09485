"""Serving errors as TF Serving reports them: a gRPC status code, and its HTTP status for REST.

>>> error = ServingError(grpc.StatusCode.NOT_FOUND, "model 'x' is not served")
>>> error.http_status, str(error)
(404, "NOT_FOUND: model 'x' is not served")
>>> from_http_status(400)
<StatusCode.INVALID_ARGUMENT: (3, 'invalid argument')>
"""

from __future__ import annotations

import grpc
import tensorflow as tf

__all__ = ["ServingError", "from_http_status", "from_tf_error", "invalid", "not_found"]

# TF Serving's REST gateway maps status codes to HTTP statuses like this (http_rest_api_util).
_HTTP = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}
# TensorFlow's error codes are gRPC's numbers (both come from google.rpc.Code).
_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}
# Several codes share an HTTP status: the first listed above is the one a REST client reports.
_FROM_HTTP: dict[int, grpc.StatusCode] = {}
for _code, _status in _HTTP.items():
    _FROM_HTTP.setdefault(_status, _code)


class ServingError(Exception):
    """A failed request: ``code`` (a ``grpc.StatusCode``) and a message for the caller.

    >>> error = ServingError(grpc.StatusCode.UNAVAILABLE, "server restarting")
    >>> error.code.name, error.message, error.http_status
    ('UNAVAILABLE', 'server restarting', 503)
    >>> ServingError(grpc.StatusCode.DATA_LOSS, "corrupt").http_status  # unmapped: 500
    500
    """

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return _HTTP.get(self.code, 500)


def invalid(message: str) -> ServingError:
    """An INVALID_ARGUMENT (HTTP 400) refusal.

    >>> invalid("4 channels").http_status
    400
    """
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServingError:
    """A NOT_FOUND (HTTP 404) refusal.

    >>> not_found("model 'x'").http_status
    404
    """
    return ServingError(grpc.StatusCode.NOT_FOUND, message)


def from_tf_error(error: tf.errors.OpError) -> ServingError:
    """The status of a TensorFlow runtime error (``InvalidArgumentError`` -> INVALID_ARGUMENT).

    >>> from_tf_error(tf.errors.InvalidArgumentError(None, None, "bad image")).code.name
    'INVALID_ARGUMENT'
    """
    code = _BY_NUMBER.get(error.error_code, grpc.StatusCode.INTERNAL)
    return ServingError(code, error.message)


def from_http_status(status: int) -> grpc.StatusCode:
    """The status code a REST client reports for an HTTP status (UNKNOWN if none maps).

    >>> from_http_status(404).name, from_http_status(503).name, from_http_status(418).name
    ('NOT_FOUND', 'UNAVAILABLE', 'UNKNOWN')
    """
    return _FROM_HTTP.get(status, grpc.StatusCode.UNKNOWN)
