"""Input pipeline speed against the FCN-8s training step, on CamVid-size (480 x 360) images.

1. Writes temporary TFRecord shards: real CamVid training pairs when
   ``../shared/datasets/camvid`` (from the repository root) exists, else synthetic 480 x 360
   images with blocky labels. Images are stored as their PNG files, as a converter would.
2. Times :func:`fcn_tf.data.load` training pipelines alone (images/s after warm-up), for
   ``whole``: batch 1 whole images, random scale 0.5-2 and mirror (the paper's training), and
   ``crop``: batches of ``--crop`` crops after the same scale and mirror.
3. Times ``model.train_on_batch`` of FCN-8s (SGD with momentum, SegmentationCrossEntropy) on
   batches of the same shapes (whole images at their native 480 x 360), per backbone: the
   median of ``--steps`` steps (fewer once they took ``--step-budget`` seconds) after
   ``--warmup`` untimed ones.

The ratio is pipeline images/s over training images/s; the goal is at least 10: then feeding
the model costs at most a tenth of the CPU that training itself uses (both share the same
cores in a real run; here each runs alone). ``cpu_cores`` is the process CPU time over wall
time while the pipeline ran: how many cores it kept busy.

Usage::

    python benchmarks/input_pipeline.py --json /tmp/bench_pipeline.json   # ~2-3 min on 2 cores
    python benchmarks/input_pipeline.py --quick                           # smoke run
"""

from __future__ import annotations

import argparse
import glob
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np

# Run as a script or imported from elsewhere: the shared helpers sit beside this file.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import emit, json_path, positive_int, progress

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAMVID = os.path.join(ROOT, "..", "shared", "datasets", "camvid")
CAMVID_CLASSES, CAMVID_VOID = 11, 11
GOAL_RATIO = 10.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--camvid", default=CAMVID, help="CamVid folder (SegNet layout)")
    parser.add_argument("--synthetic", action="store_true", help="never read CamVid")
    parser.add_argument("--records", type=positive_int, default=96, help="records written")
    parser.add_argument("--shards", type=positive_int, default=4, help="TFRecord files written")
    parser.add_argument("--modes", nargs="+", choices=["whole", "crop"], default=["whole", "crop"])
    parser.add_argument("--crop", type=positive_int, default=320, help="crop size of the crop mode")
    parser.add_argument("--batch", type=positive_int, default=4, help="batch size of the crop mode")
    parser.add_argument("--jitter", action="store_true", help="add colour jitter")
    parser.add_argument(
        "--images", type=positive_int, default=384, help="images timed per pipeline"
    )
    parser.add_argument(
        "--backbones",
        nargs="*",
        choices=["mobilenet_v2", "vgg16", "resnet50"],
        default=["mobilenet_v2", "vgg16"],
    )
    parser.add_argument(
        "--steps", type=positive_int, default=3, help="timed training steps (at most)"
    )
    parser.add_argument(
        "--step-budget",
        type=float,
        default=20.0,
        metavar="S",
        help="stop timing a configuration's steps once they took S seconds (at least one step)",
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps (the first traces)")
    parser.add_argument(
        "--json", type=json_path, metavar="PATH", help="also write the JSON report here"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: few images and steps")
    # For tests: small images and a thin network, so that a run takes seconds.
    parser.add_argument(
        "--size", type=positive_int, nargs=2, default=[360, 480], help=argparse.SUPPRESS
    )
    parser.add_argument("--width", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--fc-units", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.records, args.images = min(args.records, 16), min(args.images, 32)
        args.shards, args.steps, args.warmup = (
            min(args.shards, 2),
            min(args.steps, 2),
            min(args.warmup, 1),
        )
        args.shards = min(args.shards, args.records)
        if args.backbones == ["mobilenet_v2", "vgg16"]:
            args.backbones = ["mobilenet_v2"]
    if args.camvid != CAMVID and not args.synthetic and not camvid_pairs(args.camvid):
        parser.error(f"--camvid {args.camvid}: no train/*.png there (SegNet's CamVid layout)")
    return args


def camvid_pairs(folder: str) -> list[tuple[str, str]]:
    images = sorted(glob.glob(os.path.join(folder, "train", "*.png")))
    return [(i, os.path.join(folder, "trainannot", os.path.basename(i))) for i in images]


def write_shards(directory: str, args, tf) -> dict:
    """TFRecord shards of CamVid (or synthetic) pairs; returns where they came from."""
    from PIL import Image

    from fcn_tf.data.records import Sample, encode_example

    height, width = args.size
    pairs = [] if args.synthetic else camvid_pairs(args.camvid)
    real = len(pairs) > 0 and [height, width] == [360, 480]
    rng = np.random.default_rng(0)
    writers = [
        tf.io.TFRecordWriter(os.path.join(directory, f"train-{i:02d}.tfrecord"))
        for i in range(args.shards)
    ]
    for i in range(args.records):
        if real:
            image_path, label_path = pairs[i % len(pairs)]
            with open(image_path, "rb") as file:
                image = file.read()  # kept encoded, as converters store it
            label = np.asarray(Image.open(label_path))
            name = os.path.basename(image_path)
        else:
            cells = rng.integers(0, CAMVID_CLASSES + 1, (height // 24 + 1, width // 24 + 1))
            label = np.kron(cells, np.ones((24, 24), np.int64))[:height, :width].astype(np.uint8)
            noise = rng.integers(0, 40, (height, width, 3))
            image = (label[..., None] * 20 + noise).astype(np.uint8)
            name = f"synthetic_{i:04d}.png"
        writers[i % args.shards].write(encode_example(Sample(name, image, label), height, width))
    for writer in writers:
        writer.close()
    total = sum(os.path.getsize(p) for p in glob.glob(os.path.join(directory, "*.tfrecord")))
    return {
        "source": "camvid" if real else "synthetic",
        "records": args.records,
        "distinct_images": min(args.records, len(pairs)) if real else args.records,
        "shards": args.shards,
        "size_hw": [height, width],
        "mean_record_kb": round(total / args.records / 1024, 1),
    }


def pipeline_settings(mode: str, args) -> dict:
    settings = {
        "training": True,
        "scale_range": (0.5, 2.0),
        "mirror": True,
        "jitter": args.jitter,
        "ignore_label": CAMVID_VOID,
        "seed": 0,
        "repeat": True,
    }
    if mode == "crop":
        settings.update(batch_size=args.batch, crop_size=args.crop)
    return settings


def time_pipeline(files: str, mode: str, args) -> dict:
    from fcn_tf.data import pipeline

    dataset = pipeline.load(files, **pipeline_settings(mode, args))
    iterator = iter(dataset)
    for _ in range(3 if mode == "whole" else 2):  # fill the shuffle and prefetch buffers
        next(iterator)
    images, batches, pixels = 0, 0, 0
    cpu0, start = os.times(), time.perf_counter()
    while images < args.images:
        batch, _ = next(iterator)
        images += int(batch.shape[0])
        pixels += int(np.prod(batch.shape[:3]))
        batches += 1
    wall = time.perf_counter() - start
    cpu1 = os.times()
    cpu = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    return {
        "images": images,
        "batches": batches,
        "seconds": round(wall, 3),
        "images_per_s": round(images / wall, 1),
        "mean_output_megapixels": round(pixels / images / 1e6, 3),
        "cpu_cores": round(cpu / wall, 2),
        "settings": {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in pipeline_settings(mode, args).items()
        },
    }


def time_training(backbone: str, shape: tuple[int, int, int], args, tf, keras) -> dict:
    import fcn_tf

    options = {}
    if args.width is not None:
        options = {"alpha": args.width} if backbone == "mobilenet_v2" else {"width": args.width}
    if args.fc_units is not None and backbone == "vgg16":
        options["fc_units"] = args.fc_units
    began = time.perf_counter()
    model = fcn_tf.build_fcn(CAMVID_CLASSES, 8, backbone=backbone, backbone_options=options)
    model.compile(
        optimizer=keras.optimizers.SGD(1e-3, momentum=0.9),
        loss=fcn_tf.SegmentationCrossEntropy(ignore_label=CAMVID_VOID),
    )
    build = time.perf_counter() - began
    batch, height, width = shape
    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(0, 255, (batch, height, width, 3)).astype(np.float32))
    labels = tf.constant(rng.integers(0, CAMVID_CLASSES + 1, (batch, height, width)), tf.int32)
    began = time.perf_counter()
    for _ in range(args.warmup):
        model.train_on_batch(images, labels)
    first = time.perf_counter() - began
    samples = []
    for _ in range(args.steps):
        began = time.perf_counter()
        model.train_on_batch(images, labels)  # returns the loss as numpy: synchronous
        samples.append(time.perf_counter() - began)
        if sum(samples) >= args.step_budget:
            break
    median = statistics.median(samples)
    return {
        "backbone": backbone,
        "backbone_options": options,
        "input_shape": [batch, height, width, 3],
        "params": model.count_params(),
        "jit_compile": bool(model.jit_compile),
        "build_s": round(build, 2),
        "warmup_s": round(first, 2),
        "step_samples_s": [round(s, 3) for s in samples],
        "step_median_s": round(median, 3),
        "images_per_s": round(batch / median, 3),
    }


def table(report: dict) -> str:
    head = (
        f"{'mode':6} {'pipeline img/s':>14} {'cores':>5} {'backbone':13} {'input':>16} "
        f"{'step s':>7} {'train img/s':>11} {'ratio':>7} {'goal':>5}"
    )
    lines = [head, "-" * len(head)]
    for row in report["comparison"]:
        shape = "x".join(map(str, row["input_shape"][:3]))
        lines.append(
            f"{row['mode']:6} {row['pipeline_images_per_s']:14.1f} "
            f"{row['pipeline_cpu_cores']:5.2f} {row['backbone']:13} {shape:>16} "
            f"{row['step_median_s']:7.3f} "
            f"{row['train_images_per_s']:11.3f} {row['ratio']:7.1f} "
            f"{'met' if row['meets_goal'] else 'NOT':>5}"
        )
    for mode, result in report["pipelines"].items():
        if not any(row["mode"] == mode for row in report["comparison"]):
            lines.append(f"{mode:6} {result['images_per_s']:14.1f} {result['cpu_cores']:5.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    began = time.perf_counter()
    import keras
    import tensorflow as tf

    report: dict = {
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
        },
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "goal_ratio": GOAL_RATIO,
    }
    with tempfile.TemporaryDirectory(prefix="fcn-pipeline-bench-") as directory:
        progress(f"writing {args.records} records in {args.shards} shards ...")
        report["data"] = write_shards(directory, args, tf)
        progress(f"data: {report['data']}")
        files = os.path.join(directory, "*.tfrecord")
        report["pipelines"] = {}
        for mode in args.modes:
            progress(f"timing the {mode} pipeline ...")
            report["pipelines"][mode] = time_pipeline(files, mode, args)
            progress(f"  {report['pipelines'][mode]['images_per_s']} images/s")

    height, width = args.size
    shapes = {"whole": (1, height, width), "crop": (args.batch, args.crop, args.crop)}
    report["training"], report["comparison"] = [], []
    for backbone in args.backbones:
        for mode in args.modes:
            progress(f"timing FCN-8s {backbone} training on {shapes[mode]} ...")
            result = time_training(backbone, shapes[mode], args, tf, keras)
            result["mode"] = mode
            report["training"].append(result)
            progress(f"  {result['step_median_s']} s/step")
            pipeline_rate = report["pipelines"][mode]["images_per_s"]
            ratio = pipeline_rate / result["images_per_s"]
            report["comparison"].append(
                {
                    "mode": mode,
                    "backbone": backbone,
                    "input_shape": result["input_shape"],
                    "pipeline_images_per_s": pipeline_rate,
                    "pipeline_cpu_cores": report["pipelines"][mode]["cpu_cores"],
                    "step_median_s": result["step_median_s"],
                    "train_images_per_s": result["images_per_s"],
                    "ratio": round(ratio, 1),
                    "meets_goal": ratio >= GOAL_RATIO,
                }
            )
            keras.backend.clear_session()
    report["elapsed_s"] = round(time.perf_counter() - began, 1)

    print(table(report))
    ratios = [row["ratio"] for row in report["comparison"]]
    if ratios:
        print(
            f"pipeline / training step: {min(ratios)}x at worst (goal >= {GOAL_RATIO}x: "
            f"{'met' if min(ratios) >= GOAL_RATIO else 'NOT met'}); data: "
            f"{report['data']['source']}, {report['data']['records']} records"
        )
    emit(report, args.json)
    return report


if __name__ == "__main__":
    main()
