"""VOC, SBD and PASCAL-Context converters on small trees in the releases' own layouts."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
import shutil
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import scipy.io
import scipy.sparse
import tensorflow as tf
from PIL import Image

from fcn_tf.data.convert import convert, main
from fcn_tf.data.converters.pascal_context import CLASS_NAMES as CONTEXT_NAMES
from fcn_tf.data.converters.pascal_context import PascalContext
from fcn_tf.data.converters.sbd import SBD
from fcn_tf.data.converters.voc import PALETTE, VOC
from fcn_tf.data.records import decode_example
from fcn_tf.data.writer import BadSampleError, write_dataset

SIZES = ((12, 17), (9, 11), (16, 16), (10, 21), (7, 13))
IDS = [f"2008_{i:06d}" for i in range(len(SIZES))]
SPLITS = {"train": IDS[:3], "val": IDS[3:]}


def write_jpeg(path: Path, rng: np.random.Generator, height: int, width: int) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    return path.read_bytes()


def write_palette_png(path: Path, label: np.ndarray) -> None:
    """A label PNG as VOC's: palette mode, the VOC colours, pixel values are class ids."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.frombytes("P", label.shape[::-1], label.astype(np.uint8).tobytes())
    image.putpalette(np.ravel(PALETTE).tolist())
    image.save(path)


def write_lists(folder: Path, splits: dict[str, list[str]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for split, ids in splits.items():
        (folder / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))


def voc_labels(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Class ids 0..20 with a 255 boundary band, as VOC's annotations have."""
    labels = {}
    for key, shape in zip(IDS, SIZES, strict=True):
        label = rng.integers(0, 21, shape).astype(np.uint8)
        label[rng.random(shape) < 0.15] = 255
        labels[key] = label
    return labels


def voc_tree(devkit: Path, rng: np.random.Generator, year: str = "VOC2012") -> dict:
    """``VOCdevkit/VOC20xx`` with JPEGImages, SegmentationClass and Segmentation lists."""
    folder = devkit / year
    samples = {}
    for key, label in voc_labels(rng).items():
        jpeg = write_jpeg(folder / "JPEGImages" / f"{key}.jpg", rng, *label.shape)
        write_palette_png(folder / "SegmentationClass" / f"{key}.png", label)
        samples[key] = (jpeg, label)
    write_lists(folder / "ImageSets" / "Segmentation", SPLITS)
    return samples


def write_sbd_mat(path: Path, segmentation: np.ndarray) -> None:
    """A ``cls/*.mat`` as SBD's: a 1x1 struct GTcls (Boundaries, Segmentation, Categories)."""
    boundaries = np.empty((20, 1), object)
    for k in range(20):
        boundaries[k, 0] = scipy.sparse.csc_matrix(segmentation == k + 1)
    present = np.unique(segmentation[segmentation > 0]).astype(np.uint8).reshape(-1, 1)
    fields = [("Boundaries", object), ("Segmentation", object), ("CategoriesPresent", object)]
    struct = np.empty((1, 1), dtype=fields)
    struct[0, 0] = (boundaries, segmentation.astype(np.uint8), present)
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, {"GTcls": struct})


def sbd_tree(release: Path, rng: np.random.Generator) -> dict:
    """``benchmark_RELEASE/dataset`` with img, cls and train/val lists."""
    folder = release / "dataset"
    samples = {}
    for key, shape in zip(IDS, SIZES, strict=True):
        label = rng.integers(0, 21, shape).astype(np.uint8)  # SBD has no boundary band
        jpeg = write_jpeg(folder / "img" / f"{key}.jpg", rng, *shape)
        write_sbd_mat(folder / "cls" / f"{key}.mat", label)
        samples[key] = (jpeg, label)
    write_lists(folder, SPLITS)
    return samples


class ContextTree:
    """A PASCAL-Context release beside a VOCdevkit holding VOC2010.

    labels.txt puts the 59 task classes at random ids among 459, in the full labelling's
    spelling (``table`` for ``diningtable``, a space in ``potted plant``), so that the
    expected 59-class label follows from where the fixture put each class, not from the
    converter's name matching.
    """

    FULL_SPELLING: ClassVar[dict[str, str]] = {
        "diningtable": "table", "bedcloth": "bedclothes", "clothes": "cloth",
        "pottedplant": "potted plant", "tvmonitor": "tv monitor",
    }  # fmt: skip

    def __init__(self, base: Path, rng: np.random.Generator):
        self.root = base / "PASCAL-Context"
        self.voc = base / "VOCdevkit" / "VOC2010"
        task = CONTEXT_NAMES[1:]
        where = rng.permutation(np.arange(1, 460))[: len(task)]
        self.full_id = {k: int(where[k - 1]) for k in range(1, len(task) + 1)}
        full = {i: f"thing{i}" for i in range(1, 460)}
        for k, name in enumerate(task, start=1):
            full[self.full_id[k]] = self.FULL_SPELLING.get(name, name)
        self.root.mkdir(parents=True)
        (self.root / "labels.txt").write_text("".join(f"{i}: {full[i]}\n" for i in sorted(full)))
        (self.root / "59_labels.txt").write_text(
            "".join(f"{k}: {name}\n" for k, name in enumerate(task, start=1))
        )
        others = sorted(set(range(1, 460)) - set(self.full_id.values()))
        pool = np.array([0, *list(self.full_id.values()), *others[:20]], np.uint16)
        self.samples = {}
        for key, shape in zip(IDS, SIZES, strict=True):
            label_map = rng.choice(pool, shape).astype(np.uint16)
            jpeg = write_jpeg(self.voc / "JPEGImages" / f"{key}.jpg", rng, *shape)
            (self.root / "trainval").mkdir(exist_ok=True)
            scipy.io.savemat(self.root / "trainval" / f"{key}.mat", {"LabelMap": label_map})
            self.samples[key] = (jpeg, self.expected(label_map))
        write_lists(self.voc / "ImageSets" / "Main", SPLITS)

    def expected(self, label_map: np.ndarray) -> np.ndarray:
        label = np.zeros(label_map.shape, np.uint8)
        for k, full_id in self.full_id.items():
            label[label_map == full_id] = k
        return label


def read_records(folder: Path) -> tuple[dict, list[dict]]:
    """dataset.json and each record's raw image bytes, decoded label and filename."""
    metadata = json.loads((folder / "dataset.json").read_text())
    records = []
    for record in tf.data.TFRecordDataset([str(folder / name) for name in metadata["files"]]):
        example = tf.train.Example.FromString(record.numpy())
        decoded = decode_example(record)
        records.append(
            {
                "encoded": example.features.feature["image/encoded"].bytes_list.value[0],
                "label": decoded["label"].numpy(),
                "filename": decoded["filename"].numpy().decode(),
            }
        )
    return metadata, records


def check_records(folder: Path, samples: dict, keys: list[str], num_classes: int) -> dict:
    """The records are ``keys``' samples in order, and dataset.json counts what they hold."""
    metadata, records = read_records(folder)
    assert metadata["count"] == len(records) == len(keys)
    assert [r["filename"] for r in records] == [f"{k}.jpg" for k in keys]
    counts = np.zeros(num_classes, np.int64)
    for record, key in zip(records, keys, strict=True):
        jpeg, label = samples[key]
        assert record["encoded"] == jpeg
        np.testing.assert_array_equal(record["label"], label)
        counts += np.bincount(label[label < num_classes], minlength=num_classes)
    assert metadata["num_classes"] == num_classes == len(metadata["class_names"])
    assert metadata["class_pixel_counts"] == counts.tolist()
    return metadata


@pytest.mark.parametrize("given", ["devkit", "year folder", "devkit's parent"])
def test_voc_round_trip(given, tmp_path, rng):
    samples = voc_tree(tmp_path / "VOCdevkit", rng)
    root = {
        "devkit": tmp_path / "VOCdevkit",
        "year folder": tmp_path / "VOCdevkit" / "VOC2012",
        "devkit's parent": tmp_path,
    }[given]
    out = tmp_path / "out"
    metadata = convert("voc", str(out), "train", root=str(root), shards=2, verbose=False)
    check_records(out, samples, SPLITS["train"], 21)
    assert metadata["files"] == ["train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord"]
    assert metadata["skipped"] == [] and metadata["ignore_label"] == 255
    assert metadata["class_names"][0] == "background" and metadata["class_names"][-1] == (
        "tvmonitor"
    )
    assert any((samples[k][1] == 255).any() for k in SPLITS["train"])  # boundaries came through


def test_voc_palette_is_the_devkit_colour_map():
    assert len(PALETTE) == 256
    # The devkit's first classes and its boundary colour, as VOC's own PNGs carry them.
    assert PALETTE[:4] == ((0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0))
    assert PALETTE[15] == (192, 128, 128) and PALETTE[20] == (0, 64, 128)
    assert PALETTE[255] == (224, 224, 192)
    assert len(set(PALETTE)) == 256


def test_voc_year_picks_the_folder(tmp_path, rng):
    samples = voc_tree(tmp_path / "VOCdevkit", rng, year="VOC2011")
    devkit = str(tmp_path / "VOCdevkit")
    convert("voc", str(tmp_path / "a"), "val", root=devkit, year="VOC2011", verbose=False)
    check_records(tmp_path / "a", samples, SPLITS["val"], 21)
    assert VOC(devkit, "val", year="2011").keys() == SPLITS["val"]
    with pytest.raises(FileNotFoundError, match="VOC2012"):
        convert("voc", str(tmp_path / "b"), "val", root=devkit, verbose=False)


def test_seg11valid_from_a_path_or_the_reference_place(tmp_path, rng):
    samples = voc_tree(tmp_path / "VOCdevkit", rng, year="VOC2011")
    devkit = str(tmp_path / "VOCdevkit")
    listed = [IDS[4], IDS[1], IDS[2]]
    list_file = tmp_path / "lists" / "seg11valid.txt"
    write_lists(list_file.parent, {"seg11valid": listed})

    # Not copied into the devkit: the error says where the list comes from.
    with pytest.raises(FileNotFoundError, match=r"seg11valid\.txt.*fcn\.berkeleyvision\.org"):
        convert("voc", str(tmp_path / "a"), "seg11valid", root=devkit, year="VOC2011")
    assert not (tmp_path / "a" / "dataset.json").exists()

    from_path = VOC(devkit, str(list_file), year="VOC2011")
    assert from_path.keys() == listed
    write_dataset(from_path, str(tmp_path / "b"), "seg11valid", shards=2, verbose=False)
    check_records(tmp_path / "b", samples, listed, 21)

    shutil.copy(list_file, tmp_path / "VOCdevkit" / "VOC2011" / "ImageSets" / "Segmentation")
    convert(
        "voc", str(tmp_path / "c"), "seg11valid", root=devkit, year="VOC2011", shards=2,
        verbose=False,
    )  # fmt: skip
    for name in sorted(os.listdir(tmp_path / "b")):
        assert (tmp_path / "b" / name).read_bytes() == (tmp_path / "c" / name).read_bytes()

    # A list file given by its name or its path: shards and split are named after its stem.
    for split, out in (("seg11valid.txt", "d"), (str(list_file), "e")):
        with contextlib.chdir(list_file.parent):
            convert("voc", str(tmp_path / out), split, root=devkit, year="VOC2011", shards=2,
                    verbose=False)  # fmt: skip
        assert sorted(os.listdir(tmp_path / out)) == sorted(os.listdir(tmp_path / "b"))
        for name in os.listdir(tmp_path / "b"):
            assert (tmp_path / out / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_voc_bad_label_size_is_named_or_skipped(tmp_path, rng):
    samples = voc_tree(tmp_path / "VOCdevkit", rng)
    bad = tmp_path / "VOCdevkit" / "VOC2012" / "SegmentationClass" / f"{IDS[1]}.png"
    write_palette_png(bad, np.zeros((5, 5), np.uint8))
    root = str(tmp_path / "VOCdevkit")
    with pytest.raises(BadSampleError, match=re.escape(str(bad))):
        convert("voc", str(tmp_path / "a"), "train", root=root, verbose=False)
    metadata = convert(
        "voc", str(tmp_path / "b"), "train", root=root, shards=2, skip_bad=True, verbose=False
    )
    [skipped] = metadata["skipped"]
    assert skipped["key"] == IDS[1] and str(bad) in skipped["reason"]
    check_records(tmp_path / "b", samples, [IDS[0], IDS[2]], 21)


@pytest.mark.parametrize("given", ["dataset", "benchmark_RELEASE"])
def test_sbd_round_trip(given, tmp_path, rng):
    release = tmp_path / "benchmark_RELEASE"
    samples = sbd_tree(release, rng)
    # The fixture's .mat files answer the reference's own indexing, as SBD's do.
    mat = scipy.io.loadmat(release / "dataset" / "cls" / f"{IDS[0]}.mat")
    np.testing.assert_array_equal(mat["GTcls"][0]["Segmentation"][0], samples[IDS[0]][1])
    root = release / "dataset" if given == "dataset" else release
    for split, keys in SPLITS.items():
        out = tmp_path / split
        metadata = convert("sbd", str(out), split, root=str(root), shards=2, verbose=False)
        check_records(out, samples, keys, 21)
        assert metadata["name"] == "sbd" and metadata["skipped"] == []


@pytest.mark.parametrize("how", ["size", "no GTcls", "missing"])
def test_sbd_bad_label_is_named_or_skipped(how, tmp_path, rng):
    release = tmp_path / "benchmark_RELEASE"
    samples = sbd_tree(release, rng)
    bad = release / "dataset" / "cls" / f"{IDS[2]}.mat"
    if how == "size":
        write_sbd_mat(bad, np.zeros((4, 6), np.uint8))
    elif how == "no GTcls":
        scipy.io.savemat(bad, {"GTinst": np.zeros((1, 1))})
    else:
        bad.unlink()
    with pytest.raises(BadSampleError, match=re.escape(str(bad))):
        convert("sbd", str(tmp_path / "a"), "train", root=str(release), verbose=False)
    metadata = convert(
        "sbd", str(tmp_path / "b"), "train", root=str(release), skip_bad=True, verbose=False
    )
    assert [s["key"] for s in metadata["skipped"]] == [IDS[2]]
    assert str(bad) in metadata["skipped"][0]["reason"]
    check_records(tmp_path / "b", samples, IDS[:2], 21)


def test_pascal_context_maps_459_to_59(tmp_path, rng):
    tree = ContextTree(tmp_path, rng)
    for split, keys in SPLITS.items():
        out = tmp_path / split
        # voc_root left out: found as VOCdevkit/VOC2010 beside the release.
        metadata = convert(
            "pascal_context", str(out), split, root=str(tree.root), shards=2, verbose=False
        )
        check_records(out, tree.samples, keys, 60)
        assert metadata["class_names"][0] == "background" and metadata["skipped"] == []
    assert all(tree.samples[k][1].max() > 20 for k in IDS)  # context classes, not only VOC's
    assert CONTEXT_NAMES[11] == "diningtable" and CONTEXT_NAMES[52] == "bedcloth"


def test_pascal_context_outside_the_table_is_background(tmp_path, rng):
    tree = ContextTree(tmp_path, rng)
    converter = PascalContext(str(tree.root), "val")
    label_map = np.array([[0, tree.full_id[1], 459, 460, 65535]], np.uint16)
    np.testing.assert_array_equal(converter.to_task(label_map), [[0, 1, 0, 0, 0]])


def test_pascal_context_voc_root_and_label_files(tmp_path, rng):
    tree = ContextTree(tmp_path / "data", rng)
    elsewhere = tmp_path / "elsewhere" / "context"
    shutil.copytree(tree.root, elsewhere)
    with pytest.raises(FileNotFoundError, match="voc_root"):
        PascalContext(str(elsewhere), "train")
    for voc_root in (tree.voc, tree.voc.parent):  # the VOC2010 folder or the devkit
        converter = PascalContext(str(elsewhere), "train", voc_root=str(voc_root))
        write_dataset(converter, str(tmp_path / "given"), "train", verbose=False)
        check_records(tmp_path / "given", tree.samples, SPLITS["train"], 60)

    # The CLI takes it as --voc-root.
    argv = ["pascal_context", "--root", str(elsewhere), "--split", "train"]
    assert main([*argv, "--out", str(tmp_path / "cli"), "--voc-root", str(tree.voc)]) == 0
    assert (tmp_path / "cli" / "train-00000-of-00001.tfrecord").read_bytes() == (
        tmp_path / "given" / "train-00000-of-00001.tfrecord"
    ).read_bytes()

    # Without 59_labels.txt the built-in list (the same classes) gives the same records.
    (elsewhere / "59_labels.txt").unlink()
    converter = PascalContext(str(elsewhere), "train", voc_root=str(tree.voc))
    write_dataset(converter, str(tmp_path / "builtin"), "train", verbose=False)
    for name in os.listdir(tmp_path / "given"):
        assert (tmp_path / "given" / name).read_bytes() == (
            tmp_path / "builtin" / name
        ).read_bytes()

    swapped = (tree.root / "59_labels.txt").read_text().replace("1: aeroplane", "1: bicycle")
    (elsewhere / "59_labels.txt").write_text(swapped.replace("2: bicycle", "2: aeroplane", 1))
    with pytest.raises(ValueError, match=r"59_labels\.txt"):
        PascalContext(str(elsewhere), "train", voc_root=str(tree.voc))
    (elsewhere / "59_labels.txt").unlink()

    full = (elsewhere / "labels.txt").read_text().replace(": sky\n", ": heaven\n")
    (elsewhere / "labels.txt").write_text(full)
    with pytest.raises(ValueError, match=r"labels\.txt.*'sky'"):
        PascalContext(str(elsewhere), "train", voc_root=str(tree.voc))
    (elsewhere / "labels.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"labels\.txt"):
        PascalContext(str(elsewhere), "train", voc_root=str(tree.voc))


def test_pascal_context_bad_label_size_is_named_or_skipped(tmp_path, rng):
    tree = ContextTree(tmp_path, rng)
    bad = tree.root / "trainval" / f"{IDS[0]}.mat"
    scipy.io.savemat(bad, {"LabelMap": np.ones((3, 3), np.uint16)})
    with pytest.raises(BadSampleError, match=re.escape(str(bad))):
        convert("pascal_context", str(tmp_path / "a"), "train", root=str(tree.root), verbose=False)
    metadata = convert(
        "pascal_context", str(tmp_path / "b"), "train", root=str(tree.root), skip_bad=True,
        verbose=False,
    )  # fmt: skip
    assert [s["key"] for s in metadata["skipped"]] == [IDS[0]]
    check_records(tmp_path / "b", tree.samples, SPLITS["train"][1:], 60)


def test_missing_list_files_are_clear(tmp_path, rng):
    voc_tree(tmp_path / "VOCdevkit", rng)
    sbd_tree(tmp_path / "benchmark_RELEASE", rng)
    tree = ContextTree(tmp_path, rng)
    cases = [
        ("voc", tmp_path / "VOCdevkit", "ImageSets/Segmentation/trainaug.txt"),
        ("sbd", tmp_path / "benchmark_RELEASE", "dataset/trainaug.txt"),
        ("pascal_context", tree.root, "ImageSets/Main/trainaug.txt"),
    ]
    for name, root, missing in cases:
        with pytest.raises(FileNotFoundError, match=f"{name}: no list file .*{missing}"):
            convert(name, str(tmp_path / name), "trainaug", root=str(root), verbose=False)
        assert not (tmp_path / name / "dataset.json").exists()


def test_converters_pickle(tmp_path, rng):
    voc_tree(tmp_path / "VOCdevkit", rng)
    sbd_tree(tmp_path / "benchmark_RELEASE", rng)
    tree = ContextTree(tmp_path, rng)
    for converter in (
        VOC(str(tmp_path / "VOCdevkit"), "train"),
        SBD(str(tmp_path / "benchmark_RELEASE"), "val"),
        PascalContext(str(tree.root), "val"),
    ):
        copy = pickle.loads(pickle.dumps(converter))
        key = copy.keys()[0]
        a, b = converter.load(key), copy.load(key)
        assert a.image == b.image and np.array_equal(a.label, b.label)


def test_workers_do_not_change_the_bytes(tmp_path, rng):
    tree = ContextTree(tmp_path, rng)
    (tree.voc / "ImageSets" / "Main" / "all.txt").write_text("\n".join(IDS))
    for workers in (1, 2):
        convert(
            "pascal_context", str(tmp_path / f"w{workers}"), "all", root=str(tree.root),
            shards=2, workers=workers, verbose=False,
        )  # fmt: skip
    names = sorted(os.listdir(tmp_path / "w1"))
    assert names == sorted(os.listdir(tmp_path / "w2")) and len(names) == 3
    for name in names:
        assert (tmp_path / "w1" / name).read_bytes() == (tmp_path / "w2" / name).read_bytes()
