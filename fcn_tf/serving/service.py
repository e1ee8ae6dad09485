"""What Predict, GetModelMetadata and GetModelStatus do, shared by the gRPC and REST fronts.

Requests name a model as TF Serving's ``ModelSpec`` does: a name, and a version number or a
version label (neither: the newest loaded version).

>>> from tensorflow_serving.apis import model_pb2
>>> version_choice(model_pb2.ModelSpec(name="fcn", version_label="stable"))
(None, 'stable')
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
from tensorflow.core.protobuf import error_codes_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
)

from fcn_tf.serving.errors import invalid, not_found
from fcn_tf.serving.registry import ModelRegistry
from fcn_tf.serving.servable import Servable, Signature

__all__ = [
    "SIGNATURE_DEF",
    "model_status",
    "predict",
    "response_spec",
    "signature_def_map",
    "version_choice",
]

# The one metadata field TF Serving (and this server) provides.
SIGNATURE_DEF = "signature_def"


def version_choice(spec: model_pb2.ModelSpec) -> tuple[int | None, str]:
    """``(version or None, label or "")`` of a ``ModelSpec``.

    >>> version_choice(model_pb2.ModelSpec(name="fcn", version={"value": 3}))
    (3, '')
    >>> version_choice(model_pb2.ModelSpec(name="fcn"))  # the newest loaded
    (None, '')
    """
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        return spec.version.value, ""
    return None, spec.version_label if choice == "version_label" else ""


def predict(
    registry: ModelRegistry,
    spec: model_pb2.ModelSpec,
    inputs: Mapping[str, np.ndarray],
    output_filter: Iterable[str] = (),
) -> tuple[Servable, Signature, dict[str, np.ndarray]]:
    """Run the signature ``spec`` names on ``inputs``: the version, signature and outputs.

    >>> predict(ModelRegistry([]), model_pb2.ModelSpec(name="fcn"), {})
    Traceback (most recent call last):
    ...
    fcn_tf.serving.errors.ServingError: NOT_FOUND: model 'fcn' is not served here; models: []
    """
    servable = registry.resolve(spec.name, *version_choice(spec))
    signature = servable.signature(spec.signature_name)
    return servable, signature, signature.run(inputs, output_filter)


def response_spec(name: str, servable: Servable, signature_name: str = "") -> model_pb2.ModelSpec:
    """The ``ModelSpec`` a response carries: the name, version and signature that answered.

    >>> servable = Servable(7, "/models/fcn/7", None, {}, {}, {})
    >>> spec = response_spec("fcn", servable, "serving_default")
    >>> spec.name, spec.version.value, spec.signature_name
    ('fcn', 7, 'serving_default')
    """
    spec = model_pb2.ModelSpec(name=name, signature_name=signature_name)
    spec.version.value = servable.version
    return spec


def signature_def_map(
    registry: ModelRegistry, spec: model_pb2.ModelSpec, fields: Iterable[str]
) -> tuple[Servable, get_model_metadata_pb2.SignatureDefMap]:
    """The version ``spec`` names and its SignatureDefs, for GetModelMetadata's only field.

    >>> signature_def_map(ModelRegistry([]), model_pb2.ModelSpec(name="fcn"), ["tags"])
    Traceback (most recent call last):
    ...
    fcn_tf.serving.errors.ServingError: INVALID_ARGUMENT: metadata fields ['tags'] are not ...
    """
    fields = list(fields)
    if not fields:
        raise invalid("GetModelMetadataRequest must name at least one metadata_field")
    unknown = [field for field in fields if field != SIGNATURE_DEF]
    if unknown:
        raise invalid(f"metadata fields {unknown} are not supported; only '{SIGNATURE_DEF}' is")
    servable = registry.resolve(spec.name, *version_choice(spec))
    definitions = get_model_metadata_pb2.SignatureDefMap()
    for key, definition in servable.signature_defs.items():
        definitions.signature_def[key].CopyFrom(definition)
    return servable, definitions


def model_status(
    registry: ModelRegistry, spec: model_pb2.ModelSpec
) -> get_model_status_pb2.GetModelStatusResponse:
    """Every known version of the model (or the one ``spec`` names) with its state.

    >>> from fcn_tf.serving.config import model_configs, single_model_config
    >>> registry = ModelRegistry(model_configs(single_model_config("fcn", "/models/fcn")))
    >>> model_status(registry, model_pb2.ModelSpec(name="fcn"))  # nothing loaded yet
    Traceback (most recent call last):
    ...
    fcn_tf.serving.errors.ServingError: NOT_FOUND: Could not find any versions of model fcn
    """
    model = registry.model(spec.name)
    version, label = version_choice(spec)
    if label:
        version = model.resolve(None, label).version
    rows = [row for row in model.status() if version is None or row["version"] == version]
    if version is not None and not rows:
        model.resolve(version)  # raises NOT_FOUND naming the loaded versions
    if not rows:
        # As TF Serving: a readiness probe must not see an OK before any version exists.
        raise not_found(f"Could not find any versions of model {spec.name}")
    states = get_model_status_pb2.ModelVersionStatus.State
    response = get_model_status_pb2.GetModelStatusResponse()
    for row in rows:
        status = response.model_version_status.add(version=row["version"])
        status.state = states.Value(row["state"])
        status.status.error_code = error_codes_pb2.UNKNOWN if row["error"] else error_codes_pb2.OK
        status.status.error_message = row["error"]
    return response
