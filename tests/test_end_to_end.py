"""The built-in shapes data through every stage: converter, records, pipeline, model, metric."""

import keras
import numpy as np
from conftest import TINY_VGG

import fcn_tf
from fcn_tf.data import load, shapes
from fcn_tf.data.convert import convert


def test_shapes_records_train_and_evaluate(tmp_path):
    metadata = convert(
        "synthetic", str(tmp_path), "train", count=8, height=64, width=80, shards=2, verbose=False
    )
    files = [str(tmp_path / name) for name in metadata["files"]]
    train = load(files, training=True, batch_size=4, crop_size=64, seed=1, repeat=True)
    model = fcn_tf.FCN8s(shapes.NUM_CLASSES, geometry="same", backbone_options=TINY_VGG)
    model.compile(
        keras.optimizers.SGD(1e-3, momentum=0.9),
        fcn_tf.SegmentationCrossEntropy(),
        metrics=[fcn_tf.MeanIU(shapes.NUM_CLASSES)],
    )
    history = model.fit(train, steps_per_epoch=2, epochs=1, shuffle=False, verbose=0).history
    assert np.isfinite(history["loss"][0])

    metric = fcn_tf.ConfusionMatrix(shapes.NUM_CLASSES)
    for image, label in load(files, training=False):
        assert image.shape[1:3] == (64, 80) and label.shape == (1, 64, 80)
        metric.update_state(label, model(image, training=False))
    confusion = metric.confusion_matrix()
    assert confusion.sum() == 8 * 64 * 80
    assert confusion.sum(axis=1).tolist() == metadata["class_pixel_counts"]
