"""The interface a task implements to be inverted by descent, in X or through a learned theta.

Inversion finds x in X minimizing ``loss(forward(x), target)``. A target is one tensor or a
dict of tensors that share their first (batch) dimension, so tasks can carry masks, cameras
or anything else next to the observation. Nothing here knows what x or the target mean.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Dict, Union

import torch

Target = Union[torch.Tensor, Dict[str, torch.Tensor]]


class ProblemError(ValueError):
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
        """Initial points of X for ``n`` examples (default: standard normal)."""
        return torch.randn((n, *self.latent_shape), generator=generator)

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
