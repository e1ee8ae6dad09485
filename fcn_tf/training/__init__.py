"""Training: the reference (Caffe) SGD solver and its presets."""

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
    "ReferenceSGD",
    "SolverConfig",
    "SolverSchedule",
    "make_loss",
    "make_optimizer",
    "preset",
]
