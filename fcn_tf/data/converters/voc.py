"""PASCAL VOC segmentation in the devkit layout (``VOCdevkit/VOC2012``).

Reads ``JPEGImages/{id}.jpg`` (kept as the JPEG file, not re-encoded),
``SegmentationClass/{id}.png`` (palette PNGs whose indices are the class ids, 255 the
boundary band that evaluation ignores) and the list ``ImageSets/Segmentation/{split}.txt``.

The FCN paper validates on ``seg11valid``: the 736 images of VOC2011 segmentation val that are
not in SBD train (the two overlap). The list is not part of VOC; it ships with the reference
implementation, https://github.com/shelhamer/fcn.berkeleyvision.org, as
``data/pascal/seg11valid.txt``. Copy it to ``VOC2011/ImageSets/Segmentation/`` (where the
reference reads it) and use ``--year VOC2011 --split seg11valid``; or give the list file's
path as the split when building :class:`VOC` directly.
"""

from __future__ import annotations

import os

from fcn_tf.data.converters.common import read_bytes, read_label, read_lines
from fcn_tf.data.records import Sample
from fcn_tf.data.writer import Converter

__all__ = ["CLASS_NAMES", "PALETTE", "VOC", "is_list_file", "list_path", "voc_palette"]

CLASS_NAMES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip

SEG11VALID_URL = (
    "https://raw.githubusercontent.com/shelhamer/fcn.berkeleyvision.org/master/"
    "data/pascal/seg11valid.txt"
)


def voc_palette(size: int = 256) -> tuple[tuple[int, int, int], ...]:
    """The devkit's colour map: the bits of class ``k`` spread over R, G, B from the top bit.

    Neighbouring ids get far-apart colours; 255 (the boundary) is a light beige.

    >>> voc_palette()[:3], voc_palette()[255]
    (((0, 0, 0), (128, 0, 0), (0, 128, 0)), (224, 224, 192))
    """
    colours = []
    for k in range(size):
        rgb = [0, 0, 0]
        bit = 7
        while k:
            for channel in range(3):
                rgb[channel] |= ((k >> channel) & 1) << bit
            k >>= 3
            bit -= 1
        colours.append((rgb[0], rgb[1], rgb[2]))
    return tuple(colours)


# For pictures of labels and predictions: ``np.asarray(PALETTE, np.uint8)[label]``, or
# ``image.putpalette(np.ravel(PALETTE))`` to write a PNG the way VOC's own are.
PALETTE = voc_palette()


def is_list_file(split: str) -> bool:
    """Whether ``split`` names a list file (a path separator, or a ``.txt`` ending).

    >>> is_list_file("seg11valid.txt"), is_list_file("val")
    (True, False)
    """
    return split.endswith(".txt") or "/" in split or os.sep in split


def list_path(folder: str, split: str) -> str:
    """The list file of ``split``: ``folder/{split}.txt``, or ``split`` itself if it is a path.

    A name with a path separator or ending in ``.txt`` is a path (a list kept elsewhere).

    >>> list_path("/data/VOC2012/ImageSets/Segmentation", "val")
    '/data/VOC2012/ImageSets/Segmentation/val.txt'
    >>> list_path("/data/VOC2012/ImageSets/Segmentation", "/lists/seg11valid.txt")
    '/lists/seg11valid.txt'
    """
    if is_list_file(split):
        return split
    return os.path.join(folder, f"{split}.txt")


def read_ids(path: str, dataset: str, split: str) -> list[str]:
    """The ids of a list file (first word of each line), or a clear error when it is missing."""
    if not os.path.isfile(path):
        hint = ""
        if os.path.basename(path) == "seg11valid.txt":
            hint = f"; seg11valid comes with the FCN reference implementation: {SEG11VALID_URL}"
        raise FileNotFoundError(f"{dataset}: no list file {path} for split {split!r}{hint}")
    return [line.split()[0] for line in read_lines(path)]


def _year_folder(root: str, year: str) -> str:
    """``root`` as given (a devkit, its parent, or the year folder) -> the year folder."""
    if year.isdigit():
        year = f"VOC{year}"
    candidates = [os.path.join(root, year), os.path.join(root, "VOCdevkit", year), root]
    for folder in candidates:
        if os.path.isdir(os.path.join(folder, "JPEGImages")):
            return folder
    raise FileNotFoundError(
        f"voc: no JPEGImages folder in any of {candidates}; root must be the VOCdevkit folder "
        f"(holding {year}) or the {year} folder itself"
    )


class VOC(Converter):
    r"""PASCAL VOC's 20 classes and background; ``split`` is ``train``, ``val``, ``seg11valid``...

    ``root`` is the VOCdevkit folder (``year`` picks the year inside it) or a year folder
    itself, in which case ``year`` is not used.

    >>> import tempfile
    >>> root = tempfile.mkdtemp()  # a VOCdevkit listing one image
    >>> lists = os.path.join(root, "VOC2012", "ImageSets", "Segmentation")
    >>> os.makedirs(lists)
    >>> os.makedirs(os.path.join(root, "VOC2012", "JPEGImages"))
    >>> with open(os.path.join(lists, "val.txt"), "w") as file:
    ...     _ = file.write("2007_000033\n")
    >>> VOC(root, "val").keys(), len(VOC.class_names), VOC.class_names[:2]
    (['2007_000033'], 21, ('background', 'aeroplane'))
    """

    name = "voc"
    class_names = CLASS_NAMES

    def __init__(self, root: str, split: str, year: str = "VOC2012"):
        self.folder = _year_folder(root, year)
        self.split = split
        self.list_file = list_path(os.path.join(self.folder, "ImageSets", "Segmentation"), split)

    def keys(self) -> list[str]:
        return read_ids(self.list_file, self.name, self.split)

    def load(self, key: str) -> Sample:
        image_path = os.path.join(self.folder, "JPEGImages", f"{key}.jpg")
        label_path = os.path.join(self.folder, "SegmentationClass", f"{key}.png")
        return Sample(
            f"{key}.jpg",
            read_bytes(image_path),
            read_label(label_path),
            origin=f"{image_path} (label {label_path})",
        )
