"""The built-in "shapes" data (:mod:`fcn_tf.data.shapes`) written as records, like any dataset.

>>> converter = Shapes("val", count=2, height=16, width=24)
>>> converter.keys(), converter.load("1").label.shape
(['0', '1'], (16, 24))
"""

from __future__ import annotations

from fcn_tf.data import shapes
from fcn_tf.data.records import Sample
from fcn_tf.data.writer import Converter


class Shapes(Converter):
    """``count`` procedural images of ``split``; ``root`` is not used (nothing is read)."""

    name = "synthetic"
    class_names = shapes.CLASS_NAMES

    def __init__(
        self,
        split: str,
        count: int = 256,
        height: int = 128,
        width: int = 128,
        seed: int = 0,
        root: str | None = None,
    ):
        self.split, self.count, self.seed = split, count, seed
        self.height, self.width = height, width

    def keys(self) -> list[str]:
        return [str(index) for index in range(self.count)]

    def load(self, key: str) -> Sample:
        index = int(key)
        h, w = shapes.sample_size(self.split, index, self.height, self.width, self.seed)
        image, label = shapes.render(shapes.sample_seed(self.split, index, self.seed), h, w)
        return Sample(f"shapes_{self.split}_{index:06d}", image, label)
