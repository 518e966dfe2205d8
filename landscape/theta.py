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

    ``cond_dim`` > 0 makes theta conditioned, theta(z, c), on what ``problem.condition(target)``
    says of the observation (beyond the paper): c is embedded and added to z's embedding, so the
    residual branch can move the whole landscape per observation (an amortized first guess that
    descent then refines). It still starts at zero, so an untrained conditioned theta is the identity too.

    ``shift_only`` (conditioned only): the residual branch sees c alone, x = skip(z) + g(c). With the
    identity skip the landscape in Z is then X's own, moved per observation to a learned centre (with a
    linear skip, X's under one learned linear change of coordinates): theta can learn where
    to start but cannot flatten the landscape around it (a residual that also sees z can learn
    h(z, c) = a(c) - z, which maps every z to one amortized guess and leaves descent nothing to do).

    ``residual_bound`` b > 0: the residual is b tanh(r / b), so theta moves each coordinate of X by at most
    b. A bounded problem that maps X through a squashing ``constrain`` (eps tanh) has no gradient where it
    saturates: an unbounded learned centre can park most coordinates there (the reverse attack's shift theta
    did, |g(c)| ~ 6 on 72% of pixels), and descent from it then moves nothing. 0: unbounded.
    """

    def __init__(self, x_shape, z_dim: int | None = None, width: int = 256, depth: int = 2, skip: str = "linear",
                 activation: str = "gelu", cond_dim: int = 0, shift_only: bool = False, residual_bound: float = 0.0):
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
        self.cond_dim, self.shift_only, self.residual_bound = int(cond_dim), bool(shift_only), float(residual_bound)
        if not (self.residual_bound >= 0 and math.isfinite(self.residual_bound)):
            raise ThetaError(f"residual_bound must be finite and >= 0 (0: unbounded), got {residual_bound}")
        if self.cond_dim < 0:
            raise ThetaError(f"cond_dim must be >= 0, got {cond_dim}")
        if self.shift_only and not self.cond_dim:
            raise ThetaError("shift_only needs a conditioned theta (cond_dim > 0): its residual sees only the condition")
        self.embed = None if self.shift_only else nn.Linear(self.z_dim, width)
        self.cond = nn.Linear(self.cond_dim, width) if self.cond_dim else None
        self.blocks = nn.Sequential(*[_Block(width, activation) for _ in range(depth)])
        self.head = nn.Linear(width, self.x_dim)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def config(self) -> dict:
        return {"x_shape": list(self.x_shape), "z_dim": self.z_dim, "width": self.width, "depth": self.depth,
                "skip": self.skip_kind, "activation": self.activation, "cond_dim": self.cond_dim,
                "shift_only": self.shift_only, "residual_bound": self.residual_bound}

    @property
    def conditioned(self) -> bool:
        return self.cond is not None

    def forward(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        if self.cond is not None:
            if cond is None or cond.shape != (len(z), self.cond_dim):
                got = None if cond is None else tuple(cond.shape)
                raise ThetaError(f"this theta is conditioned: it needs a condition of shape ({len(z)}, {self.cond_dim}), got {got}")
            h = self.cond(cond) if self.shift_only else self.embed(z) + self.cond(cond)
        elif cond is not None:
            raise ThetaError("this theta is not conditioned, but a condition was given")
        else:
            h = self.embed(z)
        r = self.head(self.blocks(h))
        if self.residual_bound > 0:
            r = self.residual_bound * torch.tanh(r / self.residual_bound)
        x = self.skip(z) + r
        return x.view(len(z), *self.x_shape)
