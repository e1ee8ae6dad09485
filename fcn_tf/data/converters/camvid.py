"""CamVid in the SegNet tutorial layout: ``train.txt``/``val.txt`` list ``IMAGE LABEL`` pairs.

The list files hold absolute paths of the machine that made them
(``/SegNet/CamVid/train/0001TP_006690.png``); they resolve by their last two parts under the
dataset root. Label 11 ("Unlabelled") becomes the ignore label 255.
"""

from __future__ import annotations

import os

import numpy as np

from fcn_tf.data.converters.common import join_paths, read_bytes, read_label, split_paths
from fcn_tf.data.records import Sample
from fcn_tf.data.writer import BadSampleError, Converter

CLASS_NAMES = (
    "sky", "building", "pole", "road", "pavement", "tree",
    "sign_symbol", "fence", "car", "pedestrian", "bicyclist",
)  # fmt: skip
VOID = 11

# The SegNet tutorial's colours, for pictures of predictions.
PALETTE = (
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222),
    (128, 128, 0), (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
)  # fmt: skip


class CamVid(Converter):
    r"""CamVid's 11 classes; ``split`` is the name of a list file (``train``, ``val``, ...).

    >>> import tempfile
    >>> root = tempfile.mkdtemp()
    >>> with open(os.path.join(root, "val.txt"), "w") as file:
    ...     _ = file.write("/SegNet/CamVid/val/a.png /SegNet/CamVid/valannot/a.png\n")
    >>> [os.path.relpath(path, root) for path in split_paths(CamVid(root, "val").keys()[0])]
    ['val/a.png', 'valannot/a.png']
    >>> len(CamVid.class_names), CamVid.class_names[:3]
    (11, ('sky', 'building', 'pole'))
    """

    name = "camvid"
    class_names = CLASS_NAMES

    def __init__(self, root: str, split: str):
        self.root = root
        self.list_file = os.path.join(root, f"{split}.txt")

    def _resolve(self, listed: str) -> str:
        return os.path.join(self.root, *listed.replace("\\", "/").split("/")[-2:])

    def keys(self) -> list[str]:
        if not os.path.isfile(self.list_file):
            raise FileNotFoundError(f"camvid: no list file {self.list_file}")
        pairs = []
        with open(self.list_file) as file:
            for number, line in enumerate(file, start=1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 2:
                    raise BadSampleError(f"{self.list_file}:{number}: expected 'IMAGE LABEL'")
                pairs.append(join_paths(*(self._resolve(p) for p in parts)))
        return pairs

    def load(self, key: str) -> Sample:
        image_path, label_path = split_paths(key)
        label = read_label(label_path)
        # No cast here: the writer's check refuses values past the classes (a 16-bit 256 would
        # wrap to class 0 as uint8).
        label = np.where(label == VOID, self.ignore_label, label)
        return Sample(
            os.path.basename(image_path),
            read_bytes(image_path),
            label,
            origin=f"{image_path} (label {label_path})",
        )
