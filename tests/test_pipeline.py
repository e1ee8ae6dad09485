"""The tf.data input pipeline: augmentation keeps images and labels aligned, shapes, sharding,
determinism, and corrupt records (framing/CRC and content) both raised and skipped."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from fcn_tf.data.pipeline import CorruptRecordCounter, list_files, load
from fcn_tf.data.records import Sample, encode_example
from fcn_tf.data.salvage import masked_crc32c, salvage_records

# Class c is drawn in PALETTE[c]. In the (R, G) plane the colours lie on a concave parabola, so
# none is a convex combination of the others: a bilinearly resampled pixel within 1 of a palette
# colour got more than 3/4 of its weight from that class, hence its nearest-neighbour source
# pixel (the largest weight) has that class too. That makes the alignment check below exact.
PALETTE = np.array([[20 + 50 * c, 250 - 15 * c * c, 60 + 25 * c] for c in range(5)], np.float32)
PAD = (1.0, 2.0, 3.0)


def block_sample(rng, name: str, height: int = 40, width: int = 56, block: int = 4) -> Sample:
    """Random classes in ``block`` x ``block`` cells; the image is the label's palette colours."""
    cells = rng.integers(0, len(PALETTE), (height // block + 1, width // block + 1))
    label = np.kron(cells, np.ones((block, block), np.int64))[:height, :width].astype(np.uint8)
    return Sample(name, PALETTE[label].astype(np.uint8), label)


def id_sample(i: int, height: int = 6, width: int = 7) -> Sample:
    """A record whose every pixel carries its id, so outputs can be traced back to it."""
    return Sample(f"{i}.png", np.full((height, width, 3), i, np.uint8), np.full((height, width), i))


def write(path, samples) -> list[bytes]:
    records = [encode_example(s, *np.asarray(s.label).shape) for s in samples]
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)
    return records


def check_aligned(image: np.ndarray, label: np.ndarray, pad=PAD) -> float:
    """Assert that every pixel whose colour identifies a class (or the padding) carries that
    label; returns the share of pixels so checked."""
    colours = np.concatenate([PALETTE, np.array([pad], np.float32)])
    classes = np.array([*range(len(PALETTE)), 255])
    distance = np.abs(image[..., None, :] - colours).max(-1)
    near = distance.min(-1) < 1.0
    np.testing.assert_array_equal(label[near], classes[distance.argmin(-1)][near])
    assert set(np.unique(label)) <= set(classes.tolist())
    return float(near.mean())


def ids(dataset) -> list[int]:
    return [int(v) for images, _ in dataset for v in images[:, 0, 0, 0].numpy()]


@pytest.fixture
def blocks(tmp_path, rng):
    path = tmp_path / "blocks.tfrecord"
    write(path, [block_sample(rng, f"{i}.png") for i in range(4)])
    return path


# --- augmentation -----------------------------------------------------------------------------


def test_mirror_crop_and_pad_keep_every_pixel_aligned(blocks):
    dataset = load(
        blocks,
        training=True,
        batch_size=4,
        crop_size=(48, 40),
        scale_range=None,
        seed=1,
        pad_value=PAD,
        repeat=True,
    )
    for images, labels in dataset.take(3):
        for image, label in zip(images.numpy(), labels.numpy(), strict=True):
            assert check_aligned(image, label) == 1.0  # no resampling: every pixel exact


def test_random_scale_keeps_labels_aligned_and_respects_the_range(blocks):
    low, high = 0.5, 2.0
    dataset = load(blocks, training=True, scale_range=(low, high), seed=2, repeat=True)
    heights = []
    for images, labels in dataset.take(40):
        image, label = images[0].numpy(), labels[0].numpy()
        assert label.shape == image.shape[:2]
        height, width = label.shape
        scale = height / 40
        assert low - 0.5 / 40 <= scale <= high + 0.5 / 40
        assert abs(width - round(56 * scale)) <= 1  # one scale for both axes
        assert check_aligned(image, label, pad=(-99, -99, -99)) > 0.5
        heights.append(height)
    assert min(heights) < 0.7 * 40 and max(heights) > 1.7 * 40


def test_scale_and_crop_together_stay_aligned(blocks):
    dataset = load(
        blocks,
        training=True,
        batch_size=2,
        crop_size=32,
        scale_range=(0.6, 1.6),
        seed=3,
        pad_value=PAD,
        repeat=True,
    )
    for images, labels in dataset.take(8):
        for image, label in zip(images.numpy(), labels.numpy(), strict=True):
            assert check_aligned(image, label) > 0.5


def test_mirror_happens_about_half_the_time(tmp_path, rng):
    sample = block_sample(rng, "a.png", 8, 8, block=2)
    write(tmp_path / "a.tfrecord", [sample])
    dataset = load(tmp_path / "a.tfrecord", training=True, scale_range=None, seed=4, repeat=True)
    image, label = sample.image.astype(np.float32), sample.label.astype(np.int32)
    flips = 0
    for images, labels in dataset.take(200):
        flipped = not np.array_equal(images[0], image)
        if flipped:
            np.testing.assert_array_equal(images[0], image[:, ::-1])
        np.testing.assert_array_equal(labels[0], label[:, ::-1] if flipped else label)
        flips += flipped
    assert 70 <= flips <= 130


def test_padding_uses_the_ignore_label_and_pad_value(blocks):
    dataset = load(
        blocks,
        training=True,
        batch_size=4,
        crop_size=(64, 80),
        scale_range=None,
        mirror=False,
        ignore_label=255,
        pad_value=PAD,
        seed=5,
    )
    images, labels = next(iter(dataset))
    for image, label in zip(images.numpy(), labels.numpy(), strict=True):
        padded = label == 255
        assert padded.sum() == 64 * 80 - 40 * 56
        np.testing.assert_array_equal(image[padded], np.broadcast_to(PAD, (padded.sum(), 3)))
        rows, cols = np.nonzero(~padded)  # the image is one 40 x 56 rectangle
        assert (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) == (40, 56)


def test_jitter_changes_the_image_only(blocks):
    def first(**kwargs):
        kwargs = dict(training=True, batch_size=4, crop_size=32, seed=6) | kwargs
        images, labels = next(iter(load(blocks, **kwargs)))
        return images.numpy(), labels.numpy()

    plain_images, plain_labels = first()
    jittered_images, jittered_labels = first(jitter=True)
    np.testing.assert_array_equal(jittered_labels, plain_labels)
    assert not np.allclose(jittered_images, plain_images)
    assert jittered_images.min() >= 0 and jittered_images.max() <= 255
    np.testing.assert_array_equal(first(jitter=True)[0], jittered_images)  # reproducible
    layer = keras.layers.RandomBrightness(0.5, value_range=(0, 255), seed=0)
    keras_images, keras_labels = first(jitter=layer)
    np.testing.assert_array_equal(keras_labels, plain_labels)
    assert not np.allclose(keras_images, plain_images)


# --- shapes, modes, arguments -------------------------------------------------------------------


@pytest.mark.parametrize("image_dtype", ["float32", "uint8"])
def test_batch_shapes_and_dtypes(blocks, image_dtype):
    dataset = load(blocks, training=True, batch_size=3, crop_size=(24, 32), image_dtype=image_dtype)
    assert dataset.element_spec[0].shape.as_list() == [3, 24, 32, 3]
    assert dataset.element_spec[1].shape.as_list() == [3, 24, 32]
    batches = list(dataset)
    assert len(batches) == 1  # 4 records, the partial batch dropped when training
    images, labels = batches[0]
    assert images.dtype.name == image_dtype and labels.dtype == tf.int32


def test_whole_images_at_native_size(blocks):
    dataset = load(blocks, training=True, scale_range=None)
    assert dataset.element_spec[0].shape.as_list() == [1, None, None, 3]
    assert [tuple(labels.shape) for _, labels in dataset] == [(1, 40, 56)] * 4


def test_validation_returns_native_sizes_and_exact_pixels(tmp_path, rng):
    samples = [
        Sample(f"{i}.png", rng.integers(0, 256, (h, w, 3), np.uint8), rng.integers(0, 256, (h, w)))
        for i, (h, w) in enumerate([(7, 9), (12, 5), (3, 3)])
    ]
    write(tmp_path / "val.tfrecord", samples)
    outputs = list(load(tmp_path / "val.tfrecord", training=False))
    assert len(outputs) == 3
    for (images, labels), sample in zip(outputs, samples, strict=True):
        np.testing.assert_array_equal(images[0].numpy(), sample.image.astype(np.float32))
        np.testing.assert_array_equal(labels[0].numpy(), sample.label.astype(np.int32))
    # Fixed-size evaluation batches pad at the bottom right and never crop.
    images, labels = next(
        iter(
            load(
                tmp_path / "val.tfrecord",
                training=False,
                batch_size=3,
                crop_size=12,
                image_dtype="uint8",
            )
        )
    )
    np.testing.assert_array_equal(images[1, :12, :5], samples[1].image)
    assert (labels[1, :, 5:] == 255).numpy().all() and (images[1, :, 5:] == 0).numpy().all()
    too_small = load(tmp_path / "val.tfrecord", training=False, batch_size=2, crop_size=8)
    with pytest.raises(tf.errors.InvalidArgumentError, match="larger than crop_size"):
        list(too_small)


def test_arguments_are_checked(blocks, tmp_path):
    with pytest.raises(ValueError, match="needs a crop_size"):
        load(blocks, training=True, batch_size=2)
    with pytest.raises(ValueError, match="scale_range"):
        load(blocks, training=True, scale_range=(2.0, 1.0))
    with pytest.raises(ValueError, match="image_dtype"):
        load(blocks, training=True, image_dtype="float16")
    with pytest.raises(FileNotFoundError, match="missing"):
        load(tmp_path / "missing-*.tfrecord", training=True)


def test_list_files_expands_patterns_in_order(tmp_path):
    for name in ("b", "a", "c"):
        write(tmp_path / f"{name}.tfrecord", [id_sample(0)])
    assert [p.rsplit("/", 1)[1] for p in list_files(str(tmp_path / "*.tfrecord"))] == [
        "a.tfrecord",
        "b.tfrecord",
        "c.tfrecord",
    ]


def test_a_folder_stands_for_its_records_and_patterns_pass_over_metadata(tmp_path):
    # A converter's output folder: shards, dataset.json and a shard still being written.
    write(tmp_path / "val-00000-of-00002.tfrecord", [id_sample(i) for i in range(3)])
    write(tmp_path / "val-00001-of-00002.tfrecord", [id_sample(10 + i) for i in range(2)])
    (tmp_path / "dataset.json").write_text("{}")
    (tmp_path / "val-00000-of-00001.tfrecord.tmp").write_bytes(b"half")
    (tmp_path / "sub").mkdir()
    expected = [str(tmp_path / f"val-0000{i}-of-00002.tfrecord") for i in range(2)]
    assert list_files(tmp_path) == expected
    assert list_files(str(tmp_path / "*")) == expected
    assert ids(load(tmp_path, training=False)) == [0, 1, 2, 10, 11]
    with pytest.raises(FileNotFoundError, match="sub is a folder without"):
        list_files(tmp_path / "sub")


# --- order, determinism, sharding ------------------------------------------------------------


def test_same_seed_same_batches_other_seed_other_batches(blocks):
    def run(seed):
        dataset = load(blocks, training=True, batch_size=2, crop_size=24, seed=seed, jitter=0.5)
        return [[x.numpy() for x in batch] for _ in range(2) for batch in dataset]

    first, again, other = run(7), run(7), run(8)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(first, other, strict=True))
    # The two epochs of one run were augmented differently.
    assert not np.array_equal(first[0][0], first[2][0])


def test_training_shuffles_each_epoch_and_validation_keeps_order(tmp_path):
    write(tmp_path / "a.tfrecord", [id_sample(i) for i in range(12)])
    train = load(tmp_path / "a.tfrecord", training=True, scale_range=None, mirror=False, seed=0)
    epochs = [ids(train) for _ in range(2)]
    assert all(sorted(e) == list(range(12)) for e in epochs)
    assert epochs[0] != list(range(12)) and epochs[0] != epochs[1]
    assert ids(load(tmp_path / "a.tfrecord", training=False)) == list(range(12))


def test_evaluation_reads_files_one_after_the_other(tmp_path):
    for i in range(3):
        write(tmp_path / f"{i}.tfrecord", [id_sample(10 * i + j) for j in range(3)])
    files = list_files(str(tmp_path / "*.tfrecord"))
    assert ids(load(files, training=False)) == [0, 1, 2, 10, 11, 12, 20, 21, 22]


@pytest.mark.parametrize("files", [4, 1], ids=["by-files", "by-records"])
def test_input_context_gives_pipelines_disjoint_complete_parts(tmp_path, files):
    paths = [tmp_path / f"{i}.tfrecord" for i in range(files)]
    for i, path in enumerate(paths):
        write(path, [id_sample(10 * i + j) for j in range(12 // files)])
    parts = []
    for pipeline in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline)
        dataset = load(
            [str(p) for p in paths],
            training=True,
            scale_range=None,
            seed=pipeline,
            input_context=context,
        )
        parts.append(ids(dataset))
    every = sorted(10 * i + j for i in range(files) for j in range(12 // files))
    assert not set(parts[0]) & set(parts[1])
    assert sorted(parts[0] + parts[1]) == every
    assert len(parts[0]) == len(parts[1]) == 6


def test_cache_gives_the_same_elements(blocks):
    plain = [labels.numpy() for _, labels in load(blocks, training=False)]
    cached = load(blocks, training=False, cache=True)
    for _ in range(2):
        for a, (_, b) in zip(plain, cached, strict=True):
            np.testing.assert_array_equal(a, b.numpy())


@pytest.mark.parametrize("cache", [False, True], ids=["plain", "cache"])
def test_skip_continues_the_stream_exactly(tmp_path, cache):
    # Two files, shuffling, every augmentation and several epochs: skipping k records gives
    # the same images and labels as reading k records and going on (a resumed run's input).
    write(tmp_path / "a.tfrecord", [id_sample(i, 12, 14) for i in range(5)])
    write(tmp_path / "b.tfrecord", [id_sample(10 + i, 12, 14) for i in range(4)])
    files = [str(tmp_path / "a.tfrecord"), str(tmp_path / "b.tfrecord")]

    def stream(skip):
        dataset = load(
            files, training=True, crop_size=10, jitter=0.5, seed=3, repeat=True, cache=cache,
            skip=skip,
        )  # fmt: skip
        return [(x.numpy(), y.numpy()) for x, y in dataset.take(13 - skip)]

    whole, resumed = stream(0), stream(7)
    assert len({int(y[0, 0, 0]) for _, y in whole} - {255}) > 4
    for (x, y), (x2, y2) in zip(whole[7:], resumed, strict=True):
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y2)
    with pytest.raises(ValueError, match="skip must be a non-negative int"):
        load(files, training=True, crop_size=10, skip=-1)


def test_skip_counts_only_the_records_kept_when_corrupt_ones_are_dropped(tmp_path):
    corrupt_file(tmp_path / "a.tfrecord", "proto", count=7)

    def stream(skip):
        dataset = load(
            tmp_path / "a.tfrecord", training=True, crop_size=5, jitter=0.5, seed=3,
            repeat=True, skip_corrupt=True, skip=skip,
        )  # fmt: skip
        return [(x.numpy(), y.numpy()) for x, y in dataset.take(12 - skip)]

    whole, resumed = stream(0), stream(4)
    for (x, y), (x2, y2) in zip(whole[4:], resumed, strict=True):
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y2)


# --- corrupt records --------------------------------------------------------------------------


def corrupt_file(path, kind: str, count: int = 7) -> int:
    """Write ``count`` id records with the middle one corrupted as ``kind``; its id."""
    samples = [id_sample(i) for i in range(count)]
    bad = count // 2
    if kind == "png":
        samples[bad] = Sample("bad.png", b"\x89PNG\r\n\x1a\n" + b"garbage" * 9, samples[bad].label)
    if kind == "size":
        samples[bad] = Sample("bad.png", samples[bad].image, np.zeros((3, 3), np.uint8))
    records = write(path, samples)
    data = bytearray(open(path, "rb").read())
    start = sum(len(r) + 16 for r in records[:bad])
    if kind == "proto":
        data[start + 12 : start + 12 + len(records[bad])] = b"\xff" * len(records[bad])
        crc = masked_crc32c(bytes(data[start + 12 : start + 12 + len(records[bad])]))
        data[start + 12 + len(records[bad]) : start + 16 + len(records[bad])] = struct.pack(
            "<I", crc
        )  # frames fine, is no Example
    if kind == "data":
        data[start + 12 + 20] ^= 0x10  # data CRC fails, the length is intact
    if kind == "length":
        data[start + 2] ^= 0x01  # the length CRC fails: the reader must search for the next frame
    if kind == "truncated":
        bad, data = count - 1, data[:-7]
    open(path, "wb").write(data)
    return bad


KINDS = ["png", "proto", "size", "data", "length", "truncated"]


@pytest.mark.parametrize("kind", KINDS)
def test_corrupt_record_raises_an_error_naming_the_file(tmp_path, kind):
    path = tmp_path / f"shard-{kind}.tfrecord"
    bad = corrupt_file(path, kind)
    with pytest.raises(tf.errors.InvalidArgumentError, match=rf"record #{bad} .*shard-{kind}"):
        list(load(path, training=False))


@pytest.mark.parametrize("kind", KINDS)
def test_skip_corrupt_yields_all_other_records_and_counts_one(tmp_path, kind, capfd):
    path = tmp_path / f"shard-{kind}.tfrecord"
    bad = corrupt_file(path, kind)
    counter = CorruptRecordCounter()
    yielded = ids(load(path, training=False, skip_corrupt=counter))
    assert yielded == [i for i in range(7) if i != bad]
    assert counter.count == 1
    assert f"shard-{kind}.tfrecord" in capfd.readouterr().err


def test_skip_corrupt_across_files_while_training(tmp_path):
    corrupt_file(tmp_path / "a.tfrecord", "length", count=5)
    write(tmp_path / "b.tfrecord", [id_sample(10 + i) for i in range(5)])
    counter = CorruptRecordCounter()
    dataset = load(
        str(tmp_path / "*.tfrecord"), training=True, scale_range=None, skip_corrupt=counter, seed=0
    )
    for epoch in (1, 2):
        assert sorted(ids(dataset)) == [0, 1, 3, 4, *range(10, 15)]
        assert counter.count == epoch


def test_salvage_finds_records_after_a_garbled_region(tmp_path):
    records = write(tmp_path / "a.tfrecord", [id_sample(i) for i in range(4)])
    data = bytearray(open(tmp_path / "a.tfrecord", "rb").read())
    start = len(records[0]) + 16
    # Overwrite all of record 1 and most of record 2, length fields included.
    end = start + 2 * (len(records[1]) + 16) - 9
    data[start:end] = (bytes(range(256)) * 64)[: end - start]
    open(tmp_path / "a.tfrecord", "wb").write(data)
    found = list(salvage_records(str(tmp_path / "a.tfrecord")))
    assert [r["status"] for r in found] == [0, 1, 0]  # the garbled region counts as one
    assert found[0]["serialized"] == records[0] and found[2]["serialized"] == records[3]
    assert found[2]["offset"] == sum(len(r) + 16 for r in records[:3])


@pytest.mark.parametrize("size", [0, 1, 5, 4095, 4096, 70001])
def test_crc32c_matches_the_tfrecord_writer(tmp_path, rng, size):
    data = rng.integers(0, 256, size, np.uint8).tobytes()
    with tf.io.TFRecordWriter(str(tmp_path / "x.tfrecord")) as writer:
        writer.write(data)
    framed = open(tmp_path / "x.tfrecord", "rb").read()
    assert struct.unpack("<I", framed[8:12])[0] == masked_crc32c(framed[:8])
    assert struct.unpack("<I", framed[-4:])[0] == masked_crc32c(data)


def test_benchmark_quick_run_writes_the_report(tmp_path):
    root = Path(__file__).resolve().parents[1]
    command = [
        sys.executable,
        str(root / "benchmarks" / "input_pipeline.py"),
        "--quick",
        "--synthetic",
        "--size",
        "48",
        "64",
        "--crop=32",
        "--batch=2",
        "--backbones=vgg16",
        "--width=0.03125",
        "--fc-units=8",
        "--json",
        str(tmp_path / "bench.json"),
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["data"]["source"] == "synthetic"
    assert [row["mode"] for row in report["comparison"]] == ["whole", "crop"]
    assert all(row["ratio"] > 0 for row in report["comparison"])


def test_corrupt_records_as_value_errors_keeps_paths_with_brackets(tmp_path):
    from fcn_tf.data.pipeline import corrupt_records_as_value_errors

    folder = tmp_path / "run_1]"  # a bracket ends TensorFlow's own message
    folder.mkdir()
    path = folder / "broken.tfrecord"
    path.write_bytes(b"\x07" * 300)
    with pytest.raises(ValueError) as caught, corrupt_records_as_value_errors():
        list(load(str(path), training=False))
    message = str(caught.value)
    assert message.startswith("fcn_tf.data: corrupt record #0 (byte offset 0) in ")
    assert f"{path}: bad TFRecord framing" in message and "function_node" not in message
