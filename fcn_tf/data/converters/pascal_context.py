"""PASCAL-Context, the 59-class task (Mottaghi et al., CVPR 2014) that FCN reports.

``root`` is the PASCAL-Context release folder: ``trainval/{id}.mat`` (``LabelMap``, ``[H, W]``
ids of the full 459-class labelling), ``labels.txt`` (``N: name`` for those 459) and,
optionally, ``59_labels.txt`` (``N: name`` for the task's classes, from the dataset site).
The images are VOC2010's ``JPEGImages/{id}.jpg`` (kept as the JPEG files) and, as in the
reference implementation, the splits are VOC2010's ``ImageSets/Main/{train,val}.txt``
(4,998 and 5,105 images); a list file's path also works as the split.

Labels, as in the reference: the 59 classes get ids 1..59 in ``59_labels.txt`` order (which
is :data:`CLASS_NAMES` order, the models' output order); every other of the 459 classes,
and unlabelled pixels, become background 0. Nothing is ignored: background is a class
here, so 255 never occurs. Three classes are spelled differently in the two label files
(``diningtable``/``table``, ``bedcloth``/``bedclothes``, ``clothes``/``cloth``) and
spaces are not significant; names are matched accordingly. ``59_labels.txt``, when present,
is checked against :data:`CLASS_NAMES`; without it :data:`CLASS_NAMES` is used.

``voc_root`` is the VOCdevkit folder or the VOC2010 folder. Left out, the first of
``root``, ``root/VOC2010``, ``root/VOCdevkit/VOC2010``, ``root/../VOC2010`` and
``root/../VOCdevkit/VOC2010`` that has a ``JPEGImages`` folder is used: PASCAL-Context
unpacked beside the devkit (or inside VOC2010) works without it, which matters for the
command line, which has no option for it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import scipy.io

from fcn_tf.data.converters.common import read_bytes
from fcn_tf.data.converters.voc import CLASS_NAMES as VOC_CLASS_NAMES
from fcn_tf.data.converters.voc import list_path, read_ids
from fcn_tf.data.records import Sample
from fcn_tf.data.writer import BadSampleError, Converter

__all__ = ["CLASS_NAMES", "PascalContext", "lookup_table", "read_label_names"]

# The reference's classes-59.txt: background, VOC's 20, then 39 scene and object classes.
CLASS_NAMES = (
    *VOC_CLASS_NAMES,
    "bag", "bed", "bench", "book", "building", "cabinet", "ceiling", "clothes", "computer",
    "cup", "door", "fence", "floor", "flower", "food", "grass", "ground", "keyboard", "light",
    "mountain", "mouse", "curtain", "platform", "sign", "plate", "road", "rock", "shelves",
    "sidewalk", "sky", "snow", "bedcloth", "track", "tree", "truck", "wall", "water", "window",
    "wood",
)  # fmt: skip

# 59-class spelling -> the full labelling's spelling of the same class.
ALIASES = {"diningtable": "table", "bedcloth": "bedclothes", "clothes": "cloth"}


def _normal(name: str) -> str:
    return name.replace(" ", "").lower()


def read_label_names(path: str) -> dict[int, str]:
    r"""``{N: name}`` from a file of ``N: name`` lines, or an error naming the file.

    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "labels.txt")
    >>> with open(path, "w") as file:
    ...     _ = file.write("1: accordion\n2: aeroplane\n\n3: air conditioner\n")
    >>> read_label_names(path)
    {1: 'accordion', 2: 'aeroplane', 3: 'air conditioner'}
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pascal_context: no label list {path}")
    names = {}
    with open(path) as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            index, colon, name = line.partition(":")
            if not colon or not index.strip().isdigit() or not name.strip():
                raise ValueError(f"{path}:{number}: expected 'N: name', got {line.strip()!r}")
            names[int(index)] = name.strip()
    return names


def lookup_table(full: dict[int, str], task: Sequence[str]) -> np.ndarray:
    """uint8 table from full-labelling ids to task ids: ``task[k - 1]`` -> k, the rest -> 0.

    >>> lookup_table({1: "cat", 2: "table", 3: "sky"}, ["diningtable", "cat"]).tolist()
    [0, 2, 1, 0]
    """
    first = {}
    for index in sorted(full):
        first.setdefault(_normal(full[index]), index)
    table = np.zeros(max(full, default=0) + 1, np.uint8)
    for k, name in enumerate(task, start=1):
        # The full labelling's spelling first, as the reference does; the task's as a fallback.
        spellings = [_normal(ALIASES.get(_normal(name), name)), _normal(name)]
        found = [first[s] for s in spellings if s in first]
        if not found:
            raise ValueError(f"class {name!r} is not in the full label list")
        table[found[0]] = k
    return table


def _task_names(root: str) -> list[str]:
    path = os.path.join(root, "59_labels.txt")
    expected = list(CLASS_NAMES[1:])
    if not os.path.isfile(path):
        return expected
    listed = read_label_names(path)
    if sorted(listed) != list(range(1, len(expected) + 1)) or [
        _normal(listed[k]) for k in sorted(listed)
    ] != [_normal(n) for n in expected]:
        raise ValueError(
            f"{path}: expected the 59 classes of the FCN reference's classes-59.txt in its "
            f"order ({', '.join(expected[:3])}, ...), got {[listed[k] for k in sorted(listed)]}"
        )
    return expected


def _voc2010(root: str, voc_root: str | None) -> str:
    parent = os.path.dirname(os.path.abspath(root))
    if voc_root is not None:
        candidates = [os.path.join(voc_root, "VOC2010"), voc_root]
    else:
        candidates = [
            root,
            os.path.join(root, "VOC2010"),
            os.path.join(root, "VOCdevkit", "VOC2010"),
            os.path.join(parent, "VOC2010"),
            os.path.join(parent, "VOCdevkit", "VOC2010"),
        ]
    for folder in candidates:
        if os.path.isdir(os.path.join(folder, "JPEGImages")):
            return folder
    raise FileNotFoundError(
        f"pascal_context: no VOC2010 JPEGImages folder in any of {candidates}; "
        "give voc_root (--voc-root: the VOCdevkit or VOC2010 folder)"
    )


def read_label_map(path: str) -> np.ndarray:
    """``LabelMap`` of a PASCAL-Context ``.mat`` file, or an error naming the file."""
    try:
        mat = scipy.io.loadmat(path, variable_names=["LabelMap"])
    except Exception as error:
        raise BadSampleError(f"{path}: unreadable .mat file ({error})") from error
    if "LabelMap" not in mat:
        raise BadSampleError(f"{path}: no LabelMap variable")
    label = np.asarray(mat["LabelMap"])
    if label.ndim != 2 or not np.issubdtype(label.dtype, np.integer) or (label < 0).any():
        raise BadSampleError(f"{path}: LabelMap is {label.dtype} {label.shape}, not [H, W] ids")
    return label


class PascalContext(Converter):
    r"""PASCAL-Context's 59 classes and background; ``split`` is ``train``, ``val`` or a path.

    >>> import tempfile
    >>> root = tempfile.mkdtemp()  # the release folder, here with VOC2010's folders inside
    >>> for folder in ("JPEGImages", "ImageSets/Main"):
    ...     os.makedirs(os.path.join(root, folder))
    >>> full = ["accordion", *CLASS_NAMES[1:]]  # a 60-class "full labelling"
    >>> with open(os.path.join(root, "labels.txt"), "w") as file:
    ...     _ = file.write("".join(f"{k}: {name}\n" for k, name in enumerate(full, start=1)))
    >>> context = PascalContext(root, "val")
    >>> len(context.class_names), context.to_task(np.array([[0, 1, 2, 60, 999]])).tolist()
    (60, [[0, 0, 1, 59, 0]])
    """

    name = "pascal_context"
    class_names = CLASS_NAMES

    def __init__(self, root: str, split: str, voc_root: str | None = None):
        self.root = root
        self.split = split
        self.voc_folder = _voc2010(root, voc_root)
        self.list_file = list_path(os.path.join(self.voc_folder, "ImageSets", "Main"), split)
        task = _task_names(root)
        full_path = os.path.join(root, "labels.txt")
        try:
            self.table = lookup_table(read_label_names(full_path), task)
        except ValueError as error:
            raise ValueError(f"{full_path}: {error}") from error

    def keys(self) -> list[str]:
        return read_ids(self.list_file, self.name, self.split)

    def to_task(self, label_map: np.ndarray) -> np.ndarray:
        """59-class ids (uint8) of full-labelling ids; ids beyond the table are background."""
        inside = label_map < len(self.table)
        return np.where(inside, self.table[np.where(inside, label_map, 0)], 0).astype(np.uint8)

    def load(self, key: str) -> Sample:
        image_path = os.path.join(self.voc_folder, "JPEGImages", f"{key}.jpg")
        label_path = os.path.join(self.root, "trainval", f"{key}.mat")
        return Sample(
            f"{key}.jpg",
            read_bytes(image_path),
            self.to_task(read_label_map(label_path)),
            origin=f"{image_path} (label {label_path})",
        )
