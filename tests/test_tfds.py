"""from_tfds on TFDS's mock data: element structure and label mappings, checked independently."""

import importlib.util
import sys

import numpy as np
import pytest
import tensorflow as tf

tfds = pytest.importorskip("tensorflow_datasets", reason="the tfds extra is not installed")

from fcn_tf.data.tfds import TFDS_DATASETS, from_tfds  # noqa: E402

# USE_CODE: features from the builder class, no metadata files and no network.
USE_CODE = tfds.testing.MockPolicy.USE_CODE

# Cityscapes label ids with their train ids, as in cityscapesScripts' labels.py (255: not
# evaluated). Typed out here rather than derived from the module under test.
CITYSCAPES_LABELS = [
    ("unlabeled", 0, 255),
    ("ego vehicle", 1, 255),
    ("rectification border", 2, 255),
    ("out of roi", 3, 255),
    ("static", 4, 255),
    ("dynamic", 5, 255),
    ("ground", 6, 255),
    ("road", 7, 0),
    ("sidewalk", 8, 1),
    ("parking", 9, 255),
    ("rail track", 10, 255),
    ("building", 11, 2),
    ("wall", 12, 3),
    ("fence", 13, 4),
    ("guard rail", 14, 255),
    ("bridge", 15, 255),
    ("tunnel", 16, 255),
    ("pole", 17, 5),
    ("polegroup", 18, 255),
    ("traffic light", 19, 6),
    ("traffic sign", 20, 7),
    ("vegetation", 21, 8),
    ("terrain", 22, 9),
    ("sky", 23, 10),
    ("person", 24, 11),
    ("rider", 25, 12),
    ("car", 26, 13),
    ("truck", 27, 14),
    ("bus", 28, 15),
    ("caravan", 29, 255),
    ("trailer", 30, 255),
    ("train", 31, 16),
    ("motorcycle", 32, 17),
    ("bicycle", 33, 18),
]


def _pet_expected(trimap: np.ndarray) -> np.ndarray:
    """The documented mapping, by hand: 1 pet -> 1, 2 background -> 0, anything else -> 255."""
    trimap = trimap[..., 0]
    expected = np.full(trimap.shape, 255, np.uint8)
    expected[trimap == 2] = 0
    expected[trimap == 1] = 1
    return expected


def _raw(name: str, split: str) -> list[dict]:
    return list(tfds.as_numpy(tfds.load(name, split=split)))


@pytest.mark.parametrize("max_value", [4, None])  # trimap values 0..3 (all cases), or 0..254
def test_oxford_pet_elements_and_mapping(max_value):
    with tfds.testing.mock_data(num_examples=4, max_value=max_value, policy=USE_CODE):
        ds = from_tfds("oxford_iiit_pet", "train")
        pairs = list(ds.as_numpy_iterator())
        raw = _raw("oxford_iiit_pet", "train")
    image_spec, label_spec = ds.element_spec
    assert (image_spec.dtype, image_spec.shape.as_list()) == (tf.uint8, [None, None, 3])
    assert (label_spec.dtype, label_spec.shape.as_list()) == (tf.uint8, [None, None])
    assert len(pairs) == len(raw) == 4
    seen = set()
    for (image, label), example in zip(pairs, raw, strict=True):
        assert image.dtype == label.dtype == np.uint8
        assert label.ndim == 2
        np.testing.assert_array_equal(image, example["image"])
        np.testing.assert_array_equal(label, _pet_expected(example["segmentation_mask"]))
        seen |= set(np.unique(label).tolist())
    assert seen <= {0, 1, 255}
    if max_value == 4:  # every trimap value occurred, so every class must show up
        assert seen == {0, 1, 255}


def test_oxford_pet_spec():
    spec = TFDS_DATASETS["oxford_iiit_pet"]
    assert spec.class_names == ("background", "pet")
    assert spec.ignore_label == 255
    trimap = tf.constant([[1, 2, 3, 0]], tf.uint8)[..., None]  # TFDS stores [H, W, 1]
    np.testing.assert_array_equal(spec.to_label(trimap), [[1, 0, 255, 255]])


def test_cityscapes_train_ids():
    table = np.full(256, 255, np.uint8)
    for _, label_id, train_id in CITYSCAPES_LABELS:
        table[label_id] = train_id
    names = [name for name, _, train_id in sorted(CITYSCAPES_LABELS, key=lambda r: r[2])]
    assert TFDS_DATASETS["cityscapes"].class_names == tuple(names[:19])
    with tfds.testing.mock_data(num_examples=1, max_value=40, policy=USE_CODE):
        name = "cityscapes/semantic_segmentation"
        ((image, label),) = list(from_tfds(name, "validation").as_numpy_iterator())
        (example,) = _raw(name, "validation")
    np.testing.assert_array_equal(image, example["image_left"])
    np.testing.assert_array_equal(label, table[example["segmentation_label"][..., 0]])
    assert set(np.unique(label).tolist()) == set(range(19)) | {255}


def test_generic_dataset_and_overrides():
    with tfds.testing.mock_data(num_examples=1, max_value=6, policy=USE_CODE):
        name = "lost_and_found/semantic_segmentation"
        ds = from_tfds(
            name,
            "test",
            image_key="image_left",
            mask_key="segmentation_label",
            label_map={1: 0, 2: 1},
        )
        ((_, label),) = list(ds.as_numpy_iterator())
        (example,) = _raw(name, "test")
        # An override on a supported dataset: here the trimap's own values, unmapped.
        ((_, trimap),) = list(
            from_tfds("oxford_iiit_pet", "test", label_map=lambda m: m).take(1).as_numpy_iterator()
        )
        (pet,) = _raw("oxford_iiit_pet", "test")[:1]
    mask = example["segmentation_label"][..., 0]
    np.testing.assert_array_equal(label, np.select([mask == 1, mask == 2], [0, 1], 255))
    np.testing.assert_array_equal(trimap, pet["segmentation_mask"][..., 0])


def test_wide_masks_ignore_out_of_range_values():
    spec = TFDS_DATASETS["oxford_iiit_pet"]
    label = spec.to_label(tf.constant([[1, 2, 257, 513]], tf.int32))
    np.testing.assert_array_equal(label, [[1, 0, 255, 255]])


def test_a_label_map_callable_out_of_uint8_range_gives_the_ignore_label():
    import dataclasses

    spec = dataclasses.replace(TFDS_DATASETS["oxford_iiit_pet"], label_map=lambda m: m + 254)
    label = spec.to_label(tf.constant([[0, 1, 2, -300]], tf.int32))
    np.testing.assert_array_equal(label, [[254, 255, 255, 255]])  # 256 no longer wraps to 0


def test_errors():
    with pytest.raises(ValueError, match="cityscapes, oxford_iiit_pet"):
        from_tfds("mnist", "train")
    with tfds.testing.mock_data(num_examples=1, policy=USE_CODE):
        with pytest.raises(ValueError, match=r"no feature 'nope'.*segmentation_mask"):
            from_tfds("oxford_iiit_pet", "train", mask_key="nope")
        with pytest.raises(ValueError, match="no feature 'segmentation_label'"):
            from_tfds("cityscapes/stereo_disparity", "train")
    with pytest.raises(TypeError, match="as_supervised"):
        from_tfds("oxford_iiit_pet", "train", as_supervised=True)
    with pytest.raises(ValueError, match="uint8 class ids"):
        from_tfds("oxford_iiit_pet", "train", label_map={1: 300})


def test_unprepared_dataset_says_how_to_prepare(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"download=True.*tfds build oxford_iiit_pet"):
        from_tfds("oxford_iiit_pet", "train", data_dir=str(tmp_path))


def test_without_tensorflow_datasets(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import now fails
    # The module itself imports: execute a fresh copy of it with TFDS unavailable.
    spec = importlib.util.find_spec("fcn_tf.data.tfds")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    with pytest.raises(ImportError, match=r"pip install 'fcn_tf\[tfds\]'"):
        module.from_tfds("oxford_iiit_pet", "train")
