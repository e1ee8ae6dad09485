"""File reading shared by the converters: every failure names the file."""

from __future__ import annotations

import numpy as np
from PIL import Image

from fcn_tf.data.writer import BadSampleError

__all__ = ["read_bytes", "read_label", "read_lines"]


def read_bytes(path: str) -> bytes:
    """A file's bytes, or :class:`BadSampleError` naming it."""
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as error:
        raise BadSampleError(f"{path}: cannot read ({error.strerror})") from error


def read_label(path: str) -> np.ndarray:
    """A label PNG's class ids ``[H, W]``: palette indices, or the values of a gray image."""
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
    """Non-empty stripped lines of a list file (e.g. VOC's ImageSets), or an error naming it."""
    try:
        with open(path) as file:
            return [line.strip() for line in file if line.strip()]
    except OSError as error:
        raise FileNotFoundError(f"{path}: cannot read list ({error.strerror})") from error
