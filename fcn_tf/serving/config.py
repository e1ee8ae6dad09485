"""TF Serving's configuration files, parsed with its protos: ``--model_config_file`` and
``--batching_parameters_file``.

A model config is the text form of ``tensorflow.serving.ModelServerConfig`` (from
``tensorflow-serving-api``). ``BatchingParameters`` lives in TF Serving's
``session_bundle_config.proto``, which that package does not ship: :func:`batching_parameters_type`
builds the message from the same field names, numbers and types, so a file that parses here
parses in ``tensorflow_model_server``.

>>> config = parse_model_server_config('''
...     model_config_list { config { name: "fcn" base_path: "/models/fcn"
...                                  model_platform: "tensorflow" } }''')
>>> [(c.name, c.base_path) for c in model_configs(config)]
[('fcn', '/models/fcn')]
>>> parse_batching_parameters("max_batch_size { value: 4 }").max_batch_size.value
4
"""

from __future__ import annotations

import functools

from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message,
    message_factory,
    text_format,
    wrappers_pb2,
)
from tensorflow_serving.config import model_server_config_pb2

__all__ = [
    "batching_parameters_type",
    "model_configs",
    "parse_batching_parameters",
    "parse_model_server_config",
    "read_batching_parameters",
    "read_model_server_config",
    "single_model_config",
]

ModelServerConfig = model_server_config_pb2.ModelServerConfig
ModelConfig = model_server_config_pb2.ModelConfig

# TF Serving's BatchingParameters (tensorflow_serving/servables/tensorflow/
# session_bundle_config.proto): name, number, wrapper type or (repeated) scalar type.
_BATCHING_FIELDS = [
    ("max_batch_size", 1, ".google.protobuf.Int64Value"),
    ("batch_timeout_micros", 2, ".google.protobuf.Int64Value"),
    ("max_enqueued_batches", 3, ".google.protobuf.Int64Value"),
    ("num_batch_threads", 4, ".google.protobuf.Int64Value"),
    ("thread_pool_name", 5, ".google.protobuf.StringValue"),
    ("allowed_batch_sizes", 6, "repeated int64"),
    ("pad_variable_length_inputs", 7, "bool"),
]


def parse_model_server_config(text: str, source: str = "model config") -> ModelServerConfig:
    """``text`` (a ``ModelServerConfig`` text proto) parsed; errors name ``source``.

    >>> config = parse_model_server_config('model_config_list { config { name: "fcn" } }')
    >>> config.model_config_list.config[0].name
    'fcn'
    >>> parse_model_server_config("model_config_list { nme: 1 }", "models.config")
    Traceback (most recent call last):
    ...
    ValueError: models.config: not a ModelServerConfig text proto: ...
    """
    try:
        return text_format.Parse(text, ModelServerConfig())
    except text_format.ParseError as error:
        raise ValueError(f"{source}: not a ModelServerConfig text proto: {error}") from None


def read_model_server_config(path: str) -> ModelServerConfig:
    """The ``ModelServerConfig`` in the file ``path`` (TF Serving's ``--model_config_file``).

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "models.config")
    >>> with open(path, "w") as file:
    ...     _ = file.write('model_config_list { config { name: "fcn" base_path: "/m" } }')
    >>> read_model_server_config(path).model_config_list.config[0].base_path
    '/m'
    """
    with open(path) as file:
        return parse_model_server_config(file.read(), path)


def single_model_config(name: str, base_path: str) -> ModelServerConfig:
    """The config of ``--model_name NAME --model_base_path PATH``: one model, latest version.

    >>> model_configs(single_model_config("fcn", "/models/fcn"))[0].model_platform
    'tensorflow'
    """
    config = ModelServerConfig()
    config.model_config_list.config.add(name=name, base_path=base_path, model_platform="tensorflow")
    return config


def model_configs(config: ModelServerConfig) -> list[ModelConfig]:
    """The models of ``config``, checked as TF Serving checks them (names unique, a base path,
    the ``tensorflow`` platform).

    >>> config = parse_model_server_config('''model_config_list {
    ...     config { name: "fcn" base_path: "/a" }  config { name: "fcn" base_path: "/b" } }''')
    >>> model_configs(config)
    Traceback (most recent call last):
    ...
    ValueError: model name 'fcn' appears more than once
    """
    if config.HasField("custom_model_config"):
        raise ValueError("custom_model_config is not supported: use model_config_list")
    models = list(config.model_config_list.config)
    names = [model.name for model in models]
    for model in models:
        if not model.name:
            raise ValueError(f"a model config has no name: {model}")
        if not model.base_path:
            raise ValueError(f"model '{model.name}' has no base_path")
        if model.model_platform not in ("", "tensorflow"):
            raise ValueError(
                f"model '{model.name}': platform '{model.model_platform}' is not served here"
            )
        if names.count(model.name) > 1:
            raise ValueError(f"model name '{model.name}' appears more than once")
    return models


@functools.cache
def batching_parameters_type() -> type[message.Message]:
    """The ``tensorflow.serving.BatchingParameters`` message class (in a private pool).

    >>> fields = batching_parameters_type().DESCRIPTOR.fields_by_name
    >>> fields["max_batch_size"].number, fields["allowed_batch_sizes"].number
    (1, 6)
    """
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    file = descriptor_pb2.FileDescriptorProto(
        name="fcn_tf/serving/batching_parameters.proto",
        package="tensorflow.serving",
        dependency=[wrappers_pb2.DESCRIPTOR.name],
        syntax="proto3",
    )
    kinds = descriptor_pb2.FieldDescriptorProto
    batching = file.message_type.add(name="BatchingParameters")
    for name, number, kind in _BATCHING_FIELDS:
        field = batching.field.add(name=name, number=number, label=kinds.LABEL_OPTIONAL)
        if kind.startswith("."):
            field.type, field.type_name = kinds.TYPE_MESSAGE, kind
        else:
            field.type = kinds.TYPE_BOOL if kind == "bool" else kinds.TYPE_INT64
            if kind.startswith("repeated"):
                field.label = kinds.LABEL_REPEATED
    pool.Add(file)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters")
    )


def parse_batching_parameters(text: str, source: str = "batching parameters") -> message.Message:
    """``text`` (a ``BatchingParameters`` text proto) parsed; errors name ``source``.

    >>> parse_batching_parameters("allowed_batch_sizes: [1, 4, 8]").allowed_batch_sizes
    [1, 4, 8]
    >>> parse_batching_parameters("max_batch_size: 4", "batching.config")
    Traceback (most recent call last):
    ...
    ValueError: batching.config: not a BatchingParameters text proto: ...
    """
    try:
        return text_format.Parse(text, batching_parameters_type()())
    except text_format.ParseError as error:
        raise ValueError(f"{source}: not a BatchingParameters text proto: {error}") from None


def read_batching_parameters(path: str) -> message.Message:
    """The ``BatchingParameters`` in the file ``path`` (``--batching_parameters_file``).

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "batching.config")
    >>> with open(path, "w") as file:
    ...     _ = file.write("batch_timeout_micros { value: 5000 }")
    >>> read_batching_parameters(path).batch_timeout_micros.value
    5000
    """
    with open(path) as file:
        return parse_batching_parameters(file.read(), path)
