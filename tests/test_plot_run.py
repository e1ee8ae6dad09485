"""Tests for the training curves: fcn_tf.evaluation.pictures and training/plot_run.py."""

from __future__ import annotations

import json
import runpy

import numpy as np
import pytest
from helpers import REPO_ROOT
from PIL import Image

from fcn_tf.evaluation.pictures import curves_figure, read_metrics, write_curves

PLOT_RUN = str(REPO_ROOT / "training" / "plot_run.py")
BLUE, ORANGE = [31, 119, 180], [255, 127, 14]  # matplotlib's C0 (train) and C1 (val)


def _record(epoch: int, loss: float, mean_iu: float | None) -> dict:
    """A line as fcn_tf.training.loop writes it."""
    val = None
    if mean_iu is not None:
        val = {
            "pixel_accuracy": 0.9,
            "mean_accuracy": 0.8,
            "mean_iu": mean_iu,
            "frequency_weighted_iu": 0.85,
            "per_class_iu": {"background": 0.9, "disc": mean_iu},
            "per_class_accuracy": {"background": 0.95, "disc": 0.7},
        }
    return {
        "epoch": epoch,
        "step": 100 * epoch,
        "loss": loss,
        "learning_rate": 1e-3,
        "images_per_second": 5.0,
        "seconds": 20.0,
        "val": val,
    }


def _write_run(folder, records) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r) for r in records]
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(np.int32)


def test_curves_png_is_written_atomically_with_both_panels(tmp_path):
    run = tmp_path / "run"
    records = [_record(e, 2.0 / e, 0.1 * e) for e in range(1, 6)]
    _write_run(run, records)
    path = write_curves(str(run))
    assert path == str(run / "curves.png")
    assert sorted(p.name for p in run.iterdir()) == ["curves.png", "metrics.jsonl"]
    picture = _pixels(path)
    assert picture.shape == (400, 1000, 3)  # 10 x 4 inches at 100 dpi
    assert len(np.unique(picture.reshape(-1, 3), axis=0)) > 10
    # Train loss in blue on the left half, val mean IU in orange on the right half.
    blue = np.all(np.abs(picture - BLUE) < 30, axis=-1)
    orange = np.all(np.abs(picture - ORANGE) < 30, axis=-1)
    assert blue[:, :500].any() and orange[:, 500:].any()


def test_the_curves_follow_the_numbers():
    records = [_record(e, 2.0 / e, 0.2 * e) for e in range(1, 5)]
    records[2]["train"] = {"mean_iu": 0.7}  # a train mean IU, where a run records one
    loss_axes, iu_axes = curves_figure(records).axes[:2]
    (train_loss,) = loss_axes.lines  # no val loss in these records
    np.testing.assert_allclose(train_loss.get_xdata(), [100, 200, 300, 400])
    np.testing.assert_allclose(train_loss.get_ydata(), [2.0 / e for e in range(1, 5)])
    train_iu, val_iu = iu_axes.lines
    assert (train_iu.get_xdata().tolist(), train_iu.get_ydata().tolist()) == ([300], [0.7])
    np.testing.assert_allclose(val_iu.get_ydata(), [0.2, 0.4, 0.6, 0.8])
    assert [t.get_text() for t in iu_axes.get_legend().get_texts()] == [
        "train mean IU",
        "val mean IU",
    ]


def test_repeated_epochs_keep_the_last_record_and_missing_val_is_skipped(tmp_path):
    records = [
        _record(1, 3.0, None),
        _record(2, 2.0, 0.3),
        _record(2, 1.5, 0.35),
        _record(3, 1.0, 0.4),
    ]
    _write_run(tmp_path, records)
    read = read_metrics(str(tmp_path / "metrics.jsonl"))
    assert [r["epoch"] for r in read] == [1, 2, 3]
    assert read[1]["loss"] == 1.5
    assert read[0]["val"] is None
    write_curves(str(tmp_path))  # a record without validation is drawn without its point


def test_bad_lines_and_folders_are_named(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(json.dumps(_record(1, 1.0, 0.5)) + "\n{oops\n")
    with pytest.raises(ValueError, match=r"metrics\.jsonl:2"):
        read_metrics(str(tmp_path / "metrics.jsonl"))
    with pytest.raises(FileNotFoundError, match="run folder"):
        write_curves(str(tmp_path / "nothing"))


def test_cli_writes_the_picture(tmp_path, capsys):
    _write_run(tmp_path, [_record(e, 1.0 / e, 0.2 * e) for e in range(1, 4)])
    main = runpy.run_path(PLOT_RUN)["main"]
    assert main([str(tmp_path), "--out", str(tmp_path / "c.png")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "c.png")
    assert _pixels(tmp_path / "c.png").shape == (400, 1000, 3)


def test_cli_names_a_folder_that_is_not_a_run(tmp_path, capsys):
    main = runpy.run_path(PLOT_RUN)["main"]
    assert main([str(tmp_path / "nothing")]) == 1
    assert "nothing: no metrics.jsonl" in capsys.readouterr().err
