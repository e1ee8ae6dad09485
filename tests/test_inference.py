"""The inference helper, the FLOP counter and the inference benchmark's smoke run."""

from __future__ import annotations

import gc
import json
import math
import os
import subprocess
import sys
import weakref
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from fcn_tf import inference
from fcn_tf.flops import count_flops, layer_flops, tf_profiler_flops
from fcn_tf.inference import Predictor, predict_classes
from fcn_tf.models import Preprocess, build_fcn
from fcn_tf.models.layers import FixedConv2DTranspose

ROOT = Path(__file__).resolve().parents[1]
TINY = {"width": 1 / 32, "fc_units": 8}


def randomized(model: keras.Model, seed: int = 0) -> keras.Model:
    """Random weights everywhere: the score layers start at zero, which would hide any error."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if weights:
            layer.set_weights(
                [
                    rng.normal(0, 1 / np.sqrt(max(1, np.prod(w.shape[:-1]))), w.shape).astype(
                        w.dtype
                    )
                    for w in weights
                ]
            )
    return model


@pytest.fixture(scope="module")
def fcn8s() -> keras.Model:
    return randomized(build_fcn(21, 8, geometry="caffe", backbone_options=TINY))


def images(shape, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, shape).astype("float32")


def assert_close(actual, expected) -> None:
    expected = np.asarray(expected)
    scale = float(np.abs(expected).max())
    assert scale > 1e-3, "a zero output would compare equal to anything"
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_logits_equal_the_model_for_several_sizes_with_one_trace(fcn8s, jit_compile):
    predictor = Predictor(fcn8s, jit_compile=jit_compile)
    for index, shape in enumerate([(1, 32, 32, 3), (2, 45, 61, 3), (1, 70, 40, 3)]):
        x = images(shape, seed=index)
        assert_close(predictor(x), fcn8s(x, training=False))
    assert predictor.tracing_count == 1


def test_default_jit_compile_follows_the_measured_rules(fcn8s, monkeypatch):
    monkeypatch.delenv("TF_ONEDNN_ASSUME_FROZEN_WEIGHTS", raising=False)
    assert not inference.onednn_weights_frozen()
    # Tiny VGG16: small weights, so TensorFlow's kernels; VGG16-sized weights: XLA.
    assert Predictor(fcn8s).jit_compile is False
    monkeypatch.setattr(inference, "LARGE_WEIGHTS_BYTES", 1024)
    assert inference.default_jit_compile(fcn8s) is True
    assert Predictor(fcn8s).jit_compile is True
    # Depthwise convolutions: never XLA, whatever the weights.
    depthwise = keras.Sequential(
        [keras.Input((None, None, 3)), keras.layers.DepthwiseConv2D(3), keras.layers.Conv2D(500, 1)]
    )
    assert inference.default_jit_compile(depthwise) is False
    # The oneDNN weight cache makes TensorFlow's kernels the faster path (if oneDNN is on).
    monkeypatch.setenv("TF_ONEDNN_ASSUME_FROZEN_WEIGHTS", "1")
    if inference.onednn_weights_frozen():
        assert inference.default_jit_compile(fcn8s) is False


@pytest.mark.parametrize("jit_compile", [False, True])
def test_predict_classes_is_the_argmax(fcn8s, jit_compile):
    predictor = Predictor(fcn8s, jit_compile=jit_compile)
    x = images((2, 48, 40, 3), seed=3)
    logits = np.asarray(fcn8s(x, training=False))
    labels = np.asarray(predictor.predict_classes(x))
    assert labels.dtype == np.uint8 and labels.shape == (2, 48, 40)
    # Where the two best scores nearly tie, another summation order may pick the other.
    top2 = np.sort(logits, axis=-1)[..., -2:]
    clear = (top2[..., 1] - top2[..., 0]) > 1e-4 * np.abs(logits).max()
    assert clear.mean() > 0.99
    np.testing.assert_array_equal(labels[clear], logits.argmax(-1)[clear])


def test_single_uint8_image_and_the_cached_helper(fcn8s):
    image = images((33, 47, 3), seed=4).astype("uint8")
    predictor = Predictor(fcn8s, jit_compile=False)
    logits = predictor(image)
    assert tuple(logits.shape) == (33, 47, 21)
    assert_close(logits, fcn8s(image[None].astype("float32"), training=False)[0])
    labels = predict_classes(fcn8s, image, jit_compile=False)
    assert isinstance(labels, np.ndarray) and labels.shape == (33, 47)
    np.testing.assert_array_equal(labels, predictor.predict_classes(image))


def test_cached_helper_holds_the_model_weakly():
    model = build_fcn(3, 32, backbone_options=TINY)
    predict_classes(model, images((16, 16, 3)), jit_compile=False)
    assert model in inference._PREDICTORS
    reference = weakref.ref(model)
    del model
    gc.collect()
    assert reference() is None


@pytest.mark.parametrize("shape", [(4, 4), (4, 4, 1), (4, 4, 4), (2, 4, 4, 1)])
def test_rejects_images_of_the_wrong_rank_or_channels(fcn8s, shape):
    with pytest.raises(ValueError, match=rf"images must be .*got shape \({shape[0]}, "):
        Predictor(fcn8s, jit_compile=False)(np.zeros(shape, "uint8"))


@pytest.mark.parametrize("geometry", ["caffe", "same"])
def test_flop_counter_agrees_with_tensorflows_profiler(geometry):
    model = build_fcn(5, 8, geometry=geometry, backbone_options={"width": 1 / 8, "fc_units": 16})
    shape = (1, 64, 48, 3)
    rows = layer_flops(model, shape)
    profiled = tf_profiler_flops(model, shape)

    def of(kind):
        return [r for r in rows if isinstance(model.get_layer(r.name), kind)]

    def ours(kind, field="flops"):
        return sum(getattr(r, field) for r in of(kind))

    # The fixed upsampler runs as one convolution over its input padded by m - 1 cells, m
    # taps per kernel row and column and stride x stride as many output channels.
    (fixed,) = of(FixedConv2DTranspose)
    layer = model.get_layer(fixed.name)
    (kh, kw, c_out, c_in), (sh, sw) = layer.kernel.shape, layer.strides
    (_, out_h, out_w, _), m = fixed.output_shape, (kh // sh, kw // sw)
    h, w = (out_h - kh) // sh + 1, (out_w - kw) // sw + 1
    subpixel = 2 * (h + m[0] - 1) * (w + m[1] - 1) * m[0] * m[1] * c_in * sh * sw * c_out
    assert subpixel == fixed.flops * (h + m[0] - 1) * (w + m[1] - 1) // (h * w)
    # Same formulas: exact.
    assert profiled["Conv2D"] == ours(keras.layers.Conv2D) + subpixel
    assert profiled["BiasAdd"] == ours(keras.layers.Conv2D, "elementwise")
    assert profiled["MaxPool"] == ours(keras.layers.MaxPooling2D, "elementwise")
    assert profiled["AddV2"] == ours(keras.layers.Add, "elementwise")
    assert profiled["Sub"] + profiled["Mul"] == ours(Preprocess, "elementwise")
    # TF estimates a transposed convolution from its output size (see fcn_tf.flops).
    estimate = 0
    for row in of(keras.layers.Conv2DTranspose):
        if row is fixed:
            continue
        layer = model.get_layer(row.name)
        kh, kw, _, c_in = layer.kernel.shape
        estimate += 2 * math.prod(row.output_shape) * kh * kw * c_in // layer.strides[0] ** 2
    assert len(of(keras.layers.Conv2DTranspose)) == 3
    assert profiled["Conv2DBackpropInput"] == estimate
    analytic = count_flops(model, shape, True) + subpixel - fixed.flops
    assert sum(profiled.values()) == pytest.approx(analytic, rel=0.02)


def test_flop_counter_by_hand_and_batch_scaling():
    model = keras.Sequential(
        [
            keras.Input((None, None, 3)),
            keras.layers.Conv2D(8, 3, padding="same", use_bias=False),
            keras.layers.Conv2DTranspose(8, 4, strides=2, use_bias=False),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(5),
        ]
    )
    conv = 2 * 10 * 12 * 3 * 3 * 3 * 8
    deconv = 2 * 10 * 12 * 4 * 4 * 8 * 8  # every input cell scatters the whole kernel
    dense = 2 * 8 * 5
    assert count_flops(model, (10, 12, 3)) == conv + deconv + dense
    assert count_flops(model, (3, 10, 12, 3)) == 3 * (conv + deconv + dense)
    with pytest.raises(ValueError, match="does not fit"):
        count_flops(model, (10, 3))


def test_benchmark_quick_run_writes_the_report(tmp_path):
    report_path = tmp_path / "bench.json"
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "inference.py"),
        "--quick",
        "--width=0.03125",
        "--fc-units=8",
        "--variants",
        "fcn8s",
        "--geometries",
        "caffe",
        "--sizes",
        "40",
        "--quiet-wait=0",
        "--json",
        str(report_path),
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert {"machine", "settings", "matmul", "results", "summary"} <= report.keys()
    assert report["matmul"]["gflops"] > 0 and report["matmul"]["start"]["numpy_gflops"] > 0
    assert [(r["variant"], r["size"], r["jit"]) for r in report["results"]] == [
        ("fcn8s", 40, "off"),
        ("fcn8s", 40, "on"),
    ]
    for row in report["results"]:
        assert {
            "latency_median_s",
            "flops",
            "gflops_per_s",
            "roofline_s",
            "roofline_ratio",
            "background_cpu",
        } <= row.keys()
        assert row["latency_median_s"] > 0 and row["flops"] > 0
    assert set(report["summary"]["jit_speedup"]) == {"vgg16 fcn8s caffe 40"}
    assert report["summary"]["default_fastest"] in ("0/1", "1/1")
    assert "median s" in done.stdout and "[2/2]" in done.stderr
    assert json.loads(done.stdout[done.stdout.index("\n{") :]) == report
    assert not list(tmp_path.glob(".bench-*"))  # the temporary file was renamed, not left


def test_predictor_runs_under_an_outer_tf_function(fcn8s):
    # A serving graph may call the predictor from its own tf.function.
    predictor = Predictor(fcn8s, jit_compile=False)
    outer = tf.function(lambda x: predictor.predict_classes(x))
    assert tuple(outer(tf.zeros((1, 24, 24, 3))).shape) == (1, 24, 24)
