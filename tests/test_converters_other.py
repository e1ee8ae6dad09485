"""SIFT Flow, NYUDv2 and folder converters on small trees in their real layouts.

Expected labels come from the reference's class lists (``classes.txt``), by name, not from
the converters' own arithmetic.
"""

import json
import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import tensorflow as tf
from PIL import Image

from fcn_tf.data.convert import convert, main
from fcn_tf.data.converters.folder import Folder, read_mask
from fcn_tf.data.converters.nyud import NYUDv2
from fcn_tf.data.converters.siftflow import SIFTFlow
from fcn_tf.data.records import IMAGE, decode_example
from fcn_tf.data.writer import BadSampleError

# The reference's data/sift-flow/classes.txt (semantic 1-33, geometric 1-3) and
# data/nyud/classes.txt (line i is class i), abridged to the names.
SIFTFLOW_REFERENCE = (
    "awning balcony bird boat bridge building bus car cow crosswalk desert door fence field "
    "grass moon mountain person plant pole river road rock sand sea sidewalk sign sky staircase "
    "streetlight sun tree window"
).split()
GEOMETRIC_REFERENCE = ["sky", "horizontal", "vertical"]
NYUD_REFERENCE = [
    *"wall floor cabinet bed chair sofa table door window bookshelf picture counter".split(),
    *"blinds desk shelves curtain dresser pillow mirror".split(),
    "floor mat",
    *"clothes ceiling books refridgerator television paper towel".split(),
    "shower curtain",
    *"box whiteboard person".split(),
    "night stand",
    *"toilet sink lamp bathtub bag otherstructure otherfurniture otherprop".split(),
]
SUB = "spatial_envelope_256x256_static_8outdoorcategories"


def read_records(folder: Path, **decode) -> tuple[dict, list[dict]]:
    """dataset.json and the records, decoded, with ``encoded``: the stored image bytes."""
    metadata = json.loads((folder / "dataset.json").read_text())
    records = []
    for record in tf.data.TFRecordDataset([str(folder / name) for name in metadata["files"]]):
        decoded = {k: v.numpy() for k, v in decode_example(record, **decode).items()}
        example = tf.train.Example.FromString(record.numpy())
        decoded["encoded"] = example.features.feature[IMAGE].bytes_list.value[0]
        records.append(decoded)
    return metadata, records


def by_name(raw: np.ndarray, reference: list[str], names: list[str], void=(0,)) -> np.ndarray:
    """Raw 1-based labels mapped through the reference's names to ``names``' ids; void 255."""
    out = np.full(raw.shape, 255, np.uint8)
    for value in np.unique(raw):
        if value not in void:
            out[raw == value] = names.index(reference[int(value) - 1])
    return out


def class_counts(labels: list[np.ndarray], num_classes: int) -> list[int]:
    counts = np.zeros(num_classes, np.int64)
    for label in labels:
        counts += np.bincount(label[label != 255].ravel(), minlength=num_classes)
    return counts.tolist()


def jpeg(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, quality=95)


# SIFT Flow ------------------------------------------------------------------------------


def siftflow_tree(root: Path, rng: np.random.Generator, h: int = 20, w: int = 24) -> dict:
    """Images, semantic and geometric .mat files as the dataset ships them, and split lists."""
    splits = {
        "trainval": ["coast_natu975", "insidecity_art947", "street_art861", "forest_for114"],
        "test": ["highway_gre37", "mountain_sharp44"],
    }
    raw = {}
    for keys in splits.values():
        for key in keys:
            image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            jpeg(root / "Images" / SUB / f"{key}.jpg", image)
            semantic = rng.integers(0, 34, (h, w)).astype(np.int32)
            geometric = rng.choice([-1.0, 1.0, 2.0, 3.0], (h, w))
            geometric[0, :3] = 0.0  # the reference counts 0 as void too
            for folder, labels, names in (
                ("SemanticLabels", semantic, SIFTFLOW_REFERENCE),
                ("GeoLabels", geometric, GEOMETRIC_REFERENCE),
            ):
                (root / folder / SUB).mkdir(parents=True, exist_ok=True)
                scipy.io.savemat(
                    root / folder / SUB / f"{key}.mat",
                    {"S": labels, "names": np.array(names, dtype=object)},
                )
            raw[key] = (root / "Images" / SUB / f"{key}.jpg", semantic, geometric)
    return splits, raw


@pytest.mark.parametrize("unpacked", [False, True], ids=["reference", "SiftFlowDataset"])
def test_siftflow_round_trip(unpacked, tmp_path, rng):
    root = tmp_path / "sift-flow"
    splits, raw = siftflow_tree(root / "SiftFlowDataset" if unpacked else root, rng)
    for split, keys in splits.items():  # the reference's lists: no newline at the end
        (root / f"{split}.txt").write_text("\n".join(keys))
    out = tmp_path / "out"
    convert("siftflow", str(out), "trainval", root=str(root), shards=2, verbose=False)
    metadata, records = read_records(out, geometric=True)
    keys = splits["trainval"]
    assert metadata["count"] == len(records) == len(keys)
    assert metadata["num_classes"] == 33 and metadata["ignore_label"] == 255
    names = metadata["class_names"]
    assert names == SIFTFLOW_REFERENCE
    labels = []
    for record, key in zip(records, keys, strict=True):
        image_path, semantic, geometric = raw[key]
        assert record["filename"] == f"{key}.jpg".encode()
        assert record["encoded"] == image_path.read_bytes()  # the JPEG as it was
        assert record["image"].shape == (20, 24, 3)
        expected = by_name(semantic, SIFTFLOW_REFERENCE, names)
        np.testing.assert_array_equal(record["label"], expected)
        np.testing.assert_array_equal(
            record["geometric"],
            by_name(geometric, GEOMETRIC_REFERENCE, list(SIFTFlow.geometric_class_names), (-1, 0)),
        )
        assert (record["geometric"][0, :3] == 255).all()
        labels.append(expected)
    assert metadata["class_pixel_counts"] == class_counts(labels, 33)
    test = convert("siftflow", str(tmp_path / "test"), "test", root=str(root), verbose=False)
    assert test["count"] == 2


@pytest.mark.parametrize("how", ["semantic", "geometric", "key"])
def test_siftflow_bad_labels_are_named_or_skipped(how, tmp_path, rng):
    root = tmp_path / "sift-flow"
    splits, _ = siftflow_tree(root, rng, h=6, w=8)
    (root / "trainval.txt").write_text("\n".join(splits["trainval"]) + "\n")
    key = splits["trainval"][1]
    folder = "GeoLabels" if how == "geometric" else "SemanticLabels"
    bad = root / folder / SUB / f"{key}.mat"
    matrix = np.ones((6, 8), np.int32)
    matrix[2, 3] = 4 if how == "geometric" else 34
    scipy.io.savemat(bad, {"T" if how == "key" else "S": matrix})
    with pytest.raises(BadSampleError, match=re.escape(str(bad))) as error:
        convert("siftflow", str(tmp_path / "a"), "trainval", root=str(root), verbose=False)
    assert ("'S'" if how == "key" else "[" + str(matrix[2, 3]) + "]") in str(error.value)
    metadata = convert(
        "siftflow", str(tmp_path / "b"), "trainval", root=str(root), skip_bad=True, verbose=False
    )
    assert metadata["count"] == 3
    [skipped] = metadata["skipped"]
    assert skipped["key"] == key and str(bad) in skipped["reason"]


# NYUDv2 ---------------------------------------------------------------------------------


def nyud_tree(root: Path, rng: np.random.Generator, h: int = 12, w: int = 16) -> dict:
    splits = {"train": ["0003", "0004", "0007"], "val": ["5010", "5011"], "test": ["0001"]}
    raw = {}
    for sub in ("data/images", "data/depth", "segmentation"):
        (root / sub).mkdir(parents=True)
    for split, keys in splits.items():
        (root / f"{split}.txt").write_text("\n".join(keys) + "\n")
        for key in keys:
            image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            depth = rng.integers(0, 65536, (h, w), dtype=np.uint16)
            label = rng.integers(0, 41, (h, w), dtype=np.uint8)
            Image.fromarray(image).save(root / "data/images" / f"img_{key}.png")
            depth_image = Image.fromarray(depth)
            assert depth_image.mode == "I;16"
            depth_image.save(root / "data/depth" / f"img_{key}.png")
            scipy.io.savemat(root / "segmentation" / f"img_{key}.mat", {"segmentation": label})
            raw[key] = (image, depth, label)
    return splits, raw


def test_nyud_round_trip_with_depth(tmp_path, rng):
    root = tmp_path / "nyud"
    splits, raw = nyud_tree(root, rng)
    out = tmp_path / "out"
    # No trainval.txt: the reference's train and val lists, in that order.
    convert("nyud", str(out), "trainval", root=str(root), shards=2, verbose=False)
    metadata, records = read_records(out, depth=True)
    keys = splits["train"] + splits["val"]
    assert metadata["count"] == len(records) == len(keys)
    assert metadata["class_names"] == NYUD_REFERENCE
    labels = []
    for record, key in zip(records, keys, strict=True):
        image, depth, label = raw[key]
        assert record["filename"] == f"img_{key}.png".encode()
        np.testing.assert_array_equal(record["image"], image)
        assert record["depth"].dtype == np.uint16
        np.testing.assert_array_equal(record["depth"], depth)
        expected = by_name(label, NYUD_REFERENCE, metadata["class_names"])
        np.testing.assert_array_equal(record["label"], expected)
        labels.append(expected)
    assert metadata["class_pixel_counts"] == class_counts(labels, 40)
    assert convert("nyud", str(tmp_path / "test"), "test", root=str(root), verbose=False)[
        "count"
    ] == len(splits["test"])


@pytest.mark.parametrize("how", ["depth", "label"])
def test_nyud_bad_input_is_named(how, tmp_path, rng):
    root = tmp_path / "nyud"
    nyud_tree(root, rng)
    if how == "depth":  # 8 bits: the depth scale is lost
        bad = root / "data/depth/img_5011.png"
        Image.fromarray(np.ones((12, 16), np.uint8)).save(bad)
    else:
        bad = root / "segmentation/img_5011.mat"
        scipy.io.savemat(bad, {"segmentation": np.full((12, 16), 41, np.uint8)})
    with pytest.raises(BadSampleError, match=re.escape(str(bad))):
        convert("nyud", str(tmp_path / "out"), "val", root=str(root), verbose=False)
    with pytest.raises(FileNotFoundError, match="no list file"):
        NYUDv2(str(root), "nope").keys()


# Folder ---------------------------------------------------------------------------------


def save_p(path: Path, indices: np.ndarray, palette: list[int]) -> None:
    image = Image.frombytes("P", indices.shape[::-1], indices.astype(np.uint8).tobytes())
    image.putpalette(palette)
    image.save(path)


def test_folder_index_masks_and_image_kinds(tmp_path, rng):
    root = tmp_path / "mine"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    h, w = 10, 14
    rgb = {k: rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for k in "abcde"}
    jpeg(root / "images/a.jpg", rgb["a"])
    Image.fromarray(rgb["b"]).save(root / "images/b.png")
    Image.fromarray(rgb["c"]).save(root / "images/c.BMP")
    Image.fromarray(rgb["d"][..., 0]).save(root / "images/d.png")  # gray
    rgba = np.dstack([rgb["e"], np.full((h, w), 9, np.uint8)])
    Image.fromarray(rgba).save(root / "images/e.png")
    (root / "images/notes.txt").write_text("not an image")
    labels = {k: rng.choice([0, 1, 2, 3, 255], (h, w)).astype(np.uint8) for k in "abcde"}
    save_p(root / "masks/a.png", labels["a"], [7] * 768)  # palette colours do not matter
    Image.fromarray(labels["b"]).save(root / "masks/b.png")
    Image.fromarray(labels["c"]).save(root / "masks/c.png")
    Image.fromarray(np.dstack([labels["d"]] * 3)).save(root / "masks/d.png")  # gray as RGB
    Image.fromarray(labels["e"].astype(np.uint16)).save(root / "masks/e.png")  # 16-bit
    out = tmp_path / "out"
    convert("folder", str(out), "train", root=str(root), num_classes=4, verbose=False)
    metadata, records = read_records(out)
    assert metadata["class_names"] == ["class_0", "class_1", "class_2", "class_3"]
    assert [r["filename"] for r in records] == [b"a.jpg", b"b.png", b"c.BMP", b"d.png", b"e.png"]
    expected_images = {**rgb, "d": np.dstack([rgb["d"][..., 0]] * 3)}
    for record, key in zip(records, "abcde", strict=True):
        np.testing.assert_array_equal(record["label"], labels[key])
        source = (root / "images" / record["filename"].decode()).read_bytes()
        assert (record["encoded"] == source) == (key in "ab"), key  # RGB JPEG/PNG kept as is
        if key != "a":
            np.testing.assert_array_equal(record["image"], expected_images[key])
    # The bytes are the file's; decoders differ a little (TensorFlow's default is a fast DCT).
    pillow = np.asarray(Image.open(root / "images/a.jpg").convert("RGB"), np.int16)
    assert np.abs(records[0]["image"] - pillow).max() <= 8
    assert metadata["class_pixel_counts"] == class_counts(list(labels.values()), 4)


def test_folder_split_folders_and_class_names(tmp_path, rng):
    for split, count in (("train", 3), ("val", 2)):
        for i in range(count):
            jpeg(tmp_path / split / "images" / f"{split}{i}.jpg", np.zeros((4, 5, 3), np.uint8))
            (tmp_path / split / "masks").mkdir(exist_ok=True)
            Image.fromarray(np.full((4, 5), i, np.uint8)).save(
                tmp_path / split / "masks" / f"{split}{i}.png"
            )
    metadata = convert(
        "folder",
        str(tmp_path / "out"),
        "val",
        root=str(tmp_path),
        class_names="sky, road",
        verbose=False,
    )
    assert metadata["count"] == 2 and metadata["class_names"] == ["sky", "road"]
    assert metadata["class_pixel_counts"] == [20, 20]


COLOURS = {"background": (0, 0, 0), "floor mat": (255, 0, 0), "road": (128, 64, 128)}
PALETTES = {
    "text": "# R G B name\n0 0 0 background\n255 0 0 floor mat\n128 64 128 road\n"
    "0 0 1 background  # a second colour for one class\n255 255 255 void\n",
    "json-dict": json.dumps({**COLOURS, "ignore": [255, 255, 255]}),
    "json-list": json.dumps(list(COLOURS.values())),
}


@pytest.mark.parametrize("kind", PALETTES)
def test_folder_colour_masks_with_palette_files(kind, tmp_path, rng):
    root = tmp_path / "mine"
    (root / "masks").mkdir(parents=True)
    palette = tmp_path / ("palette.txt" if kind == "text" else "palette.json")
    palette.write_text(PALETTES[kind])
    colours = [*COLOURS.values(), *([(255, 255, 255)] if kind != "json-list" else [])]
    ids = [0, 1, 2, 255][: len(colours)]
    if kind == "text":
        colours, ids = [*colours, (0, 0, 1)], [*ids, 0]
    expected = []
    for i in range(3):
        choice = rng.integers(0, len(colours), (6, 7))
        mask = np.array(colours, np.uint8)[choice]
        jpeg(root / "images" / f"{i}.jpg", rng.integers(0, 256, (6, 7, 3), dtype=np.uint8))
        if i == 2:  # colours kept in a palette PNG, in an order of its own
            order = rng.permutation(len(colours))
            save_p(
                root / "masks/2.png",
                np.argsort(order)[choice],
                np.array(colours)[order].ravel().tolist(),
            )
        else:
            Image.fromarray(mask).save(root / "masks" / f"{i}.png")
        expected.append(np.array(ids, np.uint8)[choice])
    options = {"class_names": "bg,mat,road"} if kind == "json-list" else {}
    out = tmp_path / "out"
    convert("folder", str(out), "x", root=str(root), palette=str(palette), verbose=False, **options)
    metadata, records = read_records(out)
    names = ["bg", "mat", "road"] if kind == "json-list" else ["background", "floor mat", "road"]
    assert metadata["class_names"] == names
    for record, labels in zip(records, expected, strict=True):
        np.testing.assert_array_equal(record["label"], labels)
    assert metadata["class_pixel_counts"] == class_counts(expected, 3)


def test_folder_unknown_colour_is_named_or_skipped(tmp_path, rng):
    root = tmp_path / "mine"
    (root / "masks").mkdir(parents=True)
    palette = tmp_path / "palette.txt"
    palette.write_text(PALETTES["text"])
    for i in range(3):
        jpeg(root / "images" / f"{i}.jpg", np.zeros((4, 4, 3), np.uint8))
        mask = np.zeros((4, 4, 3), np.uint8)
        if i == 1:
            mask[1, 1] = (1, 2, 3)
        Image.fromarray(mask).save(root / "masks" / f"{i}.png")
    bad = str(root / "masks/1.png")
    with pytest.raises(
        BadSampleError, match=rf"{re.escape(bad)}: colours not in the palette: \(1, 2, 3\)"
    ):
        convert(
            "folder", str(tmp_path / "a"), "x", root=str(root), palette=str(palette), verbose=False
        )
    metadata = convert(
        "folder",
        str(tmp_path / "b"),
        "x",
        root=str(root),
        palette=str(palette),
        skip_bad=True,
        verbose=False,
    )
    assert metadata["count"] == 2 and bad in metadata["skipped"][0]["reason"]


def folder_tree(root: Path, rng: np.random.Generator, count: int, h: int = 8, w: int = 9) -> None:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (h, w + i, 3), dtype=np.uint8)).save(
            root / "images" / f"im{i}.png"
        )
        Image.fromarray(rng.integers(0, 3, (h, w + i), dtype=np.uint8)).save(
            root / "masks" / f"im{i}.png"
        )


def test_folder_unmatched_files_are_listed(tmp_path, rng):
    root = tmp_path / "mine"
    folder_tree(root, rng, 4)
    os.remove(root / "masks/im2.png")
    jpeg(root / "masks/im2.jpg", np.zeros((8, 11, 3), np.uint8))  # a mask of the wrong kind
    Image.fromarray(np.zeros((3, 3), np.uint8)).save(root / "masks/stray.png")
    out = tmp_path / "out"
    with pytest.raises(
        ValueError, match=r"1 images .* no mask .*: im2\.png; 1 masks .* stray\.png"
    ):
        convert("folder", str(out), "x", root=str(root), num_classes=3, verbose=False)
    assert not out.exists() or not os.listdir(out)
    jpeg(root / "images/im0.jpg", np.zeros((8, 9, 3), np.uint8))
    with pytest.raises(ValueError, match=r"share a stem: im0\.jpg and im0\.png"):
        Folder(str(root), "x", num_classes=3).keys()
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "images"))):
        Folder(str(tmp_path), "x", num_classes=3).keys()


def test_folder_size_mismatch_is_named_or_skipped(tmp_path, rng):
    root = tmp_path / "mine"
    folder_tree(root, rng, 4)
    Image.fromarray(np.zeros((8, 5), np.uint8)).save(root / "masks/im1.png")
    with pytest.raises(BadSampleError, match=re.escape(str(root / "images/im1.png"))):
        convert("folder", str(tmp_path / "a"), "x", root=str(root), num_classes=3, verbose=False)
    metadata = convert(
        "folder",
        str(tmp_path / "b"),
        "x",
        root=str(root),
        num_classes=3,
        skip_bad=True,
        verbose=False,
    )
    assert metadata["count"] == 3
    [skipped] = metadata["skipped"]
    assert skipped["key"].startswith(str(root / "images/im1.png"))
    assert len(read_records(tmp_path / "b")[1]) == 3


def test_folder_workers_do_not_change_the_bytes(tmp_path, rng):
    folder_tree(tmp_path / "mine", rng, 6)
    for workers in (1, 2):
        convert(
            "folder",
            str(tmp_path / f"w{workers}"),
            "x",
            root=str(tmp_path / "mine"),
            num_classes=3,
            shards=2,
            workers=workers,
            verbose=False,
        )
    names = sorted(os.listdir(tmp_path / "w1"))
    assert names == sorted(os.listdir(tmp_path / "w2")) and len(names) == 3
    for name in names:
        assert (tmp_path / "w1" / name).read_bytes() == (tmp_path / "w2" / name).read_bytes()


def test_folder_cli_with_palette(tmp_path, rng, capsys):
    root = tmp_path / "mine"
    folder_tree(root, rng, 2)
    palette = tmp_path / "palette.json"
    palette.write_text(json.dumps([[0, 0, 0], [1, 1, 1], [2, 2, 2]]))  # gray masks as colours
    argv = ["folder", "--root", str(root), "--split", "val", "--out", str(tmp_path / "out")]
    assert main([*argv, "--palette", str(palette), "--class-names", "a,b,c"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["count"] == 2  # after the bar
    assert main([*argv, "--num-classes", "4", "--palette", str(palette)]) == 1
    assert "num_classes=4 but 3 classes" in capsys.readouterr().err


def test_folder_options_and_masks_that_are_refused(tmp_path):
    with pytest.raises(ValueError, match="give num_classes, class_names or a palette"):
        Folder(str(tmp_path), "x")
    with pytest.raises(ValueError, match="num_classes=3 but 2"):
        Folder(str(tmp_path), "x", num_classes=3, class_names="a,b")
    palette = tmp_path / "p.txt"
    for text, error in (
        ("0 0 0 a\n0 0 0 b\n", r"colour \(0, 0, 0\) is listed twice"),
        ("0 0 256 a\n", "p.txt:1: .* not an R G B colour"),
        ("0 0 0 void\n", "no classes"),
    ):
        palette.write_text(text)
        with pytest.raises(ValueError, match=error):
            Folder(str(tmp_path), "x", palette=str(palette))
    colour = tmp_path / "colour.png"
    Image.fromarray(np.array([[[1, 2, 3]]], np.uint8)).save(colour)
    with pytest.raises(BadSampleError, match=r"colour\.png: colour mask without a palette"):
        read_mask(str(colour))
    clear = tmp_path / "clear.png"
    Image.fromarray(np.zeros((1, 1, 4), np.uint8)).save(clear)
    with pytest.raises(BadSampleError, match=r"clear\.png: mask has transparent pixels"):
        read_mask(str(clear), {0: 0})


def test_converters_pickle(tmp_path, rng):
    folder_tree(tmp_path / "mine", rng, 2)
    palette = tmp_path / "p.txt"
    palette.write_text("0 0 0 a\n1 1 1 b\n")
    for converter in (
        SIFTFlow(str(tmp_path), "test"),
        NYUDv2(str(tmp_path), "val"),
        Folder(str(tmp_path / "mine"), "x", palette=str(palette)),
    ):
        copy = pickle.loads(pickle.dumps(converter))
        assert vars(copy) == vars(converter) and copy.class_names == converter.class_names


def test_folder_photos_are_stored_upright_by_their_exif_orientation(tmp_path, rng):
    from PIL import ImageOps

    folder_tree(tmp_path / "mine", rng, 0)
    stored = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)  # as the camera wrote it
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    Image.fromarray(stored).save(tmp_path / "mine/images/photo.png", exif=exif)
    upright = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "mine/images/photo.png")))
    assert upright.shape == (40, 30, 3)
    label = rng.integers(0, 3, (40, 30), dtype=np.uint8)  # drawn on the upright photo
    Image.fromarray(label).save(tmp_path / "mine/masks/photo.png")
    out = tmp_path / "out"
    convert("folder", str(out), "train", root=str(tmp_path / "mine"), num_classes=3, verbose=False)
    [record] = read_records(out)[1]
    np.testing.assert_array_equal(record["image"], upright)
    np.testing.assert_array_equal(record["label"], label)


def test_folder_names_with_tabs_or_undecodable_bytes_convert(tmp_path, rng):
    root = tmp_path / "mine"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    # A tab, and a Latin-1 byte that os.listdir hands back as a surrogate escape.
    names = [b"a\tb.png", b"caf\xe9.png", b"ok.png"]
    labels = {}
    for name in names:
        label = rng.integers(0, 3, (6, 7), dtype=np.uint8)
        image = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
        Image.fromarray(image).save(os.fsdecode(os.path.join(bytes(root / "images"), name)))
        Image.fromarray(label).save(os.fsdecode(os.path.join(bytes(root / "masks"), name)))
        labels[name] = label
    metadata = convert(
        "folder", str(tmp_path / "out"), "x", root=str(root), num_classes=3, verbose=False
    )
    assert metadata["count"] == 3 and metadata["skipped"] == []
    _, records = read_records(tmp_path / "out")
    stored = {record["filename"]: record["label"] for record in records}
    assert sorted(stored) == sorted(names)  # the names' own bytes
    for name, label in labels.items():
        np.testing.assert_array_equal(stored[name], label)
