"""Tests for loss sampling (paper, section 3.4): SegmentationCrossEntropy(sample_probability=p)."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_losses import _log_softmax, _random_batch

from fcn_tf.losses import SegmentationCrossEntropy, cell_mask
from fcn_tf.training.config import from_dict

CELL = 4


def _pixel_losses(labels: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """Per-pixel cross-entropy in float64, 0 at ignored pixels (independent of the loss)."""
    valid = (labels >= 0) & (labels < logits.shape[-1]) & (labels != 255)
    picked = np.take_along_axis(
        _log_softmax(logits), np.where(valid, labels, 0)[..., None], axis=-1
    )[..., 0]
    return np.where(valid, -picked, 0.0)


def _cell_sums(values: np.ndarray, cell: int) -> np.ndarray:
    """Sum of ``values [B, H, W]`` over each ``cell`` x ``cell`` block from the top-left."""
    batch, height, width = values.shape
    sums = np.zeros((batch, -(-height // cell), -(-width // cell)))
    for b in range(batch):
        for i in range(sums.shape[1]):
            for j in range(sums.shape[2]):
                sums[b, i, j] = values[
                    b, i * cell : (i + 1) * cell, j * cell : (j + 1) * cell
                ].sum()
    return sums


@pytest.mark.parametrize("normalize", ["none", "valid", "batch"])
def test_probability_one_is_exactly_the_plain_loss(normalize):
    labels, logits = _random_batch(shape=(2, 9, 11))
    plain = SegmentationCrossEntropy(normalize=normalize)
    sampled = SegmentationCrossEntropy(normalize=normalize, sample_probability=1.0, cell_size=8)
    assert sampled.seed_generator is None
    assert float(sampled(labels, logits)) == float(plain(labels, logits))


@pytest.mark.parametrize(("normalize", "probability"), [("valid", 0.5), ("none", 0.25)])
def test_expectation_equals_the_whole_image_loss(normalize, probability):
    labels, logits = _random_batch(3, shape=(2, 10, 13))
    pixel = _pixel_losses(labels, logits)
    valid_count = float((pixel > 0).sum()) if normalize == "valid" else 1.0
    full = pixel.sum() / valid_count
    # Each cell's sum L_c is kept (scaled by 1/p) with probability p, independently:
    # variance of one draw = (1 - p) / p * sum_c L_c^2 / denominator^2.
    cells = _cell_sums(pixel, CELL)
    variance = (1 - probability) / probability * (cells**2).sum() / valid_count**2
    loss = SegmentationCrossEntropy(
        normalize=normalize, sample_probability=probability, cell_size=CELL, seed=7
    )
    draws = 600
    values = np.array([float(loss(labels, logits)) for _ in range(draws)])
    plain = float(SegmentationCrossEntropy(normalize=normalize)(labels, logits))
    np.testing.assert_allclose(plain, full, rtol=1e-5)
    assert abs(values.mean() - full) < 5 * math.sqrt(variance / draws)
    assert abs(values.var() / variance - 1) < 0.3  # the draws really vary, by the right amount


def test_whole_cells_are_kept_or_dropped_and_about_p_of_the_pixels():
    shape, probability = (6, 37, 50), 0.3
    mask = cell_mask(shape, probability, CELL, seed=11).numpy()
    assert mask.shape == shape and mask.dtype == np.float32
    assert set(np.unique(mask)) <= {0.0, 1.0}
    areas = _cell_sums(np.ones(shape), CELL)
    kept_sums = _cell_sums(mask, CELL)
    # Each cell is all kept (sum = area) or all dropped (sum = 0).
    assert np.all((kept_sums == 0) | (kept_sums == areas))
    kept_cells = kept_sums > 0
    count = kept_cells.size
    assert abs(kept_cells.sum() - probability * count) < 5 * math.sqrt(
        count * probability * (1 - probability)
    )
    # Pixels kept = the areas of the kept cells (partial cells at the bottom and right).
    assert mask.sum() == areas[kept_cells].sum()
    assert abs(mask.sum() / mask.size - probability) < 0.1


def test_effective_pixels_of_the_loss_and_of_its_gradient():
    """With uniform logits each kept valid pixel costs ln C: the loss counts kept pixels, and
    only kept pixels (whole cells of them) get a gradient."""
    rng = np.random.default_rng(2)
    classes, probability = 3, 0.5
    labels = rng.integers(0, classes, (2, 16, 20)).astype("int32")
    labels[:, :3] = 255
    logits = tf.Variable(np.zeros((2, 16, 20, classes), "float32"))
    loss = SegmentationCrossEntropy(
        normalize="none", sample_probability=probability, cell_size=CELL, seed=5
    )
    with tf.GradientTape() as tape:
        value = loss(labels, logits)
    gradient = tape.gradient(value, logits).numpy()
    touched = np.abs(gradient).sum(-1) > 0
    assert touched.sum() == round(float(value) * probability / math.log(classes))
    assert not touched[labels == 255].any()
    kept = _cell_sums(touched.astype(float), CELL)
    valid = _cell_sums((labels != 255).astype(float), CELL)
    assert np.all((kept == 0) | (kept == valid))
    assert 0 < touched.sum() < (labels != 255).sum()


def test_seeded_draws_repeat_and_differ_between_seeds():
    labels, logits = _random_batch(4, shape=(2, 12, 12))

    def sequence(seed):
        loss = SegmentationCrossEntropy(sample_probability=0.5, cell_size=CELL, seed=seed)
        return [float(loss(labels, logits)) for _ in range(5)]

    first = sequence(1)
    assert first == sequence(1)
    assert first != sequence(2)
    assert len(set(first)) > 1  # a new draw at every call


@pytest.mark.parametrize("jit_compile", [False, True])
def test_sampling_in_a_traced_function_draws_anew_for_any_size(jit_compile):
    loss = SegmentationCrossEntropy(sample_probability=0.5, cell_size=CELL, seed=3)
    spec = [tf.TensorSpec([None, None, None], tf.int32), tf.TensorSpec([None] * 4, tf.float32)]
    function = tf.function(loss, input_signature=spec, jit_compile=jit_compile)
    for shape in [(1, 9, 14), (2, 16, 8)]:
        labels, logits = _random_batch(5, shape=shape)
        values = {float(function(labels, logits)) for _ in range(4)}
        assert len(values) > 1


def test_config_round_trip_and_bad_values():
    loss = SegmentationCrossEntropy(normalize="none", sample_probability=0.25, cell_size=32, seed=9)
    config = loss.get_config()
    assert SegmentationCrossEntropy.from_config(config).get_config() == config
    assert config["sample_probability"] == 0.25 and config["cell_size"] == 32
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert restored.get_config() == config and restored.seed_generator is not None
    with pytest.raises(ValueError, match="sample_probability"):
        SegmentationCrossEntropy(sample_probability=0.0)
    with pytest.raises(ValueError, match="cell_size"):
        SegmentationCrossEntropy(cell_size=0)


@pytest.mark.parametrize("value", [0.0, 1.5])
def test_recipe_field_is_checked(value):
    with pytest.raises(ValueError, match=r"solver\.loss_sampling"):
        from_dict({"solver": {"loss_sampling": value}})


def test_trainer_samples_by_final_layer_cells_and_checkpoints_the_draws(tmp_path):
    from fcn_tf.training.loop import Trainer

    config = from_dict(
        {
            "model": {
                "output_stride": 16,
                "geometry": "same",
                "backbone_options": {"width": 1 / 32, "fc_units": 8},
            },
            "data": {
                "options": {"count": 2, "height": 32, "width": 32},
                "records_dir": str(tmp_path / "records"),
                "batch_size": 2,
                "crop_size": 32,
            },
            "solver": {"loss_sampling": 0.5, "accumulate": 1, "learning_rate": 1e-6},
            "run": {"steps_per_epoch": 2, "export": False, "eval_images": 0},
        }
    )
    trainer = Trainer(config, str(tmp_path / "run"), verbose=0)
    result = trainer.fit()
    assert result["step"] == 2
    assert trainer.loss.sample_probability == 0.5 and trainer.loss.cell_size == 16
    state = trainer.loss.seed_generator.state.numpy()
    saved = tf.train.load_variable(
        trainer.manager.latest_checkpoint, "loss_sampling/.ATTRIBUTES/VARIABLE_VALUE"
    )
    np.testing.assert_array_equal(saved, state)
    assert state[1] == 2  # one draw per micro-batch
