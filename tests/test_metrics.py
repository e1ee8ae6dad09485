"""Tests for fcn_tf.metrics: NumPy scores and the streaming ConfusionMatrix metric."""

from __future__ import annotations

import math
import textwrap

import keras
import numpy as np
import pytest
from helpers import run_python_json

from fcn_tf.metrics import SCORE_NAMES, ConfusionMatrix, MeanIU, confusion_matrix, scores


def _random_maps(seed: int, num_classes: int, shape=(4, 12, 10)):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, shape).astype("int32")
    labels[rng.random(shape) < 0.1] = 255
    logits = rng.normal(size=(*shape, num_classes)).astype("float32")
    return labels, logits


def _brute_force_scores(labels, predictions, num_classes) -> dict:
    """The paper's formulas, one pixel and one class at a time."""
    n = [[0] * num_classes for _ in range(num_classes)]
    for label, prediction in zip(
        labels.ravel().tolist(), predictions.ravel().tolist(), strict=True
    ):
        if 0 <= label < num_classes:
            n[label][prediction] += 1
    t = [sum(row) for row in n]
    predicted = [sum(n[j][i] for j in range(num_classes)) for i in range(num_classes)]
    accuracy = [n[i][i] / t[i] if t[i] else math.nan for i in range(num_classes)]
    iu = [
        n[i][i] / (t[i] + predicted[i] - n[i][i]) if t[i] + predicted[i] else math.nan
        for i in range(num_classes)
    ]

    def nanmean(values):
        defined = [v for v in values if not math.isnan(v)]
        return sum(defined) / len(defined)

    return {
        "pixel_accuracy": sum(n[i][i] for i in range(num_classes)) / sum(t),
        "mean_accuracy": nanmean(accuracy),
        "mean_iu": nanmean(iu),
        "frequency_weighted_iu": sum(t[i] * iu[i] for i in range(num_classes) if t[i]) / sum(t),
        "per_class_iu": iu,
        "per_class_accuracy": accuracy,
    }


def test_confusion_matrix_matches_loop():
    labels, logits = _random_maps(0, 5)
    predictions = logits.argmax(-1)
    expected = np.zeros((5, 5), np.int64)
    for label, prediction in zip(labels.ravel(), predictions.ravel(), strict=True):
        if label < 5:
            expected[label, prediction] += 1
    result = confusion_matrix(labels, predictions, 5)
    assert result.dtype == np.int64
    np.testing.assert_array_equal(result, expected)


def test_confusion_matrix_rejects_bad_input():
    with pytest.raises(ValueError, match="differ in size"):
        confusion_matrix([0, 1], [0], 2)
    with pytest.raises(ValueError, match="predictions must lie"):
        confusion_matrix([0, 1], [0, 2], 2)
    # Out-of-range predictions at ignored pixels are harmless.
    np.testing.assert_array_equal(confusion_matrix([0, 255], [0, 7], 2), [[1, 0], [0, 0]])


@pytest.mark.parametrize("seed", range(3))
def test_scores_match_brute_force(seed):
    num_classes = 6
    labels, logits = _random_maps(seed, num_classes)
    labels[labels == 4] = 255  # class 4 only predicted: IU 0, accuracy undefined
    predictions = logits.argmax(-1)
    predictions[predictions == 5] = 0  # class 5 absent everywhere: both undefined
    labels[labels == 5] = 0
    result = scores(confusion_matrix(labels, predictions, num_classes))
    expected = _brute_force_scores(labels, predictions, num_classes)
    assert set(result) == set(expected)
    for key in SCORE_NAMES:
        assert isinstance(result[key], float)
        assert result[key] == pytest.approx(expected[key], rel=1e-12)
    for key in ("per_class_iu", "per_class_accuracy"):
        np.testing.assert_allclose(result[key], expected[key], rtol=1e-12)
    assert result["per_class_iu"][4] == 0 and np.isnan(result["per_class_accuracy"][4])
    assert np.isnan(result["per_class_iu"][5])


# Two classes, labels / predictions per pixel (255 = ignored):
#   labels      0 0 0 1 1 255
#   predictions 0 0 1 1 0 1
# n00 = 2, n01 = 1, n10 = 1, n11 = 1; t = (3, 2); column sums = (3, 2).
HAND_LABELS = np.array([[[0, 0, 0], [1, 1, 255]]])
HAND_PREDICTIONS = np.array([[[0, 0, 1], [1, 0, 1]]])
HAND_CONFUSION = [[2, 1], [1, 1]]
HAND_SCORES = {
    "pixel_accuracy": 3 / 5,
    "mean_accuracy": (2 / 3 + 1 / 2) / 2,  # 7/12
    "mean_iu": (2 / (3 + 3 - 2) + 1 / (2 + 2 - 1)) / 2,  # (1/2 + 1/3) / 2 = 5/12
    "frequency_weighted_iu": (3 * 1 / 2 + 2 * 1 / 3) / 5,  # 13/30
}


def test_hand_computed_example():
    confusion = confusion_matrix(HAND_LABELS, HAND_PREDICTIONS, 2)
    np.testing.assert_array_equal(confusion, HAND_CONFUSION)
    result = scores(confusion)
    for key, value in HAND_SCORES.items():
        assert result[key] == pytest.approx(value, rel=1e-12)
    np.testing.assert_allclose(result["per_class_iu"], [1 / 2, 1 / 3])
    np.testing.assert_allclose(result["per_class_accuracy"], [2 / 3, 1 / 2])


@pytest.mark.parametrize("score", SCORE_NAMES)
def test_streaming_hand_computed_example(score):
    metric = ConfusionMatrix(2, score=score)
    # One-hot "logits" exercise the argmax path.
    metric.update_state(HAND_LABELS, np.eye(2, dtype="float32")[HAND_PREDICTIONS])
    assert metric.name == score
    np.testing.assert_array_equal(metric.confusion_matrix(), HAND_CONFUSION)
    assert float(metric.result()) == pytest.approx(HAND_SCORES[score], rel=1e-6)


def test_empty_confusion():
    result = scores(np.zeros((3, 3), np.int64))
    assert all(math.isnan(result[key]) for key in SCORE_NAMES)
    metric = ConfusionMatrix(3)
    assert float(metric.result()) == 0.0


def test_streaming_matches_keras_mean_iou_and_numpy():
    num_classes = 7
    labels, logits = _random_maps(10, num_classes)
    ours = ConfusionMatrix(num_classes)
    reference = keras.metrics.MeanIoU(num_classes, ignore_class=255, sparse_y_pred=False)
    ours.update_state(labels, logits)
    reference.update_state(labels, logits)
    assert float(ours.result()) == pytest.approx(float(reference.result()), rel=1e-6)
    expected = confusion_matrix(labels, logits.argmax(-1), num_classes)
    np.testing.assert_array_equal(ours.confusion_matrix(), expected)
    np.testing.assert_array_equal(
        ours.confusion_matrix(), keras.ops.convert_to_numpy(reference.total_cm).astype(np.int64)
    )
    assert ours.scores()["mean_iu"] == pytest.approx(float(ours.result()), rel=1e-6)


def test_streaming_over_batches_equals_one_shot():
    num_classes = 5
    labels, logits = _random_maps(11, num_classes, shape=(6, 9, 8))
    one_shot = ConfusionMatrix(num_classes)
    one_shot.update_state(labels, logits)
    streamed = ConfusionMatrix(num_classes)
    for start in range(0, 6, 2):
        streamed.update_state(labels[start : start + 2], logits[start : start + 2])
    np.testing.assert_array_equal(streamed.confusion_matrix(), one_shot.confusion_matrix())
    assert float(streamed.result()) == float(one_shot.result())
    streamed.reset_state()
    np.testing.assert_array_equal(streamed.confusion_matrix(), 0)


def test_ignored_labels_excluded():
    labels = np.array([[[0, 1, 255, -1, 2, 7]]])
    predictions = np.array([[[0, 0, 1, 1, 1, 1]]])
    metric = ConfusionMatrix(3)
    metric.update_state(labels, predictions)
    np.testing.assert_array_equal(metric.confusion_matrix(), [[1, 0, 0], [1, 0, 0], [0, 1, 0]])
    in_range = ConfusionMatrix(3, ignore_label=0)
    in_range.update_state(labels, predictions)
    np.testing.assert_array_equal(in_range.confusion_matrix(), [[0, 0, 0], [1, 0, 0], [0, 1, 0]])
    # Out-of-range predicted ids are dropped rather than corrupting a neighbouring cell.
    metric.reset_state()
    metric.update_state([[0, 1]], [[5, 1]])
    np.testing.assert_array_equal(metric.confusion_matrix(), [[0, 0, 0], [0, 1, 0], [0, 0, 0]])


def test_input_layouts():
    num_classes = 4
    labels, logits = _random_maps(12, num_classes)
    ids = logits.argmax(-1)
    expected = confusion_matrix(labels, ids, num_classes)
    layouts = [
        (labels[..., None], logits),
        (labels, ids),
        (labels[..., None], ids[..., None]),
        (labels.astype("float32"), ids.astype("float32")),
    ]
    for y_true, y_pred in layouts:
        metric = ConfusionMatrix(num_classes)
        metric.update_state(y_true, y_pred)
        np.testing.assert_array_equal(metric.confusion_matrix(), expected)


def test_sample_weight():
    num_classes = 4
    labels, logits = _random_maps(13, num_classes)
    ids = logits.argmax(-1)
    mask = np.random.default_rng(14).random(labels.shape) < 0.5
    metric = ConfusionMatrix(num_classes)
    metric.update_state(labels, logits, sample_weight=mask.astype("float32")[..., None])
    np.testing.assert_array_equal(
        metric.confusion_matrix(), confusion_matrix(labels[mask], ids[mask], num_classes)
    )
    per_image = ConfusionMatrix(num_classes)
    per_image.update_state(labels, logits, sample_weight=np.array([1, 0, 2, 0]))
    expected = confusion_matrix(labels[[0, 2, 2]], ids[[0, 2, 2]], num_classes)
    np.testing.assert_array_equal(per_image.confusion_matrix(), expected)
    # Weighted counts are integers too: 2^24 + 1 is where a float32 sum would stop.
    large = ConfusionMatrix(2)
    large.update_state([[0, 0]], [[0, 0]], sample_weight=[[2**24, 1]])
    assert large.confusion_matrix()[0, 0] == 2**24 + 1


def test_one_class_scores_shaped_as_the_labels_are_scores_not_ids():
    labels = np.zeros((1, 2, 2, 1), "int32")
    logits = np.array([0.7, 1.5, -2.3, 0.1], "float32").reshape(1, 2, 2, 1)
    metric = ConfusionMatrix(1)
    metric.update_state(labels, logits)  # argmax over the one class: every pixel is class 0
    np.testing.assert_array_equal(metric.confusion_matrix(), [[4]])
    ids = ConfusionMatrix(2)
    ids.update_state(labels, np.array([0, 1, 1, 0], "int32").reshape(1, 2, 2, 1))
    np.testing.assert_array_equal(ids.confusion_matrix(), [[2, 2], [0, 0]])


def test_counts_stay_exact_beyond_float32_range():
    metric = ConfusionMatrix(2)
    metric.confusion.assign(np.array([[2**24, 0], [0, 2**40]], np.int64))
    metric.update_state([[0, 1]], [[0, 1]])
    np.testing.assert_array_equal(metric.confusion_matrix(), [[2**24 + 1, 0], [0, 2**40 + 1]])


def test_config_round_trip():
    metric = ConfusionMatrix(21, score="frequency_weighted_iu", ignore_label=None, name="fwiu")
    config = metric.get_config()
    assert config["num_classes"] == 21 and config["ignore_label"] is None
    assert config["score"] == "frequency_weighted_iu" and config["name"] == "fwiu"
    assert ConfusionMatrix.from_config(config).get_config() == config
    for original in (metric, MeanIU(5, ignore_label=0)):
        restored = keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(original)
        )
        assert type(restored) is type(original)
        assert restored.get_config() == original.get_config()
    assert "score" not in MeanIU(5).get_config() and MeanIU(5).name == "mean_iu"


def test_invalid_arguments():
    with pytest.raises(ValueError, match="score must be one of"):
        ConfusionMatrix(3, score="iou")
    with pytest.raises(ValueError, match="num_classes"):
        ConfusionMatrix(0)


def test_in_compiled_model():
    num_classes = 3
    rng = np.random.default_rng(15)
    images = rng.normal(size=(4, 5, 5, 2)).astype("float32")
    labels = rng.integers(0, num_classes, (4, 5, 5)).astype("int32")
    labels[0, 0] = 255
    model = keras.Sequential([keras.Input((5, 5, 2)), keras.layers.Conv2D(num_classes, 1)])
    model.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255),
        metrics=[MeanIU(num_classes), ConfusionMatrix(num_classes, score="pixel_accuracy")],
    )
    logs = model.evaluate(images, labels, batch_size=2, verbose=0, return_dict=True)
    expected = scores(
        confusion_matrix(labels, model.predict(images, verbose=0).argmax(-1), num_classes)
    )
    assert logs["mean_iu"] == pytest.approx(expected["mean_iu"], rel=1e-6)
    assert logs["pixel_accuracy"] == pytest.approx(expected["pixel_accuracy"], rel=1e-6)


_DISTRIBUTED_SCRIPT = textwrap.dedent(
    """
    import json
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from fcn_tf.metrics import ConfusionMatrix, MeanIU

    C = 5
    rng = np.random.default_rng(0)
    images = rng.normal(size=(8, 6, 6, 3)).astype("float32")
    labels = rng.integers(0, C, (8, 6, 6)).astype("int32")
    labels[rng.random(labels.shape) < 0.1] = 255
    logits = rng.normal(size=(8, 6, 6, C)).astype("float32")
    weights = [rng.normal(size=(1, 1, 3, C)).astype("float32"), np.zeros(C, "float32")]
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    out = {}

    with strategy.scope():
        metric = ConfusionMatrix(C)

    @tf.function
    def step(y, p):
        strategy.run(metric.update_state, args=(y, p))

    dataset = tf.data.Dataset.from_tensor_slices((labels, logits)).batch(4)
    for y, p in strategy.experimental_distribute_dataset(dataset):
        step(y, p)
    out["confusion"] = metric.confusion_matrix().tolist()
    out["result"] = float(metric.result())
    local = strategy.experimental_local_results(metric.confusion.value)
    out["replica_totals"] = [int(np.asarray(v).sum()) for v in local]

    def evaluate(scope_strategy):
        with scope_strategy.scope():
            model = keras.Sequential([keras.Input((6, 6, 3)), keras.layers.Conv2D(C, 1)])
            model.set_weights(weights)
            model.compile(
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255),
                metrics=[MeanIU(C)],
            )
        logs = model.evaluate(images, labels, batch_size=4, verbose=0, return_dict=True)
        return logs["mean_iu"], model.predict(images, verbose=0).argmax(-1).tolist()

    out["evaluate_single"], out["predictions"] = evaluate(tf.distribute.get_strategy())
    out["evaluate_mirrored"], _ = evaluate(strategy)
    print("RESULT" + json.dumps(out))
    """
)


def test_mirrored_strategy_sums_replicas():
    # Logical devices must be configured before TF initialises, hence a fresh interpreter.
    out = run_python_json(_DISTRIBUTED_SCRIPT)

    rng = np.random.default_rng(0)
    rng.normal(size=(8, 6, 6, 3))  # images: keep the generator in step with the script
    labels = rng.integers(0, 5, (8, 6, 6))
    labels[rng.random(labels.shape) < 0.1] = 255
    logits = rng.normal(size=(8, 6, 6, 5)).astype("float32")
    single = ConfusionMatrix(5)
    single.update_state(labels, logits)

    np.testing.assert_array_equal(out["confusion"], single.confusion_matrix())
    assert out["result"] == pytest.approx(float(single.result()), rel=1e-6)
    # Each replica saw only part of the data; the metric reports their sum.
    assert len(out["replica_totals"]) == 2 and min(out["replica_totals"]) > 0
    assert sum(out["replica_totals"]) == single.confusion_matrix().sum()

    expected = scores(confusion_matrix(labels, np.array(out["predictions"]), 5))["mean_iu"]
    assert out["evaluate_single"] == pytest.approx(expected, rel=1e-6)
    assert out["evaluate_mirrored"] == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("weighted", [False, True])
def test_update_compiles_under_xla(weighted):
    import tensorflow as tf

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, (2, 9, 7)).astype("int32")
    labels[0, :2] = 255
    logits = rng.normal(size=(2, 9, 7, 4)).astype("float32")
    weights = rng.integers(0, 3, (2, 9, 7)).astype("float32") if weighted else None
    metric = ConfusionMatrix(4)
    tf.function(metric.update_state, jit_compile=True)(labels, logits, weights)
    predictions = logits.argmax(-1)
    expected = np.zeros((4, 4), np.int64)
    for label, prediction, weight in zip(
        labels.ravel(),
        predictions.ravel(),
        np.ones(labels.size) if weights is None else weights.ravel(),
        strict=True,
    ):
        if label != 255:
            expected[label, prediction] += int(weight)
    np.testing.assert_array_equal(metric.confusion_matrix(), expected)
