"""A local stand-in for ``tensorflow_model_server``: gRPC and REST on the same SavedModel layout.

For tests and development without Docker; production serving is the official
``tensorflow/serving`` image (see the README). It serves TF Serving's ``PredictionService``
(Predict, GetModelMetadata) and ``ModelService.GetModelStatus`` over gRPC, TF Serving's REST
API over HTTP, and watches each model's base path for new versions.

>>> import tempfile
>>> from fcn_tf.serving.config import single_model_config
>>> with LocalServer(single_model_config("fcn", tempfile.mkdtemp()), port=0, rest_port=0) as s:
...     s.port > 0 and s.rest_port > 0
True
"""

from __future__ import annotations

import logging
import threading
from concurrent import futures

import grpc
from tensorflow_serving.config import model_server_config_pb2

from fcn_tf.serving.config import model_configs
from fcn_tf.serving.grpc_service import add_services
from fcn_tf.serving.registry import ModelRegistry, Watcher
from fcn_tf.serving.rest import make_rest_server
from fcn_tf.serving.tensors import DEFAULT_MAX_MESSAGE_BYTES, message_size_options

__all__ = ["LocalServer"]

log = logging.getLogger(__name__)


class LocalServer:
    """gRPC (and REST) serving of the models of ``config``, with a version watcher.

    Args:
        config: a ``ModelServerConfig`` (see :mod:`fcn_tf.serving.config`).
        host: the address both servers bind (``127.0.0.1``: this machine only).
        port: gRPC port; ``0`` takes a free one (read it from :attr:`port` after start).
        rest_port: REST port, ``0`` for a free one, ``None`` for no REST server.
        poll_seconds: how often base paths are scanned for new versions.
        threads: gRPC worker threads (requests run concurrently on TensorFlow's pools).
        max_message_bytes: largest gRPC message either way, and largest REST body.
        warmup: run ``serving_default`` once on a small image before a version is served.

    >>> import keras, numpy as np, tempfile
    >>> from fcn_tf.export import export_saved_model
    >>> from fcn_tf.serving import GrpcClient, config
    >>> base = tempfile.mkdtemp()
    >>> model = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(3, 1)])
    >>> _ = export_saved_model(model, base)
    >>> with LocalServer(config.single_model_config("fcn", base), port=0, rest_port=None) as s:
    ...     with GrpcClient(f"127.0.0.1:{s.port}", "fcn") as client:
    ...         client.predict(np.zeros((5, 7, 3), "uint8")).shape
    (5, 7)
    """

    def __init__(
        self,
        config: model_server_config_pb2.ModelServerConfig,
        *,
        host: str = "127.0.0.1",
        port: int = 8500,
        rest_port: int | None = 8501,
        poll_seconds: float = 1.0,
        threads: int = 16,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        warmup: bool = True,
    ) -> None:
        self.registry = ModelRegistry(model_configs(config), warmup=warmup)
        self.host = host
        self.port = port
        self.rest_port = rest_port
        self.max_message_bytes = max_message_bytes
        options = message_size_options(max_message_bytes)
        # Kept: grpc.server.stop() does not shut down the executor it was given.
        self._executor = futures.ThreadPoolExecutor(threads)
        self._grpc = grpc.server(self._executor, options=options)
        add_services(self._grpc, self.registry, max_message_bytes)
        self._watcher = Watcher(self.registry, poll_seconds)
        self._rest = None
        self._rest_thread = None
        self._started = False

    def start(self) -> LocalServer:
        """Load the versions there are now, bind the ports and start serving and watching."""
        self.registry.refresh()
        self._started = True  # from here on, a failure stops what did start
        try:
            bound = self._grpc.add_insecure_port(f"{self.host}:{self.port}")
            if not bound:
                raise OSError(f"cannot bind gRPC to {self.host}:{self.port}")
            self.port = bound
            if self.rest_port is not None:
                self._rest = make_rest_server(
                    self.registry, self.host, self.rest_port, self.max_message_bytes
                )
                self.rest_port = self._rest.server_address[1]
                self._rest_thread = threading.Thread(
                    target=self._rest.serve_forever, name="rest", daemon=True
                )
                self._rest_thread.start()
            self._grpc.start()
            self._watcher.start()
        except BaseException:
            self.stop(grace=0)
            raise
        log.info("serving gRPC on %s:%d, REST on %s", self.host, self.port, self.rest_port)
        return self

    def stop(self, grace: float | None = 1.0) -> None:
        """Stop watching and serving; requests running get ``grace`` seconds to finish."""
        if not self._started:
            return
        self._started = False
        self._watcher.stop(timeout=60)
        if self._rest_thread is not None:
            self._rest.shutdown()
        if self._rest is not None:
            self._rest.server_close()
        self._grpc.stop(grace).wait()
        self._executor.shutdown(wait=False)

    def wait(self) -> None:
        """Block until the gRPC server stops."""
        self._grpc.wait_for_termination()

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
