"""The reference solver against a hand-written Caffe SGDSolver, and in a real FCN."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest
from conftest import TINY_VGG

import fcn_tf
from fcn_tf.training import (
    ReferenceSGD,
    SolverConfig,
    SolverSchedule,
    make_loss,
    make_optimizer,
    preset,
)


def _tiny_model() -> keras.Model:
    """Conv kernel + bias, BN gamma/beta (+ moving stats), Dense kernel + bias."""
    model = keras.Sequential(
        [
            keras.Input((4, 4, 2)),
            keras.layers.Conv2D(3, 3, name="conv"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.Flatten(),
            keras.layers.Dense(2, name="dense"),
        ]
    )
    for v in model.trainable_variables:
        seed = len(v.path.split("/", 1)[-1])  # the layer/variable part: not the model's number
        v.assign(np.random.default_rng(seed).normal(size=v.shape).astype("float32"))
    return model


def _caffe_mults(path: str, bias_decay: bool = False) -> tuple[float, float]:
    # The authors' prototxt: weights lr_mult 1 decay_mult 1, biases lr_mult 2 decay_mult 0;
    # BN scale/offset: documented choice of ReferenceSGD (1, 0).
    name = path.split("/")[-1]
    if name == "bias":
        return 2.0, 1.0 if bias_decay else 0.0
    if name in ("gamma", "beta"):
        return 1.0, 0.0
    return 1.0, 1.0


def _caffe_sgd(weights, grad_seq, lrs, momentum, weight_decay, mults, iter_size=1):
    """numpy transcription of Caffe's SGDSolver::ApplyUpdate over a sequence of updates.

    ``grad_seq[t]`` lists ``iter_size`` micro-batch gradients per parameter for update ``t``.
    """
    weights = [w.astype("float64").copy() for w in weights]
    history = [np.zeros_like(w) for w in weights]
    for t, micro in enumerate(grad_seq):
        for i, w in enumerate(weights):
            diff = sum(m[i] for m in micro).astype("float64")  # accumulated backward passes
            diff = diff / iter_size  # Normalize
            lr_mult, decay_mult = mults[i]
            diff = diff + weight_decay * decay_mult * w  # Regularize (L2)
            history[i] = momentum * history[i] + lrs[t] * lr_mult * diff  # ComputeUpdateValue
            weights[i] = w - history[i]  # Net::Update
    return weights


def _grad_seq(variables, updates, iter_size, seed=1):
    rng = np.random.default_rng(seed)
    return [
        [[rng.normal(size=v.shape).astype("float32") for v in variables] for _ in range(iter_size)]
        for _ in range(updates)
    ]


def _run(optimizer, variables, grad_seq):
    for micro in grad_seq:
        for grads in micro:
            optimizer.apply_gradients(zip(grads, variables, strict=True))


@pytest.mark.parametrize("bias_decay", [False, True])
def test_update_matches_caffe(bias_decay):
    model = _tiny_model()
    variables = model.trainable_variables
    assert {v.path.split("/")[-1] for v in variables} == {"kernel", "bias", "gamma", "beta"}
    start = [v.numpy() for v in variables]
    grads = _grad_seq(variables, updates=5, iter_size=1)
    optimizer = ReferenceSGD(0.01, momentum=0.9, weight_decay=0.05, bias_decay=bias_decay)
    _run(optimizer, variables, grads)
    mults = [_caffe_mults(v.path, bias_decay) for v in variables]
    expected = _caffe_sgd(start, grads, [0.01] * 5, 0.9, 0.05, mults)
    for v, e in zip(variables, expected, strict=True):
        np.testing.assert_allclose(v.numpy(), e, rtol=1e-5, atol=1e-6, err_msg=v.path)
    # The optimizer never holds the non-trainable moving statistics.
    tracked = {id(v) for v in optimizer._trainable_variables}
    assert all(id(v) not in tracked for v in model.non_trainable_variables)


def test_step_schedule_counts_updates_under_accumulation():
    model = _tiny_model()
    variables = model.trainable_variables
    start = [v.numpy() for v in variables]
    config = SolverConfig(
        learning_rate=0.02,
        momentum=0.5,
        weight_decay=0.01,
        schedule="step",
        step_size=2,
        gamma=0.5,
        accumulate=3,
    )
    optimizer = make_optimizer(config)
    grads = _grad_seq(variables, updates=5, iter_size=3)
    lrs = [0.02 * 0.5 ** (t // 2) for t in range(5)]
    _run(optimizer, variables, grads[:1])
    assert int(optimizer.iterations.numpy()) == 1
    _run(optimizer, variables, grads[1:])
    mults = [_caffe_mults(v.path) for v in variables]
    expected = _caffe_sgd(start, grads, lrs, 0.5, 0.01, mults, iter_size=3)
    for v, e in zip(variables, expected, strict=True):
        np.testing.assert_allclose(v.numpy(), e, rtol=1e-5, atol=1e-6, err_msg=v.path)


def test_accumulation_equals_one_step_on_mean_gradient():
    k = 4
    a, b = _tiny_model(), _tiny_model()
    b.set_weights(a.get_weights())  # paths (and so the seeds above) depend on model numbering
    grads = _grad_seq(a.trainable_variables, updates=3, iter_size=k)
    accumulating = ReferenceSGD(
        0.05, momentum=0.9, weight_decay=0.01, gradient_accumulation_steps=k
    )
    plain = ReferenceSGD(0.05, momentum=0.9, weight_decay=0.01)
    before = [v.numpy() for v in a.trainable_variables]
    _run(accumulating, a.trainable_variables, [grads[0][: k - 1]])
    for v, w in zip(a.trainable_variables, before, strict=True):
        np.testing.assert_array_equal(v.numpy(), w)  # no update mid-accumulation
    _run(accumulating, a.trainable_variables, [grads[0][k - 1 :], *grads[1:]])
    mean = [[[np.mean(parts, axis=0) for parts in zip(*micro, strict=True)]] for micro in grads]
    _run(plain, b.trainable_variables, mean)
    for va, vb in zip(a.trainable_variables, b.trainable_variables, strict=True):
        np.testing.assert_allclose(va.numpy(), vb.numpy(), rtol=1e-5, atol=1e-6)


def test_schedules_closed_forms():
    steps = np.arange(0, 130, 7)
    poly = SolverSchedule(0.1, "poly", power=0.9, total_steps=100)
    step = SolverSchedule(0.1, "step", step_size=30, gamma=0.1)
    fixed = SolverSchedule(0.1)
    for s in steps:
        np.testing.assert_allclose(float(poly(s)), 0.1 * max(1 - s / 100, 0) ** 0.9, rtol=1e-5)
        np.testing.assert_allclose(float(step(s)), 0.1 * 0.1 ** (s // 30), rtol=1e-5)
        np.testing.assert_allclose(float(fixed(s)), 0.1, rtol=1e-6)
    restored = SolverSchedule.from_config(poly.get_config())
    assert restored.get_config() == poly.get_config()
    with pytest.raises(ValueError, match="total_steps"):
        SolverSchedule(0.1, "poly")
    with pytest.raises(ValueError, match="step_size"):
        SolverConfig(schedule="step")


@pytest.mark.parametrize(("stride", "lr"), [(32, 1e-10), (16, 1e-12), (8, 1e-14)])
def test_heavy_preset(stride, lr):
    config = preset("heavy", stride)
    assert (config.learning_rate, config.momentum, config.weight_decay) == (lr, 0.99, 5e-4)
    assert (config.accumulate, config.normalize, config.schedule) == (1, "batch", "fixed")
    assert (config.bias_lr_mult, config.bias_decay) == (2.0, False)
    optimizer = make_optimizer(config)
    assert optimizer.gradient_accumulation_steps is None
    np.testing.assert_allclose(float(optimizer.learning_rate), lr, rtol=1e-6)
    assert make_loss(config).normalize == "batch"  # Caffe's normalize: false


def test_staged_rates_drop_100x_per_stage_and_at_once_keeps_the_first():
    # Paper, section 4.2, and the authors' solver.prototxt files (voc-fcn8s-atonce: 1e-10).
    for name, first in (("heavy", 1e-10), ("normalized", 1e-4)):
        rates = [preset(name, stride).learning_rate for stride in (32, 16, 8)]
        np.testing.assert_allclose(rates, [first, first / 100, first / 10000], rtol=1e-12)
        assert preset(name, 8, at_once=True).learning_rate == first


def test_normalized_preset_and_validation():
    config = preset("normalized", 32)
    assert (config.learning_rate, config.momentum, config.weight_decay) == (1e-4, 0.9, 5e-4)
    assert (config.accumulate, config.normalize) == (20, "valid")
    assert make_optimizer(config).gradient_accumulation_steps == 20
    assert preset("normalized", 8, accumulate=1).accumulate == 1
    with pytest.raises(ValueError, match="preset"):
        preset("adam", 8)
    with pytest.raises(ValueError, match="output_stride"):
        preset("heavy", 4)


def test_get_config_round_trip():
    config = preset("normalized", 16, schedule="poly", total_steps=500, bias_decay=True)
    optimizer = make_optimizer(config, clipnorm=10.0)
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(restored, ReferenceSGD)
    assert restored.get_config() == optimizer.get_config()
    assert (restored.weight_decay, restored.bias_lr_mult, restored.bias_decay) == (5e-4, 2.0, True)
    assert isinstance(restored._learning_rate, SolverSchedule)


@pytest.mark.parametrize("name", ["heavy", "normalized"])
def test_fcn_fit_keeps_fixed_upsampler_and_saves(name, tmp_path):
    model = fcn_tf.build_fcn(3, 8, backbone_options=TINY_VGG)
    # A short accumulation keeps the test fast while still exercising the accumulators.
    config = preset(name, 8, learning_rate=1e-3, accumulate=1 if name == "heavy" else 2)
    model.compile(optimizer=make_optimizer(config), loss=make_loss(config))
    upscore8 = model.get_layer("upscore8")
    assert not upscore8.trainable and upscore8.trainable_weights == []
    fixed = upscore8.kernel.numpy().copy()
    trained = {v.path: v.numpy().copy() for v in model.trainable_variables}

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (2, 40, 40, 3)).astype("float32")
    labels = rng.integers(0, 3, (2, 40, 40)).astype("int32")
    model.fit(images, labels, batch_size=1, epochs=1, verbose=0)

    np.testing.assert_array_equal(upscore8.kernel.numpy(), fixed)
    assert int(model.optimizer.iterations.numpy()) == (1 if name == "normalized" else 2)
    # score_fr's bias sees a gradient on every pixel, so it must have moved.
    bias = model.get_layer("score_fr").bias
    assert not np.allclose(bias.numpy(), trained[bias.path])

    path = tmp_path / "fcn.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, compile=True)
    assert isinstance(loaded.optimizer, ReferenceSGD)
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    for a, b in zip(loaded.optimizer.variables, model.optimizer.variables, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    loaded.fit(images, labels, batch_size=1, epochs=1, verbose=0)
    np.testing.assert_array_equal(loaded.get_layer("upscore8").kernel.numpy(), fixed)


def test_config_is_frozen():
    config = preset("heavy", 8)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.learning_rate = 1.0  # type: ignore[misc]
