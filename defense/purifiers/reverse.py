"""Reverse-attack purifier (Mao et al., "Adversarial Attacks are Reversible with Natural
Supervision", ICCV 2021): find a small delta, ||delta||_inf <= eps_rev, that minimizes the
self-supervised loss of x + delta, by K steps from R random starts, and classify x + delta.

Plain (``reverse-x``): projected sign-gradient descent on delta from a uniform start in the
ball, step eps_rev / K unless ``steps`` says otherwise. Learned (``reverse-z``): descent on z
through theta, with delta = eps_rev * tanh(theta(z)), so the bound holds at every step by
construction.

Arguments: ``ssl`` (a :class:`~defense.ssl_head.SelfSupervised` loss), ``budget`` K,
``restarts`` R, ``eps_rev`` (8/255; the paper's 16/255 with 2.5 eps_rev / K steps costs the
non-robust ResNet-20 12 points of clean accuracy, see the README), ``steps``,
``theta``, ``differentiable``.

Example::

    >>> p = ReversePurifier(SelfSupervised(classifier, load_head(path)), budget=40, restarts=1)
    >>> purified = p(images)
"""
from __future__ import annotations

import torch

from .base import Purifier


class ReversePurifier(Purifier):
    prefix = "reverse"

    def __init__(self, ssl: torch.nn.Module, budget: int, restarts: int = 1, eps_rev: float = 8 / 255, steps=None,
                 theta=None, differentiable: bool = False):
        if steps is None:
            steps = ("sign", eps_rev / max(budget, 1)) if theta is None else ("adam", 0.1)
        super().__init__(budget, restarts, steps, theta, differentiable)
        self.ssl, self.eps = ssl, float(eps_rev)

    def delta(self, v: torch.Tensor) -> torch.Tensor:
        if self.theta is None:
            return v.clamp(-self.eps, self.eps)
        return self.eps * torch.tanh(v)

    def start(self, x):
        return (torch.rand_like(x) * 2 - 1) * self.eps

    def project(self, var):
        return var.clamp(-self.eps, self.eps)

    def objective(self, v, x):
        return self.ssl((x + self.delta(v)).clamp(0, 1), groups=self.restarts)

    def output(self, v, x):
        return (x + self.delta(v)).clamp(0, 1)
