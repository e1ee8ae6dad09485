"""Training speed of FCN-8s against this machine's matmul speed: a roofline without PyTorch.

Configurations (``--configs``):

* ``paper``: FCN-8s VGG16 in the reference (``caffe``) geometry on whole 500 x 500 images,
  batch 1, with the authors' solver: the :class:`fcn_tf.training.ReferenceSGD` of
  ``make_optimizer(preset("heavy", 8))`` (loss summed per image, momentum 0.99): the paper's
  setting.
* ``recipe``: the CamVid recipe (``--recipe``, by default ``training/configs/camvid_fcn8s.yaml``)
  with its model, batch, crop (CamVid's 360 x 480 when it trains on whole images) and
  optimizer. While that file does not exist, a stand-in named ``camvid_fcn8s-standin`` runs
  instead: MobileNetV2 FCN-8s (``same`` geometry), batch 4 crops of 352 x 480, ReferenceSGD of
  the ``normalized`` preset without gradient accumulation, poly schedule.

Each runs with ``jit`` off and on x ``float32`` and ``mixed_bfloat16`` (``--jit``,
``--precisions``): the recipe's ``run.jit`` and ``run.precision``, swept.

What is timed is the trainer's own step, built by :class:`fcn_tf.training.loop.Trainer`
(forward, summed cross-entropy over the global normaliser, ``GradientTape``,
``optimizer.apply``; ``run.jit`` XLA-compiles the forward/backward part only), fed one
synthetic batch held in memory and repeated by ``tf.data``: this measures compute, not the
input pipeline (``benchmarks/input_pipeline.py`` measures that). One timed run is one
optimizer update (the recipe's ``accumulate`` steps); figures are per step (one batch).
``first s`` is the first step: tracing and XLA compilation included.

Roofline: FLOPs per step = 3 x forward FLOPs x batch, the forward FLOPs per image from
:func:`fcn_tf.flops.count_flops` (2 x MACs of the convolutions). The factor 3 is the usual
convention: the forward pass, the gradient with respect to the activations and the one with
respect to the weights each cost one forward's MACs (a slight overcount: the first convolution
needs no input gradient, the frozen final upsampler no weight gradient). The roofline time is
those FLOPs over the fp32 matmul rate, measured as ``benchmarks/inference.py`` does
(``tf.linalg.matmul`` of two 4096 x 4096 matrices, at the start and at the end of the run;
runs disturbed by other processes left out). Mixed-precision rows use the same fp32 rate
(``ratio``); the matmul rate of their compute dtype (bf16) is measured too, and ``dt ratio``
compares against it. ``best`` is the fastest step against the fastest fp32 matmul: what a
quiet machine would show. ``bg cpu`` is the share of the CPU that other processes used while
a configuration was timed (see ``benchmarks/common.py``).

Usage::

    python benchmarks/training.py --json /tmp/bench_training.json   # full run, on a quiet CPU
    python benchmarks/training.py --quick                           # smoke run: small images

The full run takes minutes: one VGG16 step on a 500 x 500 image is about 1.1 TFLOP by the
convention above (363 GFLOP forward), the stand-in's step 26 GFLOP.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import statistics
import sys
import tempfile
import time
from typing import Any

import numpy as np

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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(ROOT, "training", "configs", "camvid_fcn8s.yaml")
CAMVID_SIZE = (360, 480)
PAPER = {
    "model": {"output_stride": 8, "backbone": "vgg16", "geometry": "caffe"},
    "data": {"dataset": "voc", "num_classes": 21, "batch_size": 1},
    "solver": {"optimizer": "sgd", "preset": "heavy"},
}
STANDIN = {
    "name": "camvid_fcn8s-standin",
    "model": {"output_stride": 8, "backbone": "mobilenet_v2", "geometry": "same"},
    "data": {"dataset": "camvid", "batch_size": 4, "crop_size": [352, 480]},
    "solver": {"optimizer": "sgd", "preset": "normalized", "accumulate": 1, "schedule": "poly"},
}
CONFIGS = ("paper", "recipe")
QUICK_SIZE = 64  # --quick: the largest image side
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
COMPUTE_DTYPE = {"float32": "float32", "mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}
# Only the learning-rate schedule reads it; long enough that "poly" stays far from zero.
TOTAL_STEPS = 100_000


@dataclasses.dataclass
class Plan:
    """One configuration: a recipe, where it came from, and the input it is timed on."""

    label: str
    source: str
    config: Any  # fcn_tf.training.config.TrainConfig (imported late, after TF's log level)
    num_classes: int
    height: int
    width: int


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS))
    parser.add_argument(
        "--size", type=positive_int, default=500, help="square image size of 'paper'"
    )
    parser.add_argument("--recipe", default=RECIPE, help="recipe YAML of 'recipe'")
    parser.add_argument(
        "--recipe-size",
        type=positive_int,
        nargs=2,
        metavar=("H", "W"),
        help="input of 'recipe' (default: its crop, else CamVid's 360 480; --quick: at most "
        f"{QUICK_SIZE} a side)",
    )
    parser.add_argument("--jit", nargs="+", choices=["off", "on"], default=["off", "on"])
    parser.add_argument(
        "--precisions", nargs="+", choices=PRECISIONS, default=["float32", "mixed_bfloat16"]
    )
    add_timing_arguments(parser, "update", 5, 1, "untimed updates after the first")
    parser.add_argument("--quick", action="store_true", help="smoke run: small images, few runs")
    # For tests: shrink the networks so a run takes seconds (VGG16 width and fc6/fc7 units;
    # MobileNetV2's alpha takes --width).
    parser.add_argument("--width", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--fc-units", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.size = QUICK_SIZE if args.size == 500 else args.size
        args.repeats, args.warmup = min(args.repeats, 2), min(args.warmup, 1)
        args.matmul_size, args.matmul_repeats = min(args.matmul_size, 512), 3
        args.quiet_wait = min(args.quiet_wait, 1.0)
    if args.recipe != RECIPE and "recipe" in args.configs and not os.path.isfile(args.recipe):
        parser.error(f"--recipe {args.recipe}: no such file")
    return args


def shrunk(config, width: float | None, fc_units: int | None):
    """``config`` with a thinner backbone (the hidden test options), else unchanged."""
    options = dict(config.model.backbone_options)
    if config.model.backbone == "vgg16":
        options.update({"width": width} if width is not None else {})
        options.update({"fc_units": fc_units} if fc_units is not None else {})
    elif config.model.backbone == "mobilenet_v2" and width is not None:
        options["alpha"] = width
    return dataclasses.replace(
        config, model=dataclasses.replace(config.model, backbone_options=options)
    )


def make_plans(args) -> list[Plan]:
    from fcn_tf.data.converters import get_converter
    from fcn_tf.training.config import from_dict, load_recipe

    plans = []
    if "paper" in args.configs:
        label = f"fcn8s-vgg16-{args.size}"
        config = shrunk(from_dict({**PAPER, "name": label}), args.width, args.fc_units)
        plans.append(Plan(label, "paper", config, 21, args.size, args.size))
    if "recipe" in args.configs:
        if os.path.exists(args.recipe):
            config, source = load_recipe(args.recipe), os.path.relpath(args.recipe, ROOT)
        else:
            config = from_dict(STANDIN)
            source = f"stand-in ({os.path.relpath(RECIPE, ROOT)} absent)"
            progress(f"{args.recipe} does not exist: timing the stand-in {config.name}")
        config = shrunk(config, args.width, args.fc_units)
        classes = config.data.num_classes
        if classes is None and config.data.dataset is not None:
            names = get_converter(config.data.dataset).class_names
            classes = len(names) if names else None
        if not classes:
            raise SystemExit(f"{args.recipe}: give data.num_classes (its dataset names none)")
        crop = config.data.crop_size
        size = args.recipe_size or (CAMVID_SIZE if crop is None else crop)
        height, width = (size, size) if isinstance(size, int) else size
        if args.quick and args.recipe_size is None:
            height, width = min(height, QUICK_SIZE), min(width, QUICK_SIZE)
        plans.append(Plan(config.name, source, config, classes, height, width))
    return plans


def bench_run(plan: Plan, jit: bool, precision: str, args, tf, keras) -> dict:
    """Time the trainer's step for one recipe at one ``run.jit`` and ``run.precision``."""
    from fcn_tf.flops import count_flops
    from fcn_tf.training.loop import Trainer

    config = plan.config
    config = dataclasses.replace(
        config, run=dataclasses.replace(config.run, jit=jit, precision=precision)
    )
    batch, shape = config.data.batch_size, (plan.height, plan.width)
    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(0, 255, (batch, *shape, 3)).astype(np.float32))
    labels = tf.constant(rng.integers(0, plan.num_classes, (batch, *shape)).astype(np.int32))
    strategy = tf.distribute.get_strategy()
    previous_policy = keras.mixed_precision.global_policy()
    # As Trainer._setup: seed, then the policy, then the model and optimizer built under it.
    keras.utils.set_random_seed(config.run.seed)
    keras.mixed_precision.set_global_policy(precision)
    try:
        with tempfile.TemporaryDirectory() as run_dir:
            # The trainer's own model, optimizer and step (without resolving the recipe's
            # records): what users run, not a copy.
            trainer = Trainer(config, run_dir, strategy=strategy, verbose=0)
            trainer.build(plan.num_classes, TOTAL_STEPS)
            step = trainer.train_step_fn()
        model, optimizer, solver = trainer.model, trainer.optimizer, trainer.solver
        forward = count_flops(model, (*shape, 3))
        dataset = strategy.distribute_datasets_from_function(
            lambda _: tf.data.Dataset.from_tensors((images, labels)).repeat()
        )
        iterator = iter(dataset)
        accumulate = solver.accumulate
        losses: list[float] = []

        def update() -> None:
            # As Trainer._fit: `accumulate` steps per update, each loss read back (a sync).
            losses.append(sum(float(step(iterator)) for _ in range(accumulate)) / accumulate)

        start = time.perf_counter()
        losses.append(float(step(iterator)))
        first = time.perf_counter() - start
        for _ in range(args.warmup):
            update()
        run = timed(update, args.repeats, args.quiet_wait)
        optimizer_name = type(getattr(optimizer, "inner_optimizer", optimizer)).__name__
        policy = model.dtype_policy.name
        params = sum(math.prod(v.shape) for v in model.trainable_variables)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)

    step_s = statistics.median(run["samples"]) / accumulate
    flops = 3 * forward * batch
    return {
        "config": plan.label,
        "source": plan.source,
        "backbone": config.model.backbone,
        "geometry": config.model.geometry or "default",
        "output_stride": config.model.output_stride,
        "backbone_options": config.model.backbone_options,
        "num_classes": plan.num_classes,
        "batch": batch,
        "height": plan.height,
        "width": plan.width,
        "optimizer": optimizer_name,
        "solver_preset": config.solver.preset,
        "normalize": solver.normalize,
        "accumulate": accumulate,
        "trainable_params": params,
        "jit": "on" if jit else "off",
        "precision": precision,
        "dtype_policy": policy,
        "recipe_default": (jit, precision) == (plan.config.run.jit, plan.config.run.precision),
        "forward_flops_per_image": forward,
        "flops": flops,
        "first_step_s": round(first, 3),
        "step_median_s": round(step_s, 5),
        "step_min_s": round(min(run["all_samples"]) / accumulate, 5),
        "images_per_s": round(batch / step_s, 3),
        "gflops_per_s": round(flops / step_s / 1e9, 1),
        "update_samples_s": [round(s, 5) for s in run["all_samples"]],
        "background_cpu_per_run": run["shares"],
        "clean_runs": run["clean_runs"],
        "background_cpu": run["background_cpu"],
        "quiet_wait_s": run["quiet_wait_s"],
        "loss": losses[-1],
        "loss_finite": all(math.isfinite(loss) for loss in losses),
    }


def add_roofline(row: dict, rates: dict[str, tuple[float, float]]) -> None:
    """Roofline time and ratios of a row, from ``{dtype: (rate, best rate)}`` in GFLOP/s."""
    rate, best_rate = rates["float32"]
    roofline = row["flops"] / (rate * 1e9)
    row["roofline_s"] = round(roofline, 5)
    row["roofline_ratio"] = round(row["step_median_s"] / roofline, 3)
    # Best against best: what a quiet machine would show when others share this one.
    row["roofline_ratio_best"] = round(row["step_min_s"] * best_rate * 1e9 / row["flops"], 3)
    own_rate = rates[COMPUTE_DTYPE[row["precision"]]][0]
    row["roofline_ratio_dtype"] = round(row["step_median_s"] * own_rate * 1e9 / row["flops"], 3)


def table(results: list[dict]) -> str:
    head = (
        f"{'config':22} {'input':>13} {'jit':3} {'precision':14} {'s/step':>8} {'img/s':>8} "
        f"{'first s':>7} {'GFLOP':>8} {'GFLOP/s':>7} {'roof s':>8} {'ratio':>6} {'best':>6} "
        f"{'dt ratio':>8} {'bg cpu':>6}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        bg = "-" if r["background_cpu"] is None else f"{r['background_cpu']:.2f}"
        shape = f"{r['batch']}x{r['height']}x{r['width']}"
        lines.append(
            f"{r['config'][:22]:22} {shape:>13} {r['jit']:3} {r['precision']:14} "
            f"{r['step_median_s']:8.4f} {r['images_per_s']:8.2f} {r['first_step_s']:7.1f} "
            f"{r['flops'] / 1e9:8.2f} {r['gflops_per_s']:7.1f} {r['roofline_s']:8.4f} "
            f"{r['roofline_ratio']:6.2f} {r['roofline_ratio_best']:6.2f} "
            f"{r['roofline_ratio_dtype']:8.2f} {bg:>6}"
        )
    return "\n".join(lines)


def summarize(results: list[dict]) -> dict:
    """XLA's and bf16's speed-ups (ratios of median step times) and each config's best run."""

    def speedups(key: str, slow: str, fast: str, rest: tuple[str, ...]) -> dict[str, float]:
        groups: dict[str, dict[str, dict]] = {}
        for r in results:
            groups.setdefault(" ".join(str(r[k]) for k in rest), {})[r[key]] = r
        return {
            name: round(g[slow]["step_median_s"] / g[fast]["step_median_s"], 3)
            for name, g in groups.items()
            if {slow, fast} <= g.keys()
        }

    best = {}
    for r in results:
        if r["config"] not in best or r["images_per_s"] > best[r["config"]]["images_per_s"]:
            best[r["config"]] = {k: r[k] for k in ("jit", "precision", "images_per_s")}
    return {
        "jit_speedup": speedups("jit", "off", "on", ("config", "precision")),
        "bf16_speedup": speedups("precision", "float32", "mixed_bfloat16", ("config", "jit")),
        "fastest": best,
    }


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    from fcn_tf.training.config import to_dict

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    began = time.perf_counter()
    dtypes = list(dict.fromkeys(["float32", *(COMPUTE_DTYPE[p] for p in args.precisions)]))
    matmul_start = {}
    for dtype in dtypes:
        progress(f"matmul {args.matmul_size}x{args.matmul_size} {dtype} ...")
        run = measure_matmul(tf, args.matmul_size, args.matmul_repeats, args.quiet_wait, dtype)
        matmul_start[dtype] = run
        progress(f"  TF {run['tf_gflops']} GFLOP/s")

    plans = make_plans(args)
    total = len(plans) * len(args.jit) * len(args.precisions)
    raw = []
    for plan in plans:
        for precision in args.precisions:
            for jit in args.jit:
                row = bench_run(plan, jit == "on", precision, args, tf, keras)
                # Frees the finished model's graphs and memory (VGG16 at 500 is large).
                keras.backend.clear_session(free_memory=True)
                raw.append(row)
                progress(
                    f"[{len(raw)}/{total}] {plan.label} {row['batch']}x{plan.height}x"
                    f"{plan.width} jit={jit} {precision}: {row['step_median_s']:.3f} s/step, "
                    f"{row['images_per_s']} images/s ({row['gflops_per_s']} GFLOP/s), "
                    f"elapsed {time.perf_counter() - began:.0f} s"
                )

    rates, matmul = {}, {}
    for dtype in dtypes:
        end = measure_matmul(tf, args.matmul_size, args.matmul_repeats, args.quiet_wait, dtype)
        rate, best_rate, matmul[dtype] = matmul_rate(matmul_start[dtype], end)
        rates[dtype] = (rate, best_rate)
    for row in raw:
        add_roofline(row, rates)

    report = {
        "machine": machine_info(tf, keras),
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "flops_convention": "3 x forward FLOPs (count_flops: 2 x MACs) x batch per step",
        "recipes": {plan.label: {"source": plan.source, **to_dict(plan.config)} for plan in plans},
        "matmul": matmul,
        "results": raw,
        "summary": summarize(raw),
        "elapsed_s": round(time.perf_counter() - began, 1),
    }
    for dtype, m in matmul.items():
        print(
            f"{dtype} matmul {args.matmul_size}^3: TF {m['gflops']:.1f} GFLOP/s (start "
            f"{m['start']['tf_gflops']}, end {m['end']['tf_gflops']}, best {m['best_gflops']})"
        )
    print(table(raw))
    summary = report["summary"]
    for name, title in (("jit_speedup", "XLA (jit off/on)"), ("bf16_speedup", "bf16 (fp32/bf16)")):
        if summary[name]:
            pairs = ", ".join(f"{k}: {v}x" for k, v in summary[name].items())
            print(f"{title} speed-up per step: {pairs}")
    for name, fastest in summary["fastest"].items():
        print(
            f"fastest {name}: {fastest['images_per_s']} images/s "
            f"(jit {fastest['jit']}, {fastest['precision']})"
        )
    emit(report, args.json)
    return report


if __name__ == "__main__":
    main()
