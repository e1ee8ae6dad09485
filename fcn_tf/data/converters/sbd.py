"""SBD, the Semantic Boundaries Dataset, as released (``benchmark_RELEASE/dataset``).

Reads ``img/{id}.jpg`` (kept as the JPEG file), ``cls/{id}.mat`` and the lists ``train.txt``
(8,498 images: the FCN paper's training set) and ``val.txt``. Each ``.mat`` holds a MATLAB
struct ``GTcls`` whose ``Segmentation`` field is the ``[H, W]`` map of VOC class ids;
the struct's other fields (``Boundaries``, ``CategoriesPresent``) are not used.

SBD train overlaps VOC2011 segmentation val: validate on ``seg11valid`` (see
:mod:`fcn_tf.data.converters.voc`), not on VOC val.
"""

from __future__ import annotations

import os

import numpy as np
import scipy.io

from fcn_tf.data.converters.common import read_bytes
from fcn_tf.data.converters.voc import CLASS_NAMES, list_path, read_ids
from fcn_tf.data.records import Sample
from fcn_tf.data.writer import BadSampleError, Converter

__all__ = ["SBD", "read_segmentation"]


def read_segmentation(path: str) -> np.ndarray:
    """``GTcls.Segmentation`` of an SBD ``cls/*.mat`` file, or an error naming the file.

    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "2008_000002.mat")
    >>> scipy.io.savemat(path, {"GTcls": {"Segmentation": np.array([[0, 15]], np.uint8)}})
    >>> read_segmentation(path)
    array([[ 0, 15]], dtype=uint8)
    >>> scipy.io.savemat(path, {"GTinst": {"Segmentation": np.zeros((1, 1), np.uint8)}})
    >>> read_segmentation(path)
    Traceback (most recent call last):
    ...
    fcn_tf.data.writer.BadSampleError: /.../2008_000002.mat: no GTcls struct with a Segmentation
    field
    """
    try:
        mat = scipy.io.loadmat(path, variable_names=["GTcls"])
    except Exception as error:  # missing, truncated, or MATLAB v7.3 (HDF5), which scipy lacks
        raise BadSampleError(f"{path}: unreadable .mat file ({error})") from error
    struct = mat.get("GTcls")
    if struct is None or struct.dtype.names is None or "Segmentation" not in struct.dtype.names:
        raise BadSampleError(f"{path}: no GTcls struct with a Segmentation field")
    # A 1x1 MATLAB struct loads as a (1, 1) record array whose fields are object cells.
    label = np.asarray(struct["Segmentation"].ravel()[0])
    if label.ndim != 2 or not np.issubdtype(label.dtype, np.integer):
        raise BadSampleError(f"{path}: Segmentation is {label.dtype} {label.shape}, not [H, W]")
    if (label < 0).any():  # would wrap to a valid-looking uint8 id
        raise BadSampleError(f"{path}: negative class ids in Segmentation")
    return label


def _dataset_folder(root: str) -> str:
    for folder in (root, os.path.join(root, "dataset")):
        if os.path.isdir(os.path.join(folder, "cls")):
            return folder
    raise FileNotFoundError(
        f"sbd: no cls folder in {root} or {os.path.join(root, 'dataset')}; root must be "
        "benchmark_RELEASE/dataset (or benchmark_RELEASE)"
    )


class SBD(Converter):
    r"""SBD's VOC classes (20 and background); ``split`` is ``train``, ``val`` or a list path.

    >>> import tempfile
    >>> root = tempfile.mkdtemp()  # benchmark_RELEASE, or its dataset folder
    >>> os.makedirs(os.path.join(root, "dataset", "cls"))
    >>> with open(os.path.join(root, "dataset", "train.txt"), "w") as file:
    ...     _ = file.write("2008_000002\n2008_000003\n")
    >>> sbd = SBD(root, "train")
    >>> os.path.relpath(sbd.folder, root), sbd.keys(), len(sbd.class_names)
    ('dataset', ['2008_000002', '2008_000003'], 21)
    """

    name = "sbd"
    class_names = CLASS_NAMES

    def __init__(self, root: str, split: str):
        self.folder = _dataset_folder(root)
        self.split = split
        self.list_file = list_path(self.folder, split)

    def keys(self) -> list[str]:
        return read_ids(self.list_file, self.name, self.split)

    def load(self, key: str) -> Sample:
        image_path = os.path.join(self.folder, "img", f"{key}.jpg")
        label_path = os.path.join(self.folder, "cls", f"{key}.mat")
        return Sample(
            f"{key}.jpg",
            read_bytes(image_path),
            read_segmentation(label_path),
            origin=f"{image_path} (label {label_path})",
        )
