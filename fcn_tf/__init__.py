"""fcn_tf: Fully Convolutional Networks for semantic segmentation in TensorFlow/Keras 3."""

__version__ = "0.1.0"
