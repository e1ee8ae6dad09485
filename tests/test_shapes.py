"""Tests for fcn_tf.data.shapes, the built-in synthetic segmentation data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from fcn_tf.data.shapes import (
    BAR_WIDTH,
    CLASS_NAMES,
    NUM_CLASSES,
    SPLITS,
    Shape,
    dataset,
    render,
    render_shapes,
    sample_seed,
    sample_size,
    samples,
    shape_mask,
)

BAR = CLASS_NAMES.index("bar")


def _erode(mask: np.ndarray, side: int) -> np.ndarray:
    """Top-left corners of the ``side x side`` squares that lie wholly inside ``mask``."""
    if min(mask.shape) < side:
        return np.zeros((0, 0), bool)
    return np.lib.stride_tricks.sliding_window_view(mask, (side, side)).all(axis=(-2, -1))


def _labels(split: str, count: int, size: int = 128, **options) -> np.ndarray:
    return np.stack([render(sample_seed(split, i), size, size, **options)[1] for i in range(count)])


# Determinism and splits -----------------------------------------------------------------------


def test_same_seed_same_sample_other_seed_other_sample():
    image, label = render(123, 64, 80)
    again = render(123, 64, 80)
    other = render(124, 64, 80)
    np.testing.assert_array_equal(image, again[0])
    np.testing.assert_array_equal(label, again[1])
    assert not np.array_equal(image, other[0])
    assert not np.array_equal(label, other[1])


def test_splits_and_seeds_never_share_samples():
    seeds = [sample_seed(split, i, s) for s in (0, 1) for split in SPLITS for i in range(2000)]
    assert len(set(seeds)) == len(seeds)
    first = {split: render(sample_seed(split, 0), 32, 32)[0] for split in SPLITS}
    assert not np.array_equal(first["train"], first["val"])
    assert not np.array_equal(first["val"], first["test"])


@pytest.mark.parametrize(
    "args", [("dev", 0, 0), ("train", -1, 0), ("train", 2**40, 0), ("train", 0, -1)]
)
def test_sample_seed_rejects_bad_arguments(args):
    with pytest.raises(ValueError):
        sample_seed(*args)


# Sizes ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(1, 1), (7, 13), (13, 7), (2, 300), (128, 128), (375, 500)])
def test_any_size(size):
    for seed in range(3):
        image, label = render(seed, *size)
        assert image.shape == (*size, 3) and image.dtype == np.uint8
        assert label.shape == size and label.dtype == np.uint8
        assert label.max() < NUM_CLASSES


@pytest.mark.parametrize("size", [(0, 5), (5, 0)])
def test_empty_size_is_an_error(size):
    with pytest.raises(ValueError):
        render(0, *size)


def test_sizes_drawn_per_sample_stay_in_range():
    sizes = {sample_size("train", i, (20, 30), (40, 41)) for i in range(100)}
    assert {h for h, _ in sizes} == set(range(20, 31))
    assert {w for _, w in sizes} == {40, 41}
    assert sample_size("val", 5, (20, 30), 40) == sample_size("val", 5, (20, 30), 40)


@pytest.mark.parametrize("height", [(30, 20), (0, 4), 2.5, (1, 2, 3)])
def test_bad_size_ranges_are_errors(height):
    with pytest.raises(ValueError):
        sample_size("train", 0, height, 10)


# Content ----------------------------------------------------------------------------------------


def test_every_class_appears():
    labels = _labels("train", 50)
    counts = np.bincount(labels.ravel(), minlength=NUM_CLASSES)
    assert counts.size == NUM_CLASSES, "labels outside [0, NUM_CLASSES)"
    frequency = counts / counts.sum()
    assert (frequency > 0.01).all(), frequency
    assert frequency[0] < 0.85, "mostly background: too little to learn from"


def test_colour_alone_does_not_tell_the_class():
    # Two per-pixel colour classifiers fitted on training pixels, scored on validation pixels
    # by mean class accuracy (chance is 1/6): both stay near chance, so the task needs shape.
    def pixels(split, count):
        pairs = [render(sample_seed(split, i), 96, 96) for i in range(count)]
        return (
            np.concatenate([im.reshape(-1, 3) for im, _ in pairs]).astype(np.float64),
            np.concatenate([lb.ravel() for _, lb in pairs]),
        )

    def mean_class_accuracy(predicted):
        return np.mean([(predicted[y_val == c] == c).mean() for c in range(NUM_CLASSES)])

    x_train, y_train = pixels("train", 40)
    x_val, y_val = pixels("val", 20)
    means = np.stack([x_train[y_train == c].mean(axis=0) for c in range(NUM_CLASSES)])
    nearest_mean = ((x_val[:, None] - means[None]) ** 2).sum(-1).argmin(axis=1)
    assert mean_class_accuracy(nearest_mean) < 0.3

    def bins(x):  # 16 levels per channel
        return (x // 16).astype(int) @ np.array([256, 16, 1])

    histogram = np.full((NUM_CLASSES, 16**3), 0.5)
    np.add.at(histogram, (y_train, bins(x_train)), 1)
    likelihood = histogram / histogram.sum(axis=1, keepdims=True)
    assert mean_class_accuracy(likelihood[:, bins(x_val)].argmax(axis=0)) < 0.3


def test_bars_are_thin_and_other_shapes_are_not():
    labels = _labels("train", 40)
    width = math.floor(BAR_WIDTH[1]) + 2  # more pixel centres than any bar has across
    surviving = {}
    for c in (1, 2, BAR):
        masks = labels == c
        inside = sum(int(_erode(m, width).sum()) for m in masks)
        surviving[CLASS_NAMES[c]] = inside / masks.sum()
    # Squares fit inside bars only where two bars cross or run side by side.
    assert surviving["bar"] < 0.05, surviving
    assert surviving["disc"] > 0.3 and surviving["rectangle"] > 0.3, surviving


def test_bar_width_option():
    labels = _labels("val", 20, bar_width=(1.0, 2.0))
    assert (labels == BAR).any()
    assert sum(int(_erode(m, 4).sum()) for m in labels == BAR) < 0.05 * (labels == BAR).sum()


def test_image_shows_the_shapes():
    # Colour changes across shape edges far more than within regions, or nothing is learnable.
    image, label = render(sample_seed("val", 3), 128, 128)
    image = image.astype(np.float64)
    step = np.abs(np.diff(image, axis=1)).sum(-1)
    edge = np.diff(label.astype(int), axis=1) != 0
    assert np.median(step[edge]) > 3 * np.median(step[~edge])


# Geometry against closed forms ------------------------------------------------------------------

HEIGHT, WIDTH = 90, 120  # not square, so swapped axes show


def _centroid(mask: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero(mask)
    return np.array([rows.mean(), cols.mean()]) + 0.5


def _check(shape: Shape, area: float, centroid: tuple[float, float], tolerance: float = 0.03):
    mask = shape_mask(shape, HEIGHT, WIDTH)
    assert mask.sum() == pytest.approx(area, rel=tolerance)
    np.testing.assert_allclose(_centroid(mask), centroid, atol=0.5)


@pytest.mark.parametrize("radius", [6.0, 15.3, 30.0])
def test_disc_area(radius):
    _check(Shape("disc", (40.2, 61.7, radius)), math.pi * radius**2, (40.2, 61.7))


def test_ring_area():
    outer, inner = 32.0, 19.5
    _check(Shape("ring", (44.0, 58.4, outer, inner)), math.pi * (outer**2 - inner**2), (44, 58.4))


@pytest.mark.parametrize("angle", [0.0, 0.4, math.pi / 2, 2.5])
def test_rectangle_area_and_extent(angle):
    rectangle = Shape("rectangle", (45.0, 60.0, 12.0, 25.0, angle))
    _check(rectangle, 4 * 12 * 25, (45.0, 60.0))
    rows, cols = np.nonzero(shape_mask(rectangle, HEIGHT, WIDTH))
    c, s = abs(math.cos(angle)), abs(math.sin(angle))
    assert np.ptp(rows) + 1 == pytest.approx(2 * (12 * c + 25 * s), abs=2.5)
    assert np.ptp(cols) + 1 == pytest.approx(2 * (12 * s + 25 * c), abs=2.5)


@pytest.mark.parametrize(
    "vertices",
    [(10.0, 15.0, 80.0, 40.0, 30.0, 110.0), (5.5, 100.0, 70.2, 95.0, 40.0, 8.0)],
)
def test_triangle_area_both_windings(vertices):
    ys, xs = np.array(vertices[0::2]), np.array(vertices[1::2])
    shoelace = abs(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1))) / 2
    centroid = (ys.mean(), xs.mean())
    _check(Shape("triangle", vertices), shoelace, centroid)
    reversed_winding = tuple(np.stack([ys[::-1], xs[::-1]], 1).ravel())
    _check(Shape("triangle", reversed_winding), shoelace, centroid)


def _bar(angle: float, width: float, length: float = 70.0) -> Shape:
    dy, dx = length / 2 * math.sin(angle), length / 2 * math.cos(angle)
    return Shape("bar", (45.0 - dy, 60.0 - dx, 45.0 + dy, 60.0 + dx, width))


@pytest.mark.parametrize("angle", [0.3, 1.0, 2.2])
@pytest.mark.parametrize("width", [1.0, 2.5, 4.0, 8.0])
def test_bar_area_and_width(angle, width):
    capsule = width * 70.0 + math.pi * (width / 2) ** 2
    # Oblique thin bars average the rounding over many rows, still coarsely when 1 px wide.
    _check(_bar(angle, width), capsule, (45.0, 60.0), tolerance=0.15 if width < 2 else 0.05)
    assert not _erode(shape_mask(_bar(angle, width), HEIGHT, WIDTH), math.floor(width) + 2).any()


@pytest.mark.parametrize("width", [1.0, 2.5, 4.0, 8.0])
def test_axis_aligned_bar_cross_section(width):
    # Along an axis every row (column) rounds the same way: floor(width) or one more pixels.
    for angle, axis in ((0.0, 0), (math.pi / 2, 1)):
        mask = shape_mask(_bar(angle, width), HEIGHT, WIDTH)
        across = mask.sum(axis=axis)
        assert set(across[across > 0][3:-3].tolist()) <= {math.floor(width), math.floor(width) + 1}


def test_shapes_are_clipped_at_the_border():
    half_disc = shape_mask(Shape("disc", (45.0, 0.0, 20.0)), HEIGHT, WIDTH)
    assert half_disc.sum() == pytest.approx(math.pi * 20**2 / 2, rel=0.03)
    assert not shape_mask(Shape("disc", (-30.0, -30.0, 20.0)), HEIGHT, WIDTH).any()


def test_unknown_kind_is_an_error():
    with pytest.raises(ValueError, match="kind"):
        shape_mask(Shape("star", (1.0, 1.0, 1.0)), 4, 4)


def test_later_shapes_occlude_earlier_ones():
    disc = Shape("disc", (40.0, 50.0, 20.0), colour=(200.0, 0.0, 0.0))
    square = Shape("rectangle", (40.0, 70.0, 15.0, 15.0, 0.0), colour=(0.0, 0.0, 200.0))
    overlap = shape_mask(disc, HEIGHT, WIDTH) & shape_mask(square, HEIGHT, WIDTH)
    assert overlap.sum() > 100
    for order in ([disc, square], [square, disc]):
        image, label = render_shapes(order, HEIGHT, WIDTH)
        assert (label[overlap] == order[-1].label).all()
        assert (image[overlap] == order[-1].colour).all()
        only_first = shape_mask(order[0], HEIGHT, WIDTH) & ~overlap
        assert (label[only_first] == order[0].label).all()


# Sources ----------------------------------------------------------------------------------------


def test_dataset_yields_render_output_with_static_shapes():
    ds = dataset("val", count=3, height=40, width=56, seed=2)
    assert ds.element_spec[0].shape == (40, 56, 3) and ds.element_spec[0].dtype == tf.uint8
    assert ds.element_spec[1].shape == (40, 56) and ds.element_spec[1].dtype == tf.uint8
    elements = list(ds.as_numpy_iterator())
    assert len(elements) == 3
    for index, (image, label) in enumerate(elements):
        expected = render(sample_seed("val", index, seed=2), 40, 56)
        np.testing.assert_array_equal(image, expected[0])
        np.testing.assert_array_equal(label, expected[1])


def test_dataset_with_sizes_matches_samples():
    ds = dataset("train", count=4, height=(24, 40), width=32)
    assert ds.element_spec[0].shape.as_list() == [None, 32, 3]
    assert ds.element_spec[1].shape.as_list() == [None, 32]
    from_iterator = list(samples("train", 4, (24, 40), 32))
    assert [name for name, _, _ in from_iterator] == [f"shapes_train_{i:06d}" for i in range(4)]
    for (image, label), (_, expected_image, expected_label) in zip(
        ds.as_numpy_iterator(), from_iterator, strict=True
    ):
        np.testing.assert_array_equal(image, expected_image)
        np.testing.assert_array_equal(label, expected_label)


def test_infinite_dataset():
    ds = dataset(height=16, width=16)
    assert ds.cardinality() == tf.data.INFINITE_CARDINALITY
    assert len(list(ds.take(3).as_numpy_iterator())) == 3


def test_dataset_checks_arguments_eagerly():
    with pytest.raises(ValueError):
        dataset("dev")
    with pytest.raises(ValueError):
        dataset(height=(10, 5))
    with pytest.raises(TypeError, match="nosie"):  # a misspelt render option
        dataset("val", count=2, height=16, width=16, nosie=(0.0, 1.0))


def test_the_converter_passes_render_options_on(tmp_path):
    from fcn_tf.data.convert import convert
    from fcn_tf.data.pipeline import load

    convert("synthetic", str(tmp_path), "val", count=2, height=20, width=24, verbose=False,
            noise=(0.0, 0.0), bar_width=(1.0, 2.0))  # fmt: skip
    stored = [image.numpy()[0] for image, _ in load(tmp_path, training=False, image_dtype="uint8")]
    for index, image in enumerate(stored):
        seed = sample_seed("val", index)
        np.testing.assert_array_equal(
            image, render(seed, 20, 24, noise=(0, 0), bar_width=(1, 2))[0]
        )
        assert not np.array_equal(image, render(seed, 20, 24)[0])
