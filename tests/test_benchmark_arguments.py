"""The benchmarks refuse unusable arguments when they parse them, before any minutes of
measuring (they used to fail at the end with a traceback, or report rows for 0x0 images)."""

import importlib
import sys

import pytest
from helpers import REPO_ROOT


@pytest.fixture(scope="module")
def benchmarks():
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    try:
        yield {name: importlib.import_module(name) for name in
               ("inference", "training", "input_pipeline", "serving")}  # fmt: skip
    finally:
        sys.path.remove(str(REPO_ROOT / "benchmarks"))


@pytest.mark.parametrize(
    ("script", "arguments", "message"),
    [
        ("inference", ["--repeats", "0"], "--repeats: 0 is not a positive integer"),
        ("inference", ["--sizes", "0"], "--sizes: 0 is not a positive integer"),
        ("inference", ["--matmul-size", "0"], "--matmul-size: 0 is not a positive integer"),
        ("training", ["--size", "0"], "--size: 0 is not a positive integer"),
        ("training", ["--recipe", str(REPO_ROOT / "training")], "no such file"),
        ("serving", ["--concurrency", "0"], "--concurrency: 0 is not a positive integer"),
        ("input_pipeline", ["--shards", "0"], "--shards: 0 is not a positive integer"),
        ("input_pipeline", ["--camvid", "/no/such/camvid"], "no train/*.png there"),
        ("inference", ["--json", "/no/such/folder/report.json"], "not a file in an existing"),
    ],
)
def test_unusable_arguments_are_refused_when_parsed(benchmarks, capsys, script, arguments, message):
    with pytest.raises(SystemExit) as caught:
        benchmarks[script].parse_args(arguments)
    assert caught.value.code == 2 and message in capsys.readouterr().err


def test_quick_never_raises_what_was_asked_for(benchmarks):
    args = benchmarks["input_pipeline"].parse_args(["--quick", "--shards", "1", "--warmup", "0"])
    assert (args.shards, args.warmup) == (1, 0)
    serving = benchmarks["serving"]
    assert "fc 16" in serving.describe_model(serving.parse_args(["--fc-units", "16"]))
