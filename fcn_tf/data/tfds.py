"""TensorFlow Datasets as a source: :func:`from_tfds` yields ``(image, label)`` pairs.

Needs the ``tfds`` extra (``pip install 'fcn_tf[tfds]'``); this module imports without it and
:func:`from_tfds` says what to install. Elements are those of the record pipeline
(:func:`fcn_tf.data.records.decode_example`): ``image`` uint8 ``[H, W, 3]``, ``label`` uint8
``[H, W]`` of class ids with 255 for ignore.

Supported datasets (:data:`TFDS_DATASETS`, keyed by the name without config or version):

``oxford_iiit_pet``
    The ``segmentation_mask`` trimap (1 pet, 2 background, 3 border) becomes 0 background,
    1 pet, and 255 (ignore) for the border. The border is the band where the annotators could
    not tell pet from background (fur, blur); it is left out of the loss and the metrics, as
    VOC's 255 object outlines are, rather than guessed into either class. Other values, absent
    from the data, are ignored too. The 37 breeds (``label``) are not used: this is the usual
    two-class pet/background task.
``cityscapes`` (configs ``semantic_segmentation``, ``semantic_segmentation_extra``)
    ``segmentation_label`` holds Cityscapes label ids (0..33); they become the 19 train ids of
    the official benchmark (``cityscapesScripts``' ``labels.py``), everything else 255. The
    data must be downloaded by hand (registration); see the TFDS catalog. The ``test`` split's
    labels are withheld by the benchmark: they map to ignore.

Any other TFDS dataset with an image and a per-pixel mask works when the keys are given::

    ds = from_tfds("lost_and_found/semantic_segmentation", "train",
                   image_key="image_left", mask_key="segmentation_label", label_map={...})
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import tensorflow as tf

__all__ = ["TFDS_DATASETS", "TfdsSpec", "from_tfds"]

IGNORE = 255

LabelMap = Mapping[int, int] | Callable[[tf.Tensor], tf.Tensor]


@dataclasses.dataclass(frozen=True)
class TfdsSpec:
    """How a TFDS dataset's features become ``(image, label)``.

    ``label_map``: ``None`` keeps the mask's values as class ids; a mapping sends raw mask
    values to class ids, and values it does not list to ``ignore_label``; a callable takes the
    mask (uint8 ``[H, W]`` when TFDS stores ``[H, W, 1]``) and returns integer ``[H, W]`` ids.

    >>> TFDS_DATASETS["oxford_iiit_pet"].class_names
    ('background', 'pet')
    """

    image_key: str
    mask_key: str
    label_map: LabelMap | None = None
    class_names: tuple[str, ...] | None = None
    ignore_label: int = IGNORE

    def __post_init__(self) -> None:
        if isinstance(self.label_map, Mapping):
            _table(self.label_map, self.ignore_label)  # bad maps fail here, not in a tf.data map

    def to_label(self, mask: tf.Tensor) -> tf.Tensor:
        """uint8 ``[H, W]`` class ids of a TFDS mask.

        >>> TFDS_DATASETS["oxford_iiit_pet"].to_label(tf.constant([[1, 2, 3]], tf.uint8))
        <tf.Tensor: shape=(1, 3), dtype=uint8, numpy=array([[  1,   0, 255]], dtype=uint8)>
        """
        if mask.shape.rank == 3 and mask.shape[-1] == 1:
            mask = mask[..., 0]
        if callable(self.label_map):
            label = tf.convert_to_tensor(self.label_map(mask))
            # Values that do not fit a uint8 class id would wrap around (256 -> background).
            outside = (label < 0) | (label > IGNORE)
            label = tf.where(outside, tf.cast(self.ignore_label, label.dtype), label)
        elif self.label_map is None:
            label = _in_range(mask, np.arange(IGNORE + 1), self.ignore_label)
        else:
            label = _in_range(mask, _table(self.label_map, self.ignore_label), self.ignore_label)
        if label.shape.rank != 2:
            raise ValueError(
                f"a label must be [H, W], got shape {label.shape}: give a label_map callable "
                "that turns this mask (e.g. colour-coded) into class ids"
            )
        return tf.cast(label, tf.uint8)


def _table(mapping: Mapping[int, int], ignore_label: int) -> np.ndarray:
    """A lookup table: raw value -> class id, ``ignore_label`` where the mapping is silent."""
    if any(key < 0 for key in mapping):
        raise ValueError(f"label_map keys are mask values, >= 0: {dict(mapping)}")
    if any(not 0 <= value <= IGNORE for value in mapping.values()):
        raise ValueError(f"label_map values are uint8 class ids (255 = ignore): {dict(mapping)}")
    table = np.full(max(IGNORE + 1, max(mapping, default=0) + 1), ignore_label, np.uint8)
    for key, value in mapping.items():
        table[key] = value
    return table


def _in_range(mask: tf.Tensor, table: np.ndarray, ignore_label: int) -> tf.Tensor:
    # Masks wider than uint8 (uint16, int32) may hold values past the table: ignore them rather
    # than wrap them around into some real class.
    index = tf.cast(mask, tf.int32)
    valid = (index >= 0) & (index < len(table))
    looked_up = tf.gather(tf.constant(table, tf.uint8), tf.clip_by_value(index, 0, len(table) - 1))
    return tf.where(valid, looked_up, tf.constant(ignore_label, tf.uint8))


# Cityscapes label id -> train id (cityscapesScripts labels.py); ids not listed are ignored.
_CITYSCAPES_TRAIN_IDS = {
    7: 0,  # road
    8: 1,  # sidewalk
    11: 2,  # building
    12: 3,  # wall
    13: 4,  # fence
    17: 5,  # pole
    19: 6,  # traffic light
    20: 7,  # traffic sign
    21: 8,  # vegetation
    22: 9,  # terrain
    23: 10,  # sky
    24: 11,  # person
    25: 12,  # rider
    26: 13,  # car
    27: 14,  # truck
    28: 15,  # bus
    31: 16,  # train
    32: 17,  # motorcycle
    33: 18,  # bicycle
}

TFDS_DATASETS: dict[str, TfdsSpec] = {
    "oxford_iiit_pet": TfdsSpec(
        image_key="image",
        mask_key="segmentation_mask",
        label_map={1: 1, 2: 0, 3: IGNORE},
        class_names=("background", "pet"),
    ),
    "cityscapes": TfdsSpec(
        image_key="image_left",
        mask_key="segmentation_label",
        label_map=_CITYSCAPES_TRAIN_IDS,
        class_names=(
            "road",
            "sidewalk",
            "building",
            "wall",
            "fence",
            "pole",
            "traffic light",
            "traffic sign",
            "vegetation",
            "terrain",
            "sky",
            "person",
            "rider",
            "car",
            "truck",
            "bus",
            "train",
            "motorcycle",
            "bicycle",
        ),
    ),
}
"""Supported datasets, keyed by name without ``/config`` or ``:version``."""

# tfds.load options that would change the element structure this function returns.
_REJECTED = ("as_supervised", "with_info", "batch_size", "decoders", "as_dataset_kwargs")


def _spec(
    name: str, image_key: str | None, mask_key: str | None, label_map: LabelMap | None
) -> TfdsSpec:
    base = name.split(":")[0].split("/")[0]
    spec = TFDS_DATASETS.get(base)
    if spec is None:
        if image_key is None or mask_key is None:
            raise ValueError(
                f"from_tfds: no built-in recipe for {name!r}; supported: "
                f"{', '.join(sorted(TFDS_DATASETS))}. For another segmentation dataset give "
                "image_key and mask_key (and label_map unless the mask holds class ids)"
            )
        return TfdsSpec(image_key, mask_key, label_map)
    overrides = {"image_key": image_key, "mask_key": mask_key, "label_map": label_map}
    return dataclasses.replace(spec, **{k: v for k, v in overrides.items() if v is not None})


def _to_rgb(image: tf.Tensor) -> tf.Tensor:
    if image.dtype != tf.uint8:
        raise TypeError(f"from_tfds: images must be uint8, this dataset's are {image.dtype}")
    channels = image.shape[-1]
    if channels == 1:
        image = tf.image.grayscale_to_rgb(image)
    elif channels == 4:
        image = image[..., :3]  # alpha carries no class information
    return tf.ensure_shape(image, [None, None, 3])


def from_tfds(
    name: str,
    split: str,
    data_dir: str | None = None,
    download: bool = False,
    shuffle_files: bool = False,
    *,
    image_key: str | None = None,
    mask_key: str | None = None,
    label_map: LabelMap | None = None,
    **kwargs: Any,
) -> tf.data.Dataset:
    """A dataset of ``(image uint8 [H, W, 3], label uint8 [H, W])`` from TensorFlow Datasets.

    Args:
        name: a TFDS name, with optional ``/config`` and ``:version``
            (``"cityscapes/semantic_segmentation:1.0.0"``).
        split: a TFDS split string (``"train"``, ``"test[:10%]"``, ...).
        data_dir: where TFDS keeps prepared data (TFDS's default, ``~/tensorflow_datasets``
            or ``$TFDS_DATA_DIR``, when ``None``).
        download: download and prepare the dataset first if needed. Off by default: a
            training job should not start a multi-gigabyte download by surprise.
        shuffle_files: shuffle the order of the TFDS shards (not the elements).
        image_key, mask_key, label_map: override a supported dataset's :class:`TfdsSpec`, or
            describe any other dataset (``image_key`` and ``mask_key`` are then required).
        **kwargs: passed to ``tfds.load`` (``read_config``, ``builder_kwargs``,
            ``download_and_prepare_kwargs``, ``try_gcs``).

    Class names: ``TFDS_DATASETS[name].class_names``. Image and label sizes are those stored;
    real data pairs them, but TFDS's ``mock_data`` draws them independently.

    Example (downloads about 800 MB once)::

        ds = from_tfds("oxford_iiit_pet", "train", download=True)
        image, label = next(iter(ds))  # uint8 [H, W, 3], uint8 [H, W] in {0, 1, 255}

    On TFDS's mock data (random pixels, no download):

    >>> import tensorflow_datasets as tfds
    >>> with tfds.testing.mock_data(num_examples=2, policy=tfds.testing.MockPolicy.USE_CODE):
    ...     pairs = list(from_tfds("oxford_iiit_pet", "train").as_numpy_iterator())
    >>> len(pairs), pairs[0][0].shape[-1], pairs[0][1].ndim, set(pairs[0][1].flat) <= {0, 1, 255}
    (2, 3, 2, True)
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError as err:
        raise ImportError(
            "from_tfds needs tensorflow-datasets, an optional extra: pip install 'fcn_tf[tfds]'"
        ) from err
    rejected = sorted(set(kwargs) & set(_REJECTED))
    if rejected:
        raise TypeError(f"from_tfds fixes the element structure; drop {', '.join(rejected)}")
    spec = _spec(name, image_key, mask_key, label_map)

    # Check the keys on the builder's info before any download or read: a wrong config or key
    # should fail at once, naming what the dataset does have.
    builder = tfds.builder(name, data_dir=data_dir, **kwargs.get("builder_kwargs", {}))
    features = builder.info.features
    missing = [key for key in (spec.image_key, spec.mask_key) if key not in features]
    if missing:
        raise ValueError(
            f"from_tfds: {name!r} has no feature {', '.join(map(repr, missing))}; its "
            f"features: {', '.join(sorted(features.keys()))}"
        )

    try:
        ds = tfds.load(
            name,
            split=split,
            data_dir=data_dir,
            download=download,
            shuffle_files=shuffle_files,
            **kwargs,
        )
    except AssertionError as err:
        # TFDS reports unprepared data with a bare AssertionError; say how to prepare it.
        if download:
            raise
        where = data_dir or "TFDS's default data_dir (~/tensorflow_datasets or $TFDS_DATA_DIR)"
        raise FileNotFoundError(
            f"from_tfds: {name!r} is not prepared in {where}. Prepare it once with "
            f"from_tfds(..., download=True) or `tfds build {name}"
            f"{' --data_dir ' + data_dir if data_dir else ''}`; datasets that need a manual "
            f"download (e.g. cityscapes) first want their files in <data_dir>/downloads/manual "
            f"(TFDS said: {err})"
        ) from err

    def to_pair(example: dict) -> tuple[tf.Tensor, tf.Tensor]:
        return _to_rgb(example[spec.image_key]), spec.to_label(example[spec.mask_key])

    return ds.map(to_pair, num_parallel_calls=tf.data.AUTOTUNE)
