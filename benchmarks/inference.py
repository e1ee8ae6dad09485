"""Inference speed of FCN-32s/16s/8s (VGG16) against this machine's fp32 matmul speed.

For every variant x geometry x image size x ``jit_compile`` it times batch-1 inference through
:class:`fcn_tf.inference.Predictor` (median after warm-up), counts FLOPs analytically
(:func:`fcn_tf.flops.count_flops`: 2 x MACs of the convolutions, transposed ones included),
and compares the latency with the roofline ``FLOPs / matmul rate``. The rate is that of
``tf.linalg.matmul`` on two 4096 x 4096 float32 matrices, measured in the same run at the
start and at the end (both reported; the rate used is the median of the runs during which
other processes left the CPU idle). It also reports whether the library's default
(:func:`fcn_tf.inference.default_jit_compile`) picked the faster path.

This machine is shared: before each timed run the benchmark waits (``--quiet-wait`` seconds
per configuration at most) for other processes to go idle, and ``bg cpu`` reports the share
of the CPU they used anyway while a configuration was timed (Linux only). ``best`` is the
ratio of the fastest run to the fastest matmul: what a quiet machine would show.

TensorFlow reads its oneDNN settings from the environment at start-up, so compare them with
separate runs, e.g. ``TF_ONEDNN_ASSUME_FROZEN_WEIGHTS=1 python benchmarks/inference.py``.

Usage::

    python benchmarks/inference.py --json /tmp/bench_inference.json   # full run, ~5-8 min
    python benchmarks/inference.py --quick                            # smoke run, seconds
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

# Run as a script or imported from elsewhere: the shared helpers sit beside this file.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (
    add_timing_arguments,
    emit,
    machine_info,
    matmul_rate,
    measure_matmul,
    positive_int,
    progress,
    timed,
)

VARIANTS = {"fcn32s": 32, "fcn16s": 16, "fcn8s": 8}
GOAL = {
    "backbone": "vgg16",
    "variant": "fcn8s",
    "geometry": "caffe",
    "size": 500,
    "max_ratio": 1.15,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", type=positive_int, nargs="+", default=[224, 500], help="square sizes"
    )
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument(
        "--backbones",
        nargs="+",
        choices=["vgg16", "resnet50", "mobilenet_v2"],
        default=["vgg16"],
        help="others run the 'same' geometry only",
    )
    parser.add_argument(
        "--geometries", nargs="+", choices=["caffe", "same"], default=["caffe", "same"]
    )
    parser.add_argument("--jit", nargs="+", choices=["off", "on"], default=["off", "on"])
    add_timing_arguments(parser, "run", 7, 2, "untimed runs (first compiles)")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, few runs")
    # For tests: shrink the network so a run takes seconds.
    parser.add_argument("--width", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument("--fc-units", type=int, default=4096, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes = [64] if args.sizes == [224, 500] else args.sizes
        args.repeats, args.warmup = min(args.repeats, 2), min(args.warmup, 1)
        args.matmul_size, args.matmul_repeats = min(args.matmul_size, 512), 3
        args.quiet_wait = min(args.quiet_wait, 1.0)
    return args


def bench_config(tf, predictor, flops: int, size: int, args) -> dict:
    images = tf.random.uniform((1, size, size, 3), 0, 255, seed=0)
    start = time.perf_counter()
    predictor(images).numpy()
    first = time.perf_counter() - start
    for _ in range(max(0, args.warmup - 1)):
        predictor(images).numpy()
    run = timed(lambda: predictor(images).numpy(), args.repeats, args.quiet_wait)
    samples = run["samples"]
    median = statistics.median(samples)
    return {
        "first_call_s": round(first, 4),
        "latency_median_s": round(median, 4),
        "latency_min_s": round(min(run["all_samples"]), 4),
        "samples_s": [round(s, 4) for s in run["all_samples"]],
        "background_cpu_per_run": run["shares"],
        "clean_runs": run["clean_runs"],
        "gflops_per_s": round(flops / median / 1e9, 1),
        "background_cpu": run["background_cpu"],
        "quiet_wait_s": run["quiet_wait_s"],
    }


def table(results: list[dict]) -> str:
    head = (
        f"{'backbone':12} {'variant':7} {'geom':5} {'size':>4} {'jit':3} {'median s':>9} "
        f"{'min s':>7} {'first s':>8} {'GFLOP':>7} {'GFLOP/s':>8} {'roof s':>7} {'ratio':>6} "
        f"{'best':>5} {'bg cpu':>6}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        bg = "-" if r["background_cpu"] is None else f"{r['background_cpu']:.2f}"
        lines.append(
            f"{r['backbone']:12} {r['variant']:7} {r['geometry']:5} {r['size']:4d} {r['jit']:3} "
            f"{r['latency_median_s']:9.3f} {r['latency_min_s']:7.3f} {r['first_call_s']:8.2f} "
            f"{r['flops'] / 1e9:7.1f} {r['gflops_per_s']:8.1f} {r['roofline_s']:7.3f} "
            f"{r['roofline_ratio']:6.2f} {r['roofline_ratio_best']:5.2f} {bg:>6}"
        )
    return "\n".join(lines)


def summarize(results: list[dict]) -> dict:
    """XLA's speed-up per configuration and the goal configuration's best ratio."""
    pairs = {}
    for r in results:
        key = " ".join(str(r[k]) for k in ("backbone", "variant", "geometry", "size"))
        pairs.setdefault(key, {})[r["jit"]] = r
    speedups = {
        key: round(p["off"]["latency_median_s"] / p["on"]["latency_median_s"], 3)
        for key, p in pairs.items()
        if {"off", "on"} <= p.keys()
    }
    summary: dict = {"jit_speedup": speedups}
    if speedups:
        geo = math.exp(statistics.mean(math.log(v) for v in speedups.values()))
        summary["jit_speedup_geomean"] = round(geo, 3)
        hits = [
            p[p["on"]["library_default"]]["latency_median_s"]
            <= min(p["on"]["latency_median_s"], p["off"]["latency_median_s"])
            for p in pairs.values()
            if {"off", "on"} <= p.keys()
        ]
        summary["default_fastest"] = f"{sum(hits)}/{len(hits)}"
    goal = [
        r
        for r in results
        if (r["backbone"], r["variant"], r["geometry"], r["size"])
        == (GOAL["backbone"], GOAL["variant"], GOAL["geometry"], GOAL["size"])
    ]
    if goal:
        best = min(goal, key=lambda r: r["roofline_ratio"])
        summary["goal"] = {
            **GOAL,
            "best_ratio": best["roofline_ratio"],
            "jit": best["jit"],
            "best_ratio_min_latency": min(r["roofline_ratio_best"] for r in goal),
        }
        summary["goal"]["met"] = best["roofline_ratio"] <= GOAL["max_ratio"]
    return summary


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    from fcn_tf.inference import onednn_weights_frozen

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    began = time.perf_counter()
    progress(f"matmul {args.matmul_size}x{args.matmul_size} fp32 ...")
    matmul_start = measure_matmul(tf, args.matmul_size, args.matmul_repeats, args.quiet_wait)
    progress(f"  TF {matmul_start['tf_gflops']} GFLOP/s, numpy {matmul_start['numpy_gflops']}")
    raw = measure_all(tf, keras, args, began)
    matmul_end = measure_matmul(tf, args.matmul_size, args.matmul_repeats, args.quiet_wait)
    rate, best_rate, matmul = matmul_rate(matmul_start, matmul_end)
    add_roofline(raw, rate, best_rate)
    report = {
        "machine": machine_info(tf, keras),
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "onednn_weights_frozen": onednn_weights_frozen(),
        "matmul": matmul,
        "results": raw,
        "summary": summarize(raw),
        "elapsed_s": round(time.perf_counter() - began, 1),
    }
    print(
        f"fp32 matmul {args.matmul_size}^3: TF {rate:.1f} GFLOP/s (start "
        f"{matmul_start['tf_gflops']}, end {matmul_end['tf_gflops']}), numpy "
        f"{matmul_start['numpy_gflops']} / {matmul_end['numpy_gflops']} GFLOP/s"
    )
    print(table(raw))
    print_summary(report["summary"])
    emit(report, args.json)
    return report


def measure_all(tf, keras, args: argparse.Namespace, began: float) -> list[dict]:
    """One row per backbone, variant, geometry, size and jit setting, latencies measured."""
    from fcn_tf.flops import count_flops
    from fcn_tf.inference import Predictor, default_jit_compile
    from fcn_tf.models import build_fcn, get_backbone

    # Keras applications' backbones take the "same" geometry only.
    plans = [
        (backbone, variant, geometry)
        for backbone in args.backbones
        for variant in args.variants
        for geometry in args.geometries
        if geometry in get_backbone(backbone).geometries
    ]
    if not plans:
        raise SystemExit(
            f"benchmarks/inference.py: error: no backbone of {args.backbones} takes the "
            f"geometries {args.geometries} (Keras applications take 'same' only)"
        )
    total = len(plans) * len(args.sizes) * len(args.jit)
    raw = []
    for backbone, variant, geometry in plans:
        keras.utils.set_random_seed(0)
        start = time.perf_counter()
        options = {"width": args.width, "fc_units": args.fc_units} if backbone == "vgg16" else {}
        model = build_fcn(
            21, VARIANTS[variant], backbone, geometry=geometry, backbone_options=options
        )
        progress(f"built {model.name} {geometry} in {time.perf_counter() - start:.1f} s")
        predictors = {jit: Predictor(model, jit_compile=jit == "on") for jit in args.jit}
        default = "on" if default_jit_compile(model) else "off"
        weight_mib = round(sum(w.numpy().nbytes for w in model.weights) / 2**20, 1)
        for size in args.sizes:
            flops = count_flops(model, (size, size, 3))
            elementwise = count_flops(model, (size, size, 3), elementwise=True) - flops
            for jit in args.jit:
                row = {"backbone": backbone, "variant": variant, "geometry": geometry}
                row.update(size=size, jit=jit, flops=flops, elementwise_flops=elementwise)
                row.update(weights_mib=weight_mib, library_default=default)
                row.update(bench_config(tf, predictors[jit], flops, size, args))
                raw.append(row)
                progress(
                    f"[{len(raw)}/{total}] {backbone} {variant} {geometry} {size} jit={jit}: "
                    f"{row['latency_median_s']:.3f} s ({row['gflops_per_s']} GFLOP/s), "
                    f"elapsed {time.perf_counter() - began:.0f} s"
                )
        del model, predictors
    return raw


def add_roofline(raw: list[dict], rate: float, best_rate: float) -> None:
    """Each row's roofline time and its latency's ratio to it (median, and best vs best)."""
    for row in raw:
        roofline = row["flops"] / (rate * 1e9)
        row["roofline_s"] = round(roofline, 5)
        row["roofline_ratio"] = round(row["latency_median_s"] / roofline, 3)
        # Best against best: what a quiet machine would show when others share this one.
        row["roofline_ratio_best"] = round(row["latency_min_s"] * best_rate * 1e9 / row["flops"], 3)


def print_summary(summary: dict) -> None:
    if "jit_speedup_geomean" in summary:
        print(
            f"XLA speed-up (off/on median latency), geometric mean: "
            f"{summary['jit_speedup_geomean']}x; the library's default "
            f"(fcn_tf.inference.default_jit_compile) was the faster path in "
            f"{summary['default_fastest']}"
        )
    if "goal" in summary:
        goal = summary["goal"]
        print(
            f"goal: {goal['variant']} {goal['geometry']} {goal['size']} within "
            f"{goal['max_ratio']}x of roofline: best {goal['best_ratio']}x (jit {goal['jit']}) "
            f"-> {'met' if goal['met'] else 'not met'} (min latency vs best matmul: "
            f"{goal['best_ratio_min_latency']}x)"
        )


if __name__ == "__main__":
    main()
