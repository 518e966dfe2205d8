"""theta: Z -> X, a small residual MLP whose landscape makes descent fast (Liu et al. 2023)."""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from .errors import LandscapeError


class ThetaError(LandscapeError, ValueError):
    """theta (or its training) was asked for settings it cannot have."""


ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU, "tanh": nn.Tanh}


class _Block(nn.Module):
    def __init__(self, width: int, activation: str = "gelu"):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), ACTIVATIONS[activation](),
                                 nn.Linear(width, width))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, h):
        return h + self.net(h)


class Theta(nn.Module):
    """x = skip(z) + head(blocks(embed(z))), reshaped to the problem's latent shape.

    The skip is a linear map initialized to the identity (padded or cut when dim_z != dim_x)
    and the residual branch starts at zero, so an untrained theta reproduces descent in X.
    ``skip="identity"`` (only when dim_z == dim_x) keeps the skip a fixed identity: a large X
    (an image-sized perturbation, 3072 numbers) then needs no dim_x² matrix, and theta stays small.
    """

    def __init__(self, x_shape, z_dim: int | None = None, width: int = 256, depth: int = 2, skip: str = "linear",
                 activation: str = "gelu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ThetaError(f"unknown theta activation {activation!r}; valid: {', '.join(ACTIVATIONS)}")
        self.activation = activation
        self.x_shape = tuple(int(s) for s in x_shape)
        self.x_dim = math.prod(self.x_shape)
        self.z_dim = int(z_dim or self.x_dim)
        self.width, self.depth, self.skip_kind = width, depth, skip
        if skip == "identity":
            if self.z_dim != self.x_dim:
                raise ThetaError(f"skip='identity' needs z_dim == dim X = {self.x_dim}, got z_dim {self.z_dim}")
            self.skip = nn.Identity()
        elif skip == "linear":
            self.skip = nn.Linear(self.z_dim, self.x_dim)
            with torch.no_grad():
                self.skip.weight.copy_(torch.eye(self.x_dim, self.z_dim))
                self.skip.bias.zero_()
        else:
            raise ThetaError(f"unknown theta skip {skip!r}; valid: 'linear', 'identity'")
        self.embed = nn.Linear(self.z_dim, width)
        self.blocks = nn.Sequential(*[_Block(width, activation) for _ in range(depth)])
        self.head = nn.Linear(width, self.x_dim)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def config(self) -> dict:
        return {"x_shape": list(self.x_shape), "z_dim": self.z_dim, "width": self.width, "depth": self.depth,
                "skip": self.skip_kind, "activation": self.activation}

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.skip(z) + self.head(self.blocks(self.embed(z)))
        return x.view(len(z), *self.x_shape)
