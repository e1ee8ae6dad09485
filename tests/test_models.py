"""The public builders: output size, reference layer names, initialisation, preprocessing."""

import keras
import numpy as np
import pytest
from conftest import TINY_VGG
from helpers import dynamic, images, randomize

import fcn_tf
from fcn_tf.models import BACKBONES, build_fcn, get_backbone

SIZES = [(1, 1), (1, 7), (2, 2), (5, 3), (31, 32), (33, 64), (100, 101), (224, 224), (500, 375)]


@pytest.mark.parametrize("geometry", ["caffe", "same"])
@pytest.mark.parametrize("builder", [fcn_tf.FCN32s, fcn_tf.FCN16s, fcn_tf.FCN8s])
def test_output_size_equals_input_size(builder, geometry, rng):
    model = builder(num_classes=3, geometry=geometry, backbone_options=TINY_VGG)
    predict = dynamic(model)
    for h, w in SIZES:
        assert tuple(predict(images(rng, 1, h, w, 3)).shape) == (1, h, w, 3), (h, w)


@pytest.mark.parametrize(
    ("backbone", "options"), [("resnet50", {}), ("mobilenet_v2", {"alpha": 0.35})]
)
@pytest.mark.parametrize("stride", [32, 16, 8])
def test_application_backbones_any_size(backbone, options, stride, rng):
    model = build_fcn(4, stride, backbone=backbone, backbone_options=options)
    predict = dynamic(model)
    for h, w in [(1, 1), (33, 47), (64, 64), (97, 130)]:
        assert tuple(predict(images(rng, 2, h, w, 3)).shape) == (2, h, w, 4), (h, w)


REFERENCE_NAMES = {
    32: ["score_fr", "upscore", "score"],
    16: ["score_fr", "upscore2", "score_pool4", "score_pool4c", "fuse_pool4", "upscore16"],
    8: ["upscore2", "score_pool4", "fuse_pool4", "upscore_pool4", "score_pool3", "fuse_pool3"],
}
VGG_NAMES = [f"conv{b}_{i}" for b, n in enumerate((2, 2, 3, 3, 3), 1) for i in range(1, n + 1)]
VGG_NAMES += [f"pool{b}" for b in range(1, 6)] + ["fc6", "drop6", "fc7", "drop7"]


@pytest.mark.parametrize("stride", [32, 16, 8])
def test_layer_names_follow_reference_nets(stride):
    model = build_fcn(21, stride, backbone_options=TINY_VGG)
    names = {layer.name for layer in model.layers}
    assert set(VGG_NAMES + REFERENCE_NAMES[stride] + ["upscore8"] * (stride == 8)) <= names
    assert model.name == f"fcn{stride}s_vgg16"
    assert model.get_layer("fc6").kernel_size == (7, 7)
    assert model.get_layer("fc6").padding == "valid"
    assert model.get_layer("conv1_1_pad").padding == ((100, 100), (100, 100))
    assert model.get_layer("drop6").rate == model.get_layer("drop7").rate == 0.5


def test_full_vgg16_has_reference_shapes():
    model = fcn_tf.FCN8s(num_classes=21)
    assert tuple(model.get_layer("fc6").kernel.shape) == (7, 7, 512, 4096)
    assert tuple(model.get_layer("fc7").kernel.shape) == (1, 1, 4096, 4096)
    assert tuple(model.get_layer("score_fr").kernel.shape) == (1, 1, 4096, 21)
    assert tuple(model.get_layer("score_pool3").kernel.shape) == (1, 1, 256, 21)
    assert tuple(model.get_layer("upscore8").kernel.shape) == (16, 16, 21, 21)


@pytest.mark.parametrize("stride", [32, 16, 8])
def test_score_layers_start_at_zero(stride, rng):
    model = build_fcn(3, stride, backbone_options=TINY_VGG)
    scores = [x for x in model.layers if x.name.startswith("score_") and hasattr(x, "kernel")]
    assert len(scores) == {32: 1, 16: 2, 8: 3}[stride]
    for layer in scores:
        assert not np.any(layer.kernel.numpy()) and not np.any(layer.bias.numpy())
    assert not np.any(model(images(rng, 1, 40, 40, 3)).numpy())


def test_geometry_same_has_no_input_padding():
    model = build_fcn(3, 8, geometry="same", backbone_options=TINY_VGG)
    names = {layer.name for layer in model.layers}
    assert "conv1_1_pad" not in names
    assert model.get_layer("fc6").padding == "same"


def test_at_once_scales_pool_features(rng):
    model = build_fcn(3, 8, at_once=True, backbone_options=TINY_VGG)
    randomize(model, rng)
    names = ["pool4", "scale_pool4", "pool3", "scale_pool3"]
    probe = keras.Model(model.input, [model.get_layer(n).output for n in names])
    pool4, scaled4, pool3, scaled3 = (t.numpy() for t in probe(images(rng, 1, 64, 64, 3)))
    np.testing.assert_allclose(scaled4, 0.01 * pool4, rtol=1e-6)
    np.testing.assert_allclose(scaled3, 0.0001 * pool3, rtol=1e-6)
    assert model.get_layer("score_pool4").input.name == model.get_layer("scale_pool4").output.name
    staged = build_fcn(3, 8, backbone_options=TINY_VGG)
    assert "scale_pool4" not in {layer.name for layer in staged.layers}


@pytest.mark.parametrize(
    ("backbone", "reference"),
    [
        ("vgg16", keras.applications.vgg16.preprocess_input),
        ("resnet50", keras.applications.resnet50.preprocess_input),
        ("mobilenet_v2", keras.applications.mobilenet_v2.preprocess_input),
    ],
)
def test_preprocessing_inside_matches_keras(backbone, reference, rng):
    options = TINY_VGG if backbone == "vgg16" else {}
    model = build_fcn(3, 32, backbone=backbone, backbone_options=options)
    probe = keras.Model(model.input, model.get_layer("preprocess").output)
    x = images(rng, 2, 8, 9, 3)
    np.testing.assert_allclose(probe(x).numpy(), reference(x.copy()), rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_backbones_expose_stride_8_16_32_features(name):
    backbone = get_backbone(name)
    assert sorted(backbone.features) == [8, 16, 32]
    options = TINY_VGG if name == "vgg16" else {}
    inputs = keras.Input((None, None, 3))
    trunk = backbone.build(inputs, geometry="same", **options)
    probe = keras.Model(inputs, [trunk.get_layer(n).output for n in backbone.features.values()])
    shapes = [tuple(t.shape[1:3]) for t in probe(np.zeros((1, 128, 96, 3), "float32"))]
    assert shapes == [(128 // s, 96 // s) for s in backbone.features]


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown backbone 'vgg19'"):
        build_fcn(3, backbone="vgg19")
    with pytest.raises(ValueError, match="output_stride"):
        build_fcn(3, output_stride=4)
    with pytest.raises(ValueError, match="geometry"):
        build_fcn(3, backbone="resnet50", geometry="caffe")
    with pytest.raises(ValueError, match="geometry"):
        build_fcn(3, geometry="valid", backbone_options=TINY_VGG)
    # A misspelt backbone option is named with the ones the backbone takes (was a TypeError).
    with pytest.raises(ValueError, match=r"'vgg16' takes no option 'widht'.*'width'"):
        build_fcn(3, backbone_options={**TINY_VGG, "widht": 0.5})
    with pytest.raises(ValueError, match=r"'mobilenet_v2' takes no option 'alpah'.*'alpha'"):
        build_fcn(3, backbone="mobilenet_v2", backbone_options={"alpah": 0.5})
    with pytest.raises(ValueError, match=r"'resnet50' takes no option 'classes'"):
        build_fcn(3, backbone="resnet50", backbone_options={"classes": 10})


def test_a_registered_backbone_passing_options_on_is_not_checked():
    import dataclasses

    from fcn_tf.models.backbones import register_backbone, vgg16_trunk

    def build(inputs, geometry="same", **options):  # options go on to VGG16
        return vgg16_trunk(inputs, geometry, **options)

    register_backbone(dataclasses.replace(get_backbone("vgg16"), name="my_vgg", build=build))
    try:
        model = build_fcn(3, backbone="my_vgg", geometry="same", backbone_options=TINY_VGG)
        assert model.get_layer("fc6").kernel.shape[-1] == TINY_VGG["fc_units"]
        build.option_names = ("width", "fc_units")  # declared: checked again
        with pytest.raises(ValueError, match="'my_vgg' takes no option 'dropout'"):
            build_fcn(3, backbone="my_vgg", backbone_options={**TINY_VGG, "dropout": 0.1})
    finally:
        del BACKBONES["my_vgg"]


def test_batch_elements_are_independent(rng):
    model = build_fcn(3, 8, backbone_options=TINY_VGG)
    randomize(model, rng)
    x = images(rng, 3, 45, 61, 3)
    batched = model(x, training=False).numpy()
    single = np.concatenate([model(x[i : i + 1], training=False).numpy() for i in range(3)])
    np.testing.assert_allclose(batched, single, rtol=1e-5, atol=1e-5)


def test_final_upsampler_stays_fixed_after_unfreezing():
    model = build_fcn(3, 8, backbone_options=TINY_VGG)
    model.trainable = False
    model.trainable = True
    trainable = {v.path.split("/")[0] for v in model.trainable_variables}
    assert "upscore8" not in trainable
    assert {"upscore2", "upscore_pool4", "score_fr", "conv1_1"} <= trainable
    restored = keras.Model.from_config(model.get_config())
    assert not restored.get_layer("upscore8").trainable


def test_fixed_upsampling_as_the_released_nets():
    model = build_fcn(3, 8, learn_upsampling=False, backbone_options=TINY_VGG)
    trainable = {v.path.split("/")[0] for v in model.trainable_variables}
    assert not trainable & {"upscore2", "upscore_pool4", "upscore8"}
    assert "score_pool3" in trainable


def test_argument_errors_name_the_argument():
    with pytest.raises(ValueError, match="num_classes"):
        build_fcn(0, backbone_options=TINY_VGG)
    with pytest.raises(ValueError, match="at_once"):
        build_fcn(3, 32, at_once=True, backbone_options=TINY_VGG)


BN_VGG = {**TINY_VGG, "batch_norm": True}


def test_vgg16_batch_norm_follows_every_conv():
    model = build_fcn(3, 8, geometry="same", backbone_options={**BN_VGG, "bn_momentum": 0.8})
    convs = [name for name in VGG_NAMES if name.startswith("conv")]
    names = [layer.name for layer in model.layers]
    for conv in convs:
        index = names.index(conv)
        assert names[index + 1 : index + 3] == [f"{conv}_bn", f"{conv}_relu"], conv
        assert not model.get_layer(conv).use_bias
        assert model.get_layer(f"{conv}_bn").momentum == 0.8
    assert set(VGG_NAMES + REFERENCE_NAMES[8]) <= set(names)
    assert not any(name.startswith("fc") and name.endswith("_bn") for name in names)
    assert build_fcn(3, 8, backbone_options=BN_VGG).get_layer("conv1_1_bn").momentum == 0.9
    assert "conv1_1_bn" not in {
        layer.name for layer in build_fcn(3, 8, backbone_options=TINY_VGG).layers
    }


@pytest.mark.parametrize("geometry", ["caffe", "same"])
def test_vgg16_batch_norm_keeps_shapes_and_offsets(geometry, rng):
    plain = build_fcn(3, 8, geometry=geometry, backbone_options=TINY_VGG)
    model = build_fcn(3, 8, geometry=geometry, backbone_options=BN_VGG)
    for name in ("score_pool4c", "score_pool3c", "upscore2c", "upscore_pool4c", "score"):
        if name in {layer.name for layer in plain.layers}:
            assert model.get_layer(name).offset == plain.get_layer(name).offset, name
    predict = dynamic(model)
    for h, w in [(1, 1), (37, 50), (96, 96)]:
        assert tuple(predict(images(rng, 2, h, w, 3)).shape) == (2, h, w, 3), (h, w)


def test_vgg16_batch_norm_uses_batch_statistics_in_training(rng):
    model = build_fcn(3, 8, geometry="same", backbone_options=BN_VGG)
    probe = keras.Model(model.input, model.get_layer("conv1_1_bn").output)
    x = images(rng, 4, 16, 16, 3)
    trained = probe(x, training=True).numpy()
    np.testing.assert_allclose(trained.mean(axis=(0, 1, 2)), 0.0, atol=1e-4)
    bn = model.get_layer("conv1_1_bn")
    conv = model.get_layer("conv1_1")(model.get_layer("preprocess")(x)).numpy()
    np.testing.assert_allclose(bn.moving_mean.numpy(), 0.1 * conv.mean(axis=(0, 1, 2)), rtol=1e-4)


def test_fc6_size_sets_the_fc6_kernel(rng):
    options = {**TINY_VGG, "fc6_size": 3}
    model = build_fcn(3, 8, geometry="same", backbone_options=options)
    assert model.get_layer("fc6").kernel_size == (3, 3)
    assert tuple(model(images(rng, 1, 40, 56, 3)).shape) == (1, 40, 56, 3)
    classifier = build_fcn(3, 32, geometry="caffe", backbone_options=options)
    # A 3x3 valid fc6 trims 1 cell per side instead of 3: the crop moves by 2 x stride 32.
    assert classifier.get_layer("score").offset == 19 + 2 * 32


@pytest.mark.parametrize("fc6_size", [1, 3, 5])
@pytest.mark.parametrize("geometry", ["caffe", "same"])
def test_smaller_fc6_keeps_every_output_size(fc6_size, geometry, rng):
    # A smaller valid fc6 leaves a larger upsampled map, which may run past the cropped skip
    # (it did for caffe, fc6 3, at 224 and at 352x480: every side with size % 32 in 27..10).
    options = {**TINY_VGG, "fc6_size": fc6_size}
    for stride in (16, 8):
        predict = dynamic(build_fcn(3, stride, geometry=geometry, backbone_options=options))
        for h, w in [(n, n + 13) for n in range(1, 70, 3)] + [(224, 224), (352, 480)]:
            assert tuple(predict(images(rng, 1, h, w, 3)).shape) == (1, h, w, 3), (stride, h, w)


def test_block_channels_set_each_block_and_keep_the_crops(rng):
    channels = [4, 6, 8, 16, 12]
    model = build_fcn(3, 8, backbone_options={"block_channels": channels, "fc_units": 8})
    for block, (count, convs) in enumerate(zip(channels, (2, 2, 3, 3, 3), strict=True), start=1):
        assert [model.get_layer(f"conv{block}_{i}").filters for i in range(1, convs + 1)] == [
            count
        ] * convs
    assert [model.get_layer(n).offset for n in ("score_pool4c", "score_pool3c", "score")] == [
        5,
        9,
        31,
    ]
    assert tuple(model(images(rng, 1, 37, 50, 3)).shape) == (1, 37, 50, 3)
    halved = build_fcn(3, 8, backbone_options={"block_channels": channels, "width": 0.5})
    assert halved.get_layer("conv4_1").filters == 8
    with pytest.raises(ValueError, match="block_channels must be 5"):
        build_fcn(3, 8, backbone_options={"block_channels": [4, 4]})


@pytest.mark.parametrize(
    "option", [{"batch_norm": True}, {"fc6_size": 3}, {"block_channels": [8, 8, 8, 8, 8]}]
)
def test_batch_norm_and_fc6_size_refuse_imagenet_weights(option):
    with pytest.raises(ValueError, match="full-size trunk"):
        build_fcn(3, 32, backbone_weights="any.h5", backbone_options=option)


def test_vgg16_batch_norm_round_trips_in_safe_mode(tmp_path, rng):
    model = build_fcn(3, 8, geometry="same", backbone_options={**BN_VGG, "bn_momentum": 0.8})
    randomize(model, rng)
    for layer in model.layers:  # positive moving variances: finite outputs
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_variance.assign(np.abs(layer.moving_variance.numpy()) + 0.5)
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    assert [layer.name for layer in restored.layers] == [layer.name for layer in model.layers]
    assert restored.get_layer("conv5_3_bn").momentum == 0.8
    x = images(rng, 2, 37, 53, 3)
    expected = model(x, training=False).numpy()
    assert np.isfinite(expected).all() and np.abs(expected).max() > 0
    np.testing.assert_array_equal(restored(x, training=False).numpy(), expected)


@pytest.mark.parametrize("backbone", ["mobilenet_v2", "resnet50"])
def test_application_bn_momentum_sets_every_batch_norm_and_round_trips(tmp_path, backbone):
    options = {"alpha": 0.35} if backbone == "mobilenet_v2" else {}
    model = fcn_tf.FCN8s(6, backbone=backbone, backbone_options={**options, "bn_momentum": 0.9})
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) > 10 and {layer.momentum for layer in norms} == {0.9}
    default = fcn_tf.FCN8s(6, backbone=backbone, backbone_options=options)
    keras_default = {"mobilenet_v2": 0.999, "resnet50": 0.99}[backbone]
    assert default.get_layer(norms[0].name).momentum == keras_default

    # One training call moves the moving mean by (1 - momentum) of the way to the batch mean.
    norm = norms[0]
    probe = keras.Model(model.input, norm.input)
    images = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    batch_mean = np.array(probe(images)).mean(axis=(0, 1, 2))
    before = np.array(norm.moving_mean)
    model(images, training=True)
    np.testing.assert_allclose(
        np.array(norm.moving_mean), before + 0.1 * (batch_mean - before), rtol=1e-4, atol=1e-5
    )
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert loaded.get_layer(norm.name).momentum == 0.9
