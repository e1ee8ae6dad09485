"""Atomic file writing: readers see the old file or the new one, never a part.

>>> import json, os, tempfile
>>> path = os.path.join(tempfile.mkdtemp(), "report.json")
>>> write_json(path, {"mean_iu": 0.5})
>>> json.load(open(path))
{'mean_iu': 0.5}
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from typing import Any

__all__ = ["write_atomic", "write_json", "write_png"]


def write_atomic(path: str, write: Callable[[str], Any]) -> None:
    """Call ``write(temporary_path)``, then rename it to ``path``; on failure remove it.

    As ``open(path, "w")`` would: a symbolic link is written through (its target replaced),
    an existing file keeps its permissions, and a missing folder is an error naming ``path``.

    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "notes.txt")
    >>> def fail(temporary):
    ...     open(temporary, "w").write("half")
    ...     raise OSError("disk full")
    >>> write_atomic(path, fail)
    Traceback (most recent call last):
    ...
    OSError: disk full
    >>> os.listdir(os.path.dirname(path))   # nothing half-written left behind
    []
    """
    target = os.path.realpath(path)
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{path}: no such folder {folder}")
    temporary = f"{target}.tmp"
    try:
        write(temporary)
        if os.path.exists(target):
            shutil.copymode(target, temporary)
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_json(path: str, content: Any) -> None:
    """``content`` as indented JSON at ``path``, atomically.

    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "scores.json")
    >>> write_json(path, {"mean_iu": 0.5})
    >>> open(path).read().splitlines()
    ['{', '  "mean_iu": 0.5', '}']
    """

    def write(temporary: str) -> None:
        with open(temporary, "w") as file:
            json.dump(content, file, indent=2)
            file.write("\n")

    write_atomic(path, write)


def write_png(path: str, pixels: Any) -> None:
    """An array (``[H, W]`` gray uint8 or uint16, or ``[H, W, 3]`` RGB uint8) as a PNG,
    atomically.

    >>> import numpy as np, tempfile
    >>> from PIL import Image
    >>> path = os.path.join(tempfile.mkdtemp(), "mask.png")
    >>> write_png(path, np.zeros((2, 3), np.uint8))
    >>> Image.open(path).size
    (3, 2)
    """
    from PIL import Image

    picture = Image.fromarray(pixels)
    write_atomic(path, lambda temporary: picture.save(temporary, format="PNG"))
