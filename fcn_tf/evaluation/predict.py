"""Predict masks for image files: colourised masks, overlays, legends, raw class ids.

Images are read with their EXIF orientation applied (a portrait photo stays upright) and
converted to RGB (grayscale, palette, RGBA, 16-bit and CMYK files alike; transparency is
dropped), then predicted at their own size. For each image ``STEM`` the output folder gets

* ``STEM_mask.png``: the class ids coloured with the dataset's palette (CamVid's colours for
  CamVid's classes, else VOC's standard map: :func:`fcn_tf.palette.palette_for`);
* ``STEM_overlay.png``: that mask blended over the image;
* ``STEM_legend.png``: a swatch and name for each class present;
* ``STEM_ids.png`` (with ``raw=True``): the class ids as an 8-bit gray PNG (16-bit past
  256 classes).

>>> import tempfile
>>> from PIL import Image
>>> from fcn_tf.models import build_fcn
>>> folder = tempfile.mkdtemp()
>>> Image.new("L", (30, 20), 128).save(folder + "/gray.png")   # grayscale: converted
>>> model = build_fcn(3, 32, backbone_options={"width": 1 / 32, "fc_units": 8})
>>> [sorted(r["files"]) for r in predict_images(model, [folder], folder + "/out", verbose=0)]
[['legend', 'mask', 'overlay']]
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from fcn_tf.evaluation.models import open_model

__all__ = [
    "IMAGE_EXTENSIONS",
    "PALETTES",
    "list_images",
    "predict_images",
    "read_image",
    "unique_stems",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")
PALETTES = ("auto", "voc", "camvid")


def read_image(path: str) -> np.ndarray:
    """An image file as RGB uint8 ``[H, W, 3]``, upright by its EXIF orientation.

    >>> import tempfile
    >>> from PIL import Image
    >>> path = os.path.join(tempfile.mkdtemp(), "gray16.png")
    >>> Image.new("I;16", (3, 2), 257 * 128).save(path)   # 16-bit gray: scaled, not clipped
    >>> image = read_image(path)
    >>> image.shape, image.dtype.name, image[0, 0].tolist()
    ((2, 3, 3), 'uint8', [128, 128, 128])
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            if image.mode == "F":
                # Float pixels have no agreed range (0-1? 0-255? HDR?); Pillow would clip.
                raise ValueError(
                    f"{path}: 32-bit float pixels (mode F) have no standard range; save it "
                    "with 8 or 16 bits per channel"
                )
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                # 16-bit gray: Pillow's RGB conversion would clip, not scale, to 8 bits. A fixed
                # 65535 -> 255 scale keeps a dark photo dark, as its 8-bit copy would be.
                values = np.clip(np.asarray(image, np.float64), 0, 65535)
                image = Image.fromarray(np.round(values / 257).astype(np.uint8))
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as error:
        raise ValueError(f"{path}: not a readable image ({error})") from None


def list_images(inputs: Sequence[str]) -> list[str]:
    """Image files named in ``inputs``: files, and the image files in folders (sorted,
    not recursive). Errors name what is missing.

    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> for name in ("b.png", "a.JPG", "notes.txt"):
    ...     open(os.path.join(folder, name), "w").close()
    >>> [os.path.basename(path) for path in list_images([folder])]
    ['a.JPG', 'b.png']
    """
    files = []
    for item in inputs:
        if os.path.isdir(item):
            names = sorted(os.listdir(item))
            files += [os.path.join(item, n) for n in names if n.lower().endswith(IMAGE_EXTENSIONS)]
        elif os.path.isfile(item):
            files.append(item)
        else:
            raise FileNotFoundError(f"{item}: no such image file or folder")
    if not files:
        raise ValueError(f"no image files in {list(inputs)}")
    return files


def _class_names(segmenter: Any, palette: str) -> list[str]:
    from fcn_tf.data.converters import camvid, voc

    count = segmenter.num_classes
    if segmenter.class_names:
        return list(segmenter.class_names)
    known = {"camvid": camvid.CLASS_NAMES, "voc": voc.CLASS_NAMES}
    if palette in known and count in (None, len(known[palette])):
        return list(known[palette])
    return [f"class_{i}" for i in range(count or 256)]


def _palette(class_names: list[str], palette: str) -> np.ndarray:
    from fcn_tf.data.converters import camvid
    from fcn_tf.palette import palette_for

    if palette not in PALETTES:
        raise ValueError(f"palette must be one of {PALETTES}, got {palette!r}")
    if palette == "camvid":
        return palette_for(camvid.CLASS_NAMES)
    if palette == "voc":
        return palette_for([])
    return palette_for(class_names)


def unique_stems(files: list[str]) -> list[str]:
    """Output names: each file's stem, numbered on a clash with any name already taken.

    >>> unique_stems(["a/x.png", "b/x.png", "c/x-2.png"])
    ['x', 'x-2', 'x-2-2']
    """
    stems, used = [], set()
    for path in files:
        stem = base = os.path.splitext(os.path.basename(path))[0]
        number = 1
        while stem in used:
            number += 1
            stem = f"{base}-{number}"
        used.add(stem)
        stems.append(stem)
    return stems


def predict_images(
    model: Any,
    inputs: Sequence[str],
    out_dir: str,
    palette: str = "auto",
    raw: bool = False,
    alpha: float = 0.5,
    verbose: int = 1,
) -> list[dict[str, Any]]:
    """Predict every image of ``inputs`` (files or folders) and write its pictures (see the
    module docstring) into ``out_dir``.

    Args:
        model: anything :func:`fcn_tf.evaluation.open_model` takes.
        inputs: image files and folders of images.
        out_dir: created if needed; files are written atomically.
        palette: ``"auto"`` (CamVid's colours for CamVid's class names, else VOC's),
            ``"voc"`` or ``"camvid"``.
        raw: also write the class ids as a gray PNG.
        alpha: the mask's weight in the overlay.
        verbose: 1 shows a progress bar.

    Returns:
        Per image: its ``path``, ``size`` (height, width), the ``classes`` present (names)
        and the ``files`` written, by kind.

    >>> import tempfile
    >>> from PIL import Image
    >>> folder = tempfile.mkdtemp()
    >>> Image.new("RGB", (24, 16)).save(os.path.join(folder, "black.png"))
    >>> scorer = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(3, 1)])
    >>> [result] = predict_images(scorer, [folder], folder + "/out", raw=True, verbose=0)
    >>> result["size"], result["classes"], sorted(result["files"])   # zero logits: class 0
    ((16, 24), ['class_0'], ['ids', 'legend', 'mask', 'overlay'])
    """
    from fcn_tf.evaluation.pictures import legend_picture, overlay
    from fcn_tf.files import write_png
    from fcn_tf.palette import colorize

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha (--alpha) must be in [0, 1], got {alpha}")
    segmenter = open_model(model)
    names = _class_names(segmenter, palette)
    colours = _palette(names, palette)
    files = list_images(inputs)
    os.makedirs(out_dir, exist_ok=True)
    bar = keras.utils.Progbar(len(files), verbose=verbose, unit_name="image")
    results = []
    for path, stem in zip(files, unique_stems(files), strict=True):
        image = read_image(path)
        ids = segmenter(image[None])[0]
        present = [int(i) for i in np.unique(ids)]
        mask = colorize(ids, colours)
        pictures = {
            "mask": mask,
            "overlay": overlay(image, mask, alpha),
            "legend": legend_picture(present, names, colours),
        }
        if raw:
            pictures["ids"] = ids.astype(np.uint8 if ids.max() < 256 else np.uint16)
        written = {}
        for kind, picture in pictures.items():
            written[kind] = os.path.join(out_dir, f"{stem}_{kind}.png")
            write_png(written[kind], picture)
        classes = [names[i] if i < len(names) else f"class_{i}" for i in present]
        results.append(
            {"path": path, "size": image.shape[:2], "classes": classes, "files": written}
        )
        bar.add(1)
    return results
