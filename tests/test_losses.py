"""Tests for fcn_tf.losses.SegmentationCrossEntropy."""

from __future__ import annotations

import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import run_python_json

from fcn_tf.losses import SegmentationCrossEntropy

NUM_CLASSES = 4


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _reference(labels, logits, normalize, ignore_label=255, weights=None) -> float:
    num_classes = logits.shape[-1]
    valid = (labels >= 0) & (labels < num_classes)
    if ignore_label is not None:
        valid &= labels != ignore_label
    log_probs = _log_softmax(logits)
    total = 0.0
    for index in zip(*np.nonzero(valid), strict=True):
        weight = 1.0 if weights is None else float(weights[index])
        total -= weight * log_probs[(*index, labels[index])]
    if normalize == "valid":
        return total / max(int(valid.sum()), 1)
    if normalize == "batch":
        return total / labels.shape[0]
    return total


def _random_batch(seed: int = 0, shape=(3, 5, 6)):
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=3.0, size=(*shape, NUM_CLASSES)).astype("float32")
    labels = rng.integers(0, NUM_CLASSES, shape).astype("int32")
    labels[rng.random(shape) < 0.2] = 255
    labels[0, 0, :2] = [-1, NUM_CLASSES + 3]  # out-of-range labels are ignored as well
    return labels, logits


@pytest.mark.parametrize("normalize", ["none", "valid", "batch"])
def test_matches_numpy_reference(normalize):
    labels, logits = _random_batch()
    value = SegmentationCrossEntropy(normalize=normalize)(labels, logits)
    assert value.shape == ()
    assert value.dtype == "float32"
    np.testing.assert_allclose(float(value), _reference(labels, logits, normalize), rtol=1e-5)


@pytest.mark.parametrize("normalize", ["none", "valid", "batch"])
def test_labels_with_channel_axis(normalize):
    labels, logits = _random_batch(1)
    loss = SegmentationCrossEntropy(normalize=normalize)
    np.testing.assert_allclose(
        float(loss(labels[..., None], logits)), float(loss(labels, logits)), rtol=1e-6
    )


@pytest.mark.parametrize("normalize", ["none", "valid", "batch"])
def test_sample_weight(normalize):
    labels, logits = _random_batch(2)
    weights = np.random.default_rng(3).random(labels.shape).astype("float32")
    value = SegmentationCrossEntropy(normalize=normalize)(labels, logits, sample_weight=weights)
    expected = _reference(labels, logits, normalize, weights=weights)
    np.testing.assert_allclose(float(value), expected, rtol=1e-5)


def test_per_image_sample_weight():
    labels, logits = _random_batch(11, shape=(3, 5, 3))  # W == B: naive broadcasting would pass
    weights = np.array([0.5, 0.0, 2.0], "float32")
    value = SegmentationCrossEntropy(normalize="batch")(labels, logits, sample_weight=weights)
    pixel_weights = np.broadcast_to(weights[:, None, None], labels.shape)
    expected = _reference(labels, logits, "batch", weights=pixel_weights)
    np.testing.assert_allclose(float(value), expected, rtol=1e-5)


def test_ignore_label_options():
    labels, logits = _random_batch(4)
    labels[labels == 255] = 0
    in_range = SegmentationCrossEntropy(ignore_label=0)(labels, logits)
    np.testing.assert_allclose(
        float(in_range), _reference(labels, logits, "valid", ignore_label=0), rtol=1e-5
    )
    labels[1] = 255
    no_label = SegmentationCrossEntropy(ignore_label=None)(labels, logits)
    np.testing.assert_allclose(
        float(no_label), _reference(labels, logits, "valid", ignore_label=None), rtol=1e-5
    )


@pytest.mark.parametrize("normalize", ["none", "valid", "batch"])
def test_ignored_logits_affect_neither_value_nor_gradient(normalize):
    labels, logits = _random_batch(5)
    ignored = (labels == 255) | (labels < 0) | (labels >= NUM_CLASSES)
    wild = logits.copy()
    wild[ignored] = np.random.default_rng(6).choice(
        [np.inf, -np.inf, np.nan, 1e30], size=(ignored.sum(), NUM_CLASSES)
    )
    loss = SegmentationCrossEntropy(normalize=normalize)

    def value_and_grad(array):
        variable = tf.Variable(array)
        with tf.GradientTape() as tape:
            value = loss(labels, variable)
        return float(value), tape.gradient(value, variable).numpy()

    value, grad = value_and_grad(logits)
    wild_value, wild_grad = value_and_grad(wild)
    assert np.isfinite(wild_value) and np.all(np.isfinite(wild_grad))
    np.testing.assert_allclose(wild_value, value, rtol=1e-6)
    np.testing.assert_array_equal(wild_grad, grad)
    assert np.all(grad[ignored] == 0)

    # d(-log softmax_y)/dx = softmax - onehot at valid pixels, then the normaliser.
    probs = np.exp(_log_softmax(logits))
    one_hot = np.eye(NUM_CLASSES)[np.where(ignored, 0, labels)]
    expected = np.where(ignored[..., None], 0.0, probs - one_hot)
    denominator = {"none": 1, "valid": (~ignored).sum(), "batch": labels.shape[0]}[normalize]
    np.testing.assert_allclose(grad, expected / denominator, atol=1e-6)


@pytest.mark.parametrize("normalize", ["none", "valid", "batch"])
def test_all_ignored_is_zero_not_nan(normalize):
    logits = tf.Variable(np.random.default_rng(7).normal(size=(2, 3, 3, 4)).astype("float32"))
    labels = np.full((2, 3, 3), 255, "int32")
    with tf.GradientTape() as tape:
        value = SegmentationCrossEntropy(normalize=normalize)(labels, logits)
    assert float(value) == 0.0
    np.testing.assert_array_equal(tape.gradient(value, logits).numpy(), 0.0)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_logits_computed_in_float32(dtype):
    labels, logits = _random_batch(8, shape=(2, 64, 64))
    low = keras.ops.cast(logits, dtype)
    value = SegmentationCrossEntropy(normalize="none")(labels, low)
    assert value.dtype == "float32"
    # Summing ~6.5k terms in float16 would lose about 3 digits; float32 keeps the reference.
    reference = _reference(labels, keras.ops.convert_to_numpy(low).astype("float32"), "none")
    np.testing.assert_allclose(float(value), reference, rtol=1e-5)


def test_invalid_normalize():
    with pytest.raises(ValueError, match="normalize must be one of"):
        SegmentationCrossEntropy(normalize="mean")


def test_config_round_trip():
    loss = SegmentationCrossEntropy(ignore_label=0, normalize="batch", name="xent")
    config = loss.get_config()
    assert config == {"name": "xent", "ignore_label": 0, "normalize": "batch"}
    clone = SegmentationCrossEntropy.from_config(config)
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert isinstance(restored, SegmentationCrossEntropy)
    assert restored.get_config() == config
    labels, logits = _random_batch(9)
    np.testing.assert_allclose(float(restored(labels, logits)), float(loss(labels, logits)))


def _tiny_model() -> keras.Model:
    inputs = keras.Input((6, 6, 3))
    outputs = keras.layers.Conv2D(
        NUM_CLASSES, 1, kernel_initializer=keras.initializers.Constant(0.1)
    )(inputs)
    return keras.Model(inputs, outputs)


def test_compile_fit_evaluate_and_save(tmp_path):
    rng = np.random.default_rng(10)
    images = rng.normal(size=(4, 6, 6, 3)).astype("float32")
    labels = rng.integers(0, NUM_CLASSES, (4, 6, 6)).astype("int32")
    labels[rng.random(labels.shape) < 0.25] = 255
    model = _tiny_model()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=SegmentationCrossEntropy())
    history = model.fit(images, labels, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])

    # One batch: Keras' loss tracker must report exactly the loss' own scalar.
    evaluated = model.evaluate(images, labels, batch_size=4, verbose=0)
    direct = _reference(labels, model.predict(images, verbose=0), "valid")
    np.testing.assert_allclose(evaluated, direct, rtol=1e-5)

    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    assert isinstance(restored.loss, SegmentationCrossEntropy)
    np.testing.assert_allclose(restored.evaluate(images, labels, verbose=0), evaluated, rtol=1e-6)


_DISTRIBUTED_SCRIPT = textwrap.dedent(
    """
    import json
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from fcn_tf.losses import SegmentationCrossEntropy

    rng = np.random.default_rng(0)
    images = rng.normal(size=(4, 6, 6, 3)).astype("float32")
    labels = rng.integers(0, 4, (4, 6, 6)).astype("int32")
    labels[0, :4] = 255  # the replicas see different numbers of valid pixels
    kernel = rng.normal(size=(1, 1, 3, 4)).astype("float32")

    def new_model():
        model = keras.Sequential([keras.Input((6, 6, 3)), keras.layers.Conv2D(4, 1)])
        model.set_weights([kernel, np.zeros(4, "float32")])
        return model

    def one_step(normalize, strategy):
        with strategy.scope():
            model = new_model()
            model.compile(optimizer=keras.optimizers.SGD(0.01),
                          loss=SegmentationCrossEntropy(normalize=normalize))
        model.fit(images, labels, batch_size=4, epochs=1, shuffle=False, verbose=0)
        return model.get_weights()[0].tolist()

    def mean_of_replica_means_step():
        # What "valid" means under a strategy: each replica averages its own valid pixels.
        model, loss = new_model(), SegmentationCrossEntropy(normalize="valid")
        with tf.GradientTape() as tape:
            logits = model(images)
            value = (loss(labels[:2], logits[:2]) + loss(labels[2:], logits[2:])) / 2
        grads = tape.gradient(value, model.trainable_variables)
        keras.optimizers.SGD(0.01).apply(grads, model.trainable_variables)
        return model.get_weights()[0].tolist()

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    default = tf.distribute.get_strategy()
    out = {normalize: [one_step(normalize, default), one_step(normalize, mirrored)]
           for normalize in ("none", "batch")}
    out["valid"] = [mean_of_replica_means_step(), one_step("valid", mirrored)]
    print("RESULT" + json.dumps(out))
    """
)


def test_mirrored_strategy_gradients_match_single_device():
    """none and batch equal one device exactly; valid averages each replica's own mean."""
    # Logical devices must be configured before TF initialises, hence a fresh interpreter.
    for normalize, (single, mirrored) in run_python_json(_DISTRIBUTED_SCRIPT).items():
        np.testing.assert_allclose(mirrored, single, rtol=1e-5, atol=1e-6, err_msg=normalize)
