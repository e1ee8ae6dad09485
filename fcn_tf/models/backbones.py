"""Backbones: the paper's VGG16 and Keras applications, each exposing stride-8/16/32 features.

A backbone is a builder from a preprocessed image tensor to a ``keras.Model`` whose layers named
in ``features`` are the stride-8, 16 and 32 features the FCN head scores and fuses. Register more
with :func:`register_backbone`.

Options (``backbone_options`` of :func:`fcn_tf.build_fcn`): ``vgg16`` takes those of
:func:`vgg16_trunk`; ``resnet50`` and ``mobilenet_v2`` take their Keras application's (e.g.
``alpha``) and ``bn_momentum``, the moving-statistics momentum of every batch normalisation
(the applications' 0.99 or 0.999 suits fine-tuning; use about 0.9 to train from scratch).

>>> sorted(BACKBONES)
['mobilenet_v2', 'resnet50', 'vgg16']
>>> BACKBONES["vgg16"].features
{8: 'pool3', 16: 'pool4', 32: 'drop7'}
"""

from __future__ import annotations

import dataclasses
import inspect
import warnings
from collections.abc import Callable, Mapping, Sequence

import keras
from keras import layers

from fcn_tf.models.convolutionalize import classifier_model, transfer_weights

__all__ = ["BACKBONES", "Backbone", "get_backbone", "register_backbone", "vgg16_trunk"]

# The ImageNet mean of the Keras (Caffe-converted) VGG16 and ResNet50 weights, in BGR order.
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)

VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))

# geometry -> (padding before conv1_1, fc6 padding).
VGG16_GEOMETRIES = {
    "caffe": (100, "valid"),  # the reference nets: any input size reaches fc6 with >= 1 cell
    "same": (0, "same"),  # no padding overhead; small inputs still give a score map
    "classifier": (0, "valid"),  # the plain convolutionalized classifier of section 3.1
}


@dataclasses.dataclass(frozen=True)
class Backbone:
    """How to build a backbone, where its features are, and how to load its weights.

    ``build(inputs, geometry=..., **options)`` takes the ``backbone_options`` as keyword
    arguments, which :meth:`check_options` checks against its signature; a builder that takes
    ``**options`` is not checked unless it lists the names it accepts in an ``option_names``
    attribute (as the Keras applications' builders here do).

    >>> vgg = BACKBONES["vgg16"]
    >>> dict(vgg.features), vgg.geometries
    ({8: 'pool3', 16: 'pool4', 32: 'drop7'}, ('caffe', 'same'))
    """

    name: str
    build: Callable[..., keras.Model]
    features: Mapping[int, str]
    preprocess: Mapping[str, object]
    geometries: tuple[str, ...]
    load_weights: Callable[..., list[str]]
    input_multiple: int = 1

    @property
    def default_geometry(self) -> str:
        return self.geometries[0]

    def check_options(self, options: Mapping[str, object]) -> None:
        """Refuse ``backbone_options`` the builder does not take, naming them (a misspelt
        key would otherwise be a ``TypeError`` from deep inside the build).

        >>> BACKBONES["vgg16"].check_options({"widht": 0.5})
        Traceback (most recent call last):
        ...
        ValueError: backbone 'vgg16' takes no option 'widht'; its options: ['batch_norm', ...]
        """
        known = _option_names(self.build)
        unknown = [] if known is None else sorted(set(options) - known)
        if unknown:
            raise ValueError(
                f"backbone {self.name!r} takes no option {', '.join(map(repr, unknown))}; "
                f"its options: {sorted(known)}"
            )


def _option_names(build: Callable[..., keras.Model]) -> set[str] | None:
    # Keyword arguments after the input tensor and geometry; None (unchecked) for a builder
    # taking **options that does not list them in ``option_names``.
    declared = getattr(build, "option_names", None)
    if declared is not None:
        return set(declared)
    parameters = list(inspect.signature(build).parameters.values())[1:]
    if any(p.kind == p.VAR_KEYWORD for p in parameters):
        return None
    return {
        p.name
        for p in parameters
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "geometry"
    }


BACKBONES: dict[str, Backbone] = {}


def register_backbone(backbone: Backbone) -> Backbone:
    """Add ``backbone`` to the registry under its name (replacing any of that name).

    >>> import dataclasses
    >>> mine = register_backbone(dataclasses.replace(get_backbone("vgg16"), name="my_vgg"))
    >>> get_backbone("my_vgg") is mine
    True
    >>> del BACKBONES["my_vgg"]
    """
    BACKBONES[backbone.name] = backbone
    return backbone


def get_backbone(name: str) -> Backbone:
    """The registered backbone called ``name``, or a ``ValueError`` listing the choices.

    >>> get_backbone("mobilenet_v2").features[16]
    'block_12_add'
    >>> get_backbone("vgg19")
    Traceback (most recent call last):
    ...
    ValueError: unknown backbone 'vgg19'; choose one of ['mobilenet_v2', 'resnet50', 'vgg16']
    """
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}") from None


def vgg16_trunk(
    inputs: keras.KerasTensor,
    geometry: str = "caffe",
    width: float = 1.0,
    fc_units: int = 4096,
    dropout: float = 0.5,
    batch_norm: bool = False,
    bn_momentum: float = 0.9,
    fc6_size: int = 7,
    block_channels: Sequence[int] | None = None,
) -> keras.Model:
    """VGG16 with fc6/fc7 as convolutions, layers named as the reference nets.

    ``width`` scales every convolution's channels (1.0 is VGG16; smaller is for tests and CPU
    experiments, and cannot load ImageNet weights). ``batch_norm`` is VGG16-BN (torchvision's
    ``vgg16_bn``): each ``convB_I`` (then without bias) is followed by ``convB_I_bn``, a batch
    normalisation with moving-statistics ``bn_momentum`` (0.9 suits short runs from scratch;
    Keras' 0.99 default lags behind fast-changing weights), and ``convB_I_relu``. ``fc6_size``
    is fc6's kernel size (7 in VGG16); a smaller one suits small images, whose stride-32 map
    has only a few cells. ``block_channels`` gives each of the five blocks its own channel count
    (before ``width``), e.g. thin early blocks and wide deep ones, which cost little at stride
    16-32. Batch normalisation, a non-7 ``fc6_size`` and ``block_channels`` load no ImageNet
    weights.

    >>> trunk = vgg16_trunk(keras.Input((None, None, 3)), "classifier", width=1 / 16,
    ...                     fc_units=8)
    >>> tuple(trunk(keras.ops.zeros((1, 416, 416, 3))).shape)   # stride 32, 7x7 valid fc6
    (1, 7, 7, 8)
    """
    if geometry not in VGG16_GEOMETRIES:
        raise ValueError(f"geometry must be one of {sorted(VGG16_GEOMETRIES)}, got {geometry!r}")
    pad, fc6_padding = VGG16_GEOMETRIES[geometry]
    blocks = VGG16_BLOCKS
    if block_channels is not None:
        if len(block_channels) != len(VGG16_BLOCKS) or min(block_channels) < 1:
            raise ValueError(f"block_channels must be 5 positive ints, got {block_channels!r}")
        blocks = tuple((int(c), n) for c, (_, n) in zip(block_channels, VGG16_BLOCKS, strict=True))
    x = layers.ZeroPadding2D(pad, name="conv1_1_pad")(inputs) if pad else inputs
    for block, (filters, convs) in enumerate(blocks, start=1):
        for index in range(1, convs + 1):
            padding = "valid" if pad and (block, index) == (1, 1) else "same"
            channels = max(1, round(filters * width))
            name = f"conv{block}_{index}"
            if batch_norm:
                x = layers.Conv2D(channels, 3, padding=padding, use_bias=False, name=name)(x)
                x = layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_bn")(x)
                x = layers.Activation("relu", name=f"{name}_relu")(x)
            else:
                x = layers.Conv2D(channels, 3, padding=padding, activation="relu", name=name)(x)
        # SAME 2x2/2 pooling pads only at the end: Caffe's round-up pooling, exactly.
        x = layers.MaxPooling2D(2, strides=2, padding="same", name=f"pool{block}")(x)
    x = layers.Conv2D(fc_units, fc6_size, padding=fc6_padding, activation="relu", name="fc6")(x)
    x = layers.Dropout(dropout, name="drop6")(x)
    x = layers.Conv2D(fc_units, 1, activation="relu", name="fc7")(x)
    x = layers.Dropout(dropout, name="drop7")(x)
    return keras.Model(inputs, x, name="vgg16")


def _vgg16_renames() -> dict[str, str]:
    renames = {"fc1": "fc6", "fc2": "fc7"}
    for block, (_, convs) in enumerate(VGG16_BLOCKS, start=1):
        for index in range(1, convs + 1):
            renames[f"block{block}_conv{index}"] = f"conv{block}_{index}"
    return renames


def load_vgg16_weights(trunk: keras.Model, weights: str, **options) -> list[str]:
    """Load a Keras VGG16 classifier's weights, fc1/fc2 convolutionalized into fc6/fc7."""
    reference = {
        "width": 1.0,
        "fc_units": 4096,
        "batch_norm": False,
        "fc6_size": 7,
        "block_channels": None,
    }
    changed = {k: v for k, v in options.items() if k in reference and v != reference[k]}
    if changed:
        raise ValueError(
            f"ImageNet VGG16 weights need the full-size trunk without BN, not {changed}"
        )
    source = classifier_model(keras.applications.VGG16, weights, "vgg16")
    copied = transfer_weights(source, trunk, _vgg16_renames(), origin=str(weights))
    if "fc6" not in copied:
        warnings.warn(
            f"{weights}: no classifier layers (fc1, fc2) in the file; fc6 and fc7 keep their "
            "random initial weights",
            stacklevel=2,
        )
    return copied


def _application(constructor: Callable[..., keras.Model], name: str):
    def build(
        inputs, geometry: str = "same", bn_momentum: float | None = None, **options
    ) -> keras.Model:
        if geometry != "same":
            raise ValueError(f"backbone {name!r} supports geometry 'same' only, got {geometry!r}")
        trunk = constructor(include_top=False, weights=None, input_tensor=inputs, **options)
        if bn_momentum is not None:
            # Keras applications use 0.99-0.999: after a few thousand steps from scratch the moving
            # statistics still lag far behind the weights, and inference-mode outputs are
            # garbage. The momentum is read at call time and kept by get_config.
            for layer in trunk.layers:
                if isinstance(layer, layers.BatchNormalization):
                    layer.momentum = float(bn_momentum)
        return trunk

    def load(
        trunk: keras.Model, weights: str, bn_momentum: float | None = None, **options
    ) -> list[str]:
        source = classifier_model(constructor, weights, name, **options)
        return transfer_weights(source, trunk, origin=str(weights))

    fixed = {"include_top", "weights", "input_tensor", "input_shape", "pooling", "classes"}
    fixed |= {"classifier_activation", "name"}
    constructor_options = set(inspect.signature(constructor).parameters) - fixed
    build.option_names = frozenset({"bn_momentum", *constructor_options})
    return build, load


register_backbone(
    Backbone(
        name="vgg16",
        build=vgg16_trunk,
        features={8: "pool3", 16: "pool4", 32: "drop7"},
        preprocess={"mean": CAFFE_BGR_MEAN, "reverse_channels": True},
        geometries=("caffe", "same"),
        load_weights=load_vgg16_weights,
    )
)

_resnet50_build, _resnet50_load = _application(keras.applications.ResNet50, "resnet50")
register_backbone(
    Backbone(
        name="resnet50",
        build=_resnet50_build,
        features={8: "conv3_block4_out", 16: "conv4_block6_out", 32: "conv5_block3_out"},
        preprocess={"mean": CAFFE_BGR_MEAN, "reverse_channels": True},
        geometries=("same",),
        load_weights=_resnet50_load,
    )
)

_mobilenet_build, _mobilenet_load = _application(keras.applications.MobileNetV2, "mobilenet_v2")
register_backbone(
    Backbone(
        name="mobilenet_v2",
        build=_mobilenet_build,
        features={8: "block_5_add", 16: "block_12_add", 32: "out_relu"},
        preprocess={"mean": (127.5, 127.5, 127.5), "scale": 1 / 127.5},
        geometries=("same",),
        load_weights=_mobilenet_load,
        # Its stride-2 stages pad for even sizes (correct_pad); odd ones would lose a row.
        input_multiple=32,
    )
)
