"""The REST front: TF Serving's HTTP API on a ``ThreadingHTTPServer``.

* ``GET /v1/models/NAME[/versions/N | /labels/L]``: version status.
* ``GET /v1/models/NAME[...]/metadata``: the SignatureDefs.
* ``POST /v1/models/NAME[...]:predict``: ``{"signature_name": ..., "instances": [...]}`` (row
  format, answered with ``"predictions"``) or ``{"inputs": ...}`` (columnar, answered with
  ``"outputs"``); string tensors as ``{"b64": "..."}``.

Errors are ``{"error": "..."}`` with TF Serving's HTTP statuses (400 for bad input, 404 for an
unknown model or version).

>>> route("/v1/models/fcn/labels/stable:predict")
('fcn', None, 'stable', ':predict')
>>> route("/v1/models/fcn/versions/3/metadata")
('fcn', 3, '', '/metadata')
"""

from __future__ import annotations

import http.server
import json
import logging
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
from tensorflow_serving.apis import model_pb2

from fcn_tf.serving import service
from fcn_tf.serving.errors import ServingError, invalid, not_found
from fcn_tf.serving.registry import ModelRegistry
from fcn_tf.serving.servable import Signature
from fcn_tf.serving.tensors import from_json, message_to_json, to_json

__all__ = ["make_rest_server", "parse_inputs", "route"]

log = logging.getLogger(__name__)

# A body over the limit is read and dropped up to this many times the limit before the
# answer (so that the client reads it); beyond that the connection is just closed.
_DRAIN_FACTOR = 4
# A chunk-size line: hex digits, optional extensions (RFC 9112 section 7.1).
_CHUNK_SIZE = re.compile(rb"[ \t]*([0-9A-Fa-f]{1,16})[ \t]*(?:;.*)?")

_ROUTE = re.compile(
    r"/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<action>/metadata|:predict)?"
)


def route(path: str) -> tuple[str, int | None, str, str]:
    """``(model, version, label, action)`` of a request path; NOT_FOUND if it is no route.

    >>> route("/v1/models/fcn?debug=1")
    ('fcn', None, '', '')
    >>> route("/v2/models/fcn")
    Traceback (most recent call last):
    ...
    fcn_tf.serving.errors.ServingError: NOT_FOUND: no such resource: /v2/models/fcn ...
    """
    match = _ROUTE.fullmatch(path.split("?", 1)[0])
    if match is None:
        raise not_found(f"no such resource: {path} (try /v1/models/NAME[:predict|/metadata])")
    version = match["version"]
    if version is not None and int(version) >= 2**63:
        # TF Serving parses the version as an int64 (absl::SimpleAtoi) and refuses the rest.
        raise invalid(f"Failed to convert version: {version} to numeric.")
    return (
        match["name"],
        int(version) if version is not None else None,
        match["label"] or "",
        match["action"] or "",
    )


def _named(value: Any, keys: Mapping[str, Any]) -> bool:
    """Whether a JSON value is an object of named inputs (not a ``{"b64": ...}`` value)."""
    if not isinstance(value, dict) or not value:
        return False
    return set(value) != {"b64"} or "b64" in keys


def parse_inputs(body: Mapping[str, Any], signature: Signature) -> tuple[dict, bool]:
    """The input arrays of a predict request body, and whether it used the row format.

    >>> import tensorflow as tf
    >>> spec = {"image_bytes": tf.TensorSpec([None], tf.string)}
    >>> signature = Signature("predict_image_bytes", None, spec, ("class_ids",))
    >>> parse_inputs({"instances": [{"b64": "aGk="}]}, signature)
    ({'image_bytes': array([b'hi'], dtype=object)}, True)
    """
    if ("instances" in body) == ("inputs" in body):
        raise invalid('a predict request has exactly one of "instances" and "inputs"')
    specs = signature.inputs
    if "inputs" in body:
        columns = body["inputs"]
        if not _named(columns, specs):
            columns = _only_input(signature, columns)
        signature.check_keys(columns)
        return {key: from_json(value, specs[key], key) for key, value in columns.items()}, False
    instances = body["instances"]
    if not isinstance(instances, list) or not instances:
        raise invalid('"instances" must be a non-empty list')
    rows = [row if _named(row, specs) else _only_input(signature, row) for row in instances]
    keys = set(rows[0])
    if any(set(row) != keys for row in rows):
        raise invalid("every instance must name the same inputs")
    signature.check_keys(keys)
    return {key: from_json([row[key] for row in rows], specs[key], key) for key in keys}, True


def _only_input(signature: Signature, value: Any) -> dict:
    if len(signature.inputs) != 1:
        raise invalid(
            f"signature '{signature.name}' takes several inputs {sorted(signature.inputs)}: "
            "name them in each instance"
        )
    return {next(iter(signature.inputs)): value}


def format_outputs(outputs: Mapping[str, np.ndarray], row: bool) -> dict:
    """A predict response body: ``predictions`` (per instance) or ``outputs`` (columnar)."""
    single = len(outputs) == 1
    if not row:
        if single:
            ((name, array),) = outputs.items()
            return {"outputs": to_json(array, name)}
        return {"outputs": {name: to_json(array, name) for name, array in outputs.items()}}
    if single:
        ((name, array),) = outputs.items()
        return {"predictions": to_json(array, name)}
    batch = {len(array) for array in outputs.values()}
    if len(batch) != 1:
        raise invalid(
            'outputs of unequal batch sizes cannot be returned per instance: ask with "inputs"'
        )
    columns = {name: to_json(array, name) for name, array in outputs.items()}
    rows = zip(*columns.values(), strict=True)
    return {"predictions": [dict(zip(columns, values, strict=True)) for values in rows]}


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse one connection
    timeout = 60  # seconds: an idle keep-alive or a stalled body frees its thread
    registry: ModelRegistry
    max_body_bytes: int

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._answer(self._get)

    def do_POST(self) -> None:
        self._answer(self._post)

    def _answer(self, handle) -> None:
        try:
            status, body = 200, handle()
        except ServingError as error:
            status, body = error.http_status, {"error": error.message}
        except Exception as error:  # a bug must cost one request, not the server
            log.exception("REST request failed")
            status, body = 500, {"error": f"{type(error).__name__}: {error}"}
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _spec(self) -> tuple[model_pb2.ModelSpec, str]:
        name, version, label, action = route(self.path)
        spec = model_pb2.ModelSpec(name=name)
        if version is not None:
            spec.version.value = version
        elif label:
            spec.version_label = label
        return spec, action

    def _get(self) -> dict:
        spec, action = self._spec()
        if action == ":predict":
            raise invalid("predict takes POST")
        if action == "/metadata":
            servable, definitions = service.signature_def_map(
                self.registry, spec, [service.SIGNATURE_DEF]
            )
            return {
                "model_spec": message_to_json(service.response_spec(spec.name, servable)),
                "metadata": {service.SIGNATURE_DEF: message_to_json(definitions)},
            }
        return message_to_json(service.model_status(self.registry, spec))

    def _post(self) -> dict:
        raw = self._read_body()  # first, so that the connection stays in step on any error
        spec, action = self._spec()
        if action != ":predict":
            raise invalid(f"POST {self.path}: only :predict takes POST")
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as error:
            raise invalid(f"the body is not JSON: {error}") from None
        if not isinstance(body, dict):
            raise invalid("the request body must be a JSON object")
        signature_name = body.get("signature_name", "")
        if not isinstance(signature_name, str):
            raise invalid('"signature_name" must be a string')
        spec.signature_name = signature_name
        servable = self.registry.resolve(spec.name, *service.version_choice(spec))
        signature = servable.signature(signature_name)
        inputs, row = parse_inputs(body, signature)
        return format_outputs(signature.run(inputs), row)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self.close_connection = True
            raise invalid("a POST needs a Content-Length or chunked transfer encoding") from None
        if length < 0:
            self.close_connection = True  # read(-1) would wait for the client to hang up
            raise invalid(f"Content-Length must be non-negative, got {length}")
        if length > self.max_body_bytes:
            self.close_connection = True
            # Read first (up to a bound): a client still sending would otherwise get a reset
            # connection instead of this answer.
            if length <= _DRAIN_FACTOR * self.max_body_bytes:
                self._discard(length)
            raise invalid(f"body of {length} bytes exceeds the limit of {self.max_body_bytes}")
        return self.rfile.read(length)

    def _discard(self, length: int) -> None:
        while length > 0:
            chunk = self.rfile.read(min(length, 2**20))
            if not chunk:
                return
            length -= len(chunk)

    def _read_chunked(self) -> bytes:
        """A ``Transfer-Encoding: chunked`` body (what clients send when the length is not
        known in advance), at most ``max_body_bytes``; over it, the rest is read and dropped
        (up to a bound, as for a Content-Length body) before the refusal."""
        parts, total = [], 0
        while True:
            size = self._chunk_size()
            if size == 0:
                while self.rfile.readline(1024).strip():  # trailer fields, up to a blank line
                    pass
                break
            total += size
            if total > _DRAIN_FACTOR * self.max_body_bytes:
                self.close_connection = True
                break
            if total <= self.max_body_bytes:
                parts.append(self.rfile.read(size))
            else:
                self._discard(size)  # over the limit: read, not kept
            if self.rfile.readline(3) not in (b"\r\n", b"\n"):
                self.close_connection = True
                raise invalid(f"chunk of {size} bytes not followed by CRLF: a wrong chunk size")
        if total > self.max_body_bytes:
            self.close_connection = True
            raise invalid(f"chunked body exceeds the limit of {self.max_body_bytes} bytes")
        return b"".join(parts)

    def _chunk_size(self) -> int:
        line = self.rfile.readline(1024)
        found = _CHUNK_SIZE.fullmatch(line.rstrip(b"\r\n"))
        if found is None:
            self.close_connection = True
            raise invalid(f"bad chunk size line {line[:40]!r}")
        return int(found[1], 16)


def make_rest_server(
    registry: ModelRegistry, host: str, port: int, max_body_bytes: int
) -> http.server.ThreadingHTTPServer:
    """A REST server bound to ``host:port`` (``port=0``: a free one); call ``serve_forever``.

    >>> server = make_rest_server(ModelRegistry([]), "127.0.0.1", 0, 2**20)
    >>> server.server_address[1] > 0
    True
    >>> server.server_close()
    """
    handler = type("Handler", (_Handler,), {"registry": registry, "max_body_bytes": max_body_bytes})
    server = http.server.ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server
