"""Helpers shared by the tests."""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

REPO_ROOT = Path(__file__).resolve().parents[1]


def dynamic(model: keras.Model):
    """The model as one traced function for any batch, height and width."""
    spec = tf.TensorSpec([None, None, None, 3], tf.float32)
    return tf.function(lambda x: model(x, training=False), input_signature=[spec])


def randomize(model: keras.Model, rng: np.random.Generator, symmetric: bool = False) -> None:
    """Random weights everywhere (score layers included); kernels mirror-symmetric if asked."""
    for layer in model.layers:
        weights = []
        for w in layer.get_weights():
            fan_in = int(np.prod(w.shape[:-1])) if w.ndim > 1 else 50
            v = rng.normal(0.0, np.sqrt(2.0 / fan_in), w.shape).astype("float32")
            if symmetric and w.ndim == 4:
                v = (v + v[::-1] + v[:, ::-1] + v[::-1, ::-1]) / 4
            weights.append(v)
        if weights:
            layer.set_weights(weights)


def images(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.uniform(0, 255, shape).astype("float32")


def run_python(script: str, env: dict | None = None, timeout: float = 240) -> str:
    """Run ``script`` in a fresh interpreter (a clean TensorFlow runtime); return its stdout.

    Fresh processes are how tests get logical devices or another Keras backend, both of
    which must be chosen before TensorFlow or Keras initialise.
    """
    environment = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "CUDA_VISIBLE_DEVICES": "",
        **(env or {}),
    }
    completed = subprocess.run(
        [sys.executable, "-c", script],
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout


def run_python_json(script: str, **kwargs) -> dict:
    """Like :func:`run_python` for a script that prints one line ``RESULT<json>``."""
    stdout = run_python(script, **kwargs)
    line = next(s for s in stdout.splitlines() if s.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])


def pixel_classifier(num_classes: int, seed: int = 0) -> keras.Model:
    """A one-layer per-pixel classifier with random weights: exports and runs in a blink, and
    two seeds give two models whose answers tell them apart."""
    model = keras.Sequential(
        [keras.Input((None, None, 3)), keras.layers.Conv2D(num_classes, 3, padding="same")]
    )
    randomize(model, np.random.default_rng(seed))
    return model


def random_thin_fcn(num_classes: int, seed: int = 1) -> keras.Model:
    """A thin FCN-8s (VGG16 at 1/32 width) with random weights everywhere: a fast model
    whose class maps vary from pixel to pixel."""
    from conftest import TINY_VGG

    from fcn_tf.models import build_fcn

    model = build_fcn(num_classes, 8, backbone_options=dict(TINY_VGG))
    randomize(model, np.random.default_rng(seed))
    return model


def keras_class_ids(model: keras.Model, images) -> np.ndarray:
    """The reference class ids: the Keras model eagerly on float images, argmax in numpy."""
    return np.argmax(np.asarray(model(np.asarray(images, np.float32))), axis=-1)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for a server started in another process)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
