"""Paper section 3.1 as an executable fact: VGG16's classifier becomes a fully convolutional net."""

import keras
import numpy as np
import pytest
from helpers import images

from fcn_tf.models import build_fcn
from fcn_tf.models.backbones import load_vgg16_weights, vgg16_trunk
from fcn_tf.models.convolutionalize import transfer_weights


@pytest.fixture(scope="module")
def vgg16_classifier(tmp_path_factory):
    """A Keras VGG16 classifier with random weights, saved as a weights file."""
    keras.utils.set_random_seed(7)
    classifier = keras.applications.VGG16(weights=None)
    path = tmp_path_factory.mktemp("weights") / "vgg16.weights.h5"
    classifier.save_weights(path)
    return classifier, str(path)


@pytest.fixture(scope="module")
def trunk(vgg16_classifier):
    _, path = vgg16_classifier
    model = vgg16_trunk(keras.Input((None, None, 3)), geometry="classifier")
    copied = load_vgg16_weights(model, path)
    assert copied[-2:] == ["fc6", "fc7"] and len(copied) == 15
    return model


def test_fc7_map_equals_classifier_fc2_at_224(vgg16_classifier, trunk, rng):
    classifier, _ = vgg16_classifier
    x = keras.applications.vgg16.preprocess_input(images(rng, 2, 224, 224, 3))
    fc2 = keras.Model(classifier.input, classifier.get_layer("fc2").output)(x).numpy()
    fc7 = keras.Model(trunk.input, trunk.get_layer("fc7").output)(x).numpy()
    assert fc7.shape == (2, 1, 1, 4096)
    assert np.abs(fc2).max() > 0
    np.testing.assert_allclose(fc7[:, 0, 0], fc2, rtol=1e-4, atol=1e-4 * np.abs(fc2).max())


def test_convolutionalized_trunk_is_stride_32(trunk):
    assert tuple(trunk(np.zeros((1, 416, 416, 3), "float32")).shape) == (1, 7, 7, 4096)


def test_fcn_loads_reshaped_fc_weights(vgg16_classifier):
    classifier, path = vgg16_classifier
    model = build_fcn(21, 8, backbone_weights=path)
    fc1_kernel, fc1_bias = classifier.get_layer("fc1").get_weights()
    np.testing.assert_array_equal(
        model.get_layer("fc6").kernel.numpy(), fc1_kernel.reshape(7, 7, 512, 4096)
    )
    np.testing.assert_array_equal(model.get_layer("fc6").bias.numpy(), fc1_bias)
    np.testing.assert_array_equal(
        model.get_layer("conv5_3").kernel.numpy(),
        classifier.get_layer("block5_conv3").kernel.numpy(),
    )
    assert not np.any(model.get_layer("score_fr").kernel.numpy())


def test_application_backbone_loads_from_file(tmp_path):
    source = keras.applications.MobileNetV2(weights=None, alpha=0.35, input_shape=(224, 224, 3))
    path = tmp_path / "mobilenet_v2.weights.h5"
    source.save_weights(path)
    model = build_fcn(
        5, 8, backbone="mobilenet_v2", backbone_weights=str(path), backbone_options={"alpha": 0.35}
    )
    for name in ("Conv1", "block_6_depthwise", "Conv_1_bn"):
        for got, expected in zip(
            model.get_layer(name).get_weights(), source.get_layer(name).get_weights(), strict=True
        ):
            np.testing.assert_array_equal(got, expected)


def test_missing_file_names_the_path():
    with pytest.raises(FileNotFoundError, match=r"backbone_weights: no such file '/nowhere/w\.h5'"):
        build_fcn(3, 32, backbone_weights="/nowhere/w.h5")


def test_wrong_file_names_the_file(tmp_path):
    path = tmp_path / "small.weights.h5"
    keras.applications.MobileNetV2(
        weights=None, alpha=0.35, input_shape=(224, 224, 3)
    ).save_weights(path)
    with pytest.raises(ValueError, match=r"small\.weights\.h5"):
        build_fcn(3, 32, backbone_weights=str(path))


def test_thin_trunk_refuses_imagenet_weights(tmp_path):
    with pytest.raises(ValueError, match="full-size trunk"):
        build_fcn(3, 32, backbone_weights="any.h5", backbone_options={"width": 0.5})


def test_offline_imagenet_error_names_the_path_option(monkeypatch):
    from keras.src.utils import file_utils

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: no network")

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(RuntimeError, match=r"backbone_weights='/path/to/weights\.h5'"):
        build_fcn(3, 32, backbone_weights="imagenet")


def test_convolutional_only_file_warns_that_fc_layers_stay_random(tmp_path):
    path = tmp_path / "vgg16_notop.weights.h5"
    notop = keras.applications.VGG16(weights=None, include_top=False, input_shape=(224, 224, 3))
    notop.save_weights(path)
    trunk = vgg16_trunk(keras.Input((None, None, 3)))
    with pytest.warns(UserWarning, match="fc6 and fc7 keep their random initial weights"):
        copied = load_vgg16_weights(trunk, str(path))
    assert len(copied) == 13
    np.testing.assert_array_equal(
        trunk.get_layer("conv1_1").kernel.numpy(), notop.get_layer("block1_conv1").kernel.numpy()
    )


def test_transfer_refuses_same_size_different_layout():
    source = keras.Sequential([keras.Input((None, None, 8)), keras.layers.Conv2D(6, 2, name="c")])
    target = keras.Sequential([keras.Input((None, None, 6)), keras.layers.Conv2D(8, 2, name="c")])
    with pytest.raises(ValueError, match="do not fit 'c'"):
        transfer_weights(source, target, origin="test")
