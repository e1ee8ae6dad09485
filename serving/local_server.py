"""A local PredictionService on TF Serving's SavedModel layout, for tests and development.

Not TF Serving: for production run the official ``tensorflow/serving`` image (README).

Usage::

    python serving/local_server.py --model-name fcn --model-base-path exports/fcn --port 8500
    python serving/local_server.py --model-config-file serving/models.config
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    models = parser.add_mutually_exclusive_group(required=True)
    models.add_argument("--model-base-path", help="folder of numbered SavedModel versions")
    models.add_argument("--model-config-file", help="a ModelServerConfig text proto")
    parser.add_argument("--model-name", default="default", help="with --model-base-path")
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to accept other machines")
    parser.add_argument("--port", type=int, default=8500, help="gRPC port")
    parser.add_argument("--rest-port", type=int, default=8501, help="REST port; 0: no REST")
    parser.add_argument(
        "--poll-seconds", type=float, default=1.0, help="how often to look for new versions"
    )
    parser.add_argument("--threads", type=int, default=16, help="gRPC worker threads")
    parser.add_argument("--max-message-bytes", type=int, default=None)
    parser.add_argument("--no-warmup", action="store_true", help="serve versions unwarmed")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from fcn_tf.serving.config import read_model_server_config, single_model_config
    from fcn_tf.serving.server import LocalServer
    from fcn_tf.serving.tensors import DEFAULT_MAX_MESSAGE_BYTES

    if args.model_config_file:
        config = read_model_server_config(args.model_config_file)
    else:
        config = single_model_config(args.model_name, args.model_base_path)
    server = LocalServer(
        config,
        host=args.host,
        port=args.port,
        rest_port=args.rest_port or None,
        poll_seconds=args.poll_seconds,
        threads=args.threads,
        max_message_bytes=args.max_message_bytes or DEFAULT_MAX_MESSAGE_BYTES,
        warmup=not args.no_warmup,
    ).start()
    rest = f"http://{args.host}:{server.rest_port}" if server.rest_port else "off"
    print(f"serving gRPC on {args.host}:{server.port}, REST {rest}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    try:
        server.wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
