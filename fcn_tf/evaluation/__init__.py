"""Evaluation, prediction and the paper's analyses: scores of a model on a split, pictures
of its masks, the upper bounds of appendix A, training curves.

>>> from fcn_tf.evaluation import coarsen
>>> coarsen([[0, 1], [1, 1]], 2, num_classes=2).tolist()
[[1, 1], [1, 1]]
"""

from fcn_tf.evaluation.evaluate import evaluate, format_report
from fcn_tf.evaluation.models import Segmenter, open_model
from fcn_tf.evaluation.pictures import confusion_figure, curves_figure, write_curves
from fcn_tf.evaluation.predict import predict_images, read_image
from fcn_tf.evaluation.upper_bound import coarsen, upper_bound, upper_bound_of_records

__all__ = [
    "Segmenter",
    "coarsen",
    "confusion_figure",
    "curves_figure",
    "evaluate",
    "format_report",
    "open_model",
    "predict_images",
    "read_image",
    "upper_bound",
    "upper_bound_of_records",
    "write_curves",
]
