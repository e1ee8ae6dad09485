"""SIFT Flow in the FCN reference layout: semantic and geometric labels from MATLAB files.

``root`` holds the split lists (``trainval.txt``, ``test.txt``: one image id a line) and the
dataset's three folders, each with a ``spatial_envelope_256x256_static_8outdoorcategories``
sub-folder: ``Images/{id}.jpg``, ``SemanticLabels/{id}.mat`` and ``GeoLabels/{id}.mat``, the
labels under the key ``S``. The dataset's own ``SiftFlowDataset/`` folder inside ``root`` is
found too.

Semantic labels are 0 (void) and 1-33; geometric labels -1 (void) and 1-3 (the reference
treats 0 as void as well). Classes shift down by one and void becomes the ignore label 255.
The geometric map goes to ``Sample.geometric``.
"""

from __future__ import annotations

import os

from fcn_tf.data.converters.common import read_image, read_lines, read_mat, shift_labels
from fcn_tf.data.records import Sample
from fcn_tf.data.writer import BadSampleError, Converter

__all__ = ["CLASS_NAMES", "GEOMETRIC_CLASS_NAMES", "SIFTFlow", "read_mat"]

CLASS_NAMES = (
    "awning", "balcony", "bird", "boat", "bridge", "building", "bus", "car", "cow",
    "crosswalk", "desert", "door", "fence", "field", "grass", "moon", "mountain", "person",
    "plant", "pole", "river", "road", "rock", "sand", "sea", "sidewalk", "sign", "sky",
    "staircase", "streetlight", "sun", "tree", "window",
)  # fmt: skip
GEOMETRIC_CLASS_NAMES = ("sky", "horizontal", "vertical")

# Absent from the test split, so the paper leaves them out of its test scores.
ABSENT_FROM_TEST = ("cow", "desert", "moon")

SUBFOLDER = "spatial_envelope_256x256_static_8outdoorcategories"


class SIFTFlow(Converter):
    r"""SIFT Flow's 33 semantic classes, with the 3 geometric ones in ``Sample.geometric``.

    ``split`` names a list file in ``root``: the reference has ``trainval`` and ``test``.

    >>> import tempfile
    >>> root = tempfile.mkdtemp()
    >>> with open(os.path.join(root, "test.txt"), "w") as file:
    ...     _ = file.write("coast_arnat59\n")
    >>> SIFTFlow(root, "test").keys(), len(SIFTFlow.class_names), SIFTFlow.geometric_class_names
    (['coast_arnat59'], 33, ('sky', 'horizontal', 'vertical'))
    >>> SIFTFlow(root, "trainval").keys()
    Traceback (most recent call last):
    ...
    FileNotFoundError: siftflow: no list file /.../trainval.txt (found ['test.txt'])
    """

    name = "siftflow"
    class_names = CLASS_NAMES
    geometric_class_names = GEOMETRIC_CLASS_NAMES

    def __init__(self, root: str, split: str):
        self.root = root
        self.split = split
        unpacked = os.path.join(root, "SiftFlowDataset")
        has_images = os.path.isdir(os.path.join(root, "Images"))
        self.data_root = unpacked if not has_images and os.path.isdir(unpacked) else root

    def keys(self) -> list[str]:
        list_file = os.path.join(self.root, f"{self.split}.txt")
        if not os.path.isfile(list_file):
            found = sorted(f for f in os.listdir(self.root) if f.endswith(".txt"))
            raise FileNotFoundError(f"siftflow: no list file {list_file} (found {found})")
        return read_lines(list_file)

    def _path(self, folder: str, key: str, extension: str) -> str:
        return os.path.join(self.data_root, folder, SUBFOLDER, f"{key}{extension}")

    def load(self, key: str) -> Sample:
        image_path = self._path("Images", key, ".jpg")
        semantic_path = self._path("SemanticLabels", key, ".mat")
        geometric_path = self._path("GeoLabels", key, ".mat")
        semantic = read_mat(semantic_path, "S")
        geometric = read_mat(geometric_path, "S")
        if geometric.shape != semantic.shape:
            raise BadSampleError(
                f"{geometric_path}: geometric labels {geometric.shape} != semantic labels "
                f"{semantic.shape} in {semantic_path}"
            )
        return Sample(
            os.path.basename(image_path),
            read_image(image_path),
            shift_labels(semantic, len(CLASS_NAMES), (0,), semantic_path),
            geometric=shift_labels(geometric, len(GEOMETRIC_CLASS_NAMES), (-1, 0), geometric_path),
            origin=f"{image_path} (labels {semantic_path}, {geometric_path})",
        )
