"""Export for TF Serving: SavedModel versions with the serving contract's signatures.

>>> from fcn_tf.export import constants
>>> constants.PREDICT_IMAGE_BYTES
'predict_image_bytes'
"""

from fcn_tf.export import constants
from fcn_tf.export.checkpoints import export_checkpoint, load_model_for_export, run_class_names
from fcn_tf.export.saved_model import (
    METADATA_DIR,
    export_saved_model,
    metadata_path,
    read_metadata,
)
from fcn_tf.export.versions import list_versions, next_version, publish_version

__all__ = [
    "METADATA_DIR",
    "constants",
    "export_checkpoint",
    "export_saved_model",
    "list_versions",
    "load_model_for_export",
    "metadata_path",
    "next_version",
    "publish_version",
    "read_metadata",
    "run_class_names",
]
