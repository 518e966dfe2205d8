"""A purifier: an inversion problem solved for each input image, which is the problem's target.

The problem says what is optimized and what the solution stands for (a generator latent and its
image; a perturbation and the perturbed image): it is the very object a theta is trained on
(``landscape train-theta``), so the purifier and its theta share one objective. This class adds
what purification needs: the budget K, the restarts R (vectorized in the batch: the N images are
repeated R times, never looped over; the lowest final loss wins), the step rule per K, the space
(plain, or learned through theta) and whether the steps stay differentiable. Adaptive attacks ask
for a differentiable copy with :meth:`exact`, never by changing a purifier they were given.

Example::

    >>> p = Purifier(GanInversion(G), budget=10, restarts=4, steps={10: ("adam", 0.1)}, prefix="purify")
    >>> purified = p(images)          # (N, 3, 32, 32) in [0, 1]
    >>> exact = p.exact()             # the same purifier, differentiable through its K steps
"""
from __future__ import annotations

import copy
from typing import Mapping

import torch
import torch.nn as nn

from landscape.errors import LandscapeError
from landscape.problem import InversionProblem
from landscape.space import Space


class PurifierError(LandscapeError, ValueError):
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


class Purifier(nn.Module):
    """``problem`` (an :class:`~landscape.problem.InversionProblem` whose target is the image),
    ``budget`` K, ``restarts`` R, ``steps`` (rule, lr) or {K: (rule, lr)}, ``theta`` (None: plain
    space), ``differentiable``, ``prefix`` (the name in the results: ``<prefix>-x`` or ``<prefix>-z``)."""

    def __init__(self, problem: InversionProblem, budget: int, restarts: int = 1, steps=("adam", 0.1),
                 theta: nn.Module | None = None, differentiable: bool = False, prefix: str = "purify"):
        super().__init__()
        if not isinstance(budget, int) or isinstance(budget, bool) or budget < 0:
            raise PurifierError(f"budget K must be a whole number >= 0, got {budget!r}")
        if not isinstance(restarts, int) or isinstance(restarts, bool) or restarts < 1:
            raise PurifierError(f"restarts R must be a whole number >= 1, got {restarts!r}")
        self.problem, self.budget, self.restarts, self.steps = problem, budget, restarts, steps
        self.theta, self.prefix = theta, prefix
        self.space = Space(problem, theta)
        self.differentiable = differentiable
        # the problem's models, registered so .to() / .eval() reach them
        self.models = nn.ModuleList([v for v in vars(problem).values() if isinstance(v, nn.Module)])
        self.draws = 0  # forward passes so far (each is one random draw of the restarts)
        # the defender's compute, counted in the descent: objective evaluations and gradients over all
        # restarts, and the images purified (per image: R (K + 1) forward and R K backward passes)
        self.passes = {"forward": 0, "backward": 0, "images": 0}

    @property
    def landscape(self) -> str:
        return self.space.name.lower()

    @property
    def name(self) -> str:
        return f"{self.prefix}-{self.landscape}"

    @property
    def natural_loss(self):
        """images -> per-image loss the defense lowers (the reverse attack's self-supervised loss), or None:
        what a defense-aware attack keeps low (``attacks/defense_aware.py``)."""
        return getattr(self.problem, "natural_loss", None)

    def exact(self, budget: int | None = None, restarts: int | None = None) -> "Purifier":
        """A differentiable copy (sharing the models), optionally with another K or R (memory probes)."""
        other = copy.copy(self)
        other.differentiable = True
        other.passes = {"forward": 0, "backward": 0, "images": 0}   # the attacker's surrogate: counted apart
        if budget is not None:
            other.budget = budget
        if restarts is not None:
            other.restarts = restarts
        return other

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, r = len(x), self.restarts
        xr = x.repeat_interleave(r, 0)
        rule, lr = resolve_step(self.steps, self.budget)
        diff = self.differentiable and torch.is_grad_enabled()
        target = xr if diff else xr.detach()
        var0 = self.space.init(n * r, device=x.device)
        if var0.is_floating_point() and not self.space.learned:
            var0 = var0.to(x.dtype)
        res = self.space.descend(target, var0, self.budget, lr, rule, differentiable=diff)
        self.draws += 1
        self.passes["forward"] += res.forward_passes
        self.passes["backward"] += res.backward_passes
        self.passes["images"] += n
        final = res.losses[-1].detach().view(n, r)
        best = final.argmin(1) + torch.arange(n, device=x.device) * r
        out = self.problem.solution(res.x[best], target[best])
        if diff:
            # Keep the input in the graph: at K = 0 the output does not depend on it and its gradient is 0.
            return out + 0.0 * target[best].view(out.shape) if out.shape == target[best].shape else out
        return out.detach()
