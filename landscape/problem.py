"""The interface a task implements to be inverted by descent, in X or through a learned theta.

Inversion finds x in X minimizing ``loss(forward(x), target)``. A target is one tensor or a
dict of tensors that share their first (batch) dimension, so tasks can carry masks, cameras
or anything else next to the observation. Nothing here knows what x or the target mean.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Dict, Union

import torch
import torch.nn as nn

from .errors import LandscapeError

Target = Union[torch.Tensor, Dict[str, torch.Tensor]]


class ProblemError(LandscapeError, ValueError):
    """A task was given inputs of the wrong shape or kind."""


def target_len(target: Target) -> int:
    if isinstance(target, dict):
        lengths = {len(v) for v in target.values()}
        if len(lengths) != 1:
            raise ProblemError(f"target fields have different batch sizes: { {k: len(v) for k, v in target.items()} }")
        return lengths.pop()
    return len(target)


def target_index(target: Target, idx) -> Target:
    if isinstance(target, dict):
        return {k: v[idx] for k, v in target.items()}
    return target[idx]


def target_cat(targets: list) -> Target:
    if isinstance(targets[0], dict):
        return {k: torch.cat([t[k] for t in targets]) for k in targets[0]}
    return torch.cat(targets)


def target_to(target: Target, device) -> Target:
    if isinstance(target, dict):
        return {k: v.to(device) for k, v in target.items()}
    return target.to(device)


def target_repeat(target: Target, r: int) -> Target:
    """Each example repeated ``r`` times in a row (for restarts vectorized in the batch)."""
    if isinstance(target, dict):
        return {k: v.repeat_interleave(r, 0) for k, v in target.items()}
    return target.repeat_interleave(r, 0)


class InversionProblem(ABC):
    """A task: forward model, per-example loss, latent shape, initialization, training and held-out targets."""

    #: shape of one point of X (without the batch dimension)
    latent_shape: tuple
    #: where the problem's models and tensors live (see :meth:`to`)
    device: torch.device = torch.device("cpu")
    #: the natural size of a step in X (e.g. the radius of an eps-ball): tuned step sizes for X are
    #: multiples of it, those for Z multiples of 1 (the std of Z's prior), so both get the same grid
    step_scale: float = 1.0

    def to(self, device) -> "InversionProblem":
        """Move every model and tensor the problem holds (attributes, and dicts of them) to ``device``."""
        device = torch.device(device)

        def move(value):
            if isinstance(value, nn.Module):
                return value.to(device)
            if isinstance(value, torch.Tensor):
                return value.to(device)
            if isinstance(value, dict):
                return {k: move(v) for k, v in value.items()}
            return value

        for name, value in list(vars(self).items()):
            setattr(self, name, move(value))
        self.device = device
        return self

    def tensors(self):
        """Every tensor the problem holds, with a name (its models' parameters and buffers included)."""
        for name, value in vars(self).items():
            if isinstance(value, nn.Module):
                for sub, t in list(value.named_parameters()) + list(value.named_buffers()):
                    yield f"{name}.{sub}", t
            elif isinstance(value, torch.Tensor):
                yield name, value
            elif isinstance(value, dict):
                for k, v in value.items():
                    if isinstance(v, torch.Tensor):
                        yield f"{name}.{k}", v

    @abstractmethod
    def forward(self, x: torch.Tensor):
        """The forward model F applied to a batch of points of X."""

    @abstractmethod
    def loss(self, prediction, target: Target) -> torch.Tensor:
        """Per-example loss, shape (N,)."""

    def objective(self, x: torch.Tensor, target: Target) -> torch.Tensor:
        """Per-example ``loss(forward(x), target)``; tasks may add a prior term here."""
        return self.loss(self.forward(x), target)

    def metrics(self, x: torch.Tensor, target: Target) -> Dict[str, torch.Tensor]:
        """Per-example figures reported at each budget (default: the objective as ``loss``)."""
        with torch.no_grad():
            return {"loss": self.objective(x, target)}

    def init(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Initial points of X for ``n`` examples, on the CPU (default: standard normal)."""
        return torch.randn((n, *self.latent_shape), generator=generator)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Back onto the feasible set after a plain step (default: X has no constraint)."""
        return x

    def constrain(self, x: torch.Tensor) -> torch.Tensor:
        """A differentiable map of theta's output onto the feasible set (default: the identity)."""
        return x

    def condition(self, target: Target) -> torch.Tensor:
        """What a conditioned theta sees of each observation, (N, C) (default: nothing, so a conditioned
        theta is refused). Differentiable in ``target``, so exact attacks reach through it."""
        raise ProblemError(f"{type(self).__name__} has no condition(target): a conditioned theta "
                           "(theta.condition=true) needs the task to say what theta sees of the observation")

    @property
    def has_condition(self) -> bool:
        return type(self).condition is not InversionProblem.condition

    def solution(self, x: torch.Tensor, target: Target):
        """What a point of X stands for, for ``target`` (default: ``forward(x)``; a purifier returns it)."""
        return self.forward(x)

    @abstractmethod
    def sample_targets(self, n: int, generator: torch.Generator | None = None) -> Target:
        """Training targets (the trainer never sees the held-out set)."""

    @abstractmethod
    def heldout(self, n: int | None = None) -> Target:
        """A fixed held-out set of targets for evaluation."""

    def check_x(self, x: torch.Tensor) -> None:
        if tuple(x.shape[1:]) != tuple(self.latent_shape):
            raise ProblemError(f"x has shape {tuple(x.shape)}; this problem's points have shape (N, "
                               f"{', '.join(map(str, self.latent_shape))})")
