"""The shard writer and the CamVid converter: real layout, bad input, atomicity, determinism."""

import json
import os
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from helpers import REPO_ROOT, run_python
from PIL import Image

from fcn_tf.data.convert import convert, main
from fcn_tf.data.records import decode_example

CAMVID = REPO_ROOT.parent / "shared" / "datasets" / "camvid"


def read_records(folder: Path) -> list[dict]:
    metadata = json.loads((folder / "dataset.json").read_text())
    files = [str(folder / name) for name in metadata["files"]]
    return [
        {k: v.numpy() for k, v in decode_example(record).items()}
        for record in tf.data.TFRecordDataset(files)
    ]


def camvid_tree(root: Path, rng: np.random.Generator, sizes=((24, 32),) * 5) -> list:
    """A CamVid tree in the SegNet layout, list files holding another machine's paths."""
    (root / "val").mkdir(parents=True)
    (root / "valannot").mkdir()
    lines, samples = [], []
    for i, (h, w) in enumerate(sizes):
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        label = rng.integers(0, 12, (h, w), dtype=np.uint8)
        Image.fromarray(image).save(root / "val" / f"f{i}.png")
        Image.fromarray(label).save(root / "valannot" / f"f{i}.png")
        lines.append(f"/SegNet/CamVid/val/f{i}.png /SegNet/CamVid/valannot/f{i}.png")
        samples.append((image, label))
    (root / "val.txt").write_text("\n".join(lines) + "\n")
    return samples


def test_camvid_fixture_round_trip(tmp_path, rng):
    samples = camvid_tree(tmp_path / "camvid", rng)
    metadata = convert(
        "camvid",
        str(tmp_path / "out"),
        "val",
        root=str(tmp_path / "camvid"),
        shards=2,
        verbose=False,
    )
    records = read_records(tmp_path / "out")
    assert metadata["count"] == len(records) == 5
    assert sorted(os.listdir(tmp_path / "out")) == [
        "dataset.json",
        "val-00000-of-00002.tfrecord",
        "val-00001-of-00002.tfrecord",
    ]
    expected_counts = np.zeros(11, np.int64)
    for record, (image, label) in zip(records, samples, strict=True):
        np.testing.assert_array_equal(record["image"], image)
        np.testing.assert_array_equal(record["label"], np.where(label == 11, 255, label))
        expected_counts += np.bincount(label[label < 11], minlength=11)
    assert metadata["class_pixel_counts"] == expected_counts.tolist()
    mean = np.concatenate([i.reshape(-1, 3) for i, _ in samples]).mean(axis=0)
    np.testing.assert_allclose(metadata["mean_rgb"], mean, atol=1e-3)


@pytest.mark.skipif(not CAMVID.is_dir(), reason=f"CamVid is not at {CAMVID}")
def test_camvid_val_on_the_real_dataset(tmp_path):
    metadata = convert(
        "camvid", str(tmp_path), "val", root=str(CAMVID), shards=4, workers=2, verbose=False
    )
    counts = np.zeros(11, np.int64)
    for path in sorted((CAMVID / "valannot").glob("*.png")):
        label = np.asarray(Image.open(path))
        counts += np.bincount(label[label < 11].ravel(), minlength=11)
    assert metadata["count"] == 101
    assert metadata["class_pixel_counts"] == counts.tolist()
    assert (
        sum(1 for _ in tf.data.TFRecordDataset([str(tmp_path / f) for f in metadata["files"]]))
        == 101
    )


def test_workers_do_not_change_the_bytes(tmp_path, rng):
    camvid_tree(tmp_path / "camvid", rng, sizes=[(8 + i, 9) for i in range(7)])
    for workers in (1, 2):
        convert(
            "camvid",
            str(tmp_path / f"w{workers}"),
            "val",
            root=str(tmp_path / "camvid"),
            shards=3,
            workers=workers,
            verbose=False,
        )
    for name in os.listdir(tmp_path / "w1"):
        assert (tmp_path / "w1" / name).read_bytes() == (tmp_path / "w2" / name).read_bytes()


def break_sample(root: Path, how: str) -> str:
    label_path = root / "valannot" / "f2.png"
    if how == "size":
        Image.fromarray(np.zeros((5, 5), np.uint8)).save(label_path)
    elif how == "unreadable":
        label_path.write_bytes(b"not a png")
    elif how == "range":
        Image.fromarray(np.full((24, 32), 40, np.uint8)).save(label_path)
    return str(label_path)


@pytest.mark.parametrize("how", ["size", "unreadable", "range"])
def test_bad_sample_is_named_or_skipped(how, tmp_path, rng):
    root = tmp_path / "camvid"
    camvid_tree(root, rng)
    named = break_sample(root, how)
    with pytest.raises(ValueError, match=named.replace(".", r"\.")):
        convert("camvid", str(tmp_path / "a"), "val", root=str(root), verbose=False)
    assert not (tmp_path / "a" / "dataset.json").exists()
    assert not list((tmp_path / "a").glob("*.tfrecord*"))
    metadata = convert(
        "camvid", str(tmp_path / "b"), "val", root=str(root), skip_bad=True, verbose=False
    )
    assert metadata["count"] == 4 and len(read_records(tmp_path / "b")) == 4
    [skipped] = metadata["skipped"]
    assert named in skipped["reason"]


def test_cli_reports_errors_without_traceback(tmp_path, capsys):
    assert main(["camvid", "--root", str(tmp_path), "--split", "val", "--out", str(tmp_path)]) == 1
    assert "no list file" in capsys.readouterr().err


KILLED_HALF_WAY = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    from fcn_tf.data.records import Sample
    from fcn_tf.data.writer import Converter, write_dataset

    class Dies(Converter):
        name, class_names = "dies", ("a", "b")
        def keys(self):
            return [str(i) for i in range(10)]
        def load(self, key):
            if key == "7":  # after the first shards are complete
                os.kill(os.getpid(), signal.SIGKILL)
            return Sample(key, np.zeros((4, 4, 3), np.uint8), np.ones((4, 4), np.uint8))

    write_dataset(Dies(), sys.argv[1] if len(sys.argv) > 1 else os.environ["OUT"], "train",
                  shards=5, verbose=False)
    """
)


def test_killed_conversion_leaves_nothing_that_looks_complete(tmp_path):
    with pytest.raises(AssertionError):
        run_python(KILLED_HALF_WAY, env={"OUT": str(tmp_path)})
    left = os.listdir(tmp_path)
    assert left, "the killed run should have left its temporary shards"
    assert all(name.endswith(".tmp") for name in left), left


def test_synthetic_records_equal_the_generator(tmp_path):
    from fcn_tf.data import shapes

    metadata = convert(
        "synthetic", str(tmp_path), "val", count=3, height=20, width=30, seed=5, verbose=False
    )
    assert metadata["class_names"] == list(shapes.CLASS_NAMES)
    records = read_records(tmp_path)
    expected = list(shapes.samples("val", 3, 20, 30, seed=5))
    for record, (name, image, label) in zip(records, expected, strict=True):
        assert record["filename"].decode() == name
        np.testing.assert_array_equal(record["image"], image)
        np.testing.assert_array_equal(record["label"], label)


def test_a_failed_rerun_keeps_the_previous_records(tmp_path, rng):
    root = tmp_path / "camvid"
    camvid_tree(root, rng)
    out = tmp_path / "out"
    convert("camvid", str(out), "val", root=str(root), shards=2, verbose=False)
    before = {name: (out / name).read_bytes() for name in os.listdir(out)}
    named = break_sample(root, "range")
    with pytest.raises(ValueError, match=named.replace(".", r"\.")):
        convert("camvid", str(out), "val", root=str(root), shards=3, verbose=False)
    assert {name: (out / name).read_bytes() for name in os.listdir(out)} == before
    # A successful rerun with another shard count replaces them, leaving no stale shard.
    metadata = convert(
        "camvid", str(out), "val", root=str(root), shards=3, skip_bad=True, verbose=False
    )
    assert sorted(os.listdir(out)) == sorted(["dataset.json", *metadata["files"]])
    assert len(metadata["files"]) == 3 and len(read_records(out)) == 4


def test_images_neither_jpeg_nor_png_are_stored_as_their_pixels(tmp_path, rng):
    samples = camvid_tree(tmp_path / "camvid", rng)
    # A WebP file behind a .png name: Pillow reads it, records hold only JPEG or PNG.
    Image.fromarray(samples[1][0]).save(tmp_path / "camvid" / "val" / "f1.png", format="WEBP",
                                        lossless=True)  # fmt: skip
    convert("camvid", str(tmp_path / "out"), "val", root=str(tmp_path / "camvid"), verbose=False)
    metadata = json.loads((tmp_path / "out" / "dataset.json").read_text())
    raw = next(iter(tf.data.TFRecordDataset(str(tmp_path / "out" / metadata["files"][0])).skip(1)))
    example = tf.train.Example.FromString(raw.numpy()).features.feature
    assert example["image/format"].bytes_list.value == [b"png"]
    np.testing.assert_array_equal(read_records(tmp_path / "out")[1]["image"], samples[1][0])


@pytest.mark.parametrize(
    "label, match",
    [(np.array([[0, -2]]), r"label values \[-2\]"), (np.array([[0.5, 1.0]]), "integer class")],
    ids=["negative", "fractional"],
)
def test_negative_or_fractional_labels_are_refused(label, match):
    from fcn_tf.data.records import Sample
    from fcn_tf.data.writer import BadSampleError, check_sample

    sample = Sample("x.png", np.zeros((1, 2, 3), np.uint8), label, origin="x.png")
    with pytest.raises(BadSampleError, match=rf"x\.png: .*{match}"):
        check_sample(sample, num_classes=3, ignore_label=255)


def test_cli_names_a_missing_root(capsys, tmp_path):
    assert main(["voc", "--split", "val", "--out", str(tmp_path)]) == 1
    assert "voc needs --root" in capsys.readouterr().err


def test_16_bit_camvid_labels_past_the_classes_are_refused_not_wrapped(tmp_path, rng):
    camvid_tree(tmp_path, rng)
    wide = np.full((24, 32), 3, np.uint16)
    wide[0, :3] = (256, 257, 11)  # as uint8, 256 and 257 would be classes 0 and 1
    Image.fromarray(wide).save(tmp_path / "valannot" / "f1.png")
    assert Image.open(tmp_path / "valannot" / "f1.png").mode.startswith("I")
    with pytest.raises(ValueError, match=r"f1\.png.*label values \[256, 257\]"):
        convert("camvid", str(tmp_path / "out"), "val", root=str(tmp_path), verbose=False)


def test_an_option_no_converter_takes_is_an_error(tmp_path):
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['cuont', 'heigth'\]"):
        convert("synthetic", str(tmp_path), "val", cuont=3, heigth=16, verbose=False)
    assert not os.listdir(tmp_path)
    # Options of other datasets are passed over (the CLI's flags are shared).
    metadata = convert(
        "synthetic", str(tmp_path), "val", count=2, height=8, year="VOC2012", verbose=False
    )
    assert metadata["count"] == 2


def test_cli_names_an_unusable_out_folder(tmp_path, capsys):
    out = tmp_path / "a-file"
    out.write_text("")
    argv = ["synthetic", "--split", "val", "--count", "2", "--height", "8", "--width", "8"]
    assert main([*argv, "--out", str(out)]) == 1
    assert str(out) in capsys.readouterr().err
