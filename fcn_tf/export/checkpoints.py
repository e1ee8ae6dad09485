"""The model and class names to export, from a run folder, a ``.keras`` file or a checkpoint.

* a run folder (``training/train.py``'s output): its ``model.keras`` (the best model,
  written at the end of training), else its best checkpoint, else its latest;
* a ``.keras`` file;
* a checkpoint prefix (``RUN/checkpoints/ckpt-40``) or folder (``RUN/best``): the network is
  rebuilt from the run's ``config.yaml`` and the checkpoint's model weights restored.

Class names come from the run: its ``metrics.jsonl`` (the names the trainer scored), else
the ``dataset.json`` beside the records its recipe names; ``None`` when neither is there.

>>> import tempfile
>>> from fcn_tf.models import build_fcn
>>> path = tempfile.mkdtemp() + "/model.keras"
>>> build_fcn(3, 32, backbone_options={"width": 1 / 32, "fc_units": 8}).save(path)
>>> load_model_for_export(path).output_shape, run_class_names(path)
((None, None, None, 3), None)
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import keras

from fcn_tf.export import constants
from fcn_tf.export.saved_model import check_max_pixels, export_saved_model
from fcn_tf.export.signatures import num_classes_of
from fcn_tf.export.versions import check_base_path, check_free
from fcn_tf.training import runs
from fcn_tf.training.loop import load_model
from fcn_tf.training.runs import run_folder_of

__all__ = ["export_checkpoint", "load_model_for_export", "run_class_names"]


def load_model_for_export(checkpoint: str) -> keras.Model:
    """The Keras model at ``checkpoint`` (see the module docstring for what it may be).

    >>> import tempfile
    >>> run = tempfile.mkdtemp()   # a run folder: its model.keras
    >>> layers = [keras.Input((None, None, 3)), keras.layers.Conv2D(2, 1)]
    >>> keras.Sequential(layers, name="tiny").save(os.path.join(run, runs.MODEL))
    >>> load_model_for_export(run).name
    'tiny'
    """
    saved = os.path.join(checkpoint, runs.MODEL)
    if os.path.isdir(checkpoint) and os.path.isfile(saved):
        return keras.models.load_model(saved, compile=False)
    return load_model(checkpoint)


def _names_from_metrics(folder: str) -> list[str] | None:
    path = os.path.join(folder, runs.METRICS)
    if not os.path.isfile(path):
        return None
    with open(path) as file:
        lines = [line for line in file if line.strip()]
    try:
        val = json.loads(lines[-1]).get("val") if lines else None
    except ValueError:  # a line cut short by a crash mid-append: no names from it
        return None
    return list(val["per_class_iu"]) if val and "per_class_iu" in val else None


def _names_from_records(folder: str) -> list[str] | None:
    from fcn_tf.training.config import from_dict
    from fcn_tf.training.inputs import resolve_split

    data = from_dict(runs.read_config(folder), where=folder).data
    for which in ("train", "val"):
        # Only recipes naming their records: a converter's cache is not made here.
        if getattr(data, which) is None:
            continue
        try:
            names = resolve_split(data, which, verbose=False).class_names
        except (OSError, ValueError):
            continue
        if names:
            return list(names)
    return None


def run_class_names(checkpoint: str) -> list[str] | None:
    """The class names of the run ``checkpoint`` belongs to, or ``None``.

    >>> import pathlib, tempfile
    >>> run = tempfile.mkdtemp()
    >>> _ = pathlib.Path(run, runs.CONFIG).write_text("{}\\n")
    >>> record = {"epoch": 1, "val": {"per_class_iu": {"sky": 0.5, "road": 0.25}}}
    >>> _ = pathlib.Path(run, runs.METRICS).write_text(json.dumps(record) + "\\n")
    >>> run_class_names(os.path.join(run, "model.keras")), run_class_names(tempfile.mkdtemp())
    (['sky', 'road'], None)
    """
    folder = run_folder_of(checkpoint)
    if folder is None:
        return None
    return _names_from_metrics(folder) or _names_from_records(folder)


def export_checkpoint(
    checkpoint: str,
    model_base_path: str,
    version: int | None = None,
    *,
    probabilities: bool = False,
    max_pixels: int = constants.DEFAULT_MAX_PIXELS,
    metadata: Mapping[str, Any] | None = None,
) -> str:
    """Load ``checkpoint`` and export it with the run's class names; the version folder.

    >>> import tempfile
    >>> from fcn_tf.export.saved_model import read_metadata
    >>> path = os.path.join(tempfile.mkdtemp(), "model.keras")
    >>> keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(2, 1)]).save(path)
    >>> folder = export_checkpoint(path, tempfile.mkdtemp(), version=3)
    >>> described = read_metadata(folder)
    >>> os.path.basename(folder), described["class_names"], described["source"] == path
    ('3', ['class_0', 'class_1'], True)
    """
    # Before the minutes a large model may take to load.
    check_max_pixels(max_pixels)
    check_base_path(model_base_path)
    if version is not None:
        check_free(model_base_path, version)
    model = load_model_for_export(checkpoint)
    names = run_class_names(checkpoint)
    if names is not None and len(names) != num_classes_of(model):
        names = None  # the run's data describe another head (an --init-from source)
    described: dict[str, Any] = {"source": os.path.abspath(checkpoint)}
    folder = run_folder_of(checkpoint)
    if folder is not None:
        described["run_config"] = runs.read_config(folder)
    return export_saved_model(
        model,
        model_base_path,
        version,
        probabilities=probabilities,
        max_pixels=max_pixels,
        class_names=names,
        metadata={**described, **(metadata or {})},
    )
