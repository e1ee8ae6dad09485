"""Data: the TFRecord schema, converters, the tf.data input pipeline and built-in shapes data."""
