"""Landscape learning (Liu et al., ICCV 2023), task-agnostic: descent in X or through theta: Z -> X.

Knows nothing of images, CIFAR-10, attacks or Ray. A task implements :class:`InversionProblem`;
:func:`descend` runs K steps; :class:`ThetaTrainer` learns theta.
"""
from .buffer import ReplayBuffer
from .descent import DescentError, DescentResult, descend, tune_step_size
from .problem import InversionProblem, ProblemError
from .theta import Theta
from .trainer import CheckpointError, ThetaTrainer, TrainConfig, load_theta, z_init

__all__ = ["InversionProblem", "ProblemError", "descend", "DescentResult", "DescentError", "tune_step_size",
           "Theta", "ReplayBuffer", "ThetaTrainer", "TrainConfig", "CheckpointError", "load_theta", "z_init"]
