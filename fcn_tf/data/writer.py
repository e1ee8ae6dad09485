"""Sharded TFRecord writing: parallel, deterministic, atomic, with ``dataset.json`` beside it.

Worker processes read, check and encode samples; the parent writes them in source order, so
the shards are identical whatever the number of workers. Each shard is written under a
``.tmp`` name and renamed when complete, and ``dataset.json`` is written (the same way) last:
a conversion killed half-way leaves no file that looks complete.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
import multiprocessing
import os
from collections.abc import Iterator, Sequence

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from fcn_tf.data.records import Sample, encode_example, image_format
from fcn_tf.files import write_json

__all__ = [
    "METADATA",
    "BadSampleError",
    "Converter",
    "check_sample",
    "write_dataset",
]

METADATA = "dataset.json"


class BadSampleError(ValueError):
    """A source sample that cannot be converted; the message names its file.

    >>> error = BadSampleError("cat.jpg: unreadable image (truncated)")
    >>> isinstance(error, ValueError), str(error)
    (True, 'cat.jpg: unreadable image (truncated)')
    """


class Converter:
    """A dataset's layout: which samples a split has and how to read one.

    Subclasses set ``name`` and ``class_names`` and implement ``keys`` and ``load``. Instances
    are sent to worker processes, so they must pickle (plain attributes, no open files).

    >>> class Halves(Converter):
    ...     name, class_names = "halves", ("left", "right")
    ...     def keys(self):
    ...         return ["a", "b"]
    ...     def load(self, key):
    ...         return Sample(f"{key}.png", np.zeros((2, 2, 3), np.uint8), np.eye(2, dtype=int))
    >>> Halves().keys(), Halves().load("b").label.tolist(), Halves().ignore_label
    (['a', 'b'], [[1, 0], [0, 1]], 255)
    """

    name: str = ""
    class_names: Sequence[str] = ()
    ignore_label: int = 255

    def keys(self) -> list[str]:
        """The split's samples, in a fixed order (this order is the records' order)."""
        raise NotImplementedError

    def load(self, key: str) -> Sample:
        """Read one sample; raise :class:`BadSampleError` naming the file when it is bad."""
        raise NotImplementedError


@dataclasses.dataclass
class _Encoded:
    key: str
    record: bytes | None = None
    class_pixels: np.ndarray | None = None
    rgb_sum: np.ndarray | None = None
    pixels: int = 0
    error: str | None = None


def _decode_rgb(image: bytes | np.ndarray, filename: str) -> np.ndarray:
    if isinstance(image, np.ndarray):
        array = image
    else:
        try:
            with Image.open(io.BytesIO(image)) as opened:
                array = np.asarray(opened.convert("RGB"))
        except Exception as error:
            raise BadSampleError(f"{filename}: unreadable image ({error})") from error
    if array.ndim != 3 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise BadSampleError(
            f"{filename}: image must be uint8 RGB, got {array.dtype} {array.shape}"
        )
    return array


def check_sample(sample: Sample, num_classes: int, ignore_label: int) -> np.ndarray:
    """The decoded RGB image, after checking sizes and label values; raises naming the file.

    >>> image = np.zeros((2, 3, 3), np.uint8)
    >>> check_sample(Sample("a.png", image, np.array([[0, 1, 255]] * 2)), 2, 255).shape
    (2, 3, 3)
    >>> check_sample(Sample("b.png", image, np.full((2, 3), 7)), 2, 255)
    Traceback (most recent call last):
    ...
    fcn_tf.data.writer.BadSampleError: b.png: label values [7] outside [0, 2) and not the
    ignore label 255
    """
    where = sample.origin or sample.filename
    rgb = _decode_rgb(sample.image, where)
    label = np.asarray(sample.label)
    if label.shape != rgb.shape[:2]:
        raise BadSampleError(
            f"{where}: image is {rgb.shape[1]}x{rgb.shape[0]} but its label is "
            f"{label.shape[1] if label.ndim > 1 else '?'}x{label.shape[0]} (width x height)"
        )
    if label.dtype.kind not in "biuf" or (label.dtype.kind == "f" and (label % 1).any()):
        raise BadSampleError(f"{where}: labels must be integer class ids, got {label.dtype}")
    bad = ((label < 0) | (label >= num_classes)) & (label != ignore_label)
    if bad.any():
        values = sorted(int(v) for v in np.unique(label[bad]))
        raise BadSampleError(
            f"{where}: label values {values[:10]} outside [0, {num_classes}) and not "
            f"the ignore label {ignore_label}"
        )
    for extra, name in ((sample.depth, "depth"), (sample.geometric, "geometric labels")):
        if extra is not None and np.shape(extra) != label.shape:
            raise BadSampleError(f"{where}: {name} {np.shape(extra)} != {label.shape}")
    return rgb


def _encode(converter: Converter, key: str, skip_bad: bool) -> _Encoded:
    num_classes = len(converter.class_names)
    try:
        sample = converter.load(key)
        rgb = check_sample(sample, num_classes, converter.ignore_label)
    except BadSampleError as error:
        if not skip_bad:
            raise
        return _Encoded(key, error=str(error))
    if not isinstance(sample.image, np.ndarray) and not _jpeg_or_png(sample.image):
        # Records hold JPEG or PNG; other formats Pillow reads (WebP, BMP, TIFF, often behind
        # a .jpg name) are stored as the RGB pixels already decoded for the checks.
        sample = dataclasses.replace(sample, image=rgb)
    label = np.asarray(sample.label, np.uint8)
    valid = label[label < num_classes]
    return _Encoded(
        key,
        record=encode_example(sample, *label.shape),
        class_pixels=np.bincount(valid, minlength=num_classes).astype(np.int64),
        rgb_sum=rgb.reshape(-1, 3).sum(axis=0, dtype=np.float64),
        pixels=label.size,
    )


def _jpeg_or_png(encoded: bytes) -> bool:
    try:
        image_format(bytes(encoded))
    except ValueError:
        return False
    return True


def _encode_star(args: tuple) -> _Encoded:
    return _encode(*args)


def shard_names(split: str, shards: int) -> list[str]:
    """``split-00000-of-00004.tfrecord`` style names.

    >>> shard_names("val", 2)
    ['val-00000-of-00002.tfrecord', 'val-00001-of-00002.tfrecord']
    """
    return [f"{split}-{i:05d}-of-{shards:05d}.tfrecord" for i in range(shards)]


def _encoded_in_order(
    converter: Converter, keys: list[str], workers: int, skip_bad: bool
) -> Iterator[_Encoded]:
    jobs = [(converter, key, skip_bad) for key in keys]
    if workers <= 1:
        yield from map(_encode_star, jobs)
        return
    # Spawned workers: forking a process that already runs TensorFlow threads can deadlock.
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(_encode_star, jobs, chunksize=max(1, min(16, len(jobs) // 64)))


def write_dataset(
    converter: Converter,
    out_dir: str,
    split: str,
    shards: int = 1,
    workers: int = 1,
    skip_bad: bool = False,
    verbose: bool = True,
) -> dict:
    """Convert ``converter``'s samples into ``shards`` TFRecord files and ``dataset.json``.

    Returns the content of ``dataset.json``: name, split, count, class names, ignore label,
    per-class pixel counts, mean RGB, the shard files and any skipped samples.

    >>> import tempfile
    >>> from fcn_tf.data.converters.synthetic import Shapes
    >>> out = tempfile.mkdtemp()
    >>> converter = Shapes("val", count=3, height=8, width=8)
    >>> metadata = write_dataset(converter, out, "val", verbose=False)
    >>> metadata["count"], metadata["files"], sorted(os.listdir(out))
    (3, ['val-00000-of-00001.tfrecord'], ['dataset.json', 'val-00000-of-00001.tfrecord'])
    """
    keys = converter.keys()
    if not keys:
        raise ValueError(f"{converter.name}: split {split!r} has no samples")
    _check_out_dir(out_dir, converter.name, split)
    shards = max(1, min(shards, len(keys)))
    names = shard_names(split, shards)
    stats = _Stats(len(converter.class_names))
    progress = keras.utils.Progbar(len(keys), unit_name="image", verbose=1 if verbose else 0)
    encoded = _encoded_in_order(converter, keys, workers, skip_bad)
    temporaries = [os.path.join(out_dir, f"{name}.tmp") for name in names]
    try:
        for shard, temporary in enumerate(temporaries):
            # Contiguous blocks: shard i holds samples [i * n / shards, (i + 1) * n / shards).
            size = (shard + 1) * len(keys) // shards - shard * len(keys) // shards
            with tf.io.TFRecordWriter(temporary) as records:
                for item in itertools.islice(encoded, size):
                    progress.add(1)
                    if stats.add(item):
                        records.write(item.record)
        # Only now, with every shard complete, does an earlier conversion's output give way:
        # a run that fails before this point leaves the previous records as they were.
        previous = _drop_metadata(out_dir)
        for temporary, name in zip(temporaries, names, strict=True):
            os.replace(temporary, os.path.join(out_dir, name))
        for stale in set(previous) - set(names):
            if os.path.exists(os.path.join(out_dir, stale)):
                os.remove(os.path.join(out_dir, stale))
    finally:
        for temporary in temporaries:
            if os.path.exists(temporary):
                os.remove(temporary)
    metadata = {
        "name": converter.name,
        "split": split,
        "count": stats.count,
        "num_classes": len(converter.class_names),
        "class_names": list(converter.class_names),
        "ignore_label": converter.ignore_label,
        "class_pixel_counts": stats.class_pixels.tolist(),
        "mean_rgb": (stats.rgb_sum / max(stats.pixels, 1)).round(4).tolist(),
        "files": names,
        "skipped": stats.skipped,
    }
    write_json(os.path.join(out_dir, METADATA), metadata)
    return metadata


class _Stats:
    """What dataset.json sums over the written samples, and the list of skipped ones."""

    def __init__(self, num_classes: int):
        self.class_pixels = np.zeros(num_classes, np.int64)
        self.rgb_sum = np.zeros(3)
        self.pixels = self.count = 0
        self.skipped: list[dict] = []

    def add(self, item: _Encoded) -> bool:
        if item.error is not None:
            self.skipped.append({"key": item.key, "reason": item.error})
            return False
        self.class_pixels += item.class_pixels
        self.rgb_sum += item.rgb_sum
        self.pixels += item.pixels
        self.count += 1
        return True


def _check_out_dir(out_dir: str, name: str, split: str) -> None:
    """One folder per split: refuse to mix two datasets' shards and metadata."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, METADATA)
    if os.path.exists(path):
        with open(path) as file:
            existing = json.load(file)
        if (existing.get("name"), existing.get("split")) != (name, split):
            raise ValueError(
                f"{path} describes {existing.get('name')}/{existing.get('split')}; write "
                f"{name}/{split} to its own folder"
            )


def _drop_metadata(out_dir: str) -> list[str]:
    """Remove an earlier conversion's dataset.json from ``out_dir``; return the shards it named.

    From here until the new dataset.json is written, nothing describes the folder, so a run
    killed in between leaves no mix of old and new that looks complete.
    """
    path = os.path.join(out_dir, METADATA)
    if not os.path.exists(path):
        return []
    with open(path) as file:
        files = json.load(file).get("files", [])
    os.remove(path)
    return [os.path.basename(name) for name in files]
