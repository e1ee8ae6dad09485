"""Networks: backbones, the FCN head and builders, and the layers they need (``keras.ops`` only)."""

from fcn_tf.models.backbones import BACKBONES, Backbone, get_backbone, register_backbone
from fcn_tf.models.fcn import FCN8s, FCN16s, FCN32s, build_fcn
from fcn_tf.models.initializers import BilinearUpsampling
from fcn_tf.models.layers import Crop, PadToMultiple, Preprocess
from fcn_tf.models.stitch import DilatedPooling2D, rarefy, shift_and_stitch

__all__ = [
    "BACKBONES",
    "Backbone",
    "BilinearUpsampling",
    "Crop",
    "DilatedPooling2D",
    "FCN8s",
    "FCN16s",
    "FCN32s",
    "PadToMultiple",
    "Preprocess",
    "build_fcn",
    "get_backbone",
    "rarefy",
    "register_backbone",
    "shift_and_stitch",
]
