"""Serving overhead: the local gRPC server against the same model called in-process.

An FCN-8s (VGG16, reference ``caffe`` geometry, 21 classes; ``--quick``: a thin one) is
exported with :func:`fcn_tf.export.export_saved_model` and served by
``serving/local_server.py`` in its own process. For every image size x concurrency, the same
uint8 images go

* ``grpc``: through :class:`fcn_tf.serving.GrpcClient` (TF Serving's stubs), one client and
  channel per thread, ``serving_default``, class ids back;
* ``in-process``: to the same SavedModel's ``serving_default`` signature loaded in this
  process, called from as many threads: the same computation without serving.

Each configuration sends at least ``--requests`` requests per mode (batch 1) in bursts of
``--concurrency`` simultaneous requests, one per thread, after a warm-up; the two modes'
bursts alternate (A B B A ...), so that another process's load falls on both alike, and a
burst during which other processes used the CPU is redone (``--retries``; percentiles then
cover the clean bursts, or all if fewer than half were clean, as ``common.timed`` does). It
reports p50/p90/p99 and minimum latency and requests/s. The overhead is grpc over
in-process: of the p50 latencies, of the minimum latencies (what a quiet machine would show)
and of the throughputs; the goal is at most 1.15x at 500 x 500. ``added ms/request`` is the
difference of the wall times per request (1 / throughput): what serving costs each request,
which a thin model (``--width 0.0625 --fc-units 16``) measures with less noise than the full
one. ``bg cpu`` is the share of the CPU that processes other than this one and the server
used meanwhile (the machine is shared; see ``benchmarks/common.py``).

Usage::

    python benchmarks/serving.py --json /tmp/bench_serving.json     # full VGG16, minutes
    python benchmarks/serving.py --quick                            # smoke run, seconds
    python benchmarks/serving.py --model-base-path exports/fcn      # an existing export
    python benchmarks/serving.py --width 0.0625 --fc-units 16 --requests 48   # the cost per request
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

# Run as a script or imported from elsewhere: the shared helpers sit beside this file.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (
    BUSY,
    BackgroundLoad,
    emit,
    json_path,
    machine_info,
    positive_int,
    progress,
)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOAL = {"size": 500, "max_ratio": 1.15}
MODES = ("in-process", "grpc")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", type=positive_int, nargs="+", default=[224, 500], help="square sizes"
    )
    parser.add_argument("--concurrency", type=positive_int, nargs="+", default=[1, 2, 4])
    parser.add_argument(
        "--requests", type=positive_int, default=8, help="timed requests per config"
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed requests per thread")
    parser.add_argument("--model-base-path", help="serve this export instead of a new one")
    parser.add_argument(
        "--retries", type=int, default=2, help="redo a burst others disturbed up to N times"
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=10.0,
        metavar="S",
        help="per configuration, wait up to S s for other processes to go idle (0: never)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: thin model, small")
    parser.add_argument(
        "--json", type=json_path, metavar="PATH", help="also write the JSON report here"
    )
    parser.add_argument("--width", type=float, default=1.0, help="VGG16 channel multiplier")
    parser.add_argument("--fc-units", type=int, default=4096, help="fc6/fc7 channels")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes = [64] if args.sizes == [224, 500] else args.sizes
        args.concurrency = [1, 2] if args.concurrency == [1, 2, 4] else args.concurrency
        args.requests = min(args.requests, 6)
        args.quiet_wait = min(args.quiet_wait, 1.0)
        args.width, args.fc_units = min(args.width, 1 / 16), min(args.fc_units, 16)
    return args


class ForeignLoad(BackgroundLoad):
    """Share of the CPU used by processes other than this one and the server ``pid``."""

    def __init__(self, pid: int) -> None:
        super().__init__()
        self.pid = pid

    def _server_seconds(self) -> float | None:
        try:
            with open(f"/proc/{self.pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / self.hz  # utime, stime

    def start(self) -> None:
        self._server0 = self._server_seconds()
        super().start()

    def stop(self) -> float | None:
        wall = time.perf_counter() - self._t0[0]
        share, server0, server = super().stop(), self._server0, self._server_seconds()
        if share is None or server0 is None or server is None or wall <= 0:
            return share
        server_share = (server - server0) / (wall * (os.cpu_count() or 1))
        return round(max(0.0, share - server_share), 3)


def export_model(args, base: str) -> str:
    """Build and export the benchmark's FCN-8s into ``base``; the version folder."""
    import keras

    from fcn_tf.export import export_saved_model
    from fcn_tf.models import build_fcn

    keras.utils.set_random_seed(0)
    options = {"width": args.width, "fc_units": args.fc_units}
    start = time.perf_counter()
    model = build_fcn(21, 8, "vgg16", geometry="caffe", backbone_options=options)
    folder = export_saved_model(model, base)
    progress(f"built and exported {model.name} in {time.perf_counter() - start:.1f} s: {folder}")
    return folder


def describe_model(args) -> str:
    full = args.width == 1 and args.fc_units == 4096
    width = "" if full else f", width {args.width:g}, fc {args.fc_units}"
    return f"FCN-8s VGG16 caffe, 21 classes{width}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(base: str, port: int) -> subprocess.Popen:
    """``serving/local_server.py`` on ``base`` in its own process, once it is serving."""
    command = [
        sys.executable,
        os.path.join(REPO_ROOT, "serving", "local_server.py"),
        "--model-name=fcn",
        f"--model-base-path={base}",
        f"--port={port}",
        "--rest-port=0",
    ]
    env = {**os.environ, "PYTHONPATH": REPO_ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"}
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    watchdog = threading.Timer(600, server.kill)  # a server that never gets ready
    watchdog.start()
    line = server.stdout.readline()
    watchdog.cancel()
    if "serving gRPC" not in line:
        stop_server(server)
        raise RuntimeError(f"the local server did not start: {line!r}")
    return server


def stop_server(server: subprocess.Popen) -> None:
    """Terminate the server process, killing it if it does not go within a minute."""
    server.terminate()
    try:
        server.wait(60)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
    server.stdout.close()


def burst(calls: list, images: list, first: int) -> tuple[list[float], list[str], float]:
    """One request per call, all at once, each from its own thread: latencies, failures and
    the wall time of the burst."""
    latencies, failures, lock = [], [], threading.Lock()

    def worker(call, image) -> None:
        start = time.perf_counter()
        try:
            call(image)
        except Exception as error:  # counted and reported, never a silent fast path
            failures.append(repr(error))
            return
        with lock:
            latencies.append(time.perf_counter() - start)

    threads = [
        threading.Thread(target=worker, args=(call, images[(first + i) % len(images)]))
        for i, call in enumerate(calls)
    ]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, failures, time.perf_counter() - start


def summarize(bursts: list[dict]) -> dict:
    """Latency percentiles and throughput of a mode's bursts: the clean ones (others left the
    CPU idle) when they hold at least half of the requests, else all."""
    clean = [b for b in bursts if b["clean"]]
    total = sum(len(b["latencies"]) for b in bursts)
    used = clean if 2 * sum(len(b["latencies"]) for b in clean) >= total else bursts
    latencies = [t for b in used for t in b["latencies"]]
    shares = [b["share"] for b in bursts if b["share"] is not None]
    p50, p90, p99 = (float(np.percentile(latencies, q)) for q in (50, 90, 99))
    wall = sum(b["wall"] for b in used)
    return {
        "requests": len(latencies),
        "failures": [f for b in bursts for f in b["failures"]],
        "p50_s": round(p50, 4),
        "p90_s": round(p90, 4),
        "p99_s": round(p99, 4),
        "min_s": round(min(latencies), 4),
        "mean_s": round(statistics.mean(latencies), 4),
        "requests_per_s": round(len(latencies) / wall, 3),
        "wall_s": round(wall, 3),
        "clean_bursts": f"{len(clean)}/{len(bursts)}",
        "background_cpu": round(statistics.mean(shares), 3) if shares else None,
    }


def quiet_burst(calls: list, images: list, first: int, args, load, wait: float) -> dict:
    """A :func:`burst` during which others left the CPU idle: redone up to ``args.retries``
    times when they did not (with waiting on), each try after up to ``wait`` s of waiting."""
    tries = 1 + (args.retries if args.quiet_wait > 0 else 0)
    for _ in range(tries):
        if wait > 0:
            load.wait_for_quiet(wait, BUSY)
        load.start()
        latencies, failures, wall = burst(calls, images, first)
        share = load.stop()
        clean = share is None or share < BUSY
        if clean:
            break
    return {
        "latencies": latencies,
        "failures": failures,
        "wall": wall,
        "share": share,
        "clean": clean,
    }


def measure_pair(callers: dict, images: list, concurrency: int, args, load) -> dict:
    """Both modes at ``concurrency``, interleaved: bursts of ``concurrency`` requests, in
    alternating order (A B B A ...), so that a neighbour's load falls on both modes alike."""
    calls = {mode: [make() for _ in range(concurrency)] for mode, make in callers.items()}
    for mode_calls in calls.values():  # warm-up: a new shape, a new channel
        for call in mode_calls:
            for index in range(args.warmup):
                call(images[index % len(images)])
    rounds = max(1, -(-args.requests // concurrency))
    wait = args.quiet_wait / (2 * rounds)
    bursts = {mode: [] for mode in MODES}
    for round_index in range(rounds):
        for mode in MODES if round_index % 2 == 0 else MODES[::-1]:
            first = round_index * concurrency
            bursts[mode].append(quiet_burst(calls[mode], images, first, args, load, wait))
    return {mode: summarize(bursts[mode]) for mode in MODES}


def overheads(results: list[dict]) -> list[dict]:
    """Per size x concurrency: grpc / in-process p50 latency and in-process / grpc req/s."""
    rows = {(r["size"], r["concurrency"], r["mode"]): r for r in results}
    out = []
    for (size, concurrency, mode), served in rows.items():
        local = rows.get((size, concurrency, "in-process"))
        if mode != "grpc" or local is None:
            continue
        out.append(
            {
                "size": size,
                "concurrency": concurrency,
                "latency_ratio": round(served["p50_s"] / local["p50_s"], 3),
                "min_latency_ratio": round(served["min_s"] / local["min_s"], 3),
                "throughput_ratio": round(local["requests_per_s"] / served["requests_per_s"], 3),
                # What serving adds to each request's share of the wall time.
                "added_ms_per_request": round(
                    1e3 / served["requests_per_s"] - 1e3 / local["requests_per_s"], 2
                ),
            }
        )
    return out


def table(results: list[dict], ratios: list[dict]) -> str:
    head = (
        f"{'size':>4} {'conc':>4} {'mode':10} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} "
        f"{'min ms':>8} {'req/s':>7} {'n':>3} {'clean':>5} {'bg cpu':>6}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        bg = "-" if r["background_cpu"] is None else f"{r['background_cpu']:.2f}"
        times = "".join(f"{r[key] * 1e3:9.1f}" for key in ("p50_s", "p90_s", "p99_s", "min_s"))
        lines.append(
            f"{r['size']:4d} {r['concurrency']:4d} {r['mode']:10}{times} "
            f"{r['requests_per_s']:7.2f} {r['requests']:3d} {r['clean_bursts']:>5} {bg:>6}"
        )
    lines += ["", "overhead (grpc over in-process; 1.0 = none):"]
    lines.append(
        f"{'size':>4} {'conc':>4} {'p50 latency':>12} {'min latency':>12} {'req/s':>7} "
        f"{'added ms/request':>17}"
    )
    for r in ratios:
        lines.append(
            f"{r['size']:4d} {r['concurrency']:4d} {r['latency_ratio']:12.3f} "
            f"{r['min_latency_ratio']:12.3f} {r['throughput_ratio']:7.3f} "
            f"{r['added_ms_per_request']:17.2f}"
        )
    return "\n".join(lines)


def goal_of(ratios: list[dict]) -> dict | None:
    at_goal = [r for r in ratios if r["size"] == GOAL["size"]]
    if not at_goal:
        return None
    worst = max(max(r["latency_ratio"], r["throughput_ratio"]) for r in at_goal)
    return {**GOAL, "worst_ratio": worst, "met": worst <= GOAL["max_ratio"]}


def measure(args, folder: str, server: subprocess.Popen, port: int) -> list[dict]:
    import tensorflow as tf

    from fcn_tf.serving import GrpcClient

    signature = tf.saved_model.load(folder).signatures["serving_default"]
    rng = np.random.default_rng(0)
    load = ForeignLoad(server.pid)
    clients = []

    def grpc_call():
        clients.append(GrpcClient(f"127.0.0.1:{port}", "fcn", timeout=600))
        return clients[-1].predict

    callers = {
        "in-process": lambda: lambda image: signature(images=image)["class_ids"].numpy(),
        "grpc": grpc_call,
    }
    results = []
    total = len(args.sizes) * len(args.concurrency) * len(MODES)
    try:
        for size in args.sizes:
            images = [rng.integers(0, 256, (1, size, size, 3), dtype=np.uint8) for _ in range(4)]
            for concurrency in args.concurrency:
                pair = measure_pair(callers, images, concurrency, args, load)
                for mode in MODES:
                    results.append({"size": size, "concurrency": concurrency, "mode": mode})
                    results[-1].update(pair[mode])
                    progress(
                        f"[{len(results)}/{total}] {size} x{concurrency} {mode}: p50 "
                        f"{pair[mode]['p50_s'] * 1e3:.1f} ms, "
                        f"{pair[mode]['requests_per_s']:.2f} req/s, "
                        f"bg cpu {pair[mode]['background_cpu']}"
                    )
    finally:
        for client in clients:
            client.close()
    return results


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    from fcn_tf.export.versions import latest_version_folder

    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_serving_") as scratch:
        base = args.model_base_path or os.path.join(scratch, "fcn")
        if args.model_base_path:
            folder = latest_version_folder(base)
            if folder is None:
                # Never export a random model into the user's folder and time that instead.
                sys.exit(f"--model-base-path {base}: no numbered version folder to serve")
        else:
            folder = export_model(args, base)
        port = free_port()
        server = start_server(base, port)
        try:
            results = measure(args, folder, server, port)
        finally:
            stop_server(server)
    ratios = overheads(results)
    report = {
        "machine": machine_info(tf, keras),
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "model": folder if args.model_base_path else describe_model(args),
        "results": results,
        "overhead": ratios,
        "goal": goal_of(ratios),
        "elapsed_s": round(time.perf_counter() - began, 1),
    }
    print(table(results, ratios))
    if report["goal"]:
        goal = report["goal"]
        print(
            f"goal: serving overhead at {goal['size']}x{goal['size']} within "
            f"{goal['max_ratio']}x: worst {goal['worst_ratio']}x -> "
            f"{'met' if goal['met'] else 'not met'}"
        )
    emit(report, args.json)
    return report


if __name__ == "__main__":
    main()
