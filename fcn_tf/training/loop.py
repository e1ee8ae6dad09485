"""The training loop: one custom loop for every ``tf.distribute`` strategy.

Keras ``fit`` does not run under ``MultiWorkerMirroredStrategy`` (keras-team/keras#20585), so
the trainer owns its loop. Each replica computes the summed cross-entropy of its images and
divides it by a *global* normaliser: nothing (``"none"``, the authors' summed loss), the global
batch (``"batch"``) or the number of valid pixels over all replicas (``"valid"``, one
all-reduce), so the replica gradients, which the optimizer sums, are the gradient of the
global-batch loss whatever the number of replicas.

With ``solver.accumulate`` k > 1 an update is k micro-batches: each replica sums their
gradients in variables of its own and the last one applies the mean (Caffe's ``iter_size``),
the same Python-chosen steps under every strategy (see :meth:`Trainer.train_step_fn`). Each
micro-batch's loss has its own normaliser, as each of Caffe's forward passes.

A run continues exactly where it stopped: a checkpoint holds the model, the optimizer (its
update count and momentum or moments; dropout's seed state is in the model), and the input
position follows from the update count: the pipeline is rebuilt and skips the records already
consumed, with their augmentation draws (:func:`fcn_tf.data.load`'s ``skip``). Checkpoints
fall between updates, so the gradient sums, zero there, are not in them.

>>> import tempfile
>>> from fcn_tf.training.config import from_dict
>>> config = from_dict({
...     "model": {"geometry": "same", "backbone_options": {"width": 1 / 32, "fc_units": 8}},
...     "data": {"options": {"count": 4, "height": 32, "width": 32},
...              "records_dir": tempfile.mkdtemp(), "batch_size": 2, "crop_size": 32},
...     "solver": {"learning_rate": 1e-3},
...     "run": {"steps_per_epoch": 2, "export": False},
... })
>>> result = Trainer(config, tempfile.mkdtemp(), verbose=0).fit()
>>> result["step"], sorted(result["val"])[:2]
(2, ['frequency_weighted_iu', 'mean_accuracy'])
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import json
import math
import os
import shutil
import time
import warnings
import zipfile
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from fcn_tf.losses import SegmentationCrossEntropy
from fcn_tf.metrics import ConfusionMatrix, scores
from fcn_tf.models.fcn import build_fcn
from fcn_tf.training import runs
from fcn_tf.training.config import TrainConfig, absolute_paths, from_dict, to_dict
from fcn_tf.training.inputs import eval_dataset_fn, resolve_split, train_dataset_fn
from fcn_tf.training.solver import SolverConfig, make_optimizer, make_schedule, preset
from fcn_tf.training.strategy import is_chief, make_strategy, worker_index

__all__ = [
    "NonFiniteLossError",
    "Trainer",
    "build_model",
    "build_optimizer",
    "gradient_sums",
    "load_model",
    "solver_config",
]


def _check_resumable(previous_config: dict[str, Any], config: TrainConfig) -> None:
    """Resume continues the input stream by counting batches: refuse what would move it.
    ``config`` is the trainer's, whose paths are absolute."""
    # Runs saved before paths were stored absolute hold them as typed.
    previous = absolute_paths(from_dict(previous_config, where="the run's config.yaml"))
    # The effective accumulation: null takes the preset's, which another preset changes. The
    # seed, shuffle buffer and records fix the order of the stream that resuming counts into.
    for field, before, now in (
        ("data.batch_size", previous.data.batch_size, config.data.batch_size),
        ("solver.accumulate", _accumulate(previous), _accumulate(config)),
        ("run.seed", previous.run.seed, config.run.seed),
        ("data.shuffle_buffer", previous.data.shuffle_buffer, config.data.shuffle_buffer),
        ("data.train", previous.data.train, config.data.train),
    ):
        if before != now:
            raise ValueError(
                f"{field} was {before} and is now {now}: a resumed run keeps it, so "
                "that it continues exactly where it stopped (train into a new folder with "
                "--init-from to change it)"
            )


def _json_safe(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None``."""
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the message names the step and the last checkpoint.

    >>> issubclass(NonFiniteLossError, FloatingPointError)   # caught as numpy's errors are
    True
    """


def solver_config(config: TrainConfig, total_steps: int) -> SolverConfig:
    """The :class:`SolverConfig` of a recipe: its preset with the recipe's fields set.

    >>> recipe = from_dict({"model": {"output_stride": 16}, "solver": {"preset": "heavy"}})
    >>> heavy = solver_config(recipe, total_steps=10)
    >>> heavy.learning_rate, heavy.momentum, heavy.normalize   # FCN-16s: summed per image
    (1e-12, 0.99, 'batch')
    """
    solver = config.solver
    fields = {
        "learning_rate": solver.learning_rate,
        "momentum": solver.momentum,
        "weight_decay": solver.weight_decay,
        "accumulate": _accumulate(config),
        "normalize": solver.normalize,
    }
    overrides = {name: value for name, value in fields.items() if value is not None}
    return preset(
        solver.preset,
        config.model.output_stride,
        config.model.at_once,
        schedule=solver.schedule,
        power=solver.power,
        step_size=solver.step_size,
        gamma=solver.gamma,
        total_steps=total_steps,
        **overrides,
    )


def _accumulate(config: TrainConfig) -> int:
    if config.solver.accumulate is not None:
        return config.solver.accumulate
    if config.solver.optimizer != "sgd":
        return 1  # the presets' minibatch of 20 is the paper's SGD
    return preset(config.solver.preset, config.model.output_stride, config.model.at_once).accumulate


def build_optimizer(config: TrainConfig, solver: SolverConfig) -> keras.optimizers.Optimizer:
    """The recipe's optimizer (``LossScaleOptimizer``-wrapped under ``mixed_float16``).

    Every ``apply`` is one update, so ``iterations`` and the schedule count updates: the
    :class:`Trainer` accumulates micro-batches itself (Keras' own accumulation updates inside
    a ``cond``, where ``MirroredStrategy`` cannot all-reduce).

    >>> config = from_dict({"solver": {"optimizer": "adam", "learning_rate": 1e-3}})
    >>> type(build_optimizer(config, solver_config(config, total_steps=10))).__name__
    'Adam'
    """
    extra = {"clipnorm": config.solver.clipnorm} if config.solver.clipnorm else {}
    if config.solver.optimizer == "sgd":
        optimizer = make_optimizer(dataclasses.replace(solver, accumulate=1), **extra)
    else:
        common = {"learning_rate": make_schedule(solver), **extra}
        if config.solver.optimizer == "adamw":
            optimizer = keras.optimizers.AdamW(weight_decay=solver.weight_decay, **common)
        else:
            optimizer = keras.optimizers.Adam(**common)
    if config.run.precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def gradient_sums(variables: list[Any], accumulate: int) -> list[tf.Variable]:
    """Each replica's running sum of its micro-batch gradients; none without accumulation.

    Call it in the strategy's scope. On-read synchronisation gives every replica a copy of
    its own to add to and read without a collective, so the one all-reduce of an update
    stays in the optimizer's ``apply``.

    >>> sums = gradient_sums([keras.Variable([1.0, 2.0])], accumulate=2)
    >>> [s.numpy().tolist() for s in sums], gradient_sums([keras.Variable(0.0)], 1)
    ([[0.0, 0.0]], [])
    """
    if accumulate == 1:
        return []
    return [
        tf.Variable(
            tf.zeros(variable.shape, variable.dtype),
            trainable=False,
            synchronization=tf.VariableSynchronization.ON_READ,
            aggregation=tf.VariableAggregation.SUM,
        )
        for variable in variables
    ]


def build_model(
    config: TrainConfig, num_classes: int, backbone_weights: bool = True
) -> keras.Model:
    """The recipe's network; ``backbone_weights=False`` skips ``model.backbone_weights`` (for a
    network a checkpoint fills anyway, so the ImageNet file need not be there).

    >>> tiny = {"geometry": "same", "backbone_options": {"width": 1 / 32, "fc_units": 8}}
    >>> build_model(from_dict({"model": tiny}), num_classes=3).name
    'fcn8s_vgg16'
    """
    model = config.model
    return build_fcn(
        num_classes,
        output_stride=model.output_stride,
        backbone=model.backbone,
        backbone_weights=model.backbone_weights if backbone_weights else None,
        geometry=model.geometry,
        at_once=model.at_once,
        learn_upsampling=model.learn_upsampling,
        backbone_options=model.backbone_options,
    )


def load_model(path: str) -> keras.Model:
    """A trained network: a ``.keras`` file, or a run's checkpoint (prefix, ``checkpoints/`` or
    ``best/`` folder, or the run folder) restored into the network its ``config.yaml`` names.

    Every model variable must come from the checkpoint; optimizer slots may stay behind.

    >>> load_model("nowhere/model.keras")
    Traceback (most recent call last):
    ...
    FileNotFoundError: nowhere/model.keras: no such .keras file
    """
    if path.endswith(".keras"):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such .keras file")
        if not zipfile.is_zipfile(path):  # Keras would say "File not found"
            raise ValueError(f"{path}: not a .keras file (a .keras file is a zip archive)")
        return keras.models.load_model(path, compile=False)
    prefix = runs.find_checkpoint(path)
    folder = runs.run_folder_of(prefix)
    if folder is None:
        raise FileNotFoundError(
            f"{path}: checkpoint {prefix} has no {runs.CONFIG} in its run folder to rebuild "
            "the network from"
        )
    config = from_dict(runs.read_config(folder), where=os.path.join(folder, runs.CONFIG))
    if not config.data.num_classes:
        raise ValueError(f"{folder}/{runs.CONFIG}: data.num_classes is not set")
    model = build_model(config, config.data.num_classes, backbone_weights=False)
    status = tf.train.Checkpoint(model=model).restore(prefix)
    status.assert_existing_objects_matched().expect_partial()
    return model


def _warn_if_preset_rate_from_scratch(config: TrainConfig, solver: SolverConfig) -> None:
    # The presets' rates fine-tune: FCN-32s from ImageNet VGG16, each finer stage from the
    # coarser net (1e-12 and 1e-14 move random weights by ~1e-9 in a few updates: no error).
    if config.solver.optimizer != "sgd" or config.solver.learning_rate is not None:
        return
    staged = config.model.output_stride < 32 and not config.model.at_once
    if staged:
        start = f"an FCN-{config.model.output_stride * 2}s (--init-from)"
    elif config.model.backbone_weights is None:
        start = "ImageNet VGG16 (--backbone-weights)"
    else:
        return
    warnings.warn(
        f"solver.preset {config.solver.preset!r} trains at {solver.learning_rate:g}, a rate for "
        f"fine-tuning from {start}, but this run starts from random weights: give that, or "
        "set solver.learning_rate to train from scratch",
        stacklevel=6,  # the caller of Trainer.fit
    )


def _check_jit_determinism(config: TrainConfig, model: keras.Model) -> None:
    # Refused here rather than failing at the first step: XLA has no deterministic
    # max-pooling gradient.
    pools = [layer.name for layer in model.layers if isinstance(layer, keras.layers.MaxPooling2D)]
    if config.run.jit and config.run.deterministic and pools:
        raise ValueError(
            "run.jit and run.deterministic cannot both be on for this model: XLA has no "
            f"deterministic gradient for its max pooling ({', '.join(pools[:3])}); turn one off"
        )


def _current_lr(optimizer: keras.optimizers.Optimizer) -> float:
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    rate = inner.learning_rate
    return float(rate.numpy() if hasattr(rate, "numpy") else rate)


def _save_keras(model: keras.Model, path: str) -> None:
    # Keras insists on the .keras suffix, so the temporary name keeps it.
    temporary = f"{path[: -len('.keras')]}.partial.keras"
    try:
        model.save(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


class Trainer:
    """Trains a recipe into a run folder; the module docstring trains one.

    >>> import tempfile
    >>> recipe = from_dict({"run": {"epochs": 3, "steps_per_epoch": 5}})
    >>> Trainer(recipe, tempfile.mkdtemp(), verbose=0).total_steps   # nothing built yet
    15

    Args:
        config: the recipe.
        run_dir: the run folder (created; an existing one is resumed only with ``resume``).
        strategy: a ``tf.distribute`` strategy; ``None`` makes ``config.run.strategy``.
        init_from: a coarser run, checkpoint or ``.keras`` file whose matching layers
            initialise the model (staged training).
        verbose: 1 shows a progress bar and a line per epoch, 0 is silent.
        command: the command line recorded in ``run.json`` (default ``sys.argv``).
    """

    def __init__(
        self,
        config: TrainConfig,
        run_dir: str,
        strategy: tf.distribute.Strategy | None = None,
        init_from: str | None = None,
        verbose: int = 1,
        command: list[str] | None = None,
    ) -> None:
        self.config = absolute_paths(config)
        self.command = command
        self.run_dir = os.path.abspath(run_dir)
        self.strategy = strategy or make_strategy(config.run.strategy, config.run.tpu)
        self.init_from = init_from
        self._init_from_given = init_from is not None  # by the caller, not from run.json
        self.chief = is_chief(self.strategy)
        self.verbose = verbose if self.chief else 0

    # -- setup -----------------------------------------------------------------------------

    def _setup(self, resume: bool) -> None:
        config = self.config
        keras.utils.set_random_seed(config.run.seed)
        if config.run.deterministic:
            tf.config.experimental.enable_op_determinism()
        keras.mixed_precision.set_global_policy(config.run.precision)
        self.train_split = resolve_split(config.data, "train", self.verbose > 0)
        self.val_split = resolve_split(config.data, "val", self.verbose > 0)
        names = self.train_split.class_names
        self.num_classes = config.data.num_classes or (len(names) if names else None)
        if not self.num_classes:
            raise ValueError("data.num_classes is needed: the records have no dataset.json")
        self._check_classes(names)
        self.class_names = names or [str(i) for i in range(self.num_classes)]
        config.data.num_classes = self.num_classes

        replicas = self.strategy.num_replicas_in_sync
        if config.data.batch_size % replicas:
            raise ValueError(
                f"data.batch_size {config.data.batch_size} (global) must be a multiple of the "
                f"{replicas} replicas"
            )
        # Every worker resumes from the chief's checkpoints (the others' own are deleted when
        # a run ends, and all must continue from the same update). A checkpoint holds every
        # weight, so the ImageNet file is not read again.
        latest = tf.train.latest_checkpoint(os.path.join(self.run_dir, runs.CHECKPOINTS))
        restoring = resume and latest
        self.build(self.num_classes, self.total_steps, backbone_weights=not restoring)
        # Loss sampling's draws resume exactly too; without sampling the checkpoint is as before.
        sampling = self.loss.seed_generator
        extra = {} if sampling is None else {"loss_sampling": sampling.state}
        self.checkpoint = tf.train.Checkpoint(
            model=self.model,
            optimizer=self.optimizer,
            best_mean_iu=self.best_iu,
            updates=self.updates,
            **extra,
        )
        self.manager = tf.train.CheckpointManager(
            self.checkpoint,
            self._own_dir(runs.CHECKPOINTS),
            max_to_keep=config.run.keep_checkpoints,
        )
        self.best_manager = tf.train.CheckpointManager(
            tf.train.Checkpoint(model=self.model), self._own_dir(runs.BEST), max_to_keep=1
        )
        if restoring and self._init_from_given:
            raise ValueError(
                f"--init-from {self.init_from}: {self.run_dir} resumes from its checkpoint "
                f"{latest}; --init-from only starts a run"
            )
        if restoring:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
        elif self.init_from:
            self._initialise_from(self.init_from)
        else:
            _warn_if_preset_rate_from_scratch(config, self.solver)

    def _check_classes(self, names: list[str] | None) -> None:
        # Caught here, not after an epoch of training when evaluation tabulates the classes.
        if names and self.num_classes != len(names):
            raise ValueError(
                f"data.num_classes is {self.num_classes} but the training records name "
                f"{len(names)} classes {names}"
            )
        val_names = self.val_split.class_names if self.val_split else None
        if names and val_names and val_names != names:
            where = os.path.dirname(self.val_split.files[0])
            raise ValueError(
                f"the validation records in {where} name the classes {val_names}, the "
                f"training records {names}: give validation records of the same classes "
                "(--val-data / data.val)"
            )

    def build(self, num_classes: int, total_steps: int, backbone_weights: bool = True) -> None:
        """Create the solver, model, optimizer and metric in the strategy's scope (what
        :meth:`fit` does once the data are known; benchmarks call it directly)."""
        config = self.config
        self.num_classes = num_classes
        self.solver = solver_config(config, total_steps=total_steps)
        with self.strategy.scope():
            self.model = build_model(config, num_classes, backbone_weights)
            _check_jit_determinism(config, self.model)
            self.optimizer = build_optimizer(config, self.solver)
            self.optimizer.build(self.model.trainable_variables)
            # Not checkpointed: checkpoints fall between updates, where the sums are zero.
            self.gradient_sums = gradient_sums(
                self.model.trainable_variables, self.solver.accumulate
            )
            self.metric = ConfusionMatrix(num_classes, ignore_label=config.data.ignore_label)
            self.best_iu = tf.Variable(-1.0, dtype=tf.float64, trainable=False)
            # Updates run, skipped ones included: a float16 update that overflows is skipped
            # by the loss scaler and leaves optimizer.iterations behind, but it consumed its
            # batches, so resuming must count it.
            self.updates = tf.Variable(0, dtype=tf.int64, trainable=False)
            # The summed loss; the step divides it by the global normaliser.
            self.loss = SegmentationCrossEntropy(
                config.data.ignore_label,
                normalize="none",
                sample_probability=config.solver.loss_sampling,
                cell_size=config.model.output_stride,
                seed=config.run.seed,
            )

    @property
    def steps_per_epoch(self) -> int:
        run, data = self.config.run, self.config.data
        if run.steps_per_epoch:
            return run.steps_per_epoch
        per_update = data.batch_size * _accumulate(self.config)
        return max(1, self.train_split.count // per_update)

    @property
    def total_steps(self) -> int:
        return self.config.run.epochs * self.steps_per_epoch

    def _own_dir(self, name: str) -> str:
        # Only the chief keeps files; other workers write theirs apart and delete them.
        if self.chief:
            return os.path.join(self.run_dir, name)
        return os.path.join(self.run_dir, "workers", f"worker-{worker_index()}", name)

    def _initialise_from(self, path: str) -> None:
        copied = runs.copy_matching_layers(load_model(path), self.model)
        if not copied:
            raise ValueError(f"--init-from {path}: no layer matches this model by name and shape")
        if self.verbose:
            print(f"Initialised {len(copied)} layers from {path}")

    # -- steps -----------------------------------------------------------------------------

    def _clear_gradient_sums(self) -> None:
        # A fit interrupted between micro-batches leaves partial sums: the next one starts
        # clean. Per replica, since on-read SUM variables refuse cross-replica assignment.
        sums = self.gradient_sums
        if sums:
            reset = tf.function(lambda: [total.assign(tf.zeros_like(total)) for total in sums])
            self.strategy.run(reset)

    def train_step_fn(self) -> Callable[[Any], tf.Tensor]:
        """The training step: the next per-replica batches of a distributed iterator in, the
        global loss of that micro-batch out. Every ``accumulate``-th call ends an update.

        Two ``tf.function`` s, chosen here in Python so no ``cond`` holds the update (whose
        all-reduce a ``cond`` branch cannot hold under ``MirroredStrategy``): one adds the
        micro-batch's gradients to each replica's sums, the other applies the mean of the
        sums and its own gradients, as Caffe's ``iter_size`` (summed, then divided), and
        clears the sums.
        """
        config, model, optimizer = self.config, self.model, self.optimizer
        summed = self.loss
        normalize = self.solver.normalize
        global_batch = float(config.data.batch_size)
        num_classes = self.num_classes
        accumulate, sums = self.solver.accumulate, self.gradient_sums
        variables = model.trainable_variables

        def denominator(labels):
            # Known from the labels alone, so the one all-reduce happens before the forward
            # pass and outside the XLA-compiled part (collectives do not compile there).
            if normalize == "batch":
                return tf.constant(global_batch)
            if normalize == "none":
                return tf.constant(1.0)
            valid = (labels >= 0) & (labels < num_classes) & (labels != config.data.ignore_label)
            count = tf.reduce_sum(tf.cast(valid, tf.float32))
            context = tf.distribute.get_replica_context()
            return tf.maximum(context.all_reduce(tf.distribute.ReduceOp.SUM, count), 1.0)

        def forward_backward(images, labels, divisor):
            with tf.GradientTape() as tape:
                loss = summed(labels, model(images, training=True)) / divisor
                # Loss-scaled gradients are summed: the scale changes only when one applies.
                scaled = optimizer.scale_loss(loss)
            return loss, tape.gradient(scaled, variables)

        if config.run.jit:
            forward_backward = tf.function(forward_backward, jit_compile=True)

        def replica_step(images, labels, update):
            loss, gradients = forward_backward(images, labels, denominator(labels))
            if not update:
                for total, gradient in zip(sums, gradients, strict=True):
                    total.assign_add(gradient)
                return loss
            if sums:
                gradients = [
                    (gradient + total) / accumulate
                    for gradient, total in zip(gradients, sums, strict=True)
                ]
            optimizer.apply(gradients, variables)
            for total in sums:
                total.assign(tf.zeros_like(total))
            return loss

        def step_fn(update: bool):
            def step(iterator):
                images, labels = next(iterator)
                losses = self.strategy.run(
                    functools.partial(replica_step, update=update), args=(images, labels)
                )
                return self.strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

            return tf.function(step)

        # Traced on first use: without accumulation only `update` ever is.
        add, update = step_fn(False), step_fn(True)
        calls = itertools.count(1)

        def train_step(iterator):
            return (update if next(calls) % accumulate == 0 else add)(iterator)

        return train_step

    def _eval_step_fn(self):
        model, metric = self.model, self.metric

        def replica_step(images, labels):
            metric.update_state(labels, model(images, training=False))

        def step(images, labels):
            self.strategy.run(replica_step, args=(images, labels))

        return tf.function(step, reduce_retracing=True)

    # -- evaluation ------------------------------------------------------------------------

    def evaluate(self) -> dict[str, Any] | None:
        """The paper's four metrics and per-class IU on the validation split."""
        if self.val_split is None:
            return None
        self.metric.reset_state()
        dataset = self.strategy.distribute_datasets_from_function(
            eval_dataset_fn(self.val_split, self.config.data.ignore_label)
        )
        steps = math.ceil(self.val_split.count / self.strategy.num_replicas_in_sync)
        bar = keras.utils.Progbar(steps, verbose=self.verbose, unit_name="image")
        for images, labels in dataset:
            self._eval_step(images, labels)
            bar.add(1)
        result = scores(self.metric.confusion_matrix())
        result["per_class_iu"] = dict(
            zip(self.class_names, map(float, result["per_class_iu"]), strict=True)
        )
        result["per_class_accuracy"] = dict(
            zip(self.class_names, map(float, result["per_class_accuracy"]), strict=True)
        )
        return result

    # -- the loop --------------------------------------------------------------------------

    def fit(self, resume: bool = False) -> dict[str, Any]:
        """Train ``run.epochs`` epochs (the rest of them with ``resume``); return a summary:
        the final step, the last validation scores, the best mean IU and the files."""
        previous_policy = keras.mixed_precision.global_policy()
        try:
            return self._fit(resume)
        finally:
            keras.mixed_precision.set_global_policy(previous_policy)

    def _fit(self, resume: bool) -> dict[str, Any]:
        self._start(resume)
        step = int(self.updates.numpy())
        iterator = self._training_input(step)
        self._compile_steps()
        writer = (
            tf.summary.create_file_writer(os.path.join(self.run_dir, "tensorboard"))
            if self.chief
            else tf.summary.create_noop_writer()
        )
        if resume and step >= self.total_steps and self.chief:
            print(
                f"{self.run_dir} already finished at update {step} of {self.total_steps}: "
                "nothing to train (raise --epochs to continue)"
            )
        trained, val = step < self.total_steps, None
        while step < self.total_steps:
            record = self._train_epoch(iterator, step)
            step, val = record["step"], record["val"]
            self._end_epoch(record, writer)
        result = self._finish(val, export=trained)
        writer.close()
        self._clean_worker_files()
        return result

    def _start(self, resume: bool) -> None:
        """Check that the run folder may be (re)started, set up, write config and metadata."""
        previous = runs.read_metadata(self.run_dir)
        if self.chief and not resume and previous is not None:
            raise FileExistsError(
                f"{self.run_dir} already holds a run ({runs.METADATA}); continue it with "
                f"--resume {self.run_dir} (fit(resume=True)) or train into another folder"
            )
        if resume and previous:
            _check_resumable(previous_config=runs.read_config(self.run_dir), config=self.config)
        if resume and self.init_from is None and previous:
            # A staged run stopped before its first checkpoint starts again from its coarser net.
            self.init_from = previous.get("init_from")
        self._setup(resume)
        if self.chief:
            metadata = runs.run_metadata(self.command)
            if self.init_from:
                metadata["init_from"] = os.path.abspath(self.init_from)
            if resume and previous:
                metadata = {**previous, "resumes": [*previous.get("resumes", []), metadata]}
            runs.write_config(self.run_dir, to_dict(self.config), metadata)

    def _training_input(self, step: int):
        """The distributed training iterator, positioned after ``step`` updates' batches."""
        config = self.config
        dataset = self.strategy.distribute_datasets_from_function(
            train_dataset_fn(
                self.train_split,
                config.data,
                config.data.batch_size,
                seed=config.run.seed,
                skip_batches=step * self.solver.accumulate,
            )
        )
        return iter(dataset)

    def _compile_steps(self) -> None:
        self._clear_gradient_sums()
        self._train_step = self.train_step_fn()
        self._eval_step = self._eval_step_fn()
        variables = self.model.trainable_variables
        self._weights_finite = tf.function(
            lambda: tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in variables])
        )

    def _train_epoch(self, iterator, step: int) -> dict[str, Any]:
        """Train from update ``step`` to the end of its epoch, then evaluate: the epoch's record."""
        config, accumulate = self.config, self.solver.accumulate
        images_per_update = config.data.batch_size * accumulate
        epoch = step // self.steps_per_epoch
        end = (epoch + 1) * self.steps_per_epoch
        started, first = time.perf_counter(), step
        bar = keras.utils.Progbar(
            self.steps_per_epoch,
            verbose=self.verbose,
            stateful_metrics=["lr", "images/s"],
            unit_name="update",
        )
        if self.verbose:
            print(f"Epoch {epoch + 1}/{config.run.epochs}")
        losses = []
        while step < end:
            loss = sum(float(self._train_step(iterator)) for _ in range(accumulate))
            loss /= accumulate
            step += 1
            self.updates.assign(step)
            if not math.isfinite(loss):
                raise NonFiniteLossError(
                    f"loss is {loss} at step {step} (update {step} of {self.total_steps}); "
                    f"last good checkpoint: {self.manager.latest_checkpoint or 'none'}"
                )
            losses.append(loss)
            rate = images_per_update * (step - first) / (time.perf_counter() - started)
            bar.update(
                step - epoch * self.steps_per_epoch,
                [("loss", loss), ("lr", _current_lr(self.optimizer)), ("images/s", rate)],
            )
            if step % config.run.checkpoint_every == 0 and step < end:
                self._save(step)
        elapsed = time.perf_counter() - started
        return {
            "epoch": epoch + 1,
            "step": step,
            "loss": float(np.mean(losses)),
            "learning_rate": _current_lr(self.optimizer),
            "images_per_second": images_per_update * (step - first) / elapsed,
            "seconds": elapsed,
            "val": self.evaluate(),
        }

    def _save(self, step: int) -> None:
        # A finite loss can still come with an update that overflows the weights: such a
        # state is never saved, so the latest checkpoint is always one to go back to.
        if not bool(self._weights_finite()):
            raise NonFiniteLossError(
                f"weights became non-finite at step {step}; last good checkpoint: "
                f"{self.manager.latest_checkpoint or 'none'}"
            )
        self.manager.save(checkpoint_number=step)

    def _end_epoch(self, record: dict[str, Any], writer) -> None:
        step, val = record["step"], record["val"]
        if val is not None and val["mean_iu"] > self.best_iu.numpy():
            self.best_iu.assign(val["mean_iu"])
            self.best_manager.save(checkpoint_number=step)
        self._save(step)
        if not self.chief:
            return
        with open(os.path.join(self.run_dir, runs.METRICS), "a") as file:
            # JSON has no NaN: a class never seen nor predicted is null, as in metrics.json.
            file.write(json.dumps(_json_safe(record), allow_nan=False) + "\n")
        with writer.as_default(step=step):
            tf.summary.scalar("train/loss", record["loss"])
            tf.summary.scalar("train/learning_rate", record["learning_rate"])
            tf.summary.scalar("train/images_per_second", record["images_per_second"])
            if val is not None:
                for key in ("pixel_accuracy", "mean_accuracy", "mean_iu", "frequency_weighted_iu"):
                    tf.summary.scalar(f"val/{key}", val[key])
                for name, value in val["per_class_iu"].items():
                    if math.isfinite(value):
                        tf.summary.scalar(f"val_iu/{name}", value)
                self._summary_images()
        if self.verbose:
            line = f"epoch {record['epoch']}: loss {record['loss']:.4f}"
            if val is not None:
                line += (
                    f", val mean IU {val['mean_iu']:.4f}, pixel acc {val['pixel_accuracy']:.4f}"
                    f", mean acc {val['mean_accuracy']:.4f}, fw IU "
                    f"{val['frequency_weighted_iu']:.4f}"
                )
            print(line)

    def _summary_images(self) -> None:
        from fcn_tf.data.pipeline import load
        from fcn_tf.palette import colorize, palette_for

        count = self.config.run.eval_images
        if not count:
            return
        colours = palette_for(self.class_names)
        pictures = []
        data = load(self.val_split.files, training=False).take(count)
        for images, labels in data:
            predicted = np.argmax(self.model(images, training=False), axis=-1)[0]
            truth = labels.numpy()[0]
            image = images.numpy()[0].astype(np.uint8)
            pictures.append(
                np.concatenate([image, colorize(truth, colours), colorize(predicted, colours)], 1)
            )
        for index, picture in enumerate(pictures):
            tf.summary.image(f"val_masks/{index}", picture[None], max_outputs=1)

    def _finish(self, val: dict[str, Any] | None, export: bool = True) -> dict[str, Any]:
        """Restore the best weights and write ``model.keras`` and the next SavedModel version;
        without ``export`` (nothing was trained) the files already written are reported."""
        files = {"run": self.run_dir, "checkpoint": self.manager.latest_checkpoint}
        if self.best_manager.latest_checkpoint:
            files["best"] = self.best_manager.latest_checkpoint
            tf.train.Checkpoint(model=self.model).restore(
                self.best_manager.latest_checkpoint
            ).expect_partial()
        if self.config.run.export and self.chief and export:
            files["model"] = os.path.join(self.run_dir, runs.MODEL)
            _save_keras(self.model, files["model"])
            files["saved_model"] = self._export_saved_model()
        elif self.config.run.export and self.chief:
            from fcn_tf.export.versions import latest_version_folder

            if os.path.exists(os.path.join(self.run_dir, runs.MODEL)):
                files["model"] = os.path.join(self.run_dir, runs.MODEL)
            latest = latest_version_folder(os.path.join(self.run_dir, runs.EXPORT))
            if latest is not None:
                files["saved_model"] = latest
        best = float(self.best_iu.numpy())
        return {
            "step": int(self.updates.numpy()),
            "val": val,
            "best_mean_iu": best if best >= 0 else None,
            "files": files,
        }

    def _export_saved_model(self) -> str:
        # Imported here: the export module imports this one (to load checkpoints).
        from fcn_tf.export import export_saved_model

        # TF Serving's layout: a run resumed after it finished adds the next version.
        return export_saved_model(
            self.model,
            os.path.join(self.run_dir, runs.EXPORT),
            class_names=self.class_names,
            metadata={"source": self.run_dir, "run_config": to_dict(self.config)},
        )

    def _clean_worker_files(self) -> None:
        if not self.chief:
            shutil.rmtree(os.path.dirname(self._own_dir(runs.CHECKPOINTS)), ignore_errors=True)
            with contextlib.suppress(OSError):
                os.rmdir(os.path.join(self.run_dir, "workers"))
