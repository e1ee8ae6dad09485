"""Pictures of results: training curves, confusion matrices, mask overlays and legends.

Figures are drawn with matplotlib's object API on the Agg canvas (no pyplot, no display) and
written atomically; overlays and legends are plain uint8 arrays (Pillow draws the text).

>>> legend = legend_picture([0, 3], ["sky", "building", "pole", "road"], np.eye(256, 3) * 255)
>>> legend.dtype.name, legend.shape[2]
('uint8', 3)
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from fcn_tf.files import write_atomic

__all__ = [
    "confusion_figure",
    "curves_figure",
    "legend_picture",
    "overlay",
    "read_metrics",
    "save_figure",
    "write_curves",
]


def save_figure(figure: Any, path: str, dpi: int = 100) -> None:
    """Write a matplotlib ``Figure`` as PNG at ``path``, atomically.

    >>> import tempfile
    >>> from PIL import Image
    >>> path = os.path.join(tempfile.mkdtemp(), "blank.png")
    >>> save_figure(_figure(2, 1), path, dpi=50)
    >>> Image.open(path).size   # 2 x 1 inches at 50 dpi
    (100, 50)
    """
    write_atomic(path, lambda temporary: figure.savefig(temporary, format="png", dpi=dpi))


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


# -- training curves -------------------------------------------------------------------------


def read_metrics(path: str) -> list[dict[str, Any]]:
    """The records of a run's ``metrics.jsonl``, one per epoch (a resumed run's repeated
    epoch keeps its last record), in epoch order. Errors name the file and line.

    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp(), "metrics.jsonl")
    >>> lines = [{"epoch": 2, "loss": 1.5}, {"epoch": 1, "loss": 2.0}, {"epoch": 2, "loss": 1.2}]
    >>> _ = path.write_text("".join(json.dumps(line) + "\\n" for line in lines))
    >>> [(record["epoch"], record["loss"]) for record in read_metrics(str(path))]
    [(1, 2.0), (2, 1.2)]
    """
    by_epoch: dict[int, dict[str, Any]] = {}
    with open(path) as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                by_epoch[int(record["epoch"])] = record
            except (ValueError, KeyError, TypeError) as error:
                raise ValueError(f"{path}:{number}: not a metrics record ({error})") from None
    if not by_epoch:
        raise ValueError(f"{path}: no records")
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def _series(records: list[dict[str, Any]], split: str, key: str) -> tuple[list, list]:
    """(steps, values) of ``key`` for ``split`` ``"train"`` (top-level loss, or a ``train``
    section) or ``"val"``; records without a finite value are left out."""
    steps, values = [], []
    for record in records:
        if split == "train":
            section = record if key == "loss" else record.get("train") or {}
        else:
            section = record.get("val") or {}
        value = section.get(key)
        if isinstance(value, int | float) and math.isfinite(value):
            steps.append(record.get("step", record["epoch"]))
            values.append(value)
    return steps, values


def curves_figure(records: list[dict[str, Any]], title: str = "") -> Any:
    """Loss and mean IU against updates, train and val (whichever the records hold).

    >>> records = [{"epoch": 1, "step": 50, "loss": 2.0, "val": {"mean_iu": 0.3}},
    ...            {"epoch": 2, "step": 100, "loss": 1.5, "val": {"mean_iu": 0.4}}]
    >>> figure = curves_figure(records, "fcn32s")
    >>> [[line.get_label() for line in axes.get_lines()] for axes in figure.axes]
    [['train loss'], ['val mean IU']]
    >>> figure.axes[1].get_lines()[0].get_xydata().tolist()
    [[50.0, 0.3], [100.0, 0.4]]
    """
    figure = _figure(10, 4)
    loss_axes, iu_axes = figure.subplots(1, 2)
    for axes, key, label in ((loss_axes, "loss", "loss"), (iu_axes, "mean_iu", "mean IU")):
        # One colour per split on both panels: train C0 (blue), val C1 (orange).
        for split, style, colour in (("train", "-o", "C0"), ("val", "-s", "C1")):
            steps, values = _series(records, split, key)
            if values:
                axes.plot(
                    steps, values, style, color=colour, markersize=3, label=f"{split} {label}"
                )
        axes.set_xlabel("update")
        axes.set_ylabel(label)
        axes.grid(alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend()
    iu_axes.set_ylim(0, 1)
    if title:
        figure.suptitle(title)
    return figure


def write_curves(run_dir: str, path: str | None = None) -> str:
    """Draw a run folder's ``metrics.jsonl`` into ``curves.png`` (or ``path``); return it.

    >>> import pathlib, tempfile
    >>> run = tempfile.mkdtemp()
    >>> _ = pathlib.Path(run, "metrics.jsonl").write_text('{"epoch": 1, "loss": 2.0}\\n')
    >>> os.path.relpath(write_curves(run), run), sorted(os.listdir(run))
    ('curves.png', ['curves.png', 'metrics.jsonl'])
    """
    from fcn_tf.training.runs import METRICS

    source = os.path.join(run_dir, METRICS)
    if not os.path.exists(source):
        raise FileNotFoundError(f"{run_dir}: no {METRICS}; is it a run folder?")
    path = path or os.path.join(run_dir, "curves.png")
    title = os.path.basename(os.path.normpath(run_dir))
    save_figure(curves_figure(read_metrics(source), title), path)
    return path


# -- confusion matrix ------------------------------------------------------------------------


def confusion_figure(confusion: np.ndarray, class_names: Sequence[str], title: str = "") -> Any:
    """The confusion matrix normalised by rows (each true class sums to 1), labelled with the
    class names; cells hold percentages while there are at most 30 classes.

    >>> figure = confusion_figure(np.array([[3, 1], [0, 2]]), ["bg", "cat"])
    >>> axes = figure.axes[0]
    >>> [text.get_text() for text in axes.texts], axes.get_ylabel()
    (['75', '25', '100'], 'true class')
    """
    counts = np.asarray(confusion, np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    normalised = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    size = len(class_names)
    side = min(4 + 0.45 * size, 30)
    figure = _figure(side + 1.5, side)
    axes = figure.subplots()
    image = axes.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axes, fraction=0.046, label="fraction of the true class")
    ticks = np.arange(size)
    axes.set_xticks(ticks, labels=class_names, rotation=90)
    axes.set_yticks(ticks, labels=class_names)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    if size <= 30:
        for (row, col), value in np.ndenumerate(normalised):
            if value >= 0.005:
                colour = "white" if value > 0.5 else "black"
                text = f"{100 * value:.0f}"
                axes.text(col, row, text, ha="center", va="center", fontsize=7, color=colour)
    axes.set_title(title or "confusion matrix (rows normalised)")
    return figure


# -- masks -----------------------------------------------------------------------------------


def overlay(image: np.ndarray, colours: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``colours`` (an RGB mask) blended over ``image`` (RGB uint8), both ``[H, W, 3]``.

    >>> overlay(np.zeros((1, 1, 3), np.uint8), np.full((1, 1, 3), 200, np.uint8))[0, 0]
    array([100, 100, 100], dtype=uint8)
    """
    if image.shape != colours.shape:
        raise ValueError(f"image {image.shape} and mask {colours.shape} differ in shape")
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colours.astype(np.float32)
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def legend_picture(
    class_ids: Sequence[int], class_names: Sequence[str], palette: np.ndarray
) -> np.ndarray:
    """A swatch and name per class id (e.g. the classes present in a mask), one per row,
    as an RGB uint8 picture.

    >>> palette = np.array([[0, 0, 0], [255, 0, 0]], np.uint8)
    >>> legend = legend_picture([1], ["background", "cat"], palette)
    >>> legend.shape[0], legend[14, 14].tolist()   # one 22-pixel row + 8; cat's red swatch
    (30, [255, 0, 0])
    """
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    row, swatch = 22, 16
    labels = [
        class_names[i] if 0 <= i < len(class_names) else f"class {i}" for i in map(int, class_ids)
    ]
    width = 12 + swatch + max([int(font.getlength(label)) for label in labels] + [40]) + 12
    picture = Image.new("RGB", (width, max(1, len(labels)) * row + 8), "white")
    draw = ImageDraw.Draw(picture)
    for index, (class_id, label) in enumerate(zip(class_ids, labels, strict=True)):
        top = 4 + index * row
        colour = tuple(int(c) for c in np.asarray(palette)[int(class_id) % len(palette)])
        draw.rectangle([6, top + 2, 6 + swatch, top + 2 + swatch], fill=colour, outline="black")
        draw.text((12 + swatch, top + 4), label, fill="black", font=font)
    return np.asarray(picture)
