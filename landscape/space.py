"""Where descent runs: a problem's own space X, or a learned space Z that theta maps into X.

This is the one place that knows the difference. Everything that descends (the purifiers, the
trainer, ``compare``, the analyses) asks its space for starting points and runs its steps, so
the plain and the learned landscape are the same code with a different space.

* plain: starts from ``problem.init``; after each step the point is projected back onto the
  problem's feasible set (``problem.project``, e.g. an eps-ball), if it has one;
* learned: starts from N(0, I) in Z; a point of Z stands for ``problem.constrain(theta(z))``,
  a differentiable map onto the same feasible set (e.g. eps * tanh), so every step is feasible;
  a conditioned theta also sees ``problem.condition(target)``: theta(z, c), so a point of Z
  stands for an X only together with its target.

Example::

    >>> space = Space(problem)                 # plain
    >>> learned = Space(problem, theta)        # through theta
    >>> res = learned.descend(target, learned.init(len(target)), steps=10, lr=0.1, rule="adam")
    >>> res.x                                   # points of X, whichever space ran
"""
from __future__ import annotations

import torch

from .descent import DescentResult, descend
from .problem import InversionProblem, Target
from .theta import ThetaError


class Space:
    def __init__(self, problem: InversionProblem, theta: torch.nn.Module | None = None):
        self.problem, self.theta = problem, theta

    @property
    def learned(self) -> bool:
        return self.theta is not None

    @property
    def name(self) -> str:
        """``X`` (plain) or ``Z`` (learned), as in the result tables."""
        return "Z" if self.learned else "X"

    def init(self, n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """``n`` starting points (drawn on the CPU with ``generator``, so they do not depend on the device)."""
        var = torch.randn(n, self.theta.z_dim, generator=generator) if self.learned else self.problem.init(n, generator)
        return var.to(device if device is not None else self.problem.device)

    @property
    def conditioned(self) -> bool:
        return self.learned and bool(getattr(self.theta, "conditioned", False))

    def condition(self, target: Target | None) -> torch.Tensor | None:
        """What a conditioned theta sees of ``target`` (None for a plain space or an unconditioned theta)."""
        if not self.conditioned:
            return None
        if target is None:
            raise ThetaError("a conditioned theta maps z to X only with its target: pass to_x(var, target)")
        return self.problem.condition(target)

    def to_x(self, var: torch.Tensor, target: Target | None = None, cond: torch.Tensor | None = None) -> torch.Tensor:
        """The point of X that ``var`` stands for (a conditioned theta needs the target, or its condition)."""
        if not self.learned:
            return var
        if self.conditioned:
            return self.problem.constrain(self.theta(var, cond if cond is not None else self.condition(target)))
        return self.problem.constrain(self.theta(var))

    def descend(self, target: Target, var0: torch.Tensor, steps: int, lr: float, rule: str = "sgd",
                **kwargs) -> DescentResult:
        """``steps`` steps on ``problem.objective(to_x(var), target)`` from ``var0`` (see :func:`descend`)."""
        project = None if self.learned else self.problem.project
        cond = self.condition(target)   # once per descent (differentiable in the target)
        to_x = (lambda v: self.to_x(v, cond=cond)) if self.learned else None
        return descend(lambda x: self.problem.objective(x, target), var0, steps, lr, rule,
                       theta=to_x, project=project, **kwargs)
