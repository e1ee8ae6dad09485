"""A run's folder: what it was (config, commit, versions), its checkpoints, and staged init.

Layout of a run folder::

    config.yaml        the resolved recipe (after overrides): `--resume` reads it back
    run.json           command line, git commit, package versions, host, start time, the
                       coarser net of a staged run (init_from), and each resume's own
    checkpoints/       the latest checkpoints (model, optimizer, step), every N updates
    best/              the checkpoint with the best validation mean IU
    metrics.jsonl      one line per epoch: training loss, validation scores, speed
    tensorboard/       scalars and predicted masks
    model.keras        the best model, exported at the end

>>> import tempfile
>>> folder = tempfile.mkdtemp()
>>> latest_checkpoint(folder) is None
True
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

import keras
import tensorflow as tf
import yaml

from fcn_tf.files import write_atomic, write_json

__all__ = [
    "BEST",
    "CHECKPOINTS",
    "copy_matching_layers",
    "find_checkpoint",
    "latest_checkpoint",
    "new_run_dir",
    "read_config",
    "read_metadata",
    "run_metadata",
    "write_config",
]

CHECKPOINTS, BEST = "checkpoints", "best"
CONFIG, METADATA, METRICS, MODEL = "config.yaml", "run.json", "metrics.jsonl", "model.keras"
# The SavedModel base path (TF Serving layout: EXPORT/1/saved_model.pb).
EXPORT = "export"


def git_commit(path: str | None = None) -> str | None:
    """The commit of the repository holding ``path`` (this package by default), with
    ``-dirty`` when the work tree has changes; ``None`` outside a git checkout."""
    path = path or os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=path,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{commit}-dirty" if status else commit


def run_metadata(argv: list[str] | None = None) -> dict[str, Any]:
    """What reproducing a run needs besides its config.

    >>> metadata = run_metadata(["train.py", "--epochs", "2"])
    >>> metadata["command"][1:], sorted(metadata["versions"])[:3]
    (['train.py', '--epochs', '2'], ['fcn_tf', 'keras', 'numpy'])
    """
    import numpy

    import fcn_tf

    return {
        "command": [sys.executable, *(sys.argv if argv is None else argv)],
        "cwd": os.getcwd(),
        "commit": git_commit(),
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "versions": {
            "python": platform.python_version(),
            "fcn_tf": fcn_tf.__version__,
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "numpy": numpy.__version__,
        },
        "devices": [device.name for device in tf.config.list_logical_devices()],
    }


def new_run_dir(base: str, name: str) -> str:
    """Create and return a new folder ``base/<name>-<time>`` (``-2``, ``-3``... when runs
    start in the same second): made here, so two jobs never share one.

    >>> import tempfile
    >>> base = tempfile.mkdtemp()
    >>> first, second = new_run_dir(base, "fcn"), new_run_dir(base, "fcn")
    >>> first != second and os.path.isdir(first) and os.path.isdir(second)
    True
    """
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    os.makedirs(base, exist_ok=True)
    folder, attempt = os.path.join(base, f"{name}-{stamp}"), 1
    while True:
        try:
            os.mkdir(folder)
            return folder
        except FileExistsError:
            attempt += 1
            folder = os.path.join(base, f"{name}-{stamp}-{attempt}")


def write_config(folder: str, config: Mapping[str, Any], metadata: Mapping[str, Any]) -> None:
    """Write ``config.yaml`` and ``run.json`` into ``folder``, atomically.

    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> write_config(folder, {"run": {"epochs": 2}}, {"commit": "abc"})
    >>> read_config(folder), read_metadata(folder)
    ({'run': {'epochs': 2}}, {'commit': 'abc'})
    """
    os.makedirs(folder, exist_ok=True)

    def write_yaml(temporary: str) -> None:
        with open(temporary, "w") as file:
            yaml.safe_dump(dict(config), file, sort_keys=False)

    write_atomic(os.path.join(folder, CONFIG), write_yaml)
    write_json(os.path.join(folder, METADATA), dict(metadata))


def read_metadata(folder: str) -> dict[str, Any] | None:
    """A run folder's ``run.json`` (how it was started and resumed), or ``None``.

    >>> import tempfile
    >>> read_metadata(tempfile.mkdtemp()) is None
    True
    """
    path = os.path.join(folder, METADATA)
    if not os.path.exists(path):
        return None
    with open(path) as file:
        return json.load(file)


def read_config(folder: str) -> dict[str, Any]:
    """A run folder's resolved ``config.yaml``.

    >>> read_config("/")
    Traceback (most recent call last):
    ...
    FileNotFoundError: / is not a run folder: it has no config.yaml
    """
    path = os.path.join(folder, CONFIG)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{folder} is not a run folder: it has no {CONFIG}")
    with open(path) as file:
        return yaml.safe_load(file)


def run_folder_of(path: str) -> str | None:
    """The run folder ``path`` belongs to (the folder itself, the folder of its ``model.keras``
    or of its ``checkpoints/``/``best/`` entries), or ``None``.

    >>> import tempfile
    >>> run = tempfile.mkdtemp()
    >>> write_config(run, {}, {})
    >>> run_folder_of(os.path.join(run, "checkpoints", "ckpt-3")) == run
    True
    """
    path = os.path.abspath(path)
    for folder in (path, os.path.dirname(path), os.path.dirname(os.path.dirname(path))):
        if os.path.isfile(os.path.join(folder, CONFIG)):
            return folder
    return None


def latest_checkpoint(folder: str) -> str | None:
    """The newest checkpoint prefix in a run folder's ``checkpoints/``, or ``None``.

    >>> import tempfile
    >>> run = tempfile.mkdtemp()
    >>> checkpoint = tf.train.Checkpoint(step=tf.Variable(1))
    >>> _ = tf.train.CheckpointManager(checkpoint, os.path.join(run, CHECKPOINTS), 2).save(7)
    >>> os.path.basename(latest_checkpoint(run)), os.path.basename(find_checkpoint(run))
    ('ckpt-7', 'ckpt-7')
    """
    return tf.train.latest_checkpoint(os.path.join(folder, CHECKPOINTS))


def find_checkpoint(path: str) -> str:
    """A checkpoint prefix from a run folder (its best checkpoint, else its latest), a
    checkpoint folder, or a prefix itself. Errors name the path.

    >>> find_checkpoint("nowhere/ckpt-3")
    Traceback (most recent call last):
    ...
    FileNotFoundError: nowhere/ckpt-3: not a run folder, checkpoint folder or checkpoint prefix
    """
    if os.path.isdir(path):
        for folder in (os.path.join(path, BEST), os.path.join(path, CHECKPOINTS), path):
            found = tf.train.latest_checkpoint(folder)
            if found:
                return found
        raise FileNotFoundError(f"{path}: no checkpoint in {BEST}/, {CHECKPOINTS}/ or itself")
    if tf.io.gfile.exists(f"{path}.index"):
        return path
    raise FileNotFoundError(f"{path}: not a run folder, checkpoint folder or checkpoint prefix")


def copy_matching_layers(source: keras.Model, target: keras.Model) -> list[str]:
    """Copy the weights of every layer of ``target`` whose name and weight shapes match a
    layer of ``source`` (the authors' net surgery from FCN-32s to 16s to 8s): the layers a
    finer net adds (``score_pool4``, ``upscore2``, ...) keep their initial values.

    Returns the names of the copied layers.

    >>> import fcn_tf
    >>> options = {"geometry": "same", "backbone_options": {"width": 1 / 32, "fc_units": 8}}
    >>> coarse, fine = fcn_tf.FCN32s(3, **options), fcn_tf.FCN16s(3, **options)
    >>> copied = copy_matching_layers(coarse, fine)
    >>> "fc6" in copied, "score_fr" in copied, "score_pool4" in copied
    (True, True, False)
    """
    by_name = {layer.name: layer for layer in source.layers}
    copied = []
    for layer in target.layers:
        other = by_name.get(layer.name)
        if other is None or not layer.weights:
            continue
        shapes = [tuple(w.shape) for w in layer.weights]
        if shapes != [tuple(w.shape) for w in other.weights]:
            continue
        for variable, value in zip(layer.weights, other.weights, strict=True):
            variable.assign(value)
        copied.append(layer.name)
    return copied
