"""Plumbing shared by every attack of the registry: parameter checks, seeds, eps budgets.

An :class:`AttackSpec` names a torchattacks attack, its threat model and its parameters
with their defaults; :meth:`AttackSpec.bind` checks user parameters and returns a
:class:`BoundAttack` that runs the library attack on a model with a per-batch seed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn as nn

from landscape.config import parse_number
from landscape.errors import LandscapeError

NORMS = ("Linf", "L2")
DEFAULT_EPS = {"Linf": 8 / 255, "L2": 0.5}
# An eps outside these ranges is far more likely a mix-up of Linf and L2 budgets than intended.
LIKELY_LINF_EPS_MAX = 16 / 255 + 1e-9   # an L2 attack given at most this looks like a Linf eps
LIKELY_L2_EPS_MIN = 0.25                # a Linf attack given at least this looks like an L2 eps


class AttackError(LandscapeError, ValueError):
    """An unknown attack or a bad attack parameter; the message lists the valid choices."""


@dataclass
class AttackSpec:
    """How to build one named attack: its norm(s), parameters with defaults, and a builder."""

    name: str
    build: Callable[[nn.Module, dict], Any]
    defaults: dict
    norms: tuple = ("Linf",)
    bounded: bool = True          # False: the attack itself ignores eps (CW); the budget is enforced after
    int_params: tuple = ("steps", "restarts", "n_queries", "eot_iter", "n_classes")
    doc: str = ""
    #: True: the builder takes the defense's self-supervised loss too, ``build(model, params, natural_loss)``
    uses_natural_loss: bool = False

    def bind(self, user: dict | None, eps_defaults: dict | None = None) -> "BoundAttack":
        params = dict(self.defaults)
        user = dict(user or {})
        confirmed = bool(user.pop("eps_confirmed", False))
        unknown = sorted(set(user) - set(params))
        if unknown:
            valid = ", ".join(sorted(list(params) + ["eps_confirmed"]))
            raise AttackError(f"attack {self.name!r} has no parameter {', '.join(unknown)}; valid: {valid}")
        params.update(user)
        norm = params.get("norm", self.norms[0])
        if norm not in self.norms:
            raise AttackError(f"attack {self.name!r}: norm must be one of {', '.join(self.norms)}, got {norm!r}")
        params["norm"] = norm
        eps_defaults = {**DEFAULT_EPS, **(eps_defaults or {})}
        if params.get("eps") is None:
            params["eps"] = parse_number(eps_defaults[norm], name=f"eps.{norm}")
        for key, value in list(params.items()):
            if key in ("norm", "version", "random_start", "loss", "multi_targeted"):
                continue
            number = parse_number(value, name=f"{self.name}.{key}")
            if key != "eps" and not math.isfinite(number):  # eps gets its own message below
                raise AttackError(f"attack {self.name!r}: {key} must be a finite number, got {value!r}")
            if key in self.int_params:
                if number != int(number):
                    raise AttackError(f"attack {self.name!r}: {key} must be a whole number, got {value!r}")
                number = int(number)
            params[key] = number
        _check_values(self.name, params, confirmed)
        return BoundAttack(self, params)


def _check_values(name: str, p: dict, confirmed: bool) -> None:
    eps = p["eps"]
    if not math.isfinite(eps) or eps < 0:
        raise AttackError(f"attack {name!r}: eps must be >= 0, got {eps}")
    for key in ("steps", "restarts", "n_queries", "eot_iter"):
        if key in p and p[key] < 1:
            raise AttackError(f"attack {name!r}: {key} must be >= 1, got {p[key]}")
    for key in ("alpha", "lr"):
        if key in p and not p[key] > 0:
            raise AttackError(f"attack {name!r}: {key} (step size) must be > 0, got {p[key]}")
    if "weight" in p and not p["weight"] > 0:
        raise AttackError(f"attack {name!r}: weight (of the self-supervised term) must be > 0, got {p['weight']}")
    if not confirmed:
        if p["norm"] == "L2" and 0 < eps <= LIKELY_LINF_EPS_MAX:
            raise AttackError(
                f"attack {name!r} is L2 but eps={eps:.4g} looks like an Linf budget (the L2 default is 0.5); "
                f"if you mean it, add {name}.eps_confirmed=true (attack_params.{name}.eps_confirmed=true)")
        if p["norm"] == "Linf" and eps >= LIKELY_L2_EPS_MIN:
            raise AttackError(
                f"attack {name!r} is Linf but eps={eps:.4g} looks like an L2 budget (the Linf default is 8/255); "
                f"if you mean it, add attack_params.{name}.eps_confirmed=true")


def perturbation_norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    flat = delta.flatten(1)
    return flat.abs().amax(1) if norm == "Linf" else flat.norm(dim=1)


@dataclass
class BoundAttack:
    """A spec with checked parameters; ``run`` attacks one batch of a model reproducibly."""

    spec: AttackSpec
    params: dict
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def norm(self) -> str:
        return self.params["norm"]

    @property
    def eps(self) -> float:
        return self.params["eps"]

    def library_attack(self, model: nn.Module, natural_loss=None):
        """The torchattacks object for ``model`` (built once per model and natural loss)."""
        if self._cache.get("model") is not model or self._cache.get("natural") is not natural_loss:
            # keep the objects themselves, so a recycled id() can never match
            if self.spec.uses_natural_loss:
                attack = self.spec.build(model, self.params, natural_loss)
            else:
                attack = self.spec.build(model, self.params)
            self._cache = {"model": model, "natural": natural_loss, "attack": attack}
        return self._cache["attack"]

    def run(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, seed: int,
            natural_loss=None) -> torch.Tensor:
        """Attack one batch; ``natural_loss``: the defense's self-supervised loss, for attacks that use it."""
        atk = self.library_attack(model, natural_loss)
        _reseed(atk, seed)
        torch.manual_seed(seed)
        adv = atk(images, labels).detach()
        if not self.spec.bounded:
            # Unbounded attacks (CW) find minimal perturbations; only those within eps count.
            over = perturbation_norm(adv - images, self.norm) > self.eps + 1e-6
            adv[over] = images[over]
        return adv


def _reseed(atk, seed: int) -> None:
    """torchattacks' APGD/FAB/Square reset the RNG to ``self.seed``; give each batch its own."""
    if hasattr(atk, "seed"):
        atk.seed = seed
    for sub in getattr(atk, "attacks", []):
        _reseed(sub, seed)
    inner = getattr(atk, "_autoattack", None)
    if inner is not None:
        _reseed(inner, seed)
