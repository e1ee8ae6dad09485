"""Helpers the benchmarks share: quiet-machine timing, matmul rates, machine description.

This machine is shared with other jobs, so every timed call is paired with the share of the
CPU that other processes used meanwhile (:class:`BackgroundLoad`, Linux only), and
:func:`timed` waits for them to go idle and redoes the calls they disturbed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np

# Another process using more than this share of the CPU during a run spoils it.
BUSY = 0.1


def emit(report: dict, json_path: str | None) -> None:
    """Print ``report`` as JSON and, given a path, write it there atomically."""
    print(json.dumps(report, indent=2))
    if json_path:
        from fcn_tf.files import write_json

        write_json(json_path, report)
        progress(f"wrote {json_path}")


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1 (sizes, counts, repeats)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def json_path(text: str) -> str:
    """An argparse type: a file to write the report to, in a folder that exists (checked
    before the run, not after minutes of it)."""
    folder = os.path.dirname(os.path.abspath(text))
    if os.path.isdir(text) or not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(f"{text}: not a file in an existing folder")
    return text


def progress(message: str) -> None:
    """A progress line on stderr (stdout carries the results)."""
    print(message, file=sys.stderr, flush=True)


class BackgroundLoad:
    """Share of all cores' time that other processes used between ``start`` and ``stop``."""

    def __init__(self) -> None:
        self.hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def _busy(self) -> float | None:
        try:
            with open("/proc/stat") as stat:
                fields = [int(v) for v in stat.readline().split()[1:]]
        except OSError:
            return None
        idle = fields[3] + fields[4]  # idle + iowait
        return (sum(fields[:8]) - idle) / self.hz

    def wait_for_quiet(self, max_wait_s: float, threshold: float = 0.1) -> float:
        """Sleep until others use under ``threshold`` of the CPU for 0.25 s; seconds waited."""
        began = time.perf_counter()
        while time.perf_counter() - began < max_wait_s:
            self.start()
            time.sleep(0.25)
            share = self.stop()
            if share is None or share < threshold:
                break
        return time.perf_counter() - began

    def start(self) -> None:
        times = os.times()
        self._t0 = (time.perf_counter(), self._busy(), times.user + times.system)

    def stop(self) -> float | None:
        wall0, busy0, own0 = self._t0
        wall, busy, times = time.perf_counter() - wall0, self._busy(), os.times()
        if busy is None or busy0 is None or wall <= 0:
            return None
        other = (busy - busy0) - (times.user + times.system - own0)
        return round(max(0.0, other / (wall * (os.cpu_count() or 1))), 3)


def timed(fn: Callable[[], object], repeats: int, quiet_wait: float = 0.0) -> dict:
    """Wall times of ``repeats`` calls made while other processes left the CPU idle.

    Before each call it waits (``quiet_wait`` s in all) for others to go idle; when waiting is
    on, a call during which others still used the CPU is redone, up to ``repeats`` extra
    calls. The median then covers the clean calls, or all if fewer than half were clean.
    """
    load, runs, waited = BackgroundLoad(), [], 0.0
    attempts = 2 * repeats if quiet_wait > 0 else repeats
    while len(runs) < attempts and sum(s is None or s < BUSY for _, s in runs) < repeats:
        if quiet_wait - waited > 0:
            waited += load.wait_for_quiet(quiet_wait - waited, BUSY)
        load.start()
        start = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - start, load.stop()))
    clean = [t for t, s in runs if s is None or s < BUSY]
    shares = [s for _, s in runs if s is not None]
    return {
        "samples": clean if 2 * len(clean) >= repeats else [t for t, _ in runs],
        "all_samples": [t for t, _ in runs],
        "shares": [s for _, s in runs],
        "clean_runs": len(clean),
        "background_cpu": round(statistics.mean(shares), 3) if shares else None,
        "quiet_wait_s": round(waited, 1),
    }


def measure_matmul(
    tf, n: int, repeats: int, quiet_wait: float = 0.0, dtype: str = "float32"
) -> dict:
    """``n x n`` matmul rates of TensorFlow (and numpy, for float32) in GFLOP/s.

    The figures come from median times; ``dtype`` is any TensorFlow float type (``bfloat16``
    and ``float16``: numpy has no fast kernels for them, so it is timed for float32 only).
    """
    flops = 2 * n**3
    rng = np.random.default_rng(0)
    a_np, b_np = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    a, b = tf.cast(tf.constant(a_np), dtype), tf.cast(tf.constant(b_np), dtype)
    matmul = tf.function(tf.linalg.matmul)
    matmul(a, b).numpy()
    tf_run = timed(lambda: matmul(a, b).numpy(), repeats, quiet_wait)
    tf_samples = tf_run["all_samples"]
    numpy_gflops = None
    if dtype == "float32":
        a_np @ b_np
        np_samples = timed(lambda: a_np @ b_np, max(3, repeats // 2), quiet_wait)["samples"]
        numpy_gflops = round(flops / statistics.median(np_samples) / 1e9, 1)
    return {
        "n": n,
        "dtype": dtype,
        "tf_samples_s": [round(s, 5) for s in tf_samples],
        "tf_background_cpu": tf_run["shares"],
        "tf_gflops": round(flops / statistics.median(tf_samples) / 1e9, 1),
        "tf_best_gflops": round(flops / min(tf_samples) / 1e9, 1),
        "numpy_gflops": numpy_gflops,
        "background_cpu": tf_run["background_cpu"],
    }


def matmul_rate(start: dict, end: dict) -> tuple[float, float, dict]:
    """The rate of two :func:`measure_matmul` runs (same ``n``): ``(GFLOP/s, best GFLOP/s,
    report)``.

    The rate is the median over the calls during which others left the CPU idle (all calls if
    none were): the machine's rate, not a neighbour's leftovers. ``best`` is the fastest call.
    """
    samples = start["tf_samples_s"] + end["tf_samples_s"]
    shares = start["tf_background_cpu"] + end["tf_background_cpu"]
    quiet = [t for t, share in zip(samples, shares, strict=True) if share is None or share < BUSY]
    flops = 2 * start["n"] ** 3
    rate = flops / statistics.median(quiet or samples) / 1e9
    best_rate = flops / min(samples) / 1e9
    report = {
        "gflops": round(rate, 1),
        "quiet_samples": len(quiet),
        "best_gflops": round(best_rate, 1),
        "start": start,
        "end": end,
    }
    return rate, best_rate, report


def machine_info(tf, keras) -> dict:
    """Processor, versions, TensorFlow's threading and the environment settings that matter."""
    return {
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "env": {
            k: v
            for k, v in os.environ.items()
            if k.startswith(("TF_ENABLE_ONEDNN", "TF_ONEDNN", "XLA_FLAGS", "OMP_"))
        },
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
    }


def add_timing_arguments(
    parser: argparse.ArgumentParser, unit: str, repeats: int, warmup: int, warmup_help: str
) -> None:
    """The options every benchmark shares: repeats, warm-up, matmul, threads, quiet wait, JSON."""
    parser.add_argument(
        "--repeats", type=positive_int, default=repeats, help=f"timed {unit}s per configuration"
    )
    parser.add_argument("--warmup", type=int, default=warmup, help=warmup_help)
    parser.add_argument("--matmul-size", type=positive_int, default=4096)
    parser.add_argument("--matmul-repeats", type=positive_int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="TF intra-op threads (0: all)")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=10.0,
        metavar="S",
        help="per configuration, wait up to S seconds in all for other processes to go idle "
        f"before each timed {unit} (0: never wait)",
    )
    parser.add_argument(
        "--json", type=json_path, metavar="PATH", help="also write the JSON report here"
    )
