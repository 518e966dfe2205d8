"""Generator purifier (Defense-GAN; Samangouei et al., ICLR 2018): classify G(z*) for the latent z*
whose image best matches the input, found by K descent steps from R random starts.

It is :class:`~tasks.gan.problem.GanInversion` with the input image as the target, so the theta
of ``purify-z`` is trained on exactly this objective (``landscape train-theta --task gan-cifar10``).

Arguments: ``generator`` (latent -> images in [0, 1], with ``latent_dim``), ``budget`` K,
``restarts`` R, ``steps`` (rule, lr) or {K: (rule, lr)}, ``theta`` (a learned landscape:
descend in Z through it instead of in the latent space itself), ``differentiable``.

Example::

    >>> p = GeneratorPurifier(load_generator("checkpoints/dcgan-cifar10.pt"), budget=10, restarts=4)
    >>> defended = torch.nn.Sequential(p, classifier)
"""
from __future__ import annotations

import torch

from tasks.gan.problem import GanInversion

from .base import Purifier


def GeneratorPurifier(generator: torch.nn.Module, budget: int, restarts: int = 1, steps=("adam", 0.1), theta=None,
                      differentiable: bool = False) -> Purifier:
    return Purifier(GanInversion(generator), budget, restarts, steps, theta, differentiable, prefix="purify")
