"""TF Serving's version folders: the next number, and publishing a folder whole.

A model base path holds one folder per version, named by its number (``1/``, ``2/``, ...).
TF Serving watches the base path and loads the highest number it can parse; it skips names
that are not numbers, so a folder written as ``.tmp-3-<pid>`` is invisible until it is renamed
to ``3`` in one ``os.rename`` (tensorflow/serving#1086: a server never sees half a model).

>>> import os, tempfile
>>> base = tempfile.mkdtemp()
>>> for name in ("1", "7", "backup", ".tmp-9-1234"):
...     os.mkdir(os.path.join(base, name))
>>> next_version(base)
8
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator

__all__ = [
    "check_free",
    "latest_version_folder",
    "list_versions",
    "next_version",
    "publish_version",
    "version_folders",
]

# Renames lost to concurrent exporters that an automatically numbered export retries.
_RETRIES = 10


def version_folders(model_base_path: str) -> dict[int, str]:
    """The version folders under ``model_base_path``: number -> folder name (``7`` or ``007``).

    Only names TF Serving would load count: decimal digits, no sign or spaces. Where two
    names give one number, the plain spelling wins, else the first in sorted order.

    >>> import tempfile
    >>> base = tempfile.mkdtemp()
    >>> for name in ("007", "7", "12", "v3", ".tmp-4-99"):
    ...     os.mkdir(os.path.join(base, name))
    >>> version_folders(base)
    {7: '7', 12: '12'}
    """
    if not os.path.isdir(model_base_path):
        return {}
    folders: dict[int, str] = {}
    for name in sorted(e.name for e in os.scandir(model_base_path) if _version_folder(e)):
        number = int(name)
        if number not in folders or name == str(number):
            folders[number] = name
    return folders


def _version_folder(entry: os.DirEntry) -> bool:
    return entry.name.isascii() and entry.name.isdigit() and entry.is_dir()


def latest_version_folder(model_base_path: str) -> str | None:
    """The path of the highest version under ``model_base_path``; ``None`` when there is none.

    >>> import tempfile
    >>> latest_version_folder(tempfile.mkdtemp()) is None
    True
    """
    folders = version_folders(model_base_path)
    return os.path.join(model_base_path, folders[max(folders)]) if folders else None


def list_versions(model_base_path: str) -> list[int]:
    """The version numbers under ``model_base_path``, ascending (none when it does not exist).

    >>> import tempfile
    >>> base = tempfile.mkdtemp()
    >>> for name in ("10", "9", "latest"):
    ...     os.mkdir(os.path.join(base, name))
    >>> list_versions(base), list_versions(os.path.join(base, "missing"))
    ([9, 10], [])
    """
    return sorted(version_folders(model_base_path))


def next_version(model_base_path: str) -> int:
    """One more than the highest version under ``model_base_path``; 1 when there is none.

    >>> import tempfile
    >>> next_version(tempfile.mkdtemp())
    1
    """
    found = list_versions(model_base_path)
    return found[-1] + 1 if found else 1


def check_base_path(model_base_path: str) -> None:
    """Refuse a ``model_base_path`` that exists but is not a folder (checked before a model
    is loaded, not when its version is written).

    >>> import tempfile
    >>> check_base_path(tempfile.mkstemp()[1])
    Traceback (most recent call last):
    ...
    NotADirectoryError: ...: the model base path is a file, not a folder
    """
    if os.path.exists(model_base_path) and not os.path.isdir(model_base_path):
        raise NotADirectoryError(f"{model_base_path}: the model base path is a file, not a folder")


def check_free(model_base_path: str, version: int) -> int:
    """``version`` if it is a valid number not yet used under ``model_base_path``.

    Raises:
        ValueError: not a non-negative integer.
        FileExistsError: the version folder exists.

    >>> import tempfile
    >>> base = tempfile.mkdtemp()
    >>> os.mkdir(os.path.join(base, "2"))
    >>> check_free(base, 3)
    3
    >>> check_free(base, 2)
    Traceback (most recent call last):
    ...
    FileExistsError: .../2 exists: versions are never overwritten
    """
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ValueError(f"version must be a non-negative integer, got {version!r}")
    final = os.path.join(model_base_path, str(version))
    taken = version_folders(model_base_path).get(version)
    if os.path.lexists(final) or taken is not None:
        where = os.path.join(model_base_path, taken) if taken else final
        raise FileExistsError(f"{where} exists: versions are never overwritten")
    return version


@contextlib.contextmanager
def _temporary_folder(model_base_path: str, label: int | str) -> Iterator[str]:
    """A fresh folder inside ``model_base_path`` with a name TF Serving ignores; removed on
    exit unless it was renamed away."""
    # A name of its own, even for exporters that share a pid (threads; containers, all pid 1,
    # on one volume): a shared name let one exporter delete and mix into another's folder.
    temporary = tempfile.mkdtemp(prefix=f".tmp-{label}-{os.getpid()}-", dir=model_base_path)
    try:
        yield temporary
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def _claim(temporary: str, final: str) -> bool:
    """Rename ``temporary`` to ``final`` unless ``final`` exists; whether it was renamed."""
    if os.path.lexists(final):
        return False
    try:
        # A non-empty target makes rename fail, so of two racing exporters one wins. (An
        # empty folder made between the check above and here would be replaced: harmless.)
        os.rename(temporary, final)
    except OSError:
        if os.path.lexists(final):
            return False
        raise
    return True


def publish_version(
    model_base_path: str, write: Callable[[str], object], version: int | None = None
) -> str:
    """Call ``write(folder)`` on a hidden temporary folder, then rename it to the version.

    Args:
        model_base_path: the folder TF Serving watches (created when missing).
        write: fills the folder it is given (a SavedModel).
        version: the version number; ``None`` takes :func:`next_version`, and takes the next
            one again when a concurrent exporter publishes that number first.

    Returns:
        The published folder, ``model_base_path/<version>``.

    Raises:
        FileExistsError: ``version`` exists already (before anything is written, or when
            another exporter published it while this one wrote).

    On any failure nothing is left behind: no version folder, no temporary folder.

    >>> import os, tempfile
    >>> base = tempfile.mkdtemp()
    >>> folder = publish_version(base, lambda f: open(os.path.join(f, "a"), "w").close())
    >>> os.path.basename(folder), sorted(os.listdir(base))
    ('1', ['1'])
    """
    check_base_path(model_base_path)
    os.makedirs(model_base_path, exist_ok=True)
    explicit = version is not None
    if explicit:
        version = check_free(model_base_path, version)
    else:
        version = next_version(model_base_path)
    with _temporary_folder(model_base_path, version) as temporary:
        write(temporary)
        for _ in range(_RETRIES):
            final = os.path.join(model_base_path, str(version))
            if _claim(temporary, final):
                return final
            if explicit:
                raise FileExistsError(
                    f"{final} was published by another exporter while this one wrote; "
                    "nothing was written (choose another --version)"
                )
            version = max(version + 1, next_version(model_base_path))
    raise FileExistsError(
        f"{model_base_path}: other exporters took {_RETRIES} version numbers in a row; "
        "nothing was written"
    )
