"""File reading shared by the converters: every failure names the file."""

from __future__ import annotations

import numpy as np
import scipy.io
from PIL import Image, ImageOps

from fcn_tf.data.writer import BadSampleError

__all__ = [
    "join_paths",
    "read_bytes",
    "read_image",
    "read_label",
    "read_lines",
    "read_mat",
    "shift_labels",
    "split_paths",
]

WIDE_MODES = ("I;16", "I;16B", "I;16L", "I")
_ORIENTATION = 0x0112  # the EXIF tag
# Joins an image's and a label's path into one sample key: NUL is the one character no path
# can hold (a tab or a space can).
_KEY_SEPARATOR = "\0"


def join_paths(*paths: str) -> str:
    r"""One sample key for several files; :func:`split_paths` gives them back.

    >>> split_paths(join_paths("a\tb.png", "c d.png"))
    ['a\tb.png', 'c d.png']
    """
    return _KEY_SEPARATOR.join(paths)


def split_paths(key: str) -> list[str]:
    """The files of a key made by :func:`join_paths`.

    >>> split_paths(join_paths("images/a.jpg", "masks/a.png")), split_paths("b.jpg")
    (['images/a.jpg', 'masks/a.png'], ['b.jpg'])
    """
    return key.split(_KEY_SEPARATOR)


def read_bytes(path: str) -> bytes:
    """A file's bytes, or :class:`BadSampleError` naming it.

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "a.jpg")
    >>> with open(path, "wb") as file:
    ...     _ = file.write(b"abc")
    >>> read_bytes(path)
    b'abc'
    >>> read_bytes(path + ".gone")
    Traceback (most recent call last):
    ...
    fcn_tf.data.writer.BadSampleError: /.../a.jpg.gone: cannot read (No such file or directory)
    """
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as error:
        raise BadSampleError(f"{path}: cannot read ({error.strerror})") from error


def read_label(path: str) -> np.ndarray:
    """A label PNG's class ids ``[H, W]``: palette indices, or the values of a gray image.

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "label.png")
    >>> Image.fromarray(np.array([[0, 1, 255]], np.uint8)).save(path)
    >>> read_label(path)
    array([[  0,   1, 255]])
    >>> Image.new("RGB", (3, 1)).save(path)
    >>> read_label(path)
    Traceback (most recent call last):
    ...
    fcn_tf.data.writer.BadSampleError: /.../label.png: label must be a palette or gray PNG, not RGB
    """
    try:
        with Image.open(path) as image:
            if image.mode not in ("P", "L", "I", "I;16"):
                raise BadSampleError(
                    f"{path}: label must be a palette or gray PNG, not {image.mode}"
                )
            return np.asarray(image).astype(np.int64)
    except BadSampleError:
        raise
    except Exception as error:
        raise BadSampleError(f"{path}: unreadable label ({error})") from error


def read_lines(path: str) -> list[str]:
    r"""Non-empty stripped lines of a list file (e.g. VOC's ImageSets), or an error naming it.

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "val.txt")
    >>> with open(path, "w") as file:
    ...     _ = file.write("2007_000033\n\n  2007_000042 \n")
    >>> read_lines(path)
    ['2007_000033', '2007_000042']
    """
    try:
        with open(path) as file:
            return [line.strip() for line in file if line.strip()]
    except OSError as error:
        raise FileNotFoundError(f"{path}: cannot read list ({error.strerror})") from error


def read_image(path: str) -> bytes | np.ndarray:
    """An RGB JPEG or PNG file's bytes, else the image as a uint8 RGB array.

    A photo with an EXIF orientation is stored upright (as pixels), as prediction reads it
    and as its mask was drawn. Raises :class:`BadSampleError` naming the file when it cannot
    be read.

    >>> import os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> Image.new("RGB", (3, 2)).save(os.path.join(folder, "rgb.png"))
    >>> Image.new("L", (3, 2), 7).save(os.path.join(folder, "gray.png"))
    >>> read_image(os.path.join(folder, "rgb.png"))[:4]  # the file as it is
    b'\\x89PNG'
    >>> gray = read_image(os.path.join(folder, "gray.png"))
    >>> gray.shape, gray[0, 0].tolist()
    ((2, 3, 3), [7, 7, 7])
    """
    try:
        with Image.open(path) as image:
            if image.mode in (*WIDE_MODES, "F"):
                # Pillow clips these to 8 bits rather than scaling them: refuse to guess.
                raise BadSampleError(
                    f"{path}: {image.mode} images are not converted; save as 8-bit RGB"
                )
            upright = image.getexif().get(_ORIENTATION, 1) in (None, 1)
            if image.format in ("JPEG", "PNG") and image.mode == "RGB" and upright:
                array = None
            else:
                array = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    except BadSampleError:
        raise
    except Exception as error:
        raise BadSampleError(f"{path}: unreadable image ({error})") from error
    return read_bytes(path) if array is None else array


def read_mat(path: str, key: str) -> np.ndarray:
    """The 2-D integer matrix ``key`` of a MATLAB file, or :class:`BadSampleError` naming it.

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "label.mat")
    >>> scipy.io.savemat(path, {"S": np.array([[0.0, 3.0]])})
    >>> read_mat(path, "S")
    array([[0, 3]])
    >>> read_mat(path, "T")
    Traceback (most recent call last):
    ...
    fcn_tf.data.writer.BadSampleError: /.../label.mat: no 'T' matrix (found ['S'])
    """
    try:
        content = scipy.io.loadmat(path)
    except Exception as error:  # scipy raises several types, v7.3 (HDF5) files included
        raise BadSampleError(f"{path}: unreadable MATLAB file ({error})") from error
    if key not in content:
        found = sorted(k for k in content if not k.startswith("__"))
        raise BadSampleError(f"{path}: no {key!r} matrix (found {found})")
    matrix = np.asarray(content[key])
    if matrix.ndim != 2 or not np.issubdtype(matrix.dtype, np.number):
        raise BadSampleError(f"{path}: {key!r} is {matrix.dtype} {matrix.shape}, not a 2-D map")
    # MATLAB saves labels as doubles as often as integers: accept whole numbers only.
    if not np.issubdtype(matrix.dtype, np.integer):
        if not np.all(np.isfinite(matrix)) or np.any(matrix != np.round(matrix)):
            raise BadSampleError(f"{path}: {key!r} holds non-integer values")
    return matrix.astype(np.int64)


def shift_labels(
    matrix: np.ndarray, num_classes: int, void: tuple[int, ...], path: str
) -> np.ndarray:
    """Classes 1..num_classes -> 0..num_classes-1, ``void`` values -> 255; others raise.

    >>> shift_labels(np.array([[0, 1, 3]]), 3, (0,), "x.mat")
    array([[255,   0,   2]], dtype=uint8)
    """
    known = np.isin(matrix, void) | ((matrix >= 1) & (matrix <= num_classes))
    if not known.all():
        values = sorted(int(v) for v in np.unique(matrix[~known]))
        raise BadSampleError(
            f"{path}: label values {values[:10]} are neither classes 1-{num_classes} nor void "
            f"{list(void)}"
        )
    return np.where(np.isin(matrix, void), 255, matrix - 1).astype(np.uint8)
