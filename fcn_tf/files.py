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
from collections.abc import Callable
from typing import Any

__all__ = ["write_atomic", "write_json"]


def write_atomic(path: str, write: Callable[[str], Any]) -> None:
    """Call ``write(temporary_path)``, then rename it to ``path``; on failure remove it."""
    temporary = f"{path}.tmp"
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_json(path: str, content: Any) -> None:
    """``content`` as indented JSON at ``path``, atomically."""

    def write(temporary: str) -> None:
        with open(temporary, "w") as file:
            json.dump(content, file, indent=2)
            file.write("\n")

    write_atomic(path, write)
