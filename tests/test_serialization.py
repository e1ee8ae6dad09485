"""Every variant round-trips through .keras (safe mode) and SavedModel with dynamic H and W."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import TINY_VGG
from helpers import images, randomize

from fcn_tf.models import build_fcn

VARIANTS = [
    (stride, "vgg16", geometry, False, TINY_VGG)
    for stride in (32, 16, 8)
    for geometry in ("caffe", "same")
] + [
    (8, "vgg16", "caffe", True, TINY_VGG),
    (8, "resnet50", "same", False, {}),
    (8, "mobilenet_v2", "same", False, {"alpha": 0.35}),
]
IDS = [f"{s}s-{b}-{g}{'-atonce' if a else ''}" for s, b, g, a, _ in VARIANTS]


def trained_looking(stride, backbone, geometry, at_once, options, seed=0):
    """A model with every weight random, so a lost weight shows in the outputs."""
    model = build_fcn(
        3, stride, backbone=backbone, geometry=geometry, at_once=at_once, backbone_options=options
    )
    randomize(model, np.random.default_rng(seed))
    return model


@pytest.mark.parametrize("variant", VARIANTS, ids=IDS)
def test_keras_file_round_trip_in_safe_mode(variant, tmp_path, rng):
    model = trained_looking(*variant)
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    assert [type(layer) for layer in restored.layers] == [type(layer) for layer in model.layers]
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in restored.layers)
    trainable = [layer.trainable for layer in model.layers]
    assert [layer.trainable for layer in restored.layers] == trainable
    for h, w in [(37, 53), (64, 48)]:
        x = images(rng, 1, h, w, 3)
        np.testing.assert_array_equal(restored(x, training=False), model(x, training=False))


@pytest.mark.parametrize("variant", VARIANTS, ids=IDS)
def test_saved_model_round_trip_dynamic_shape(variant, tmp_path, rng):
    model = trained_looking(*variant)
    spec = tf.TensorSpec([None, None, None, 3], tf.float32, name="image")
    serve = tf.function(lambda image: model(image, training=False), input_signature=[spec])
    tf.saved_model.save(model, str(tmp_path), signatures={"serving_default": serve})
    restored = tf.saved_model.load(str(tmp_path)).signatures["serving_default"]
    assert restored.structured_input_signature[1]["image"].shape.as_list() == [None, None, None, 3]
    for h, w in [(37, 53), (96, 128), (1, 1)]:
        x = images(rng, 2, h, w, 3)
        (got,) = restored(image=tf.constant(x)).values()
        expected = model(x, training=False).numpy()
        # Graph and eager execution may pick different oneDNN kernels: float32 round-off only.
        scale = np.abs(expected).max()
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-5 * scale)


def test_config_round_trip_is_exact():
    model = build_fcn(3, 8, at_once=True, backbone_options=TINY_VGG)
    restored = keras.Model.from_config(model.get_config())
    assert restored.get_config() == model.get_config()
