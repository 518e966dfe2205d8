"""Landscape learning (Liu et al., ICCV 2023), task-agnostic: descent in X or through theta: Z -> X.

Knows nothing of images, CIFAR-10, attacks or Ray. A task implements :class:`InversionProblem`;
:class:`Space` is the plain space X or a learned Z (through theta); :func:`descend` runs K steps;
:class:`ThetaTrainer` learns theta. Every error the project raises on bad input derives from
:class:`LandscapeError`.

Names are imported on first use, so ``import landscape.config`` (the CLI's first step) does not
load torch. ``landscape.evaluate`` is the evaluator's Python API (``evaluator/api.py``), handed on here
so a notebook needs one import; the core itself never imports the evaluator.
"""
from importlib import import_module

_NAMES = {
    "ReplayBuffer": "buffer", "DescentError": "descent", "DescentResult": "descent", "descend": "descent",
    "tune_step_size": "descent", "LandscapeError": "errors", "CheckpointError": "io",
    "InversionProblem": "problem", "ProblemError": "problem", "Space": "space", "Theta": "theta",
    "ThetaError": "theta", "ThetaTrainer": "trainer", "TrainConfig": "trainer", "load_theta": "trainer",
}

__all__ = sorted([*_NAMES, "evaluate"])


def __getattr__(name):
    if name == "evaluate":
        from evaluator.api import evaluate

        return evaluate
    if name in _NAMES:
        return getattr(import_module(f".{_NAMES[name]}", __name__), name)
    raise AttributeError(f"module 'landscape' has no attribute {name!r}")
