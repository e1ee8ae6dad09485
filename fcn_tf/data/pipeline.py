"""The tf.data input pipeline: TFRecord shards to ``(image, label)`` batches.

:func:`load` reads the records of :mod:`fcn_tf.data.records` and yields images (float32 RGB
0..255 by default: the models preprocess inside) and int32 labels. For training it augments as
the FCN paper's successors do: random scale, mirror, crop or pad, optional colour jitter. Every
geometric transform is applied to the image and its label alike; labels are always resized
nearest-neighbour and padded with the ignore label, so no invented class ever appears.

Order of a training pipeline::

    files -> [shard files] -> shuffle files -> parallel interleave (TFRecordDataset per file)
          -> [shard records] -> shuffle records -> [repeat] -> decode (parallel) -> corrupt check
          -> augment (parallel, stateless random ops) -> batch -> prefetch

(with ``cache``, records are decoded and checked before the cache, and shuffled after it).

Randomness: every random choice is a ``tf.random.stateless_*`` op keyed by a per-element seed
drawn from ``tf.data.Dataset.random(seed, rerandomize_each_iteration=True)``, so augmentation
does not depend on which thread ran it. With a ``seed`` and ``deterministic=True`` two runs
give identical batches, epoch after epoch (as for any tf.data seed, the global seed of
``tf.random.set_seed`` also enters; it is fixed unless you change it).

Corrupt records
---------------
Two kinds, both detected without Python in the normal path:

* *Framing*: a record whose TFRecord length or CRC is wrong, or a truncated file.
  ``TFRecordDataset`` stops the whole file at such a record with an error that does not name
  the file. Here each file is read with ``ignore_errors`` and the bytes of the records it
  yielded are summed (16 framing bytes + data each); if the sum falls short of the file's size
  (taken when :func:`load` is called), the file broke at that byte offset.
* *Content*: a record that frames fine but whose ``tf.train.Example`` or PNG/JPEG does not
  decode, or whose image and label sizes differ. Each record is decoded in its own
  one-element dataset with ``ignore_errors``, followed by a "failed" placeholder: the first
  element is the decoded record or the placeholder. Run as a parallel interleave, this decodes
  as fast as a plain parallel map.

By default (``skip_corrupt=False``) a corrupt record raises ``InvalidArgumentError`` whose
message names the file, the record's index and its byte offset (a framing error surfaces
after the file's records before it). With ``skip_corrupt`` it is
dropped, logged to stderr and counted in a :class:`CorruptRecordCounter`; the rest of the file
is still read: after a framing error a small pure-Python reader (:func:`salvage_records`, with
its own CRC32C) goes on from the bad offset, skipping a frame whose length is intact or
searching for the next valid frame otherwise. Only broken files reach it, but skip mode puts a
``from_generator`` node in the graph (no tf.data service, no iterator checkpoints there), and
the counter is a ``tf.Variable``: create it outside any ``tf.distribute`` strategy scope.
Records in a region that had to be searched through count as one. Compressed TFRecord files
are not supported (the byte accounting needs the raw framing).
"""

from __future__ import annotations

import contextlib
import dataclasses
import numbers
import os
import random
import re
import sys
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import tensorflow as tf

from fcn_tf.data.records import decode_example
from fcn_tf.data.salvage import (
    _REASONS,
    BAD_CONTENT,
    BAD_FRAME,
    END,
    OK,
    SIZE_MISMATCH,
    salvage_records,
)
from fcn_tf.data.writer import METADATA

__all__ = ["CorruptRecordCounter", "corrupt_records_as_value_errors", "list_files", "load"]

# Default photometric jitter at strength 1 (SSD-style): brightness delta on a 0..1 scale,
# contrast and saturation factors 1 +- this, hue shift as a fraction of the colour circle.
_BRIGHTNESS, _CONTRAST, _SATURATION, _HUE = 32 / 255, 0.5, 0.5, 0.05

# ---------------------------------------------------------------------------------------------
# Reading and decoding.


class CorruptRecordCounter:
    """Counts the corrupt records that pipelines given it as ``skip_corrupt`` dropped.

    >>> counter = CorruptRecordCounter()
    >>> counter.count
    0
    """

    def __init__(self) -> None:
        with tf.init_scope():
            self._count = tf.Variable(0, dtype=tf.int64, trainable=False, name="corrupt_records")

    @property
    def count(self) -> int:
        """How many corrupt records were skipped so far."""
        return int(self._count.numpy())

    def reset(self) -> None:
        """Start counting from zero again."""
        self._count.assign(0)

    def _add_one(self) -> tf.Tensor:
        return self._count.assign_add(1)


@contextlib.contextmanager
def corrupt_records_as_value_errors() -> Iterator[None]:
    """Within it, the ``InvalidArgumentError`` of a corrupt record that :func:`load` read
    becomes a ``ValueError`` of one line naming the file, record and offset (for CLIs).

    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "broken.tfrecord")
    >>> with open(path, "wb") as file:
    ...     _ = file.write(b"not a record")
    >>> with corrupt_records_as_value_errors():
    ...     _ = list(load(path, training=False))
    Traceback (most recent call last):
    ...
    ValueError: fcn_tf.data: corrupt record #0 (byte offset 0) in ...broken.tfrecord: ...
    """
    try:
        yield
    except tf.errors.InvalidArgumentError as error:
        # The assertion's own text (up to the hint _strict always appends), without
        # TensorFlow's function and node names around it; a path may hold any character.
        found = re.search(
            r"fcn_tf\.data: corrupt record .*?(?=\. Pass skip_corrupt)", error.message
        )
        if found is None:
            lines = [line for line in error.message.splitlines() if "corrupt record" in line]
            raise ValueError((lines or error.message.splitlines())[0].strip()) from None
        raise ValueError(found[0]) from None


def list_files(files_or_pattern: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """The files a path, a glob pattern, or a list of either names, sorted within each pattern.

    A folder stands for its ``*.tfrecord`` files (a converter's output folder). A pattern
    passes over what a conversion writes beside its shards (``dataset.json``, ``*.tmp``).

    >>> list_files([])
    Traceback (most recent call last):
    ...
    ValueError: no input files given
    """
    if isinstance(files_or_pattern, str | os.PathLike):
        files_or_pattern = [files_or_pattern]
    files: list[str] = []
    for pattern in map(os.fspath, files_or_pattern):
        if tf.io.gfile.isdir(pattern):
            matched = sorted(tf.io.gfile.glob(os.path.join(pattern, "*.tfrecord")))
            if not matched:
                raise FileNotFoundError(f"{pattern} is a folder without *.tfrecord files")
        else:
            matched = [f for f in sorted(tf.io.gfile.glob(pattern)) if f == pattern or _record(f)]
            if not matched:
                raise FileNotFoundError(f"no file matches {pattern!r}")
        files.extend(matched)
    if not files:
        raise ValueError("no input files given")
    return files


def _record(path: str) -> bool:
    name = os.path.basename(path)
    return name != METADATA and not name.endswith(".tmp") and not tf.io.gfile.isdir(path)


_RECORD_SPEC = {
    "serialized": tf.TensorSpec((), tf.string),
    "index": tf.TensorSpec((), tf.int64),
    "offset": tf.TensorSpec((), tf.int64),
    "status": tf.TensorSpec((), tf.int32),
}


def _read_file(path: tf.Tensor, size: tf.Tensor, salvage: bool) -> tf.data.Dataset:
    """Records of one file with their index, byte offset and status (see the module docs)."""
    # ignore_errors ends the file at a framing error; the byte count below tells it apart from
    # a clean end.
    records = tf.data.TFRecordDataset(path).ignore_errors()
    tagged = records.map(lambda record: (record, True)).concatenate(
        tf.data.Dataset.from_tensors((tf.constant(b""), False))
    )

    def step(state, element):
        index, offset = state
        record, is_record = element
        frame = tf.where(is_record, tf.strings.length(record, "BYTE") + 16, 0)
        status = tf.where(is_record, OK, tf.where(offset == size, END, BAD_FRAME))
        out = {"serialized": record, "index": index, "offset": offset, "status": status}
        return (index + tf.cast(is_record, tf.int64), offset + tf.cast(frame, tf.int64)), out

    scanned = tagged.scan((tf.constant(0, tf.int64), tf.constant(0, tf.int64)), step)
    scanned = scanned.filter(lambda r: r["status"] != END)
    if salvage:

        def expand(record):
            broken = record["status"] == BAD_FRAME
            salvaged = tf.data.Dataset.from_generator(
                salvage_records,
                output_signature=_RECORD_SPEC,
                args=(path, record["offset"], record["index"]),
            )
            # Either the record itself (0 or 1 copy) or what the fallback reader finds.
            return (
                tf.data.Dataset.from_tensors(record)
                .repeat(tf.cast(~broken, tf.int64))
                .concatenate(
                    tf.data.Dataset.range(tf.cast(broken, tf.int64)).flat_map(lambda _: salvaged)
                )
            )

        scanned = scanned.flat_map(expand)
    return scanned.map(lambda r: {**r, "path": path})


def _decode(record: dict) -> tf.data.Dataset:
    """A one-element dataset: the decoded record, or an empty image with a failure status."""

    def decode(r):
        decoded = decode_example(r["serialized"])
        image, label = decoded["image"], decoded["label"]
        same = tf.reduce_all(tf.equal(tf.shape(image)[:2], tf.shape(label)))
        return {"image": image, "label": label, "status": tf.where(same, OK, SIZE_MISMATCH)}

    decoded = (
        tf.data.Dataset.from_tensors(record)
        .filter(lambda r: r["status"] == OK)
        .map(decode)
        .ignore_errors()
    )
    failed = {
        "image": tf.zeros((0, 0, 3), tf.uint8),
        "label": tf.zeros((0, 0), tf.uint8),
        "status": tf.where(record["status"] == OK, BAD_CONTENT, record["status"]),
    }
    keep = {k: record[k] for k in ("path", "index", "offset")}
    return (
        decoded.concatenate(tf.data.Dataset.from_tensors(failed))
        .take(1)
        .map(lambda d: {**d, **keep})
    )


def _describe(element: dict) -> tf.Tensor:
    return tf.strings.join(
        [
            "fcn_tf.data: corrupt record #",
            tf.strings.as_string(element["index"]),
            " (byte offset ",
            tf.strings.as_string(element["offset"]),
            ") in ",
            element["path"],
            ": ",
            tf.gather(tf.constant(_REASONS), element["status"]),
        ]
    )


def _strict(element: dict) -> dict:
    message = tf.strings.join(
        [_describe(element), ". Pass skip_corrupt=True to load() to skip corrupt records."]
    )
    check = tf.debugging.Assert(element["status"] == OK, [message], summarize=1)
    with tf.control_dependencies([check]):
        return {k: tf.identity(v) for k, v in element.items()}


def _skip_filter(counter: CorruptRecordCounter | None) -> Callable[[dict], tf.Tensor]:
    def keep(element):
        def report():
            ops = [tf.print(_describe(element), "(skipped)", output_stream=sys.stderr)]
            if counter is not None:
                ops.append(counter._add_one())
            with tf.control_dependencies(ops):
                return tf.constant(False)

        return tf.cond(element["status"] == OK, lambda: tf.constant(True), report)

    return keep


# ---------------------------------------------------------------------------------------------
# Augmentation. All random ops are stateless, keyed by one seed per element.


@dataclasses.dataclass(frozen=True)
class _Augment:
    crop_size: tuple[int, int] | None
    scale_range: tuple[float, float] | None
    mirror: bool
    jitter: float | Callable | None
    ignore_label: int
    pad_value: tuple[float, float, float]
    image_dtype: tf.DType


def _pad(image, label, top, bottom, left, right, pad_value, ignore_label):
    # tf.pad takes one scalar; padding (image - value) with zeros pads with a per-channel value.
    value = tf.constant(pad_value, tf.float32)
    image = tf.pad(image - value, [[top, bottom], [left, right], [0, 0]]) + value
    label = tf.pad(label, [[top, bottom], [left, right]], constant_values=ignore_label)
    return image, label


def _jitter(image: tf.Tensor, strength: float, seeds: tf.Tensor) -> tf.Tensor:
    x = image / 255.0
    x = tf.image.stateless_random_brightness(x, _BRIGHTNESS * strength, seeds[0])
    c, s = _CONTRAST * strength, _SATURATION * strength
    x = tf.image.stateless_random_contrast(x, 1 - c, 1 + c, seeds[1])
    x = tf.image.stateless_random_saturation(x, 1 - s, 1 + s, seeds[2])
    x = tf.image.stateless_random_hue(x, _HUE * strength, seeds[3])
    return tf.clip_by_value(x, 0.0, 1.0) * 255.0


def _train_transform(element: dict, key: tf.Tensor, options: _Augment):
    image = tf.cast(element["image"], tf.float32)
    label = tf.cast(element["label"], tf.int32)
    # A fixed number of seeds, so switching one augmentation on or off keeps the others' draws.
    seeds = tf.random.experimental.stateless_split(key, 10)
    if callable(options.jitter):
        image = tf.cast(options.jitter(image), tf.float32)
    elif options.jitter:
        image = _jitter(image, options.jitter, seeds[6:10])
    if options.scale_range is not None:
        low, high = options.scale_range
        scale = tf.random.stateless_uniform((), seeds[0], low, high)
        size = tf.cast(tf.shape(label), tf.float32) * scale
        size = tf.maximum(tf.cast(tf.round(size), tf.int32), 1)
        # Both resizes use half-pixel centres, so image and label pixels stay on one grid.
        image = tf.image.resize(image, size, "bilinear")
        label = tf.image.resize(label[..., None], size, "nearest")[..., 0]
    if options.mirror:
        flip = tf.random.stateless_uniform((), seeds[1]) < 0.5
        image, label = tf.cond(
            flip,
            lambda: (tf.reverse(image, [1]), tf.reverse(label, [1])),
            lambda: (image, label),
        )
    if options.crop_size is not None:
        crop_h, crop_w = options.crop_size
        height, width = tf.unstack(tf.shape(label))
        pad_h, pad_w = tf.maximum(crop_h - height, 0), tf.maximum(crop_w - width, 0)
        # A small image lands anywhere on the padded canvas, a large one is cropped anywhere.
        top = tf.random.stateless_uniform((), seeds[2], 0, pad_h + 1, tf.int32)
        left = tf.random.stateless_uniform((), seeds[3], 0, pad_w + 1, tf.int32)
        image, label = _pad(
            image,
            label,
            top,
            pad_h - top,
            left,
            pad_w - left,
            options.pad_value,
            options.ignore_label,
        )
        y = tf.random.stateless_uniform((), seeds[4], 0, height + pad_h - crop_h + 1, tf.int32)
        x = tf.random.stateless_uniform((), seeds[5], 0, width + pad_w - crop_w + 1, tf.int32)
        image = tf.ensure_shape(image[y : y + crop_h, x : x + crop_w], (crop_h, crop_w, 3))
        label = tf.ensure_shape(label[y : y + crop_h, x : x + crop_w], (crop_h, crop_w))
    return _finish(image, label, options)


def _eval_transform(element: dict, options: _Augment):
    image = tf.cast(element["image"], tf.float32)
    label = tf.cast(element["label"], tf.int32)
    if options.crop_size is not None:
        crop_h, crop_w = options.crop_size
        height, width = tf.unstack(tf.shape(label))
        message = tf.strings.join(
            [
                "fcn_tf.data: ",
                element["path"],
                " record #",
                tf.strings.as_string(element["index"]),
                " is ",
                tf.strings.as_string(height),
                "x",
                tf.strings.as_string(width),
                f", larger than crop_size {crop_h}x{crop_w}; evaluation pads, never crops: "
                "use a larger crop_size or batch_size=1 with crop_size=None",
            ]
        )
        fits = tf.debugging.Assert((height <= crop_h) & (width <= crop_w), [message])
        with tf.control_dependencies([fits]):
            image, label = _pad(
                image,
                label,
                0,
                crop_h - height,
                0,
                crop_w - width,
                options.pad_value,
                options.ignore_label,
            )
        image = tf.ensure_shape(image, (crop_h, crop_w, 3))
        label = tf.ensure_shape(label, (crop_h, crop_w))
    return _finish(image, label, options)


def _finish(image, label, options: _Augment):
    if options.image_dtype == tf.uint8:
        image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
    return image, label


# ---------------------------------------------------------------------------------------------


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, numbers.Integral) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, numbers.Integral) and v > 0 for v in pair):
        raise ValueError(f"{name} must be a positive int or (height, width), got {value!r}")
    return int(pair[0]), int(pair[1])


def load(
    files_or_pattern: str | os.PathLike | Sequence[str | os.PathLike],
    training: bool,
    batch_size: int = 1,
    crop_size: int | tuple[int, int] | None = None,
    scale_range: tuple[float, float] | None = (0.5, 2.0),
    mirror: bool = True,
    jitter: bool | float | Callable[[tf.Tensor], tf.Tensor] = False,
    ignore_label: int = 255,
    pad_value: float | Sequence[float] = 0.0,
    image_dtype: str = "float32",
    shuffle_buffer: int = 256,
    seed: int | None = None,
    deterministic: bool | None = None,
    repeat: bool = False,
    drop_remainder: bool | None = None,
    input_context: tf.distribute.InputContext | None = None,
    skip_corrupt: bool | CorruptRecordCounter = False,
    num_parallel_calls: int = tf.data.AUTOTUNE,
    cache: bool | str = False,
    skip: int = 0,
) -> tf.data.Dataset:
    """A dataset of ``(image, label)`` batches from TFRecord shards.

    Images are ``[B, H, W, 3]`` float32 RGB 0..255 (``image_dtype="uint8"``: rounded uint8),
    labels ``[B, H, W]`` int32 with ``ignore_label`` kept as is.

    Args:
        files_or_pattern: a file, a glob pattern, or a list of either.
        training: shuffle and augment (``scale_range``, ``mirror``, ``crop_size``, ``jitter``).
            Otherwise images are returned exactly as stored, in file order.
        batch_size: per pipeline (per replica under ``input_context``: pass
            ``input_context.get_per_replica_batch_size(global_batch)``). 1 with
            ``crop_size=None`` gives whole images at their own size, the paper's training.
        crop_size: ``int`` or ``(height, width)``. Training: a random crop, after padding an
            image smaller than that (anywhere on the canvas). Evaluation: padding at the
            bottom and right only, never cropping (an image larger than ``crop_size`` is an
            error); pads change predictions near the border a little, so prefer
            ``batch_size=1, crop_size=None`` for exact evaluation. Required when
            ``batch_size > 1``.
        scale_range: training only: a scale drawn uniformly from ``(low, high)``; the image is
            resized bilinearly and the label nearest-neighbour. ``None``: no scaling.
        mirror: training only: flip left-right with probability 1/2.
        jitter: training only, image only: ``True`` or a strength in ``(0, 2]`` for random
            brightness, contrast, saturation and hue (stateless ``tf.image`` ops), or any
            callable on a float32 ``[H, W, 3]`` 0..255 image, e.g. a Keras 3 layer such as
            ``keras.layers.RandomColorJitter(value_range=(0, 255), ...)``. Keras layers draw
            from their own seed state, so they are not reproducible under
            ``deterministic``; the built-in jitter is.
        ignore_label: the label padding gets.
        pad_value: what padded image pixels get: one value or one per RGB channel (e.g. the
            model's mean, so that padding is zero after its preprocessing).
        image_dtype: ``"float32"`` or ``"uint8"``.
        shuffle_buffer: training only: records in the shuffle buffer (encoded records, or
            decoded images with ``cache``).
        seed: seeds file and record shuffling and every augmentation; random when ``None``
            (drawn from Python's ``random``, so ``keras.utils.set_random_seed`` fixes it).
        deterministic: keep the element order fixed through the parallel stages; ``None``
            means yes when a seed is given or when not training.
        repeat: repeat forever (use with ``steps_per_epoch``); each pass reshuffles and draws
            new augmentations either way.
        drop_remainder: drop a last partial batch; ``None`` means ``training``.
        input_context: from ``tf.distribute.Strategy.distribute_datasets_from_function``:
            each input pipeline reads a disjoint part, by files when there are at least as
            many files as pipelines (parts then hold whole files, so their sizes may
            differ), otherwise by records (every pipeline reads every file in the same order
            and keeps every n-th record).
        skip_corrupt: ``False``: a corrupt record raises an error naming its file (see the
            module docs). ``True`` or a :class:`CorruptRecordCounter`: skip it, log it to
            stderr and count it there.
        num_parallel_calls: parallelism of reading, decoding and augmenting.
        cache: cache decoded records in memory (``True``) or in files with this prefix;
            shuffling then happens after the cache, on decoded images.
        skip: records to skip at the start of the (shuffled, repeated) stream, together with
            their augmentation draws: the stream then goes on exactly where a pipeline that
            yielded ``skip`` records stopped (per input pipeline), and the skipped records are
            read but not decoded (decoded too with ``skip_corrupt``, so that dropped corrupt
            records do not count). This is how a resumed run continues its input.

    >>> import tempfile
    >>> from fcn_tf.data.records import Sample, encode_example
    >>> path = os.path.join(tempfile.mkdtemp(), "toy.tfrecord")
    >>> with tf.io.TFRecordWriter(path) as writer:
    ...     for i in range(4):
    ...         sample = Sample(f"{i}.png", np.full((6, 9, 3), i, np.uint8), np.ones((6, 9)))
    ...         writer.write(encode_example(sample, 6, 9))
    >>> images, labels = next(iter(load(path, training=True, batch_size=2, crop_size=8, seed=1)))
    >>> images.shape, images.dtype.name, labels.shape, labels.dtype.name
    (TensorShape([2, 8, 8, 3]), 'float32', TensorShape([2, 8, 8]), 'int32')
    >>> [tuple(x.shape) for x, _ in load(path, training=False)]
    [(1, 6, 9, 3), (1, 6, 9, 3), (1, 6, 9, 3), (1, 6, 9, 3)]
    """
    if not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not isinstance(skip, numbers.Integral) or skip < 0:
        raise ValueError(f"skip must be a non-negative int, got {skip!r}")
    options = _augment_options(
        batch_size, crop_size, scale_range, mirror, jitter, ignore_label, pad_value, image_dtype
    )
    if deterministic is None:
        deterministic = not training or seed is not None
    if seed is None:
        seed = random.getrandbits(31)
    if drop_remainder is None:
        drop_remainder = training

    reading = _Reading(
        training=training,
        seed=seed,
        deterministic=deterministic,
        shuffle_buffer=shuffle_buffer,
        repeat=repeat,
        skip_corrupt=skip_corrupt,
        num_parallel_calls=num_parallel_calls,
    )
    dataset = _records(files_or_pattern, input_context, reading, cache, skip)
    if training:
        keys = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        dataset = tf.data.Dataset.zip(dataset, keys.skip(skip)).map(
            lambda element, key: _train_transform(element, key, options),
            num_parallel_calls=num_parallel_calls,
            deterministic=deterministic,
        )
    else:
        dataset = dataset.map(
            lambda element: _eval_transform(element, options),
            num_parallel_calls=num_parallel_calls,
            deterministic=deterministic,
        )
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    dataset = dataset.prefetch(tf.data.AUTOTUNE)

    ds_options = tf.data.Options()
    ds_options.deterministic = deterministic
    if input_context is not None:
        # Already sharded here: a strategy must not shard again.
        ds_options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.OFF
        )
    return dataset.with_options(ds_options)


def _augment_options(
    batch_size: int,
    crop_size: int | tuple[int, int] | None,
    scale_range: tuple[float, float] | None,
    mirror: bool,
    jitter: bool | float | Callable,
    ignore_label: int,
    pad_value: float | Sequence[float],
    image_dtype: str,
) -> _Augment:
    """:func:`load`'s augmentation arguments, checked and normalised."""
    crop = None if crop_size is None else _pair(crop_size, "crop_size")
    if batch_size > 1 and crop is None:
        raise ValueError(
            f"batch_size={batch_size} needs a crop_size: images of different sizes cannot be "
            "batched (use batch_size=1 for whole images at their own size)"
        )
    if scale_range is not None:
        scale_range = (float(scale_range[0]), float(scale_range[1]))
        if not 0 < scale_range[0] <= scale_range[1]:
            raise ValueError(f"scale_range must be (low, high) with 0 < low <= high: {scale_range}")
    if jitter is True:
        jitter = 1.0
    if not callable(jitter):
        jitter = float(jitter)
        if not 0 <= jitter <= 2:
            raise ValueError(f"jitter strength must be in [0, 2], got {jitter}")
    if image_dtype not in ("float32", "uint8"):
        raise ValueError(f"image_dtype must be 'float32' or 'uint8', got {image_dtype!r}")
    pad = (float(pad_value),) * 3 if np.isscalar(pad_value) else tuple(map(float, pad_value))
    if len(pad) != 3:
        raise ValueError(f"pad_value must be one value or three (RGB), got {pad_value!r}")
    return _Augment(
        crop_size=crop,
        scale_range=scale_range,
        mirror=mirror,
        jitter=jitter or None,
        ignore_label=int(ignore_label),
        pad_value=pad,
        image_dtype=tf.as_dtype(image_dtype),
    )


@dataclasses.dataclass(frozen=True)
class _Reading:
    training: bool
    seed: int
    deterministic: bool
    shuffle_buffer: int
    repeat: bool
    skip_corrupt: bool | CorruptRecordCounter
    num_parallel_calls: int


def _records(
    files_or_pattern: str | os.PathLike | Sequence[str | os.PathLike],
    input_context: tf.distribute.InputContext | None,
    reading: _Reading,
    cache: bool | str,
    skip: int,
) -> tf.data.Dataset:
    """Decoded, checked, shuffled (training) records of this input pipeline's part."""
    files = list_files(files_or_pattern)
    sizes = [tf.io.gfile.stat(f).length for f in files]
    record_shards = None
    if input_context is not None and input_context.num_input_pipelines > 1:
        pipelines, pipeline = input_context.num_input_pipelines, input_context.input_pipeline_id
        if len(files) >= pipelines:
            files, sizes = files[pipeline::pipelines], sizes[pipeline::pipelines]
        else:
            record_shards = (pipelines, pipeline)

    training, seed, deterministic = reading.training, reading.seed, reading.deterministic
    dataset = tf.data.Dataset.from_tensor_slices((files, tf.constant(sizes, tf.int64)))
    # Sharding by records needs every pipeline to see the same record order.
    if training and record_shards is None and len(files) > 1:
        dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    skip_corrupt = reading.skip_corrupt
    counter = skip_corrupt if isinstance(skip_corrupt, CorruptRecordCounter) else None
    salvage = bool(skip_corrupt)
    dataset = dataset.interleave(
        lambda path, size: _read_file(path, size, salvage),
        # Evaluation reads the files one after the other, so its order is the files' order.
        cycle_length=min(len(files), 16) if training else 1,
        num_parallel_calls=reading.num_parallel_calls,
        deterministic=deterministic or record_shards is not None,
    )
    if record_shards is not None:
        dataset = dataset.shard(*record_shards)

    def decode_and_check(records: tf.data.Dataset) -> tf.data.Dataset:
        decoded = records.interleave(
            _decode, num_parallel_calls=reading.num_parallel_calls, deterministic=deterministic
        )
        if salvage:
            return decoded.filter(_skip_filter(counter))
        return decoded.map(_strict)

    def shuffle_and_repeat(elements: tf.data.Dataset) -> tf.data.Dataset:
        if training:
            elements = elements.shuffle(
                reading.shuffle_buffer, seed=seed, reshuffle_each_iteration=True
            )
        return elements.repeat() if reading.repeat else elements

    if cache is not False:
        dataset = decode_and_check(dataset).cache("" if cache is True else os.fspath(cache))
        return shuffle_and_repeat(dataset).skip(skip)
    if salvage and skip:
        # Dropped corrupt records must not count towards ``skip``: decode before skipping.
        return decode_and_check(shuffle_and_repeat(dataset)).skip(skip)
    return decode_and_check(shuffle_and_repeat(dataset).skip(skip))
