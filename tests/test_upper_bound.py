"""Tests for fcn_tf.evaluation.upper_bound and training/upper_bound.py (paper, appendix A)."""

from __future__ import annotations

import collections
import json
import math
import os
import runpy

import numpy as np
import pytest
from helpers import REPO_ROOT
from PIL import Image

from fcn_tf.data.convert import convert
from fcn_tf.evaluation.upper_bound import coarsen, upper_bound, upper_bound_of_records
from fcn_tf.metrics import scores

CAMVID = REPO_ROOT.parent / "shared" / "datasets" / "camvid"
IGNORE = 255


def _brute_coarsen(label: np.ndarray, factor: int, num_classes: int, method: str) -> np.ndarray:
    """Cell by cell with Python loops: the centre's label (or the cell's most frequent scored
    label), written back to every pixel of the cell."""
    height, width = label.shape
    out = np.zeros_like(label)
    for top in range(0, height, factor):
        for left in range(0, width, factor):
            bottom, right = min(top + factor, height), min(left + factor, width)
            counts = collections.Counter(
                int(label[y, x])
                for y in range(top, bottom)
                for x in range(left, right)
                if 0 <= label[y, x] < num_classes
            )
            best = max(range(num_classes), key=lambda c: (counts[c], -c))
            centre = int(label[top + (bottom - top) // 2, left + (right - left) // 2])
            if method == "nearest" and 0 <= centre < num_classes:
                best = centre
            out[top:bottom, left:right] = best
    return out


def _brute_confusion(labels, predictions, num_classes: int) -> np.ndarray:
    confusion = np.zeros((num_classes, num_classes), np.int64)
    for label, predicted in zip(labels, predictions, strict=True):
        for truth, guess in zip(label.ravel(), predicted.ravel(), strict=True):
            if 0 <= truth < num_classes:
                confusion[truth, guess] += 1
    return confusion


def _random_labels(rng, num_classes: int, shape) -> np.ndarray:
    """Blocky labels (so cells are not pure noise) with ignored pixels."""
    coarse = rng.integers(0, num_classes, (shape[0] // 3 + 1, shape[1] // 3 + 1))
    label = np.repeat(np.repeat(coarse, 3, 0), 3, 1)[: shape[0], : shape[1]]
    label[rng.random(shape) < 0.15] = IGNORE
    return label.astype(np.int32)


@pytest.mark.parametrize("method", ["nearest", "mode"])
@pytest.mark.parametrize("shape", [(16, 16), (13, 22), (5, 3)])
@pytest.mark.parametrize("factor", [1, 2, 3, 4, 8])
def test_coarsen_matches_a_brute_force_loop(rng, method, shape, factor):
    label = _random_labels(rng, 5, shape)
    expected = _brute_coarsen(label, factor, 5, method)
    np.testing.assert_array_equal(coarsen(label, factor, 5, IGNORE, method), expected)


@pytest.mark.parametrize("method", ["nearest", "mode"])
def test_factor_one_is_perfect(rng, method):
    labels = [_random_labels(rng, 4, (11, 17)), _random_labels(rng, 4, (8, 9))]
    result = upper_bound(labels, [1], 4, IGNORE, method)[1]
    for key in ("pixel_accuracy", "mean_accuracy", "mean_iu", "frequency_weighted_iu"):
        assert result[key] == 1.0


def test_scores_come_from_one_confusion_over_the_split(rng):
    labels = [_random_labels(rng, 6, shape) for shape in [(20, 24), (17, 9), (32, 32)]]
    results = upper_bound(labels, [2, 4, 16], 6, IGNORE)
    for factor, result in results.items():
        predictions = [_brute_coarsen(label, factor, 6, "nearest") for label in labels]
        expected = scores(_brute_confusion(labels, predictions, 6))
        for key in ("pixel_accuracy", "mean_accuracy", "mean_iu", "frequency_weighted_iu"):
            assert math.isclose(result[key], expected[key], rel_tol=1e-12), key
        assert result["mean_iu"] < 1.0


def test_an_ignored_centre_takes_the_cells_most_frequent_label():
    label = np.array([[1, 1, 0, 255], [1, 255, 255, 255], [1, 0, 255, 255], [2, 1, 255, 255]])
    # Centre (2, 2) is ignored: the cell's scored labels are 1 x 5, 0 x 2, 2 x 1.
    assert (coarsen(label, 4, 3) == 1).all()
    # A cell with nothing scored predicts something in range (it is never counted).
    assert coarsen(np.full((4, 4), IGNORE), 4, 3).max() < 3


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="method"):
        coarsen(np.zeros((4, 4), int), 2, 3, method="bilinear")
    with pytest.raises(ValueError, match="factor"):
        coarsen(np.zeros((4, 4), int), 0, 3)
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        coarsen(np.zeros((1, 4, 4), int), 2, 3)


def test_records_and_cli_agree_with_the_library(tmp_path, capsys):
    out = tmp_path / "shapes"
    convert("synthetic", str(out), "val", verbose=False, count=5, height=40, width=56)
    pattern = str(out / "*.tfrecord")
    results = upper_bound_of_records(pattern, [1, 8, 32], verbose=0)
    assert results[1]["mean_iu"] == 1.0
    from fcn_tf.data.pipeline import load

    labels = [label.numpy()[0] for _, label in load(pattern, training=False)]
    num_classes = len(json.loads((out / "dataset.json").read_text())["class_names"])
    direct = upper_bound(labels, [8, 32], num_classes)
    assert results[8]["mean_iu"] == direct[8]["mean_iu"]
    assert results[32]["mean_iu"] == direct[32]["mean_iu"] < results[8]["mean_iu"]

    report = tmp_path / "bounds.json"
    main = runpy.run_path(os.path.join(REPO_ROOT, "training", "upper_bound.py"))["main"]
    arguments = ["--data", pattern, "--factors", "8", "32", "--quiet", "--json", str(report)]
    assert main(arguments) == 0
    stdout = capsys.readouterr().out
    assert f"| 32 | {100 * direct[32]['mean_iu']:.1f} |" in stdout
    assert "86.1" in stdout  # the paper's VOC figure for factor 32, beside ours
    written = json.loads(report.read_text())["factors"]
    assert written["8"]["mean_iu"] == direct[8]["mean_iu"]

    # Refused before the split is read: --json in a folder that does not exist.
    missing = tmp_path / "nowhere" / "bounds.json"
    assert main(["--data", pattern, "--quiet", "--json", str(missing)]) == 1
    assert f"no folder {missing.parent}" in capsys.readouterr().err
    # A corrupt record is named in one line, not a TensorFlow traceback.
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "dataset.json").write_bytes((out / "dataset.json").read_bytes())
    (broken / "val-00000-of-00001.tfrecord").write_bytes(b"\x07" * 500)
    assert main(["--data", str(broken / "*.tfrecord"), "--quiet"]) == 1
    error = capsys.readouterr().err
    assert "corrupt record #0 (byte offset 0)" in error and "broken" in error
    assert "Traceback" not in error and "function_node" not in error


def _camvid_label(path: str) -> np.ndarray:
    label = np.asarray(Image.open(path)).astype(np.int32)
    return np.where(label == 11, IGNORE, label)


@pytest.mark.skipif(not CAMVID.is_dir(), reason=f"CamVid is not at {CAMVID}")
def test_camvid_records_give_the_bound_of_the_source_pngs(tmp_path):
    pairs = (CAMVID / "val.txt").read_text().split("\n")[:4]
    (tmp_path / "few.txt").write_text("\n".join(pairs) + "\n")
    out = tmp_path / "records"
    convert("camvid", str(out), str(tmp_path / "few"), verbose=False, root=str(CAMVID))
    results = upper_bound_of_records(str(out / "*.tfrecord"), [1, 32], verbose=0)
    assert results[1]["mean_iu"] == 1.0
    labels = [_camvid_label(str(CAMVID / "valannot" / p.split()[1].split("/")[-1])) for p in pairs]
    predictions = [_brute_coarsen(label, 32, 11, "nearest") for label in labels]
    expected = scores(_brute_confusion(labels, predictions, 11))
    assert math.isclose(results[32]["mean_iu"], expected["mean_iu"], rel_tol=1e-12)
    assert 0.3 < results[32]["mean_iu"] < 0.95
