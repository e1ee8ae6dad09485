"""FCN-32s, FCN-16s and FCN-8s: one builder, the skip architecture of paper section 4.2.

The score map of the stride-32 features (``score_fr``) is upsampled 2x at a time and summed with
scores of finer features (``score_pool4``, ``score_pool3``), then upsampled to the input by a
fixed bilinear transposed convolution and cropped to the input's size. Crop offsets and
upsampling kernel sizes follow from the layer geometry (:mod:`fcn_tf.models.geometry`).

Which geometry:

* ``"caffe"`` (VGG16's default) is the reference nets: conv1_1 padded by 100, round-up pooling,
  a valid 7x7 fc6. Choose it to reproduce the paper. The padding costs compute: a 224x224
  image runs VGG16 on 424x424.
* ``"same"`` pads every convolution to keep sizes (fc6 included) and needs no 100-pixel pad:
  less compute, most on small images, for training your own models; the only choice for the
  ResNet50 and MobileNetV2 backbones. Its score maps end at the image border, so the last
  half cell of pixels there is interpolated from fewer cells (weaker logits at the edge).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, TypedDict

import keras
from keras import layers

from fcn_tf.models.backbones import get_backbone
from fcn_tf.models.geometry import crop_offset, upsampling_kernel_size
from fcn_tf.models.initializers import BilinearUpsampling
from fcn_tf.models.layers import Crop, FixedConv2DTranspose, PadToMultiple, Preprocess

if TYPE_CHECKING:
    from typing import Unpack

__all__ = ["FCN8s", "FCN16s", "FCN32s", "FCNOptions", "build_fcn"]

# Skip layers from coarse to fine: (stride, reference name, feature scale of the at-once net).
SKIPS = ((16, "pool4", 0.01), (8, "pool3", 0.0001))

# The final upsampler's name in the reference nets, by the stride it upsamples from.
FINAL_UPSAMPLER = {32: "upscore", 16: "upscore16", 8: "upscore8"}


def _score(num_classes: int, name: str) -> layers.Conv2D:
    # Zero-initialised: a new skip starts by adding nothing, so a coarser net's output is kept.
    return layers.Conv2D(
        num_classes, 1, kernel_initializer="zeros", bias_initializer="zeros", name=name
    )


def _upsample(x, factor: int, target, name: str, learned: bool):
    kernel = upsampling_kernel_size(factor, x, target)
    layer = layers.Conv2DTranspose if learned else FixedConv2DTranspose
    return layer(
        x.shape[-1],
        kernel,
        strides=factor,
        use_bias=False,
        kernel_initializer=BilinearUpsampling(),
        name=name,
    )(x)


def _fuse(upscored, skip, pool: str, upscore_name: str):
    """Crop two aligned score maps to their overlap and sum them (``fuse_poolN``).

    The reference crops the skip (its pool4 is larger, thanks to the 100-pixel pad); without
    that pad the upsampled map starts first. Either may end first at the bottom and right (the
    reference's does not, but a smaller ``fc6_size`` leaves a larger upsampled map), so the
    map cropped first is then cut again to the other's end.
    """
    offset = crop_offset(skip, upscored)
    if offset > 0:
        skip = Crop(offset, name=f"score_{pool}c")([skip, upscored])
        upscored = Crop(0, name=f"{upscore_name}c")([upscored, skip])
    else:
        upscored = Crop(-offset, name=f"{upscore_name}c")([upscored, skip])
        skip = Crop(0, name=f"score_{pool}c")([skip, upscored])
    return layers.Add(name=f"fuse_{pool}")([upscored, skip])


def build_fcn(
    num_classes: int,
    output_stride: int = 8,
    backbone: str = "vgg16",
    backbone_weights: str | None = None,
    geometry: str | None = None,
    at_once: bool = False,
    learn_upsampling: bool = True,
    backbone_options: Mapping[str, object] | None = None,
    name: str | None = None,
) -> keras.Model:
    """An FCN: RGB 0..255 ``[B, H, W, 3]`` of any size to logits ``[B, H, W, num_classes]``.

    Args:
        num_classes: score channels, background included.
        output_stride: 32, 16 or 8: FCN-32s, FCN-16s or FCN-8s.
        backbone: a name in :data:`fcn_tf.models.backbones.BACKBONES`.
        backbone_weights: ``None`` (random), a Keras classifier weights file, or ``"imagenet"``.
        geometry: ``"caffe"`` or ``"same"`` (see the module docstring); the backbone's default
            when ``None``.
        at_once: scale pool4 by 0.01 and pool3 by 0.0001 before scoring, as the reference
            FCN-8s trained in one stage.
        learn_upsampling: the intermediate upsamplers (``upscore2``, ``upscore_pool4``) learn,
            as the paper's section 4.2 says; ``False`` fixes them to bilinear, as the
            authors' released nets do (``lr_mult: 0``). The final upsampler is always fixed.
        backbone_options: keyword arguments of the backbone's builder, e.g. ``{"width": 0.25}``.
        name: the model's name; ``fcn8s_vgg16`` style by default.

    >>> model = build_fcn(5, 16, backbone_options={"width": 1 / 32, "fc_units": 8})
    >>> tuple(model(keras.ops.zeros((1, 37, 50, 3))).shape)
    (1, 37, 50, 5)
    >>> model.get_layer("score_pool4c").offset, model.get_layer("score").offset
    (5, 27)
    """
    if output_stride not in FINAL_UPSAMPLER:
        raise ValueError(f"output_stride must be 32, 16 or 8, got {output_stride!r}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if at_once and output_stride == 32:
        raise ValueError("at_once scales skip features; FCN-32s (output_stride=32) has none")
    spec = get_backbone(backbone)
    geometry = geometry or spec.default_geometry
    if geometry not in spec.geometries:
        raise ValueError(
            f"backbone {backbone!r} supports geometry {spec.geometries}, not {geometry!r}"
        )

    image = keras.Input((None, None, 3), name="image")
    x = Preprocess(**spec.preprocess, name="preprocess")(image)
    if spec.input_multiple > 1:
        x = PadToMultiple(spec.input_multiple, name="pad_to_multiple")(x)
    options = dict(backbone_options or {})
    spec.check_options(options)
    trunk = spec.build(x, geometry=geometry, **options)
    if backbone_weights is not None:
        spec.load_weights(trunk, backbone_weights, **options)
    features = {stride: trunk.get_layer(layer).output for stride, layer in spec.features.items()}

    score = _score(num_classes, "score_fr")(features[32])
    stride, upscore_name = 32, "upscore2"
    for skip_stride, pool, scale in SKIPS:
        if skip_stride < output_stride:
            break
        feature = features[skip_stride]
        if at_once:
            feature = layers.Rescaling(scale, name=f"scale_{pool}")(feature)
        skip = _score(num_classes, f"score_{pool}")(feature)
        upscored = _upsample(score, stride // skip_stride, skip, upscore_name, learn_upsampling)
        score = _fuse(upscored, skip, pool, upscore_name)
        stride, upscore_name = skip_stride, f"upscore_{pool}"

    # The last upsampler stays bilinear (section 4.3): learning it did not help.
    upscored = _upsample(score, stride, image, FINAL_UPSAMPLER[stride], learned=False)
    logits = Crop(crop_offset(upscored, image), dtype="float32", name="score")([upscored, image])
    return keras.Model(image, logits, name=name or f"fcn{output_stride}s_{backbone}")


class FCNOptions(TypedDict, total=False):
    """The keyword arguments of :func:`build_fcn` that the named builders pass through.

    >>> options: FCNOptions = {"geometry": "same", "backbone_options": {"width": 1 / 32}}
    >>> FCN32s(3, **options).get_layer("upscore").name
    'upscore'
    """

    backbone: str
    backbone_weights: str | None
    geometry: str | None
    at_once: bool
    learn_upsampling: bool
    backbone_options: Mapping[str, object] | None
    name: str | None


def FCN32s(num_classes: int = 21, **kwargs: Unpack[FCNOptions]) -> keras.Model:
    """FCN-32s: ``score_fr`` upsampled 32x in one step. Arguments as :func:`build_fcn`.

    >>> model = FCN32s(3, backbone_options={"width": 1 / 32, "fc_units": 8})
    >>> tuple(model.get_layer("upscore").kernel.shape), model.get_layer("score").offset
    ((64, 64, 3, 3), 19)
    """
    return build_fcn(num_classes, output_stride=32, **kwargs)


def FCN16s(num_classes: int = 21, **kwargs: Unpack[FCNOptions]) -> keras.Model:
    """FCN-16s: FCN-32s plus the pool4 skip. Arguments as :func:`build_fcn`.

    >>> FCN16s(3, backbone_options={"width": 1 / 32, "fc_units": 8}).name
    'fcn16s_vgg16'
    """
    return build_fcn(num_classes, output_stride=16, **kwargs)


def FCN8s(num_classes: int = 21, **kwargs: Unpack[FCNOptions]) -> keras.Model:
    """FCN-8s: FCN-16s plus the pool3 skip, the paper's best net. Arguments as :func:`build_fcn`.

    >>> model = FCN8s(3, backbone_options={"width": 1 / 32, "fc_units": 8})
    >>> [model.get_layer(n).offset for n in ("score_pool4c", "score_pool3c", "score")]
    [5, 9, 31]
    """
    return build_fcn(num_classes, output_stride=8, **kwargs)
