"""Generator purifier (Defense-GAN; Samangouei et al., ICLR 2018): classify G(z*) for the latent z*
whose image best matches the input, found by K descent steps from R random starts.

Arguments: ``generator`` (latent -> images in [0, 1], with ``latent_dim``), ``budget`` K,
``restarts`` R, ``steps`` (rule, lr) or {K: (rule, lr)}, ``theta`` (a learned landscape:
descend in Z through it instead of in the latent space itself), ``differentiable``.

Example::

    >>> p = GeneratorPurifier(load_generator("checkpoints/dcgan-cifar10.pt"), budget=10, restarts=4)
    >>> defended = torch.nn.Sequential(p, classifier)
"""
from __future__ import annotations

import torch

from .base import Purifier


class GeneratorPurifier(Purifier):
    prefix = "purify"

    def __init__(self, generator: torch.nn.Module, budget: int, restarts: int = 1, steps=("adam", 0.1), theta=None,
                 differentiable: bool = False):
        super().__init__(budget, restarts, steps, theta, differentiable)
        self.G = generator.eval()
        for p in self.G.parameters():
            p.requires_grad_(False)
        self.latent_dim = int(generator.latent_dim)

    def start(self, x):
        return torch.randn(len(x), self.latent_dim, device=x.device, dtype=x.dtype)

    def objective(self, v, x):
        return ((self.G(v) - x) ** 2).flatten(1).mean(1)

    def output(self, v, x):
        return self.G(v)
