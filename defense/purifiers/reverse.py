"""Reverse-attack purifier (Mao et al., "Adversarial Attacks are Reversible with Natural
Supervision", ICCV 2021): find a small delta, ||delta||_inf <= eps_rev, that minimizes the
self-supervised loss of x + delta, by K steps from R random starts, and classify x + delta.

It is :class:`~tasks.reverse.problem.ReverseAttackProblem` with the input image as the target
(the same problem ``landscape train-theta --task reverse-cifar10`` trains theta on). Plain
(``reverse-x``): projected sign-gradient descent on delta from a uniform start in the ball,
step ``step_scale`` x eps_rev / K (the paper's scale is 2.5) unless ``steps`` says otherwise.
Learned (``reverse-z``): descent on z through theta, with delta = eps_rev * tanh(theta(z)), so the bound holds at every step by construction.

Arguments: ``ssl`` (a :class:`~cifar10.ssl_head.SelfSupervised` loss), ``budget`` K,
``restarts`` R, ``eps_rev`` (8/255; the paper's 16/255 with 2.5 eps_rev / K steps costs the
non-robust ResNet-20 12 points of clean accuracy, see the README), ``steps``,
``theta``, ``differentiable``.

Example::

    >>> p = ReversePurifier(SelfSupervised(classifier, load_head(path)), budget=40, restarts=1)
    >>> purified = p(images)
"""
from __future__ import annotations

import torch

from tasks.reverse.problem import ReverseAttackProblem

from .base import Purifier


def ReversePurifier(ssl: torch.nn.Module, budget: int, restarts: int = 1, eps_rev: float = 8 / 255, steps=None,
                    theta=None, differentiable: bool = False, step_scale: float = 1.0) -> Purifier:
    if steps is None:
        steps = ("sign", step_scale * eps_rev / max(budget, 1)) if theta is None else ("adam", 0.1)
    problem = ReverseAttackProblem(ssl, eps_rev, groups=restarts)
    return Purifier(problem, budget, restarts, steps, theta, differentiable, prefix="reverse")
