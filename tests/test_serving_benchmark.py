"""The serving benchmark's smoke run: every configuration measured over gRPC and in-process,
overheads computed from the measured figures."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest
from helpers import REPO_ROOT

SCRIPT = REPO_ROOT / "benchmarks" / "serving.py"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("bench_serving", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_run_measures_every_configuration(tmp_path):
    report_path = tmp_path / "bench.json"
    command = [sys.executable, str(SCRIPT), "--quick", "--sizes", "40", "--requests=4"]
    command += ["--quiet-wait=0", "--json", str(report_path)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env=env, cwd=REPO_ROOT
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(report_path.read_text())
    rows = {(r["size"], r["concurrency"], r["mode"]): r for r in report["results"]}
    assert set(rows) == {
        (size, concurrency, mode)
        for size in (40,)
        for concurrency in (1, 2)
        for mode in ("in-process", "grpc")
    }
    for row in rows.values():
        # Bursts others disturbed are left out when the clean ones hold half the requests.
        assert 2 <= row["requests"] <= 4 and row["failures"] == []
        assert 0 < row["p50_s"] <= row["p90_s"] <= row["p99_s"]
    for ratio in report["overhead"]:
        key = (ratio["size"], ratio["concurrency"])
        served, local = rows[(*key, "grpc")], rows[(*key, "in-process")]
        assert abs(ratio["latency_ratio"] - served["p50_s"] / local["p50_s"]) < 2e-3
    assert report["goal"] is None  # no 500 x 500 in this run
    assert "overhead (grpc over in-process" in done.stdout


def test_the_goal_takes_the_worst_ratio_at_500():
    bench = load_benchmark()
    ratios = [
        {"size": 500, "concurrency": 1, "latency_ratio": 1.02, "throughput_ratio": 1.01},
        {"size": 500, "concurrency": 4, "latency_ratio": 1.05, "throughput_ratio": 1.2},
        {"size": 224, "concurrency": 1, "latency_ratio": 3.0, "throughput_ratio": 3.0},
    ]
    goal = bench.goal_of(ratios)
    assert goal["worst_ratio"] == 1.2 and goal["met"] is False
    assert bench.goal_of(ratios[:1])["met"] is True


def test_an_export_folder_without_versions_is_refused_untouched(tmp_path):
    empty = tmp_path / "exports"
    empty.mkdir()
    with pytest.raises(SystemExit, match=f"{empty}: no numbered version folder"):
        load_benchmark().main(["--quick", "--model-base-path", str(empty)])
    assert list(empty.iterdir()) == []  # nothing exported into the user's folder
