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
    """``count`` procedural images of ``split``; ``bar_width`` and ``noise`` go to
    :func:`fcn_tf.data.shapes.render`; ``root`` is not used (nothing is read).

    >>> sample = Shapes("train", count=4, height=16, width=24, seed=3).load("2")
    >>> sample.filename, sample.image.dtype.name, Shapes.class_names
    ('shapes_train_000002', 'uint8', ('background', 'disc', 'rectangle', 'triangle', 'ring',
     'bar'))
    """

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
        bar_width: tuple[float, float] = shapes.BAR_WIDTH,
        noise: tuple[float, float] = shapes.NOISE_SIGMA,
    ):
        self.split, self.count, self.seed = split, count, seed
        self.height, self.width = height, width
        self.options = {"bar_width": tuple(bar_width), "noise": tuple(noise)}

    def keys(self) -> list[str]:
        return [str(index) for index in range(self.count)]

    def load(self, key: str) -> Sample:
        index = int(key)
        h, w = shapes.sample_size(self.split, index, self.height, self.width, self.seed)
        seed = shapes.sample_seed(self.split, index, self.seed)
        image, label = shapes.render(seed, h, w, **self.options)
        return Sample(f"shapes_{self.split}_{index:06d}", image, label)
