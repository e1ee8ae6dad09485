"""The trainer's input: records for a recipe's splits, and per-replica distributed datasets.

Training batches come from :func:`fcn_tf.data.load` through
``Strategy.distribute_datasets_from_function``: each input pipeline (one per worker) reads
its part of the records and yields per-replica batches. Evaluation gives every replica whole
images, one at a time, and every pipeline the same number of them (the split padded with
images whose labels are all ``ignore_label``, which no metric counts), so no worker waits on
a collective that another never reaches.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from typing import Any

import tensorflow as tf

from fcn_tf.data.pipeline import list_files, load
from fcn_tf.data.writer import METADATA
from fcn_tf.training.config import DataConfig

__all__ = [
    "RecordSplit",
    "count_records",
    "eval_dataset_fn",
    "record_split",
    "resolve_split",
    "train_dataset_fn",
]


class RecordSplit:
    """The TFRecord files of one split and what ``dataset.json`` beside them says.

    >>> RecordSplit(["a.tfrecord"], {"count": 3, "class_names": ["sky", "road"]}).class_names
    ['sky', 'road']
    """

    def __init__(self, files: list[str], metadata: dict[str, Any] | None = None) -> None:
        self.files = files
        self.metadata = metadata or {}

    @property
    def count(self) -> int:
        """Records in the split (counted when ``dataset.json`` does not say)."""
        if "count" not in self.metadata:
            self.metadata["count"] = count_records(self.files)
        return int(self.metadata["count"])

    @property
    def class_names(self) -> list[str] | None:
        return self.metadata.get("class_names")


def count_records(files: list[str]) -> int:
    """The number of records in TFRecord ``files`` (read, not decoded); a file that is not
    one is named.

    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "three.tfrecord")
    >>> with tf.io.TFRecordWriter(path) as writer:
    ...     for record in (b"a", b"b", b"c"):
    ...         writer.write(record)
    >>> count_records([path, path])
    6
    """
    total = 0
    for path in files:  # one at a time, so the error can say which
        try:
            total += int(tf.data.TFRecordDataset(path).reduce(0, lambda count, _: count + 1))
        except tf.errors.DataLossError as error:
            detail = error.message.split("}} ")[-1].split(" [Op:")[0]
            raise ValueError(f"{path}: {detail}") from None
    return total


_SPLIT_TOTALS = ("count", "class_pixel_counts", "mean_rgb", "skipped")


def _metadata_beside(files: list[str]) -> dict[str, Any] | None:
    folders = {os.path.dirname(f) for f in files}
    if len(folders) != 1:
        return None
    path = os.path.join(folders.pop(), METADATA)
    if not os.path.exists(path):
        return None
    with open(path) as file:
        metadata = json.load(file)
    # Several splits may share a folder only through dataset.json naming the files.
    listed = {os.path.join(os.path.dirname(path), name) for name in metadata.get("files", [])}
    if listed and not set(files) <= listed:
        return None
    if listed and set(files) < listed:
        # Some of the split's shards: its class names hold, its counts do not.
        metadata = {k: v for k, v in metadata.items() if k not in _SPLIT_TOTALS}
        metadata["files"] = [os.path.basename(f) for f in files]
    return metadata


def _convert_once(data: DataConfig, split: str, verbose: bool) -> str:
    """Convert ``split`` with ``data.dataset`` unless an identical conversion exists."""
    from fcn_tf.data.convert import SAME_BYTES_OPTIONS, convert

    options = {**data.options, **data.split_options.get(split, {})}
    if data.root is not None:
        options["root"] = os.path.abspath(os.path.expanduser(data.root))
    named = {k: v for k, v in options.items() if k not in SAME_BYTES_OPTIONS}
    key = json.dumps({"dataset": data.dataset, "split": split, **named}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    base = os.path.expanduser(data.records_dir)
    folder = os.path.join(base, f"{data.dataset}-{split}-{digest}")
    if os.path.exists(os.path.join(folder, METADATA)):
        return folder
    os.makedirs(base, exist_ok=True)
    # Converted under a private name and renamed whole, so concurrent runs (the workers of
    # one job) never see half a split; the loser of a race keeps the winner's copy.
    temporary = tempfile.mkdtemp(prefix=f".{os.path.basename(folder)}-", dir=base)
    try:
        convert(data.dataset, temporary, split, verbose=verbose, **options)
        with contextlib.suppress(OSError):
            os.rename(temporary, folder)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    if not os.path.exists(os.path.join(folder, METADATA)):
        raise RuntimeError(f"converting {data.dataset} {split} into {folder} failed")
    return folder


def resolve_split(data: DataConfig, which: str, verbose: bool = True) -> RecordSplit | None:
    """The records of ``which`` (``"train"`` or ``"val"``): the configured pattern, or the
    converter's output made once. ``None`` when there is no such split, and for validation
    when the training records are the user's own (``data.train``) but validation would come
    from the converter: scoring them on another dataset would pick the best model by it.

    >>> import tempfile
    >>> shapes = {"count": 2, "height": 8, "width": 8}
    >>> data = DataConfig(options=shapes, records_dir=tempfile.mkdtemp())
    >>> split = resolve_split(data, "val", verbose=False)   # rendered once, then reused
    >>> split.count, split.class_names[:2]
    (2, ['background', 'disc'])
    """
    pattern = getattr(data, which)
    if pattern is None:
        if data.dataset is None:
            return None
        if which == "val" and data.train is not None:
            warnings.warn(
                f"data.train is {data.train!r} but data.val is not set: no validation "
                f"(the recipe's {data.dataset} validation split is another dataset); "
                "give --val-data",
                stacklevel=2,
            )
            return None
        split = data.train_split if which == "train" else data.val_split
        folder = _convert_once(data, split, verbose)
        with open(os.path.join(folder, METADATA)) as file:
            metadata = json.load(file)
        files = [os.path.join(folder, name) for name in metadata["files"]]
        return RecordSplit(files, metadata)
    try:
        return record_split(pattern)
    except (OSError, ValueError) as error:
        raise FileNotFoundError(f"data.{which}: {error}") from None


def record_split(pattern: str) -> RecordSplit:
    """The records a pattern, file or split folder names, with the ``dataset.json`` beside them.

    >>> import tempfile
    >>> record_split(tempfile.mkdtemp() + "/*.tfrecord")
    Traceback (most recent call last):
    ...
    FileNotFoundError: no file matches '...*.tfrecord'
    """
    files = list_files(os.path.expanduser(pattern))
    return RecordSplit(files, _metadata_beside(files))


def train_dataset_fn(
    split: RecordSplit,
    data: DataConfig,
    global_batch: int,
    seed: int,
    skip_batches: int = 0,
) -> Callable[[tf.distribute.InputContext], tf.data.Dataset]:
    """A ``dataset_fn(input_context)`` for ``distribute_datasets_from_function``.

    ``skip_batches`` per-replica batches already consumed by each replica (a resumed run).
    The element order is always fixed by ``seed`` (``run.deterministic`` is about ops):
    resuming counts batches, so the stream must be the same in every run.

    >>> import tempfile
    >>> data = DataConfig(options={"count": 4, "height": 8, "width": 8},
    ...                   records_dir=tempfile.mkdtemp(), batch_size=2, crop_size=8)
    >>> split = resolve_split(data, "train", verbose=False)
    >>> strategy = tf.distribute.get_strategy()
    >>> batches = strategy.distribute_datasets_from_function(train_dataset_fn(split, data, 2, 0))
    >>> images, labels = next(iter(batches))
    >>> tuple(images.shape), tuple(labels.shape)
    ((2, 8, 8, 3), (2, 8, 8))
    """

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        per_replica = context.get_per_replica_batch_size(global_batch)
        replicas_here = context.num_replicas_in_sync // context.num_input_pipelines
        return load(
            split.files,
            training=True,
            batch_size=per_replica,
            crop_size=None if data.crop_size is None else tuple(_pair(data.crop_size)),
            scale_range=None if data.scale_range is None else tuple(data.scale_range),
            mirror=data.mirror,
            jitter=data.jitter,
            ignore_label=data.ignore_label,
            shuffle_buffer=data.shuffle_buffer,
            # Each pipeline shuffles and augments with its own stream.
            seed=seed * 1009 + context.input_pipeline_id,
            deterministic=True,
            repeat=True,
            input_context=context,
            cache=data.cache,
            skip=skip_batches * per_replica * replicas_here,
        )

    return dataset_fn


def _pair(value: int | list[int]) -> list[int]:
    return [value, value] if isinstance(value, int) else list(value)


def eval_dataset_fn(
    split: RecordSplit, ignore_label: int
) -> Callable[[tf.distribute.InputContext], tf.data.Dataset]:
    """A ``dataset_fn`` giving each replica whole images (batch 1), the same count on all.

    >>> import tempfile
    >>> data = DataConfig(options={"count": 3, "height": 8, "width": 6},
    ...                   records_dir=tempfile.mkdtemp())
    >>> split = resolve_split(data, "val", verbose=False)
    >>> images = tf.distribute.get_strategy().distribute_datasets_from_function(
    ...     eval_dataset_fn(split, 255))
    >>> [tuple(x.shape) for x, _ in images]
    [(1, 8, 6, 3), (1, 8, 6, 3), (1, 8, 6, 3)]
    """

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        replicas = context.num_replicas_in_sync
        per_pipeline = replicas // context.num_input_pipelines
        images = load(split.files, training=False, batch_size=1, ignore_label=ignore_label)
        padding = -split.count % replicas
        filler = images.take(1).map(lambda x, y: (x, tf.fill(tf.shape(y), ignore_label)))
        images = images.concatenate(filler.repeat(padding))
        # Pipeline p feeds its replicas in turn; image i goes to global replica i % replicas.
        first = context.input_pipeline_id * per_pipeline
        mine = images.enumerate().filter(
            lambda i, _: (i % replicas >= first) & (i % replicas < first + per_pipeline)
        )
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        return mine.map(lambda _, element: element).with_options(options)

    return dataset_fn
