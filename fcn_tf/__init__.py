"""fcn_tf: Fully Convolutional Networks for semantic segmentation in TensorFlow/Keras 3.

>>> import fcn_tf
>>> model = fcn_tf.FCN8s(num_classes=21, backbone_options={"width": 1 / 32, "fc_units": 8})
>>> model.output_shape
(None, None, None, 21)
"""

from fcn_tf.losses import SegmentationCrossEntropy
from fcn_tf.metrics import ConfusionMatrix, MeanIU, confusion_matrix, scores
from fcn_tf.models import BACKBONES, FCN8s, FCN16s, FCN32s, build_fcn, rarefy, shift_and_stitch

__version__ = "0.1.0"

__all__ = [
    "BACKBONES",
    "ConfusionMatrix",
    "FCN8s",
    "FCN16s",
    "FCN32s",
    "MeanIU",
    "SegmentationCrossEntropy",
    "__version__",
    "build_fcn",
    "confusion_matrix",
    "rarefy",
    "scores",
    "shift_and_stitch",
]
