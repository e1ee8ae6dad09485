"""Data: the TFRecord schema, converters, the tf.data input pipeline and built-in shapes data.

>>> from fcn_tf import data
>>> sorted(data.CONVERTERS)[:3]
['camvid', 'folder', 'nyud']
"""

from fcn_tf.data.converters import CONVERTERS, get_converter
from fcn_tf.data.pipeline import CorruptRecordCounter, load
from fcn_tf.data.records import Sample, decode_example, encode_example
from fcn_tf.data.tfds import from_tfds

__all__ = [
    "CONVERTERS",
    "CorruptRecordCounter",
    "Sample",
    "decode_example",
    "encode_example",
    "from_tfds",
    "get_converter",
    "load",
]
