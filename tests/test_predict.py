"""Tests for fcn_tf.evaluation.predict and training/predict.py."""

from __future__ import annotations

import runpy

import keras
import numpy as np
import pytest
from helpers import REPO_ROOT, keras_class_ids, random_thin_fcn
from PIL import Image

from fcn_tf.data.converters import camvid, voc
from fcn_tf.evaluation.models import open_model
from fcn_tf.evaluation.predict import list_images, predict_images, read_image

PREDICT = str(REPO_ROOT / "training" / "predict.py")
ORIENTATION = 0x0112  # the EXIF tag


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return random_thin_fcn(len(camvid.CLASS_NAMES))


def _rgb(rng, height, width) -> np.ndarray:
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def _png(array: np.ndarray) -> np.ndarray:
    return np.asarray(Image.open(array))


def test_masks_overlays_and_raw_ids_for_any_size(model, rng, tmp_path):
    sizes = [(37, 23), (64, 96)]
    for index, (height, width) in enumerate(sizes):
        Image.fromarray(_rgb(rng, height, width)).save(tmp_path / f"im{index}.png")
    out = str(tmp_path / "out")
    results = predict_images(model, [str(tmp_path)], out, "camvid", raw=True, verbose=0)
    assert [r["size"] for r in results] == sizes
    colours = np.array(camvid.PALETTE, np.uint8)
    for index, result in enumerate(results):
        image = np.asarray(Image.open(tmp_path / f"im{index}.png"))
        ids = _png(result["files"]["ids"])
        np.testing.assert_array_equal(ids, keras_class_ids(model, image[None])[0])
        mask = _png(result["files"]["mask"])
        np.testing.assert_array_equal(mask, colours[ids])  # CamVid's own colours
        expected = np.round(0.5 * image.astype(float) + 0.5 * mask).astype(np.uint8)
        overlay = _png(result["files"]["overlay"]).astype(int)
        assert np.abs(overlay - expected).max() <= 1
        present = [camvid.CLASS_NAMES[i] for i in np.unique(ids)]
        assert result["classes"] == present and len(present) > 1


def test_legend_lists_the_classes_present_in_their_colours(model, rng, tmp_path):
    Image.fromarray(_rgb(rng, 48, 48)).save(tmp_path / "a.png")
    (result,) = predict_images(model, [str(tmp_path / "a.png")], str(tmp_path), "camvid", verbose=0)
    legend = _png(result["files"]["legend"])
    ids = [camvid.CLASS_NAMES.index(name) for name in result["classes"]]
    colours = {tuple(c) for c in legend.reshape(-1, 3)}
    for class_id in range(len(camvid.CLASS_NAMES)):
        assert (tuple(camvid.PALETTE[class_id]) in colours) == (class_id in ids)
    assert legend.shape[0] > 20 * len(ids)  # one row per class present


def test_palette_follows_the_dataset(model, rng, tmp_path):
    Image.fromarray(_rgb(rng, 32, 40)).save(tmp_path / "a.png")
    voc_colours = np.array(voc.voc_palette(), np.uint8)
    image = [str(tmp_path / "a.png")]
    (result,) = predict_images(model, image, str(tmp_path / "v"), "voc", raw=True, verbose=0)
    ids = _png(result["files"]["ids"])
    np.testing.assert_array_equal(_png(result["files"]["mask"]), voc_colours[ids])
    # "auto" reads the class names: CamVid's names get CamVid's colours.
    named = open_model(model)
    named.class_names = list(camvid.CLASS_NAMES)
    (auto,) = predict_images(named, image, str(tmp_path / "c"), verbose=0)
    np.testing.assert_array_equal(
        _png(auto["files"]["mask"]), np.array(camvid.PALETTE, np.uint8)[ids]
    )


def test_exif_orientation_is_applied(rng, tmp_path):
    pixels = _rgb(rng, 20, 30)  # stored landscape
    exif = Image.Exif()
    exif[ORIENTATION] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(pixels).save(tmp_path / "photo.png", exif=exif)
    upright = read_image(str(tmp_path / "photo.png"))
    np.testing.assert_array_equal(upright, np.rot90(pixels, k=-1))
    assert upright.shape == (30, 20, 3)


def test_grayscale_palette_rgba_and_16_bit_images_become_rgb(rng, tmp_path):
    gray = rng.integers(0, 256, (12, 9), dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "gray.png")
    np.testing.assert_array_equal(read_image(str(tmp_path / "gray.png")), np.stack([gray] * 3, -1))
    rgba = rng.integers(0, 256, (12, 9, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(read_image(str(tmp_path / "rgba.png")), rgba[..., :3])
    Image.fromarray(rgba[..., :3]).convert("P").save(tmp_path / "palette.png")
    assert read_image(str(tmp_path / "palette.png")).shape == (12, 9, 3)
    deep = (np.arange(12 * 9, dtype=np.uint16).reshape(12, 9) * 600).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    scaled = read_image(str(tmp_path / "deep.png"))[..., 0]
    np.testing.assert_array_equal(scaled, np.round(deep / 257.0).astype(np.uint8))


def test_bad_inputs_are_named(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG nope")
    with pytest.raises(ValueError, match=r"broken\.png"):
        read_image(str(tmp_path / "broken.png"))
    with pytest.raises(FileNotFoundError, match=r"missing\.jpg"):
        list_images([str(tmp_path / "missing.jpg")])
    assert list_images([str(tmp_path)]) == [str(tmp_path / "broken.png")]  # .txt is skipped
    Image.fromarray(np.full((3, 4), 0.5, np.float32)).save(tmp_path / "float.tif")
    with pytest.raises(ValueError, match=r"float\.tif: 32-bit float pixels"):
        read_image(str(tmp_path / "float.tif"))


def test_overlay_weight_outside_0_1_is_refused(model, tmp_path):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    for alpha in (-0.1, 3.0):
        with pytest.raises(ValueError, match=r"--alpha\) must be in \[0, 1\]"):
            predict_images(model, [str(tmp_path / "a.png")], str(tmp_path / "out"), alpha=alpha)
    assert not (tmp_path / "out").exists()


def test_an_image_over_pillows_pixel_limit_is_named(tmp_path, monkeypatch):
    from PIL import Image

    Image.fromarray(np.zeros((40, 30), np.uint8)).save(tmp_path / "huge.png")
    # Pillow refuses images over twice MAX_IMAGE_PIXELS (a decompression bomb).
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)
    with pytest.raises(ValueError, match=r"huge\.png: not a readable image .*exceeds limit"):
        read_image(str(tmp_path / "huge.png"))


def test_cli_writes_pictures_for_files_and_folders(model, rng, tmp_path, capsys):
    keras_file = str(tmp_path / "model.keras")
    model.save(keras_file)
    (tmp_path / "in").mkdir()
    Image.fromarray(_rgb(rng, 30, 40)).save(tmp_path / "in" / "x.jpg")
    Image.fromarray(_rgb(rng, 25, 20)).save(tmp_path / "y.png")
    main = runpy.run_path(PREDICT)["main"]
    arguments = ["--model", keras_file, str(tmp_path / "in"), str(tmp_path / "y.png")]
    assert main([*arguments, "--out", str(tmp_path / "out"), "--raw", "--quiet"]) == 0
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    kinds = ["ids", "legend", "mask", "overlay"]
    assert written == sorted(f"{stem}_{kind}.png" for stem in "xy" for kind in kinds)
    output = capsys.readouterr().out
    assert "x.jpg (40x30)" in output and "y.png (20x25)" in output
