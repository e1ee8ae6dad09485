"""Helpers shared by the model tests."""

import keras
import numpy as np
import tensorflow as tf


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
