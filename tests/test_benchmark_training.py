"""The training benchmark's smoke run: every configuration timed, FLOPs as documented."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import yaml
from conftest import TINY_VGG
from helpers import REPO_ROOT

from fcn_tf.flops import count_flops
from fcn_tf.models import build_fcn

# A recipe unlike the paper's: Adam, two micro-batches per update, non-square crops, and no
# data.num_classes (the synthetic converter's six classes).
RECIPE = {
    "model": {"geometry": "same", "backbone_options": dict(TINY_VGG)},
    "data": {"dataset": "synthetic", "batch_size": 2, "crop_size": [32, 48]},
    "solver": {"optimizer": "adam", "learning_rate": 1e-3, "accumulate": 2},
}
JIT = ["on"]
# bfloat16 first: a policy left over from it would show in the float32 rows.
PRECISIONS = ["mixed_bfloat16", "float32"]


def test_quick_run_times_every_configuration(tmp_path):
    recipe = tmp_path / "tiny_recipe.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    report_path = tmp_path / "bench.json"
    command = [
        sys.executable,
        str(REPO_ROOT / "benchmarks" / "training.py"),
        "--quick",
        f"--width={TINY_VGG['width']}",
        f"--fc-units={TINY_VGG['fc_units']}",
        "--size=40",
        f"--recipe={recipe}",
        "--jit",
        *JIT,
        "--precisions",
        *PRECISIONS,
        "--repeats=2",
        "--warmup=0",
        "--quiet-wait=0",
        "--json",
        str(report_path),
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env=env, cwd=REPO_ROOT
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert {"machine", "settings", "recipes", "matmul", "results", "summary"} <= report.keys()
    assert report["matmul"]["float32"]["gflops"] > 0 and report["matmul"]["bfloat16"]["gflops"] > 0

    # FLOPs per step, counted here from the models' definitions: 3 x forward x batch.
    paper = build_fcn(21, 8, "vgg16", geometry="caffe", backbone_options=TINY_VGG)
    tiny = build_fcn(6, 8, "vgg16", geometry="same", backbone_options=TINY_VGG)
    expected = {
        "fcn8s-vgg16-40": 3 * count_flops(paper, (40, 40, 3)) * 1,
        "tiny_recipe": 3 * count_flops(tiny, (32, 48, 3)) * 2,
    }
    rows = report["results"]
    assert [(r["config"], r["precision"], r["jit"]) for r in rows] == [
        (config, precision, jit) for config in expected for precision in PRECISIONS for jit in JIT
    ]
    for row in rows:
        assert row["flops"] == expected[row["config"]]
        assert row["dtype_policy"] == row["precision"]  # reset between configurations
        assert row["images_per_s"] > 0 and math.isfinite(row["images_per_s"])
        assert row["step_median_s"] > 0 and row["loss_finite"]
        assert row["roofline_s"] > 0 and math.isfinite(row["roofline_ratio"])
        assert "background_cpu" in row
    paper_row, recipe_row = rows[0], rows[-1]
    assert (paper_row["optimizer"], paper_row["normalize"]) == ("ReferenceSGD", "batch")
    assert (paper_row["batch"], paper_row["height"], paper_row["width"]) == (1, 40, 40)
    assert (recipe_row["optimizer"], recipe_row["accumulate"]) == ("Adam", 2)
    assert (recipe_row["batch"], recipe_row["height"], recipe_row["width"]) == (2, 32, 48)
    assert recipe_row["num_classes"] == 6
    assert set(report["summary"]["bf16_speedup"]) == {
        f"{config} {jit}" for config in expected for jit in JIT
    }

    assert "s/step" in done.stdout and "img/s" in done.stdout
    assert all(f"\n{config} " in done.stdout for config in expected)
    assert f"[{len(rows)}/{len(rows)}]" in done.stderr
    assert not list(tmp_path.glob("*.tmp"))  # written atomically
