"""Tests for fcn_tf.evaluation.evaluate and training/evaluate.py."""

from __future__ import annotations

import json
import math
import runpy

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import TINY_VGG
from helpers import REPO_ROOT, keras_class_ids, random_thin_fcn, randomize

from fcn_tf.data.convert import convert
from fcn_tf.data.records import decode_example
from fcn_tf.evaluation.evaluate import evaluate
from fcn_tf.evaluation.pictures import confusion_figure
from fcn_tf.export import export_saved_model
from fcn_tf.metrics import SCORE_NAMES, confusion_matrix, scores
from fcn_tf.training import runs
from fcn_tf.training.config import from_dict, to_dict
from fcn_tf.training.loop import build_model

EVALUATE = str(REPO_ROOT / "training" / "evaluate.py")
NAMES = ["background", "disc", "rectangle", "triangle", "ring", "bar"]


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    folder = tmp_path_factory.mktemp("records")
    convert("synthetic", str(folder), "val", verbose=False, count=3, height=40, width=52)
    return str(folder / "*.tfrecord")


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return random_thin_fcn(len(NAMES))


def _independent_confusion(model, pattern: str) -> tuple[np.ndarray, int]:
    """Records read with tf.data and the schema's decoder, the Keras model run eagerly."""
    confusion, count = np.zeros((len(NAMES), len(NAMES)), np.int64), 0
    for serialized in tf.data.TFRecordDataset(tf.io.gfile.glob(pattern)):
        decoded = decode_example(serialized)
        ids = keras_class_ids(model, decoded["image"].numpy()[None])
        confusion += confusion_matrix(decoded["label"].numpy(), ids, len(NAMES), 255)
        count += 1
    return confusion, count


def test_report_equals_scores_of_independent_predictions(model, records, tmp_path):
    report = evaluate(model, records, str(tmp_path), verbose=0)
    confusion, count = _independent_confusion(model, records)
    expected = scores(confusion)
    assert report["images"] == count == 3
    assert report["confusion_matrix"] == confusion.tolist()
    assert confusion.sum() > 0 and np.count_nonzero(confusion - np.diag(np.diag(confusion)))
    for name in SCORE_NAMES:
        assert math.isclose(report[name], expected[name], rel_tol=1e-12), name
    assert list(report["per_class_iu"]) == NAMES
    for index, name in enumerate(NAMES):
        value = expected["per_class_iu"][index]
        assert report["per_class_iu"][name] == (None if math.isnan(value) else value)

    # metrics.json is the report; nothing temporary is left beside it.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["confusion_matrix.png", "metrics.json"]
    assert json.loads((tmp_path / "metrics.json").read_text()) == json.loads(json.dumps(report))


def test_some_shards_of_a_split_count_only_their_images(model, tmp_path):
    folder = tmp_path / "val"
    convert("synthetic", str(folder), "val", verbose=False, count=5, height=24, width=20, shards=3)
    one = sorted(folder.glob("*.tfrecord"))[1]
    report = evaluate(model, str(one), verbose=0)
    confusion, count = _independent_confusion(model, str(one))
    assert report["images"] == count < 5
    assert report["confusion_matrix"] == confusion.tolist()
    assert report["class_names"] == NAMES  # still read from the split's dataset.json
    whole = evaluate(model, str(folder), verbose=0)  # a folder: all its shards
    assert whole["images"] == 5
    assert (
        whole["confusion_matrix"]
        == _independent_confusion(model, str(folder / "*.tfrecord"))[0].tolist()
    )


def test_confusion_picture_is_row_normalised_and_labelled(model, records, tmp_path):
    from PIL import Image

    report = evaluate(model, records, str(tmp_path), verbose=0)
    confusion = np.asarray(report["confusion_matrix"], np.float64)
    axes = confusion_figure(confusion, NAMES).axes[0]
    shown = np.asarray(axes.images[0].get_array())
    totals = confusion.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(shown, np.where(totals > 0, confusion / np.maximum(totals, 1), 0))
    assert [t.get_text() for t in axes.get_xticklabels()] == NAMES
    assert [t.get_text() for t in axes.get_yticklabels()] == NAMES

    picture = np.asarray(Image.open(tmp_path / "confusion_matrix.png").convert("RGB"))
    assert picture.shape[0] >= 400 and picture.shape[1] > picture.shape[0]  # room for the bar
    assert len(np.unique(picture.reshape(-1, 3), axis=0)) > 20 and picture.std() > 10


def _run_folder(tmp_path, model) -> str:
    """A run folder as the trainer leaves it (config and best checkpoint), no model.keras."""
    folder = tmp_path / "run"
    config = from_dict(
        {
            "model": {"backbone_options": dict(TINY_VGG)},
            "data": {"num_classes": len(NAMES)},
        }
    )
    runs.write_config(str(folder), to_dict(config), {"command": ["test"]})
    trained = build_model(config, len(NAMES))
    trained.set_weights(model.get_weights())
    manager = tf.train.CheckpointManager(
        tf.train.Checkpoint(model=trained), str(folder / "best"), 1
    )
    manager.save(7)
    return str(folder)


def test_same_numbers_from_a_checkpoint_its_saved_model_and_a_keras_file(model, records, tmp_path):
    run = _run_folder(tmp_path, model)
    base = str(tmp_path / "export")
    version = export_saved_model(model, base, class_names=NAMES)
    keras_file = str(tmp_path / "model.keras")
    model.save(keras_file)
    reports = {
        source: evaluate(source, records, verbose=0) for source in (run, base, version, keras_file)
    }
    matrices = {source: report["confusion_matrix"] for source, report in reports.items()}
    assert all(matrix == matrices[run] for matrix in matrices.values())
    assert reports[base]["model_kind"] == "saved_model" and reports[base]["model"] == version
    assert reports[run]["model_kind"] == "keras"
    # Different weights give different numbers: the comparison above can fail.
    other = random_thin_fcn(len(NAMES), seed=5)
    assert evaluate(other, records, verbose=0)["confusion_matrix"] != matrices[run]


def test_bad_models_and_class_counts_are_named(records, tmp_path):
    with pytest.raises(ValueError, match="scores 4 classes"):
        evaluate(random_thin_fcn(4), records, verbose=0)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        evaluate(str(tmp_path / "nowhere"), records, verbose=0)


def test_cli_prints_the_metrics_and_a_per_class_table(model, records, tmp_path, capsys):
    keras_file = str(tmp_path / "model.keras")
    randomize(model, np.random.default_rng(1))
    model.save(keras_file)
    main = runpy.run_path(EVALUATE)["main"]
    assert main(["--model", keras_file, "--data", records, "--out", str(tmp_path / "e")]) == 0
    output = capsys.readouterr().out
    assert "3/3" in output  # the progress bar
    report = json.loads((tmp_path / "e" / "metrics.json").read_text())
    for name in SCORE_NAMES:
        value = report[name]
        assert f"{name:<22} {value:.4f}" in output
    for name in NAMES:
        iu = report["per_class_iu"][name]
        assert f"{name:<10}  {'-' if iu is None else f'{iu:.4f}'}" in output
    assert (tmp_path / "e" / "confusion_matrix.png").is_file()


def test_cli_names_a_missing_model(records, tmp_path, capsys):
    main = runpy.run_path(EVALUATE)["main"]
    assert main(["--model", str(tmp_path / "gone.keras"), "--data", records, "--quiet"]) == 1
    assert "gone.keras: no such model" in capsys.readouterr().err


def test_records_without_dataset_json_take_the_models_class_names(model, records, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    for path in tf.io.gfile.glob(records):
        tf.io.gfile.copy(path, str(bare / path.split("/")[-1]))
    base = str(tmp_path / "export")
    export_saved_model(model, base, class_names=NAMES)
    report = evaluate(base, str(bare), verbose=0)
    assert report["class_names"] == NAMES and list(report["per_class_iu"]) == NAMES
    assert report["confusion_matrix"] == evaluate(model, records, verbose=0)["confusion_matrix"]
    for bad in (0, -2):
        with pytest.raises(ValueError, match=r"--num-classes\) must be >= 1"):
            evaluate(base, str(bare), num_classes=bad, verbose=0)


def test_cli_names_a_corrupt_record_file(model, tmp_path, capsys):
    keras_file = str(tmp_path / "model.keras")
    model.save(keras_file)
    junk = tmp_path / "junk.tfrecord"
    junk.write_text("not a record\n")
    main = runpy.run_path(EVALUATE)["main"]
    argv = ["--model", keras_file, "--data", str(junk), "--num-classes", "6", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "e")]) == 1
    error = capsys.readouterr().err
    assert f"{junk}: corrupted record at 0" in error and "Traceback" not in error
    # Well framed, but not an Example: the reader's message names the file and the record.
    with tf.io.TFRecordWriter(str(junk)) as writer:
        writer.write(b"not an Example")
    assert main([*argv, "--out", str(tmp_path / "e")]) == 1
    error = capsys.readouterr().err
    assert "corrupt record #0" in error and str(junk) in error and "Traceback" not in error
