"""The reference solver: Caffe's SGD as the FCN authors ran it, as a Keras 3 optimizer.

Caffe's ``SGDSolver`` update for a parameter ``w`` with gradient ``g`` at iteration ``t``::

    g = g / iter_size                          # Normalize (gradients of iter_size passes summed)
    g = g + weight_decay * decay_mult * w      # Regularize: L2 in the gradient, not decoupled
    v = momentum * v + lr(t) * lr_mult * g     # ComputeUpdateValue
    w = w - v                                  # Net::Update

The authors' nets give weights ``lr_mult: 1, decay_mult: 1`` and biases ``lr_mult: 2,
decay_mult: 0``; every upsampler has ``lr_mult: 0``. The final one is a non-trainable layer
here, so no optimizer ever sees it; the intermediate ones learn unless the model is built with
``learn_upsampling=False`` (the VOC recipes do, as the reference). :class:`ReferenceSGD`
implements that update; :func:`preset` gives the two configurations of the trainer and
:func:`make_optimizer` builds the optimizer.

>>> config = preset("normalized", output_stride=8, schedule="poly", total_steps=1000)
>>> optimizer = make_optimizer(config)
>>> optimizer.gradient_accumulation_steps, optimizer.momentum
(20, 0.9)
>>> make_loss(config).normalize
'valid'
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import keras
from keras import ops
from keras.optimizers.schedules import LearningRateSchedule

from fcn_tf.losses import NORMALIZE_MODES, SegmentationCrossEntropy

__all__ = [
    "PRESETS",
    "SCHEDULES",
    "ReferenceSGD",
    "SolverConfig",
    "SolverSchedule",
    "make_loss",
    "make_optimizer",
    "preset",
]

SCHEDULES = ("fixed", "poly", "step")
PRESETS = ("heavy", "normalized")

# The authors' base_lr for the summed ("unnormalized softmax") loss, by output stride
# (voc-fcn32s/16s/8s solver.prototxt; voc-fcn8s-atonce trains at the FCN-32s rate).
HEAVY_LEARNING_RATES = {32: 1e-10, 16: 1e-12, 8: 1e-14}
# The paper's mean-loss rate (section 4.3), divided by 100 at each finer stage (section 4.2:
# "the learning rate is decreased by a factor of 100"), as the authors' solvers do.
NORMALIZED_LEARNING_RATES = {32: 1e-4, 16: 1e-6, 8: 1e-8}


@dataclasses.dataclass(frozen=True)
class SolverConfig:
    """Hyperparameters of the reference solver, in Caffe's terms.

    Args:
        preset: the preset it came from (informational), or ``None``.
        learning_rate: ``base_lr``.
        momentum: ``momentum``.
        weight_decay: ``weight_decay``: L2 coefficient added to the weights' gradients.
        bias_lr_mult: learning-rate multiplier of biases (Caffe ``lr_mult: 2``).
        bias_decay: also decay biases (the authors' nets use ``decay_mult: 0``).
        schedule: ``"fixed"``, ``"poly"`` or ``"step"`` (Caffe's ``lr_policy``).
        power: exponent of ``"poly"``.
        step_size: updates between drops of ``"step"`` (``stepsize``).
        gamma: factor of each ``"step"`` drop.
        total_steps: number of updates (``max_iter``); ``"poly"`` reaches 0 there.
        accumulate: micro-batches averaged into one update (``iter_size``).
        normalize: the loss normaliser, see :class:`fcn_tf.SegmentationCrossEntropy`.

    >>> SolverConfig(learning_rate=1e-3, schedule="step", step_size=100).gamma
    0.1
    """

    preset: str | None = None
    learning_rate: float = 1e-4
    momentum: float = 0.9
    weight_decay: float = 5e-4
    bias_lr_mult: float = 2.0
    bias_decay: bool = False
    schedule: str = "fixed"
    power: float = 0.9
    step_size: int | None = None
    gamma: float = 0.1
    total_steps: int | None = None
    accumulate: int = 1
    normalize: str = "valid"

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.schedule == "poly" and not self.total_steps:
            raise ValueError("the 'poly' schedule needs total_steps (Caffe's max_iter)")
        if self.schedule == "step" and not self.step_size:
            raise ValueError("the 'step' schedule needs step_size (Caffe's stepsize)")
        if not isinstance(self.accumulate, int) or self.accumulate < 1:
            raise ValueError(f"accumulate must be an integer >= 1, got {self.accumulate!r}")
        if self.normalize not in NORMALIZE_MODES:
            raise ValueError(f"normalize must be one of {NORMALIZE_MODES}, got {self.normalize!r}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")


def preset(
    name: str, output_stride: int = 8, at_once: bool = False, **overrides: Any
) -> SolverConfig:
    """The trainer's two reference configurations, optionally with fields overridden.

    ``"heavy"`` is the authors' released solver: summed loss (per image: Caffe's
    ``normalize: false``), ``base_lr`` 1e-10 / 1e-12 / 1e-14 for FCN-32s / 16s / 8s, momentum
    0.99, one whole image per update. ``"normalized"`` is the paper's section 4.3: mean loss,
    lr 1e-4 / 1e-6 / 1e-8, momentum 0.9 and a minibatch of 20 whole images by gradient
    accumulation. Both decay weights by 5e-4. The finer rates are for staged training (each
    stage starts from the coarser net); ``at_once`` nets train at the FCN-32s rate.

    >>> preset("heavy", 16).learning_rate, preset("heavy", 8, at_once=True).learning_rate
    (1e-12, 1e-10)
    >>> config = preset("normalized", 32, schedule="poly", total_steps=100)
    >>> config.learning_rate, config.accumulate, config.schedule
    (0.0001, 20, 'poly')
    """
    if output_stride not in HEAVY_LEARNING_RATES:
        raise ValueError(f"output_stride must be 32, 16 or 8, got {output_stride!r}")
    stage = 32 if at_once else output_stride
    if name == "heavy":
        base = SolverConfig(
            preset=name,
            learning_rate=HEAVY_LEARNING_RATES[stage],
            momentum=0.99,
            weight_decay=5e-4,
            accumulate=1,
            normalize="batch",
        )
    elif name == "normalized":
        base = SolverConfig(
            preset=name,
            learning_rate=NORMALIZED_LEARNING_RATES[stage],
            momentum=0.9,
            weight_decay=5e-4,
            accumulate=20,
            normalize="valid",
        )
    else:
        raise ValueError(f"preset must be one of {PRESETS}, got {name!r}")
    return dataclasses.replace(base, **overrides)


@keras.saving.register_keras_serializable(package="fcn_tf")
class SolverSchedule(LearningRateSchedule):
    """Caffe's ``lr_policy`` as a function of the update count.

    ``"fixed"``: ``lr``; ``"poly"``: ``lr * (1 - step / total_steps) ** power``, held at 0
    after ``total_steps``; ``"step"``: ``lr * gamma ** (step // step_size)``.

    >>> schedule = SolverSchedule(1.0, "poly", power=2.0, total_steps=10)
    >>> round(float(schedule(5)), 4)
    0.25
    >>> float(SolverSchedule(1.0, "step", step_size=3, gamma=0.5)(7))
    0.25
    """

    def __init__(
        self,
        learning_rate: float,
        policy: str = "fixed",
        power: float = 0.9,
        total_steps: int | None = None,
        step_size: int | None = None,
        gamma: float = 0.1,
    ) -> None:
        if policy not in SCHEDULES:
            raise ValueError(f"policy must be one of {SCHEDULES}, got {policy!r}")
        if policy == "poly" and not total_steps:
            raise ValueError("the 'poly' policy needs total_steps")
        if policy == "step" and not step_size:
            raise ValueError("the 'step' policy needs step_size")
        self.learning_rate = float(learning_rate)
        self.policy = policy
        self.power = float(power)
        self.total_steps = None if total_steps is None else int(total_steps)
        self.step_size = None if step_size is None else int(step_size)
        self.gamma = float(gamma)

    def __call__(self, step: Any) -> Any:
        step = ops.cast(step, "float32")
        lr = ops.convert_to_tensor(self.learning_rate, "float32")
        if self.policy == "poly":
            # Clamped: past max_iter Caffe's formula would go negative (or NaN for a
            # fractional power).
            remaining = ops.maximum(1.0 - step / float(self.total_steps), 0.0)
            return lr * ops.power(remaining, self.power)
        if self.policy == "step":
            drops = ops.floor(step / float(self.step_size))
            return lr * ops.power(ops.convert_to_tensor(self.gamma, "float32"), drops)
        return lr + 0.0 * step

    def get_config(self) -> dict[str, Any]:
        return {
            "learning_rate": self.learning_rate,
            "policy": self.policy,
            "power": self.power,
            "total_steps": self.total_steps,
            "step_size": self.step_size,
            "gamma": self.gamma,
        }


@keras.saving.register_keras_serializable(package="fcn_tf")
class ReferenceSGD(keras.optimizers.Optimizer):
    """SGD with momentum exactly as Caffe's ``SGDSolver`` (see the module docstring).

    Each trainable variable gets a learning-rate and a decay multiplier from
    :meth:`multipliers`:

    * biases (variables named ``bias``): ``bias_lr_mult`` (2) and no decay, as the authors'
      nets (``bias_decay=True`` decays them too);
    * other variables of rank 0 or 1 (BatchNormalization ``gamma``/``beta``, other norm
      scales and offsets): multiplier 1 and no decay; Caffe's FCNs have none, and decaying
      a normaliser's scale only fights the normalisation;
    * everything else (kernels): multiplier 1 and ``weight_decay``, unless excluded with
      :meth:`exclude_from_weight_decay`.

    Weight decay is Caffe's: L2 added to the gradient before the momentum, not Keras'
    decoupled decay. Non-trainable variables (the fixed final upsampler, BN moving
    statistics) are never given to an optimizer, so they are never updated.

    With ``gradient_accumulation_steps=k`` Keras averages ``k`` micro-batch gradients into
    one update, which is Caffe's ``iter_size`` (summed, then divided by ``iter_size``); a
    learning-rate schedule then counts updates, as Caffe's ``iter_``, not micro-batches.
    Keras updates inside a ``cond`` there, which cannot all-reduce under ``MirroredStrategy``:
    :class:`fcn_tf.training.Trainer` builds it with ``k=1`` and accumulates itself.

    Args:
        learning_rate: a float or a ``LearningRateSchedule`` (e.g. :class:`SolverSchedule`).
        momentum: momentum in ``[0, 1)``.
        weight_decay: L2 coefficient of the weights (Caffe's ``weight_decay``).
        bias_lr_mult: learning-rate multiplier of biases.
        bias_decay: decay biases as well.
        name: the optimizer's name.
        **kwargs: the base optimizer's arguments (``gradient_accumulation_steps``,
            ``clipnorm``, ``loss_scale_factor``, ...).

    >>> import numpy as np
    >>> w = keras.Variable(np.ones((1, 1), "float32"), name="kernel")
    >>> b = keras.Variable(np.ones((1,), "float32"), name="bias")
    >>> opt = ReferenceSGD(learning_rate=0.1, momentum=0.9, weight_decay=0.5)
    >>> _ = opt.apply_gradients([(np.ones((1, 1), "float32"), w), (np.ones(1, "float32"), b)])
    >>> round(float(w.numpy()[0, 0]), 4), round(float(b.numpy()[0]), 4)  # 1-.1*1.5, 1-.2*1
    (0.85, 0.8)
    """

    def __init__(
        self,
        learning_rate: float | LearningRateSchedule = 1e-4,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        bias_lr_mult: float = 2.0,
        bias_decay: bool = False,
        name: str = "reference_sgd",
        **kwargs: Any,
    ) -> None:
        if isinstance(learning_rate, int):
            learning_rate = float(learning_rate)
        # weight_decay=None keeps the base class from applying its decoupled decay.
        super().__init__(learning_rate=learning_rate, weight_decay=None, name=name, **kwargs)
        momentum = float(momentum)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        self.momentum = momentum
        self.weight_decay = float(weight_decay or 0.0)
        self.bias_lr_mult = float(bias_lr_mult)
        self.bias_decay = bool(bias_decay)

    def build(self, variables: list[Any]) -> None:
        if self.built:
            return
        super().build(variables)
        self.momentums = self.add_optimizer_variables(variables, "momentum")

    def multipliers(self, variable: Any) -> tuple[float, float]:
        """``(lr_mult, decay_mult)`` of a variable, as Caffe's per-parameter ``param`` spec.

        >>> opt = ReferenceSGD()
        >>> opt.multipliers(keras.Variable([0.0, 0.0], name="bias"))
        (2.0, 0.0)
        >>> opt.multipliers(keras.Variable([[0.0]], name="kernel"))
        (1.0, 1.0)
        """
        # Under tf.distribute, update_step gets each replica's own copy, whose name has a
        # suffix ("bias/replica_1:0"): the multipliers go by the variable's own name.
        name = re.sub(r"/replica_\d+$", "", variable.name.split(":")[0]).split("/")[-1]
        if name == "bias":
            return self.bias_lr_mult, 1.0 if self.bias_decay else 0.0
        if len(variable.shape) <= 1:
            return 1.0, 0.0
        return 1.0, 1.0 if self._use_weight_decay(variable) else 0.0

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        lr_mult, decay_mult = self.multipliers(variable)
        learning_rate = ops.cast(learning_rate, variable.dtype) * lr_mult
        gradient = ops.cast(gradient, variable.dtype)
        decay = self.weight_decay * decay_mult
        if decay:
            gradient = gradient + ops.cast(decay, variable.dtype) * variable
        velocity = self.momentums[self._get_variable_index(variable)]
        self.assign(
            velocity,
            ops.cast(self.momentum, variable.dtype) * velocity - learning_rate * gradient,
        )
        self.assign_add(variable, velocity)

    def _apply_weight_decay(self, variables: list[Any]) -> None:
        # Decay is L2 in the gradient (update_step); the base class' hook is decoupled decay.
        return None

    def _get_current_learning_rate(self) -> Any:
        # Keras evaluates schedules at its micro-batch counter; Caffe's iter_ counts updates,
        # which `iterations` gives under gradient accumulation.
        if isinstance(self._learning_rate, LearningRateSchedule):
            return self._learning_rate(self.iterations)
        return super()._get_current_learning_rate()

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "momentum": self.momentum,
                "weight_decay": self.weight_decay,
                "bias_lr_mult": self.bias_lr_mult,
                "bias_decay": self.bias_decay,
            }
        )
        return config


def make_schedule(config: SolverConfig) -> SolverSchedule:
    """The learning-rate schedule of a configuration."""
    return SolverSchedule(
        config.learning_rate,
        config.schedule,
        power=config.power,
        total_steps=config.total_steps,
        step_size=config.step_size,
        gamma=config.gamma,
    )


def make_optimizer(config: SolverConfig, **kwargs: Any) -> ReferenceSGD:
    """A :class:`ReferenceSGD` for a configuration; ``kwargs`` go to the optimizer.

    >>> opt = make_optimizer(preset("heavy", 32))
    >>> float(opt.learning_rate), opt.momentum, opt.gradient_accumulation_steps
    (1e-10, 0.99, None)
    """
    return ReferenceSGD(
        learning_rate=make_schedule(config),
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        bias_lr_mult=config.bias_lr_mult,
        bias_decay=config.bias_decay,
        # Keras accepts only k >= 2; one micro-batch per update is no accumulation.
        gradient_accumulation_steps=config.accumulate if config.accumulate > 1 else None,
        **kwargs,
    )


def make_loss(config: SolverConfig, ignore_label: int | None = 255) -> SegmentationCrossEntropy:
    """The loss a configuration's learning rate is meant for (summed per image or averaged).

    >>> make_loss(preset("heavy")).normalize
    'batch'
    """
    return SegmentationCrossEntropy(ignore_label=ignore_label, normalize=config.normalize)
