"""Names shared by the exporter, the local server and the clients: the serving contract.

A SavedModel written by :func:`fcn_tf.export.export_saved_model` has these signatures, each
with dynamic batch, height and width:

* ``serving_default``: ``images`` uint8 ``[B, H, W, 3]`` -> ``class_ids`` ``[B, H, W]``
  (uint8 when the classes fit in 8 bits, else int32).
* ``predict_image_bytes``: ``image_bytes`` string ``[B]`` (encoded JPEG or PNG, each at its own
  size) -> ``class_ids`` ``[B, H_max, W_max]`` padded with ``PAD_CLASS_ID`` and
  ``image_size`` int32 ``[B, 2]`` (each image's height and width, to crop the padding away).
* ``probabilities`` (opt-in at export): ``images`` -> ``probabilities`` float32 ``[B, H, W, C]``.

>>> SERVING_DEFAULT, OUTPUT_CLASS_IDS
('serving_default', 'class_ids')
"""

from __future__ import annotations

SERVING_DEFAULT = "serving_default"
PREDICT_IMAGE_BYTES = "predict_image_bytes"
PROBABILITIES = "probabilities"

INPUT_IMAGES = "images"
INPUT_IMAGE_BYTES = "image_bytes"

OUTPUT_CLASS_IDS = "class_ids"
OUTPUT_IMAGE_SIZE = "image_size"
OUTPUT_PROBABILITIES = "probabilities"

# Padding of class_ids beyond an image's own size in predict_image_bytes: the ignore label.
PAD_CLASS_ID = 255

# Decoded pixels (height x width) one encoded image may have before it is refused unread:
# a 0.4 MB PNG can decode to 1.2 GB. 36 Mpx is a 6000 x 6000 photo, 108 MB as uint8 RGB.
DEFAULT_MAX_PIXELS = 6000 * 6000

# Written into the version folder's METADATA_DIR (fcn_tf.export.metadata_path): class names,
# palette, signatures, limits and the run's config, so clients and the server's metadata can
# label masks without the training run folder. TF Serving loads only what saved_model.pb
# references, so the file rides along unread.
ASSETS_METADATA = "fcn_tf.json"
METADATA_DIR = "assets"
