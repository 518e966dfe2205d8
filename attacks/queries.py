"""Counting what an attack asks of the model it attacks: forward passes and input gradients, per image.

RobustBench and the re-evaluations of purification defenses report an attack's cost in queries;
counting them by wrapping the model (not estimating them from the attack's settings) also counts
what a library attack does that its settings do not say (restarts on survivors, early stops, EOT).

Example::

    >>> counted = QueryCounter(model)
    >>> adv = torchattacks.PGD(counted, eps=8 / 255, steps=10)(images, labels)
    >>> counted.forward_rows, counted.backward_rows     # one per image per call
"""
from __future__ import annotations

import torch
import torch.nn as nn


class QueryCounter(nn.Module):
    """``model`` unchanged, counting forward rows and the rows whose gradient flowed back through it."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        # take the model's mode: torchattacks calls .train() after an attack on a model it found in training
        # mode, and a fresh wrapper (training=True) would switch the wrapped classifier's batch norm too
        self.train(model.training)
        self.forward_rows = 0
        self.backward_rows = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        n = len(x)
        self.forward_rows += n
        if out.requires_grad:
            def count(grad, n=n):
                self.backward_rows += n
                return grad
            out.register_hook(count)
        return out

    def counts(self) -> tuple[int, int]:
        return self.forward_rows, self.backward_rows
