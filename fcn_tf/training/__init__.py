"""Training: the reference (Caffe) SGD solver, recipes, and the strategy-agnostic loop."""

from fcn_tf.training.config import TrainConfig, load_recipe, override
from fcn_tf.training.loop import NonFiniteLossError, Trainer
from fcn_tf.training.solver import (
    PRESETS,
    SCHEDULES,
    ReferenceSGD,
    SolverConfig,
    SolverSchedule,
    make_loss,
    make_optimizer,
    preset,
)

__all__ = [
    "PRESETS",
    "SCHEDULES",
    "NonFiniteLossError",
    "ReferenceSGD",
    "SolverConfig",
    "SolverSchedule",
    "TrainConfig",
    "Trainer",
    "load_recipe",
    "make_loss",
    "make_optimizer",
    "override",
    "preset",
]
