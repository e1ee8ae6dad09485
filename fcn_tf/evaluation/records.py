"""What the evaluation commands need to know about a split of TFRecords.

>>> import tempfile
>>> split_info(tempfile.mkdtemp() + "/*.tfrecord")
Traceback (most recent call last):
...
FileNotFoundError: no file matches '...*.tfrecord'
"""

from __future__ import annotations

import dataclasses
from typing import Any

from fcn_tf.training.inputs import RecordSplit, record_split

__all__ = ["SplitInfo", "split_info"]


@dataclasses.dataclass
class SplitInfo:
    """A split's files and labels: class names, their count, the ignore label.

    >>> info = SplitInfo(RecordSplit(["val.tfrecord"]), 2, ["sky", "road"], 255)
    >>> info.files, info.num_classes
    (['val.tfrecord'], 2)
    """

    split: RecordSplit
    num_classes: int
    class_names: list[str]
    ignore_label: int

    @property
    def files(self) -> list[str]:
        return self.split.files


def split_info(
    pattern: str,
    num_classes: int | None = None,
    class_names: list[str] | None = None,
    default_num_classes: int | None = None,
    default_class_names: list[str] | None = None,
) -> SplitInfo:
    """The records matching ``pattern``; classes from ``dataset.json`` beside them unless
    given, else ``default_num_classes`` and ``default_class_names`` (e.g. the model's):
    records alone do not say how many classes there are.

    >>> import tempfile
    >>> from fcn_tf.data.convert import convert
    >>> folder = tempfile.mkdtemp()
    >>> _ = convert("synthetic", folder, "val", verbose=False, count=1, height=8, width=8)
    >>> info = split_info(folder + "/*.tfrecord")
    >>> info.num_classes, info.class_names[-1], info.ignore_label
    (6, 'bar', 255)
    """
    if num_classes is not None and num_classes < 1:
        raise ValueError(f"the number of classes (--num-classes) must be >= 1, got {num_classes}")
    split = record_split(pattern)
    metadata: dict[str, Any] = split.metadata
    names = class_names or metadata.get("class_names")
    count = num_classes or metadata.get("num_classes") or (len(names) if names else None)
    count = count or default_num_classes
    if not names and default_class_names and len(default_class_names) == count:
        names = default_class_names
    if not count:
        raise ValueError(
            f"{pattern}: no dataset.json beside the records names the classes; give the "
            "number of classes (--num-classes)"
        )
    names = list(names) if names else [str(i) for i in range(count)]
    if len(names) != count:
        raise ValueError(f"{pattern}: {len(names)} class names for {count} classes")
    return SplitInfo(split, int(count), names, int(metadata.get("ignore_label", 255)))
