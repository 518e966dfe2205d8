"""What every purifier shares: R restarts x K descent steps, plain (X) or through theta (Z).

A purifier solves an inner optimization for each input image and returns a purified image.
Subclasses say what the variable is (a generator latent, a perturbation), where it starts,
what it minimizes and how it becomes an image; this class holds the budget K, the restarts R
(vectorized in the batch: the N images are repeated R times, never looped over), the step
rule per K, the plain/learned switch and whether the steps stay differentiable.

Example::

    >>> p = GeneratorPurifier(G, budget=10, restarts=4, steps={10: ("adam", 0.1)})
    >>> purified = p(images)          # (N, 3, 32, 32) in [0, 1]
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Mapping

import torch
import torch.nn as nn

from landscape.descent import descend
from landscape.trainer import z_init


class PurifierError(ValueError):
    pass


def resolve_step(steps, budget: int) -> tuple[str, float]:
    """``steps`` is (rule, lr) or {K: (rule, lr)}; a budget not listed takes the nearest listed K."""
    if isinstance(steps, Mapping):
        if not steps:
            raise PurifierError("no step sizes given")
        k = min(steps, key=lambda s: (abs(int(s) - budget), int(s)))
        rule, lr = steps[k]
    else:
        rule, lr = steps
    return str(rule), float(lr)


class Purifier(nn.Module, ABC):
    """Base class: subclasses implement ``start``, ``objective`` and ``output``."""

    #: prefix of the name in the results' ``defense`` column (``<prefix>-x`` or ``<prefix>-z``)
    prefix = "purify"

    def __init__(self, budget: int, restarts: int = 1, steps=("adam", 0.1), theta: nn.Module | None = None,
                 differentiable: bool = False):
        super().__init__()
        if not isinstance(budget, int) or budget < 0:
            raise PurifierError(f"budget K must be an integer >= 0, got {budget!r}")
        if not isinstance(restarts, int) or restarts < 1:
            raise PurifierError(f"restarts R must be an integer >= 1, got {restarts!r}")
        self.budget, self.restarts, self.steps = budget, restarts, steps
        self.theta = theta
        self.differentiable = differentiable
        self.draws = 0  # forward passes so far (each is one random draw of the restarts)

    @property
    def landscape(self) -> str:
        return "x" if self.theta is None else "z"

    @property
    def name(self) -> str:
        return f"{self.prefix}-{self.landscape}"

    # -- what a subclass defines ------------------------------------------------------------
    @abstractmethod
    def start(self, x: torch.Tensor) -> torch.Tensor:
        """Random starting points in X for the (already repeated) images ``x``."""

    @abstractmethod
    def objective(self, v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Per-example loss of the point ``v`` of X for image ``x``."""

    @abstractmethod
    def output(self, v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The purified image that point ``v`` stands for."""

    def project(self, var: torch.Tensor) -> torch.Tensor | None:
        """Optional constraint applied after every step (plain space only)."""
        return None

    # -- the shared machinery -----------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, r = len(x), self.restarts
        xr = x.repeat_interleave(r, 0)
        rule, lr = resolve_step(self.steps, self.budget)
        diff = self.differentiable and torch.is_grad_enabled()
        target = xr if diff else xr.detach()
        if self.theta is None:
            var0 = self.start(target.detach())
            project = (lambda v: self.project(v)) if type(self).project is not Purifier.project else None
        else:
            var0 = z_init(self.theta, n * r, device=x.device)
            project = None
        res = descend(lambda v: self.objective(v, target), var0, self.budget, lr, rule, theta=self.theta,
                      differentiable=diff, project=project)
        self.draws += 1
        final = res.losses[-1].detach().view(n, r)
        best = final.argmin(1) + torch.arange(n, device=x.device) * r
        out = self.output(res.x[best], target[best])
        if diff:
            # Keep the input in the graph: at K = 0 the output does not depend on it and its gradient is 0.
            return out + 0.0 * target[best].view(out.shape) if out.shape == target[best].shape else out
        return out.detach()
