"""The built-in synthetic segmentation data set "shapes": procedural, no files, any size.

Each sample is a pure function of an integer seed and the image size: a textured, noisy
background with discs, rectangles, triangles, rings and thin bars painted on it in order, so
later shapes occlude earlier ones and the label map holds the topmost class. Colours are drawn
per instance from the whole RGB cube for the background and for every shape alike, so colour
alone says nothing about the class: only shape and structure do. Bars are a few pixels wide
whatever the image size, narrower than the stride-32 score map can resolve, so the skip
connections of FCN-16s/8s matter.

Coordinates are continuous: pixel ``(i, j)`` covers ``[i, i+1) x [j, j+1)`` and belongs to a
shape when its centre ``(i + 0.5, j + 0.5)`` does.

>>> image, label = render(seed=7, height=48, width=64)
>>> image.shape, image.dtype, label.shape, label.dtype
((48, 64, 3), dtype('uint8'), (48, 64), dtype('uint8'))
>>> bool((label < NUM_CLASSES).all())
True
>>> np.array_equal(render(7, 48, 64)[0], image)  # deterministic
True
"""

from __future__ import annotations

import inspect
import math
import operator
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:
    import tensorflow as tf

__all__ = [
    "BAR_WIDTH",
    "CLASS_NAMES",
    "NUM_CLASSES",
    "SPLITS",
    "Shape",
    "dataset",
    "random_shapes",
    "render",
    "render_shapes",
    "sample_seed",
    "sample_size",
    "samples",
    "shape_mask",
]

CLASS_NAMES: tuple[str, ...] = ("background", "disc", "rectangle", "triangle", "ring", "bar")
NUM_CLASSES = len(CLASS_NAMES)
SPLITS: tuple[str, ...] = ("train", "val", "test")

# Bar widths are in pixels, not relative to the image: what makes a bar "fine" is the
# network's output stride. Fitting coarse logits under a fixed bilinear upsampler straight to
# 128x128 labels (an infinitely strong net) reaches a bar IU of about 0.13 at stride 32, 0.45
# at 16 and 0.83 at 8 with these widths; 1-3 px bars would cap stride 8 at 0.33.
BAR_WIDTH: tuple[float, float] = (4.0, 8.0)
NOISE_SIGMA: tuple[float, float] = (3.0, 12.0)

_BLOB_KINDS = ("disc", "rectangle", "triangle", "ring")
_NUM_BLOBS = (2, 6)  # inclusive
_NUM_BARS = (0, 3)  # inclusive
# Shape colours keep this RGB distance from the background's base colour and from every
# earlier shape, so edges stay visible through texture and noise.
_MIN_CONTRAST = 80.0
_COLOUR_CANDIDATES = 32
_INDEX_BITS = 40  # sample_seed packs (seed, split, index) into one integer


class Shape(NamedTuple):
    """One shape: its class name, geometry and fill.

    ``params`` by ``kind`` (all in pixels, angles in radians):

    * ``"disc"``: ``(cy, cx, radius)``
    * ``"ring"``: ``(cy, cx, outer_radius, inner_radius)``
    * ``"rectangle"``: ``(cy, cx, half_height, half_width, angle)``
    * ``"triangle"``: ``(y0, x0, y1, x1, y2, x2)``
    * ``"bar"``: ``(y0, x0, y1, x1, width)``, a segment thickened to ``width`` (round ends)

    The fill is ``colour + tint * texture`` where ``texture`` is a per-image field in [-1, 1].

    >>> Shape("disc", (8.0, 8.0, 3.0)).label
    1
    """

    kind: str
    params: tuple[float, ...]
    colour: tuple[float, float, float] = (255.0, 255.0, 255.0)
    tint: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def label(self) -> int:
        return CLASS_NAMES.index(self.kind)


# ---------------------------------------------------------------------------------------------
# Geometry: each function tests pixel centres ``y`` (rows) and ``x`` (columns) given as open
# grids, so a mask costs one pass over the shape's bounding box only.


def _disc(y: np.ndarray, x: np.ndarray, cy: float, cx: float, r: float) -> np.ndarray:
    return (y - cy) ** 2 + (x - cx) ** 2 <= r * r


def _ring(y, x, cy: float, cx: float, r_out: float, r_in: float) -> np.ndarray:
    d2 = (y - cy) ** 2 + (x - cx) ** 2
    return (d2 <= r_out * r_out) & (d2 > r_in * r_in)


def _rectangle(y, x, cy: float, cx: float, hh: float, hw: float, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    dy, dx = y - cy, x - cx
    return (np.abs(dy * c + dx * s) <= hh) & (np.abs(dx * c - dy * s) <= hw)


def _triangle(y, x, y0: float, x0: float, y1: float, x1: float, y2: float, x2: float):
    # Inside means on the same side of all three edges, whichever the winding.
    edges = [
        (x - xa) * (yb - ya) - (y - ya) * (xb - xa)
        for (ya, xa), (yb, xb) in (((y0, x0), (y1, x1)), ((y1, x1), (y2, x2)), ((y2, x2), (y0, x0)))
    ]
    return ((edges[0] >= 0) & (edges[1] >= 0) & (edges[2] >= 0)) | (
        (edges[0] <= 0) & (edges[1] <= 0) & (edges[2] <= 0)
    )


def _bar(y, x, y0: float, x0: float, y1: float, x1: float, width: float) -> np.ndarray:
    dy, dx = y1 - y0, x1 - x0
    length2 = dy * dy + dx * dx
    if length2 == 0.0:
        return _disc(y, x, y0, x0, width / 2)
    t = np.clip(((y - y0) * dy + (x - x0) * dx) / length2, 0.0, 1.0)
    return (y - y0 - t * dy) ** 2 + (x - x0 - t * dx) ** 2 <= (width / 2) ** 2


_MASKS: dict[str, Callable[..., np.ndarray]] = {
    "disc": _disc,
    "ring": _ring,
    "rectangle": _rectangle,
    "triangle": _triangle,
    "bar": _bar,
}


def _extent(shape: Shape) -> tuple[float, float, float, float]:
    """A box ``(y_min, y_max, x_min, x_max)`` that contains the shape."""
    p = shape.params
    if shape.kind in ("disc", "ring"):
        return p[0] - p[2], p[0] + p[2], p[1] - p[2], p[1] + p[2]
    if shape.kind == "rectangle":
        r = math.hypot(p[2], p[3])
        return p[0] - r, p[0] + r, p[1] - r, p[1] + r
    if shape.kind == "triangle":
        return min(p[0::2]), max(p[0::2]), min(p[1::2]), max(p[1::2])
    if shape.kind == "bar":
        h = p[4] / 2
        return min(p[0], p[2]) - h, max(p[0], p[2]) + h, min(p[1], p[3]) - h, max(p[1], p[3]) + h
    raise ValueError(f"unknown shape kind {shape.kind!r}; expected one of {CLASS_NAMES[1:]}")


def _box(shape: Shape, height: int, width: int) -> tuple[slice, slice, np.ndarray] | None:
    """The shape's pixel box clipped to the image and its mask there; None when off-image."""
    y_min, y_max, x_min, x_max = _extent(shape)
    i0, i1 = max(0, math.floor(y_min)), min(height, math.ceil(y_max) + 1)
    j0, j1 = max(0, math.floor(x_min)), min(width, math.ceil(x_max) + 1)
    if i0 >= i1 or j0 >= j1:
        return None
    y = np.arange(i0, i1, dtype=np.float64)[:, None] + 0.5
    x = np.arange(j0, j1, dtype=np.float64)[None, :] + 0.5
    mask = _MASKS[shape.kind](y, x, *shape.params)
    return slice(i0, i1), slice(j0, j1), mask


def shape_mask(shape: Shape, height: int, width: int) -> np.ndarray:
    """The pixels of an ``height x width`` image whose centres lie inside ``shape``.

    >>> int(shape_mask(Shape("rectangle", (5.0, 5.0, 2.0, 3.0, 0.0)), 10, 10).sum())  # 4x6
    24
    """
    mask = np.zeros((height, width), bool)
    box = _box(shape, height, width)
    if box is not None:
        rows, cols, inside = box
        mask[rows, cols] = inside
    return mask


# ---------------------------------------------------------------------------------------------
# Painting


def render_shapes(
    shapes: Sequence[Shape],
    height: int,
    width: int,
    background: np.ndarray | None = None,
    texture: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Paint ``shapes`` in order; return the float32 image ``[H,W,3]`` and uint8 labels ``[H,W]``.

    ``background`` (float ``[H,W,3]``, default black) is the canvas; ``texture`` (float
    ``[H,W]``, default 0) modulates each shape's fill by its ``tint``. A later shape covers
    earlier ones, in the image and in the labels.

    >>> disc, bar = Shape("disc", (5.0, 5.0, 4.0)), Shape("bar", (5.5, 0.0, 5.5, 10.0, 1.0))
    >>> render_shapes([disc, bar], 10, 10)[1][3:8, 3:8]
    array([[1, 1, 1, 1, 1],
           [1, 1, 1, 1, 1],
           [5, 5, 5, 5, 5],
           [1, 1, 1, 1, 1],
           [1, 1, 1, 1, 1]], dtype=uint8)
    """
    if background is None:
        image = np.zeros((height, width, 3), np.float32)
    else:
        image = np.array(background, np.float32, copy=True)
    if image.shape != (height, width, 3):
        raise ValueError(f"background must be [{height},{width},3], got {image.shape}")
    label = np.zeros((height, width), np.uint8)
    for shape in shapes:
        box = _box(shape, height, width)
        if box is None:
            continue
        rows, cols, mask = box
        fill = np.asarray(shape.colour, np.float32)
        if texture is not None:
            fill = fill + texture[rows, cols, None] * np.asarray(shape.tint, np.float32)
        image[rows, cols] = np.where(mask[..., None], fill, image[rows, cols])
        label[rows, cols] = np.where(mask, np.uint8(shape.label), label[rows, cols])
    return image, label


def _waves(
    rng: np.random.Generator, height: int, width: int, count: int, cycles: tuple[float, float]
) -> np.ndarray:
    """``count`` plane waves ``[count,H,W]`` of ``cycles`` periods per shorter image side."""
    side = min(height, width)
    freq = rng.uniform(*cycles, count) / side
    angle = rng.uniform(0.0, 2 * math.pi, count)
    phase = rng.uniform(0.0, 2 * math.pi, count)
    y = (np.arange(height, dtype=np.float32) + 0.5)[None, :, None]
    x = (np.arange(width, dtype=np.float32) + 0.5)[None, None, :]
    fy = (2 * math.pi * freq * np.sin(angle)).astype(np.float32)[:, None, None]
    fx = (2 * math.pi * freq * np.cos(angle)).astype(np.float32)[:, None, None]
    return np.sin(fy * y + fx * x + phase.astype(np.float32)[:, None, None])


def _background(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A smooth colour texture ``[H,W,3]`` and its base colour."""
    base = rng.uniform(0.0, 255.0, 3)
    waves = _waves(rng, height, width, 3, (0.5, 3.0))
    # Each wave shifts colour along its own RGB direction, so the texture is not just
    # brighter/darker but varies in hue too, like the shapes' colours do.
    amplitudes = rng.normal(0.0, 1.0, (3, 3)) * rng.uniform(5.0, 20.0, (3, 1))
    texture = np.tensordot(waves, amplitudes.astype(np.float32), axes=(0, 0))
    return texture + base.astype(np.float32), base


def _texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """The shapes' fill texture ``[H,W]`` in [-1, 1], finer than the background's."""
    return _waves(rng, height, width, 2, (2.0, 8.0)).mean(axis=0)


def _colour(rng: np.random.Generator, used: list[np.ndarray]) -> np.ndarray:
    """A random colour at least ``_MIN_CONTRAST`` from ``used``, else the farthest candidate.

    A fixed batch of candidates (not a loop until success) keeps the number of draws, and so
    the rest of the sample, independent of how crowded the colour cube is.
    """
    candidates = rng.uniform(0.0, 255.0, (_COLOUR_CANDIDATES, 3))
    distance = np.linalg.norm(candidates[:, None] - np.asarray(used)[None], axis=-1).min(axis=1)
    ok = np.flatnonzero(distance >= _MIN_CONTRAST)
    return candidates[ok[0] if ok.size else int(distance.argmax())]


def _geometry(
    rng: np.random.Generator, kind: str, height: int, width: int, bar_width: tuple[float, float]
) -> tuple[float, ...]:
    side = min(height, width)
    # Centres may fall a little outside the image so shapes get cut by its border.
    cy, cx = rng.uniform(-0.1, 1.1) * height, rng.uniform(-0.1, 1.1) * width
    if kind == "disc":
        return cy, cx, rng.uniform(0.08, 0.25) * side
    if kind == "ring":
        r_out = rng.uniform(0.12, 0.3) * side
        return cy, cx, r_out, r_out * rng.uniform(0.3, 0.6)
    if kind == "rectangle":
        half = rng.uniform(0.06, 0.25, 2) * side
        return cy, cx, half[0], half[1], rng.uniform(0.0, math.pi)
    if kind == "triangle":
        # Gaps between vertex angles around the centre stay near 120 degrees, so no triangle
        # is a sliver that would pass for a bar.
        gaps = rng.uniform(0.7, 1.3, 2) * (2 * math.pi / 3)
        angles = rng.uniform(0.0, 2 * math.pi) + np.array([0.0, gaps[0], gaps[0] + gaps[1]])
        radius = rng.uniform(0.15, 0.35) * side
        vertices = np.stack([cy + radius * np.sin(angles), cx + radius * np.cos(angles)], 1)
        return tuple(float(v) for v in vertices.ravel())
    if kind == "bar":
        half = rng.uniform(0.25, 0.6) * side
        angle = rng.uniform(0.0, math.pi)
        dy, dx = half * math.sin(angle), half * math.cos(angle)
        return cy - dy, cx - dx, cy + dy, cx + dx, rng.uniform(*bar_width)
    raise ValueError(f"unknown shape kind {kind!r}")


def random_shapes(
    rng: np.random.Generator,
    height: int,
    width: int,
    bar_width: tuple[float, float] = BAR_WIDTH,
    avoid: Sequence[np.ndarray] = (),
) -> list[Shape]:
    """Draw 2-6 shapes and 0-3 bars, in random painting order.

    Sizes scale with the shorter image side, bar widths (pixels) come from ``bar_width``;
    colours keep their distance from each other and from the colours in ``avoid``.

    >>> shapes = random_shapes(np.random.default_rng(0), 64, 64)
    >>> {s.kind for s in shapes} <= set(CLASS_NAMES[1:]), 2 <= len(shapes) <= 9
    (True, True)
    """
    kinds = list(rng.choice(_BLOB_KINDS, rng.integers(_NUM_BLOBS[0], _NUM_BLOBS[1] + 1)))
    kinds += ["bar"] * int(rng.integers(_NUM_BARS[0], _NUM_BARS[1] + 1))
    rng.shuffle(kinds)
    used = [np.asarray(c, np.float64) for c in avoid] or [np.full(3, np.inf)]
    shapes = []
    for kind in kinds:
        params = tuple(float(p) for p in _geometry(rng, str(kind), height, width, bar_width))
        colour = _colour(rng, used)
        used.append(colour)
        tint = rng.normal(0.0, 1.0, 3) * rng.uniform(0.0, 15.0)
        shapes.append(Shape(str(kind), params, _triple(colour), _triple(tint)))
    return shapes


def _triple(values: np.ndarray) -> tuple[float, float, float]:
    return float(values[0]), float(values[1]), float(values[2])


def _check_size(height: int, width: int) -> None:
    if height < 1 or width < 1:
        raise ValueError(f"image size must be at least 1x1, got {height}x{width}")


def render(
    seed: int,
    height: int = 128,
    width: int = 128,
    *,
    bar_width: tuple[float, float] = BAR_WIDTH,
    noise: tuple[float, float] = NOISE_SIGMA,
) -> tuple[np.ndarray, np.ndarray]:
    """One sample: uint8 RGB image ``[H,W,3]`` and uint8 label map ``[H,W]``.

    A pure function of its arguments: the same seed gives the same arrays on any machine
    with the same NumPy. ``bar_width`` is the range of bar widths in pixels; ``noise`` the
    range of the per-image standard deviation of the Gaussian pixel noise.

    >>> image, label = render(0, 7, 13)
    >>> image.shape, label.shape
    ((7, 13, 3), (7, 13))
    """
    _check_size(height, width)
    rng = np.random.default_rng(seed)
    background, base = _background(rng, height, width)
    texture = _texture(rng, height, width)
    shapes = random_shapes(rng, height, width, bar_width, avoid=[base])
    image, label = render_shapes(shapes, height, width, background, texture)
    sigma = np.float32(rng.uniform(*noise))
    image += sigma * rng.standard_normal((height, width, 3), dtype=np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), label


# ---------------------------------------------------------------------------------------------
# Splits and sources

Size = int | tuple[int, int]


def sample_seed(split: str, index: int, seed: int = 0) -> int:
    """The render seed of sample ``index`` of ``split``: distinct for every (seed, split, index).

    >>> sample_seed("train", 0) != sample_seed("val", 0)
    True
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not 0 <= index < 2**_INDEX_BITS or seed < 0:
        raise ValueError(f"need 0 <= index < 2**{_INDEX_BITS} and seed >= 0, got {index}, {seed}")
    # An injective packing, so splits can never share a sample; default_rng hashes the
    # integer through SeedSequence, so neighbouring seeds still give unrelated streams.
    return ((seed * len(SPLITS) + SPLITS.index(split)) << _INDEX_BITS) | index


def _size_range(name: str, value: Size) -> tuple[int, int]:
    """``(low, high)`` of an image side given as a size or an inclusive range."""
    try:
        low, high = (value, value) if np.ndim(value) == 0 else value
        low, high = operator.index(low), operator.index(high)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an int or a (low, high) pair, got {value!r}") from None
    if not 1 <= low <= high:
        raise ValueError(f"{name} must satisfy 1 <= low <= high, got {value!r}")
    return low, high


def sample_size(
    split: str, index: int, height: Size, width: Size, seed: int = 0
) -> tuple[int, int]:
    """The image size of a sample; a ``(low, high)`` range draws it (inclusive) per sample.

    >>> sample_size("train", 3, 128, 96)
    (128, 96)
    >>> 64 <= sample_size("train", 3, (64, 80), 96)[0] <= 80
    True
    """
    ranges = _size_range("height", height), _size_range("width", width)
    if all(low == high for low, high in ranges):
        return ranges[0][0], ranges[1][0]
    # A stream apart from the render's, so the size does not shift the sample's content draws.
    rng = np.random.default_rng([sample_seed(split, index, seed), 1])
    h, w = (int(rng.integers(low, high + 1)) for low, high in ranges)
    return h, w


def samples(
    split: str = "train",
    count: int | None = None,
    height: Size = 128,
    width: Size = 128,
    seed: int = 0,
    **options,
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """``(filename, image, label)`` for samples ``0, 1, ...`` of ``split`` (forever if no count).

    ``options`` go to :func:`render`.

    >>> name, image, label = next(samples("val", 1, 32, 48))
    >>> name, image.shape
    ('shapes_val_000000', (32, 48, 3))
    """
    index = 0
    while count is None or index < count:
        h, w = sample_size(split, index, height, width, seed)
        image, label = render(sample_seed(split, index, seed), h, w, **options)
        yield f"shapes_{split}_{index:06d}", image, label
        index += 1


def dataset(
    split: str = "train",
    count: int | None = None,
    height: Size = 128,
    width: Size = 128,
    seed: int = 0,
    **options,
) -> tf.data.Dataset:
    """A ``tf.data.Dataset`` of ``(image uint8 [H,W,3], label uint8 [H,W])``, made on the fly.

    Element ``i`` equals ``render(sample_seed(split, i, seed), ...)``; ``count=None`` is
    infinite. Fixed ``height``/``width`` give static shapes; ``(low, high)`` ranges give
    per-sample sizes (dynamic shapes, so batch them with padding or crops). ``options`` go to
    :func:`render`.

    >>> ds = dataset("val", count=2, height=32, width=40)
    >>> ds.element_spec[0].shape, int(ds.cardinality())
    (TensorShape([32, 40, 3]), 2)
    """
    import tensorflow as tf

    # Bad arguments fail here, not later inside the pipeline.
    (h_low, h_high), (w_low, w_high) = _size_range("height", height), _size_range("width", width)
    sample_seed(split, 0, seed)
    inspect.signature(render).bind(0, 1, 1, **options)
    static_shape = (h_low if h_low == h_high else None, w_low if w_low == w_high else None)

    def make(index: np.int64) -> tuple[np.ndarray, np.ndarray]:
        h, w = sample_size(split, int(index), height, width, seed)
        return render(sample_seed(split, int(index), seed), h, w, **options)

    def load(index):
        image, label = tf.numpy_function(make, [index], (tf.uint8, tf.uint8), stateful=False)
        image.set_shape((*static_shape, 3))
        label.set_shape(static_shape)
        return image, label

    indices = tf.data.Dataset.counter() if count is None else tf.data.Dataset.range(count)
    return indices.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
