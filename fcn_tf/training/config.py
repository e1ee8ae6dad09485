"""Training recipes: YAML files of four sections, with command-line overrides.

A recipe names the model (the arguments of :func:`fcn_tf.build_fcn`), the data (TFRecord
patterns, or a converter of :mod:`fcn_tf.data.convert` that makes them once), the solver (a
:func:`fcn_tf.training.preset` and its overrides, or Adam/AdamW) and the run (steps, epochs,
checkpoints, precision, strategy). Unknown keys are errors, so a typo never trains silently
with a default.

>>> config = from_dict({"model": {"output_stride": 16}, "solver": {"learning_rate": 1e-3}})
>>> config.model.output_stride, config.solver.learning_rate, config.run.precision
(16, 0.001, 'float32')
>>> override(config, ["run.steps_per_epoch=5", "model.backbone_options={width: 0.5}"]).model
ModelConfig(output_stride=16, backbone='vgg16', geometry=None, backbone_options={'width': 0.5}, \
at_once=False, learn_upsampling=True, backbone_weights=None)
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import yaml

__all__ = [
    "DataConfig",
    "ModelConfig",
    "RunConfig",
    "SolverSection",
    "TrainConfig",
    "absolute_paths",
    "from_dict",
    "load_recipe",
    "override",
    "to_dict",
]

OPTIMIZERS = ("sgd", "adam", "adamw")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
STRATEGIES = ("default", "one_device", "mirrored", "multi_worker", "tpu")


class _Loader(yaml.SafeLoader):
    """YAML with YAML 1.2's floats: PyYAML reads ``1e-4`` (no dot) as a string."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _load_yaml(text: Any) -> Any:
    return yaml.load(text, Loader=_Loader)


@dataclasses.dataclass
class ModelConfig:
    """Arguments of :func:`fcn_tf.build_fcn` (``num_classes`` comes from the data).

    >>> ModelConfig(output_stride=16).backbone, ModelConfig().geometry   # None: the backbone's
    ('vgg16', None)
    """

    output_stride: int = 8
    backbone: str = "vgg16"
    geometry: str | None = None
    backbone_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    at_once: bool = False
    learn_upsampling: bool = True
    backbone_weights: str | None = None


@dataclasses.dataclass
class DataConfig:
    """Where the records come from and how the pipeline augments them.

    ``train``/``val`` are TFRecord files or glob patterns. When one is not given, ``dataset``
    (a converter name of ``python -m fcn_tf.data.convert``, e.g. ``synthetic`` or ``camvid``)
    writes that split once into ``records_dir`` (``options`` and ``split_options[split]`` go
    to the converter) and later runs reuse it.

    >>> data = DataConfig(train="records/train-*.tfrecord", batch_size=4, crop_size=320)
    >>> data.train, data.val, data.dataset   # validation still from the synthetic converter
    ('records/train-*.tfrecord', None, 'synthetic')
    """

    train: str | None = None
    val: str | None = None
    dataset: str | None = "synthetic"
    root: str | None = None
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    split_options: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    train_split: str = "train"
    val_split: str = "val"
    records_dir: str = "~/.cache/fcn_tf/records"
    num_classes: int | None = None
    batch_size: int = 1
    crop_size: int | list[int] | None = None
    scale_range: list[float] | None = None
    mirror: bool = True
    jitter: float = 0.0
    ignore_label: int = 255
    cache: bool = False
    shuffle_buffer: int = 256


@dataclasses.dataclass
class SolverSection:
    """The optimizer: ``sgd`` is :class:`fcn_tf.training.ReferenceSGD` from ``preset``
    (``null`` fields keep the preset's value); ``adam``/``adamw`` need their own
    ``learning_rate`` (the presets' are SGD's) and take the schedule, ``accumulate`` (default
    1) and the preset's loss normalisation (``weight_decay`` is AdamW's decoupled decay).

    ``loss_sampling`` < 1 is the paper's loss sampling (section 3.4): each
    ``model.output_stride`` pixels square cell of the labels keeps its loss with this
    probability, renormalised so that the expected loss is the whole-image one.

    >>> SolverSection().optimizer, SolverSection().preset, SolverSection().learning_rate
    ('sgd', 'normalized', None)
    """

    optimizer: str = "sgd"
    preset: str = "normalized"
    learning_rate: float | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    schedule: str = "fixed"
    power: float = 0.9
    step_size: int | None = None
    gamma: float = 0.1
    accumulate: int | None = None
    normalize: str | None = None
    clipnorm: float | None = None
    loss_sampling: float = 1.0


@dataclasses.dataclass
class RunConfig:
    """Length, checkpoints, numerics and distribution of a run.

    ``epochs`` of ``steps_per_epoch`` optimizer updates each (``None``: one pass over the
    training records); every update consumes ``accumulate`` batches. A checkpoint is saved
    every ``checkpoint_every`` updates and at each epoch's end, after evaluation.

    >>> run = RunConfig(epochs=3, steps_per_epoch=100)
    >>> run.precision, run.jit, run.strategy   # the defaults measured fastest on CPU
    ('float32', False, 'default')
    """

    epochs: int = 1
    steps_per_epoch: int | None = None
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    seed: int = 0
    deterministic: bool = False
    precision: str = "float32"
    jit: bool = False
    strategy: str = "default"
    tpu: str | None = None
    eval_images: int = 4
    export: bool = True


@dataclasses.dataclass
class TrainConfig:
    """A whole recipe; its fields are checked when it is made.

    >>> TrainConfig(run=RunConfig(precision="float64"))
    Traceback (most recent call last):
    ...
    ValueError: run.precision must be one of ('float32', 'mixed_bfloat16', 'mixed_float16'), ...
    """

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    solver: SolverSection = dataclasses.field(default_factory=SolverSection)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)
    name: str = "fcn"

    def __post_init__(self) -> None:
        check(self)


def check(config: TrainConfig) -> None:
    """Raise ``ValueError`` naming the field of a value no run could use."""
    from fcn_tf.training.solver import NORMALIZE_MODES, PRESETS, SCHEDULES

    choices = {
        "solver.optimizer": (config.solver.optimizer, OPTIMIZERS),
        "solver.preset": (config.solver.preset, PRESETS),
        "solver.schedule": (config.solver.schedule, SCHEDULES),
        "run.precision": (config.run.precision, PRECISIONS),
        "run.strategy": (config.run.strategy, STRATEGIES),
        "model.output_stride": (config.model.output_stride, (8, 16, 32)),
    }
    if config.solver.normalize is not None:
        choices["solver.normalize"] = (config.solver.normalize, NORMALIZE_MODES)
    for field, (value, allowed) in choices.items():
        if value not in allowed:
            raise ValueError(f"{field} must be one of {allowed}, got {value!r}")
    positive = {
        "data.batch_size": config.data.batch_size,
        "run.epochs": config.run.epochs,
        "run.checkpoint_every": config.run.checkpoint_every,
        "run.keep_checkpoints": config.run.keep_checkpoints,
    }
    if config.run.steps_per_epoch is not None:
        positive["run.steps_per_epoch"] = config.run.steps_per_epoch
    if config.solver.accumulate is not None:
        positive["solver.accumulate"] = config.solver.accumulate
    for field, value in positive.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{field} must be a positive integer, got {value!r}")
    _check_solver_values(config.solver)
    if not 0.0 < config.solver.loss_sampling <= 1.0:
        raise ValueError(
            f"solver.loss_sampling must be in (0, 1], got {config.solver.loss_sampling!r}"
        )
    if config.data.train is None and config.data.dataset is None:
        raise ValueError("data.train (a TFRecord pattern) or data.dataset (a converter) is needed")


def _check_solver_values(solver: SolverSection) -> None:
    if solver.optimizer != "sgd" and solver.learning_rate is None:
        raise ValueError(
            f"solver.learning_rate is needed with solver.optimizer {solver.optimizer!r}: the "
            "presets' rates are SGD's (1e-14 to 1e-4)"
        )

    def unset_or(value: Any, ok: Callable[[Any], bool]) -> bool:
        return value is None or ok(value)

    checks = [
        ("learning_rate", solver.learning_rate, unset_or(solver.learning_rate, lambda v: v > 0),
         "positive"),
        ("weight_decay", solver.weight_decay, unset_or(solver.weight_decay, lambda v: v >= 0),
         ">= 0"),
        ("momentum", solver.momentum, unset_or(solver.momentum, lambda v: 0 <= v < 1),
         "in [0, 1)"),
        ("gamma", solver.gamma, solver.gamma > 0, "positive"),
        ("power", solver.power, solver.power > 0, "positive"),
        ("clipnorm", solver.clipnorm, unset_or(solver.clipnorm, lambda v: v > 0), "positive"),
        ("step_size", solver.step_size, solver.schedule != "step" or (
            isinstance(solver.step_size, int) and solver.step_size > 0),
         "a positive integer with schedule 'step' (Caffe's stepsize)"),
    ]  # fmt: skip
    for field, value, ok, requirement in checks:
        if not ok:
            raise ValueError(f"solver.{field} must be {requirement}, got {value!r}")


_SECTIONS = {
    "model": ModelConfig,
    "data": DataConfig,
    "solver": SolverSection,
    "run": RunConfig,
}


_KINDS = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
    "dict": lambda v: isinstance(v, Mapping),
    "list": lambda v: isinstance(v, (list, tuple)),
    "None": lambda v: v is None,
}


def _typed(field: dataclasses.Field, value: Any, where: str) -> Any:
    """``value`` checked against the field's annotation (``"float | None"``...); ints become
    floats in float fields, so a recipe's ``lr: 1`` and ``lr: 1.0`` are the same run."""
    kinds = [kind.split("[")[0] for kind in str(field.type).split(" | ")]
    if not any(_KINDS[kind](value) for kind in kinds):
        spelled = isinstance(value, str) and value.lower() in ("none", "null")
        hint = " (write null for none)" if spelled and "None" in kinds else ""
        raise ValueError(f"{where}.{field.name} must be {field.type}, got {value!r}{hint}")
    if "float" in kinds and "int" not in kinds and isinstance(value, int):
        return float(value)
    return value


def _section(cls: type, values: Mapping[str, Any] | None, where: str) -> Any:
    values = dict(values or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; known: {sorted(fields)}")
    return cls(**{key: _typed(fields[key], value, where) for key, value in values.items()})


def from_dict(values: Mapping[str, Any], where: str = "config") -> TrainConfig:
    """A :class:`TrainConfig` from nested dicts (missing keys keep their defaults).

    >>> from_dict({"run": {"epoch": 3}})
    Traceback (most recent call last):
    ...
    ValueError: config: run: unknown key(s) ['epoch']; known: [...]
    """
    unknown = sorted(set(values) - {*_SECTIONS, "name"})
    if unknown:
        raise ValueError(f"{where}: unknown section(s) {unknown}; known: {[*_SECTIONS, 'name']}")
    sections = {
        name: _section(cls, values.get(name), f"{where}: {name}") for name, cls in _SECTIONS.items()
    }
    return TrainConfig(**sections, name=str(values.get("name", "fcn")))


def to_dict(config: TrainConfig) -> dict[str, Any]:
    """The config as plain nested dicts, as written to a run's ``config.yaml``.

    >>> config = from_dict({"data": {"batch_size": 4, "crop_size": 64}})
    >>> to_dict(config)["data"]["batch_size"], from_dict(to_dict(config)) == config
    (4, True)
    """
    return dataclasses.asdict(config)


# The fields that name files or folders.
_PATH_FIELDS = (
    ("data", "train"),
    ("data", "val"),
    ("data", "root"),
    ("data", "records_dir"),
    ("model", "backbone_weights"),
)
# Converter options (data.options, data.split_options[split]) that name files or folders.
_PATH_OPTIONS = ("root", "voc_root", "palette")


def _absolute(value: str) -> str:
    return value if "://" in value else os.path.abspath(os.path.expanduser(value))


def _absolute_options(options: Mapping[str, Any]) -> dict[str, Any]:
    return {
        key: _absolute(value) if key in _PATH_OPTIONS and isinstance(value, str) else value
        for key, value in options.items()
    }


def absolute_paths(config: TrainConfig) -> TrainConfig:
    """The config with its local paths made absolute (``~`` expanded), so a run's
    ``config.yaml`` means the same files from any working directory (``--resume`` from
    elsewhere), converter options ``root``, ``voc_root`` and ``palette`` included. URLs
    (``gs://...``) and ``backbone_weights: imagenet`` are kept.

    >>> import os
    >>> absolute_paths(TrainConfig(data=DataConfig(train="rec/*.tfrecord"))).data.train == (
    ...     os.path.join(os.getcwd(), "rec", "*.tfrecord"))
    True
    """
    sections: dict[str, dict[str, Any]] = {}
    for section, key in _PATH_FIELDS:
        value = getattr(getattr(config, section), key)
        if isinstance(value, str) and (section, value) != ("model", "imagenet"):
            sections.setdefault(section, {})[key] = _absolute(value)
    data = sections.setdefault("data", {})
    data["options"] = _absolute_options(config.data.options)
    data["split_options"] = {
        split: _absolute_options(options) for split, options in config.data.split_options.items()
    }
    return dataclasses.replace(
        config,
        **{
            name: dataclasses.replace(getattr(config, name), **values)
            for name, values in sections.items()
        },
    )


def load_recipe(path: str | os.PathLike) -> TrainConfig:
    """Read a YAML recipe; errors name the file.

    The recipe's name defaults to the file's stem.

    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "mine.yaml")
    >>> with open(path, "w") as file:
    ...     _ = file.write("solver: {learning_rate: 1e-4}\\nrun: {epochs: 2}\\n")
    >>> recipe = load_recipe(path)
    >>> recipe.name, recipe.solver.learning_rate, recipe.run.epochs   # 1e-4: a float
    ('mine', 0.0001, 2)
    """
    path = os.fspath(path)
    try:
        with open(path) as file:
            values = _load_yaml(file) or {}
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(values, Mapping):
        raise ValueError(f"{path}: a recipe is a mapping of sections, got {type(values).__name__}")
    values = dict(values)
    values.setdefault("name", os.path.splitext(os.path.basename(path))[0])
    return from_dict(values, where=path)


def override(config: TrainConfig, assignments: Sequence[str]) -> TrainConfig:
    """Apply ``section.key=value`` assignments; values are parsed as YAML (``null``, lists...).

    Below a field that is itself a mapping (``data.options``, ``model.backbone_options``...)
    any key may be set, as in the recipe file.

    >>> override(TrainConfig(), ["data.crop_size=[64, 96]"]).data.crop_size
    [64, 96]
    >>> override(TrainConfig(), ["data.split_options.train.count=8"]).data.split_options
    {'train': {'count': 8}}
    """
    values = to_dict(config)
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        path = key.strip().split(".")
        if not sep or len(path) < 2 or not all(path):
            raise ValueError(f"override {assignment!r}: expected section.key=value")
        target = values
        for depth, part in enumerate(path[:-1]):
            if depth >= 2:  # inside a mapping field: its keys are free
                target.setdefault(part, {})
            if not isinstance(target.get(part), dict):
                raise ValueError(f"override {assignment!r}: {part!r} is not a section")
            target = target[part]
        if len(path) == 2 and path[-1] not in target:
            raise ValueError(f"override {assignment!r}: unknown key {key.strip()!r}")
        try:
            target[path[-1]] = _load_yaml(text)
        except yaml.YAMLError as error:
            raise ValueError(
                f"override {assignment!r}: the value is not valid YAML ({error.problem}); "
                f"quote it, e.g. --set \"{key.strip()}='{text}'\""
            ) from None
    return from_dict(values, where="overrides")
