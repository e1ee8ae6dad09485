"""NYUDv2 in the FCN reference layout (Gupta et al.'s 40-class task), colour with raw depth.

``root`` holds the split lists (``train.txt``, ``val.txt``, ``test.txt``: one image number a
line), ``data/images/img_{id}.png`` (colour), ``data/depth/img_{id}.png`` (16-bit depth) and
``segmentation/img_{id}.mat`` (the labels under the key ``segmentation``: 0 void, 1-40 the
classes). Classes shift down by one and void becomes the ignore label 255. Depth is kept as
the 16-bit map in ``Sample.depth``; HHA is not converted here.

Split ``trainval`` reads ``trainval.txt`` or, when there is none, ``train.txt`` then
``val.txt`` (the reference's nets train on ``trainval`` but its data folder lists only the
parts).
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from fcn_tf.data.converters.common import read_image, read_lines, read_mat, shift_labels
from fcn_tf.data.records import Sample
from fcn_tf.data.writer import BadSampleError, Converter

__all__ = ["CLASS_NAMES", "NYUDv2", "read_depth"]

# Spelled as the reference spells them ("refridgerator"), so class lists compare equal.
CLASS_NAMES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window",
    "bookshelf", "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser",
    "pillow", "mirror", "floor mat", "clothes", "ceiling", "books", "refridgerator",
    "television", "paper", "towel", "shower curtain", "box", "whiteboard", "person",
    "night stand", "toilet", "sink", "lamp", "bathtub", "bag", "otherstructure",
    "otherfurniture", "otherprop",
)  # fmt: skip

_16_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")


def read_depth(path: str) -> np.ndarray:
    """A 16-bit single-channel PNG as uint16 ``[H, W]``, or :class:`BadSampleError` naming it.

    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "depth.png")
    >>> Image.fromarray(np.array([[0, 1000]], np.uint16)).save(path)
    >>> read_depth(path)
    array([[   0, 1000]], dtype=uint16)
    >>> Image.fromarray(np.array([[0, 100]], np.uint8)).save(path)
    >>> read_depth(path)
    Traceback (most recent call last):
    ...
    fcn_tf.data.writer.BadSampleError: /.../depth.png: depth must be a 16-bit gray PNG, not mode L
    """
    try:
        with Image.open(path) as image:
            mode = image.mode
            depth = np.asarray(image) if mode in _16_BIT_MODES else None
    except Exception as error:
        raise BadSampleError(f"{path}: unreadable depth ({error})") from error
    # An 8-bit depth map has lost its scale: refuse it rather than store a wrong one.
    if depth is None:
        raise BadSampleError(f"{path}: depth must be a 16-bit gray PNG, not mode {mode}")
    if depth.min(initial=0) < 0 or depth.max(initial=0) > np.iinfo(np.uint16).max:
        raise BadSampleError(f"{path}: depth values outside the 16-bit range")
    return depth.astype(np.uint16)


class NYUDv2(Converter):
    r"""NYUDv2's 40 classes with depth; ``split`` is ``train``, ``val``, ``test`` or ``trainval``.

    >>> import tempfile
    >>> root = tempfile.mkdtemp()
    >>> for part, ids in [("train", "5003\n5004\n"), ("val", "5001\n")]:
    ...     with open(os.path.join(root, f"{part}.txt"), "w") as file:
    ...         _ = file.write(ids)
    >>> NYUDv2(root, "trainval").keys(), len(NYUDv2.class_names), NYUDv2.class_names[:2]
    (['5003', '5004', '5001'], 40, ('wall', 'floor'))
    """

    name = "nyud"
    class_names = CLASS_NAMES

    def __init__(self, root: str, split: str):
        self.root = root
        self.split = split

    def keys(self) -> list[str]:
        list_file = os.path.join(self.root, f"{self.split}.txt")
        if os.path.isfile(list_file):
            return read_lines(list_file)
        parts = [os.path.join(self.root, f"{part}.txt") for part in ("train", "val")]
        if self.split == "trainval" and all(os.path.isfile(part) for part in parts):
            return [key for part in parts for key in read_lines(part)]
        raise FileNotFoundError(f"nyud: no list file {list_file}")

    def load(self, key: str) -> Sample:
        image_path = os.path.join(self.root, "data", "images", f"img_{key}.png")
        depth_path = os.path.join(self.root, "data", "depth", f"img_{key}.png")
        label_path = os.path.join(self.root, "segmentation", f"img_{key}.mat")
        label = shift_labels(
            read_mat(label_path, "segmentation"), len(CLASS_NAMES), (0,), label_path
        )
        return Sample(
            os.path.basename(image_path),
            read_image(image_path),
            label,
            depth=read_depth(depth_path),
            origin=f"{image_path} (label {label_path}, depth {depth_path})",
        )
