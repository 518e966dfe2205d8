"""Gradient descent on a per-example objective, in X or in Z through a map theta: Z -> X.

Steps are written functionally (``torch.autograd.grad``) so the whole trajectory can be
differentiated when asked (``differentiable=True``): that is how theta is trained (the
unrolled loss) and how an attacker gets exact gradients through K steps of a purifier.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from .errors import LandscapeError

RULES = ("sgd", "adam", "sign")


class DescentError(LandscapeError, ValueError):
    pass


@dataclass
class DescentResult:
    var: torch.Tensor          # the final variable (z in Z, or x in X)
    x: torch.Tensor            # the final point of X (theta(var), or var itself)
    losses: torch.Tensor       # (K + 1, N): per-example loss before each step and after the last
    best_x: torch.Tensor       # per example, the visited point of X with the lowest loss
    best_loss: torch.Tensor    # (N,)
    trajectory: list | None = None  # visited variables (detached), when asked
    forward_passes: int = 0    # objective evaluations, counted per row (K + 1 per row)
    backward_passes: int = 0   # gradients of the objective, counted per row (K per row)


def descend(objective: Callable[[torch.Tensor], torch.Tensor], var0: torch.Tensor, steps: int, lr: float,
            rule: str = "sgd", theta: Callable[[torch.Tensor], torch.Tensor] | None = None,
            differentiable: bool = False, keep_trajectory: bool = False,
            betas: tuple = (0.9, 0.999), eps: float = 1e-8,
            project: Callable[[torch.Tensor], torch.Tensor] | None = None) -> DescentResult:
    """Run ``steps`` descent steps on ``objective(theta(var))`` (per example, shape (N,)) from ``var0``.

    ``rule``: ``sgd`` (var -= lr * g), ``adam`` (Adam's update, written out so it can be
    unrolled) or ``sign`` (var -= lr * sign(g), for box-constrained variables).
    ``project`` is applied after every step (e.g. a clamp to an eps-ball).
    With ``differentiable=True`` the result keeps the graph through every step.
    """
    if not isinstance(steps, int) or steps < 0:
        raise DescentError(f"the step budget K must be an integer >= 0, got {steps!r}")
    if rule not in RULES:
        raise DescentError(f"unknown descent rule {rule!r}; valid: {', '.join(RULES)}")
    if not lr > 0:
        raise DescentError(f"step size must be > 0, got {lr}")
    to_x = theta if theta is not None else (lambda v: v)
    var = var0 if differentiable else var0.detach()
    if not var.requires_grad:
        var = var.clone().requires_grad_(True)
    m = torch.zeros_like(var)
    v = torch.zeros_like(var)
    losses, traj = [], [var.detach().clone()] if keep_trajectory else None
    best_loss = best_x = None
    forward_passes = backward_passes = 0
    with torch.enable_grad():
        for t in range(steps + 1):
            x = to_x(var)
            loss = objective(x)
            if loss.dim() != 1:
                raise DescentError(f"the objective must return one loss per example (N,), got shape {tuple(loss.shape)}")
            forward_passes += len(loss)
            losses.append(loss if differentiable else loss.detach())
            with torch.no_grad():
                if best_loss is None:
                    best_loss, best_x = loss.detach().clone(), x.detach().clone()
                else:
                    better = loss.detach() < best_loss
                    best_loss = torch.where(better, loss.detach(), best_loss)
                    best_x[better] = x.detach()[better]
            if t == steps:
                break
            (g,) = torch.autograd.grad(loss.sum(), var, create_graph=differentiable)
            backward_passes += len(loss)
            if rule == "sgd":
                step = g
            elif rule == "sign":
                step = g.sign()
            else:
                m = betas[0] * m + (1 - betas[0]) * g
                v = betas[1] * v + (1 - betas[1]) * g * g
                mhat = m / (1 - betas[0] ** (t + 1))
                vhat = v / (1 - betas[1] ** (t + 1))
                # sqrt(v + eps^2), not sqrt(v) + eps: finite derivative where a gradient is exactly 0
                step = mhat / (vhat + eps * eps).sqrt()
            var = var - lr * step
            if project is not None:
                var = project(var)
            if not differentiable:
                var = var.detach().requires_grad_(True)
            if keep_trajectory:
                traj.append(var.detach().clone())
    final_x = x if differentiable else x.detach()
    return DescentResult(var if differentiable else var.detach(), final_x, torch.stack(losses), best_x, best_loss, traj,
                         forward_passes, backward_passes)


def tune_step_size(run: Callable[[float], torch.Tensor], candidates: Sequence[float]) -> tuple[float, dict]:
    """The candidate step size whose run gives the lowest mean loss; ``run(lr)`` returns per-example losses."""
    if not candidates:
        raise DescentError("no step sizes to tune over")
    scores = {}
    for lr in candidates:
        with torch.no_grad():
            loss = run(float(lr))
        score = float(torch.nan_to_num(loss, nan=float("inf")).mean())
        scores[float(lr)] = score
    best = min(scores, key=scores.get)
    return best, scores
