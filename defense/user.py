"""Your own test-time defense, evaluated like the built-in ones: ``defenses=[path/to/file.py:Class]``.

The protocol (checked when the grid is built, before any data or model is loaded; each missing
piece is named in the error):

* ``Class`` is a ``torch.nn.Module`` subclass, built as ``Class(budget=K, **defense.kwargs)`` once
  per budget K of ``defense.budgets`` (and with ``restarts=R`` from ``defense.restarts`` if its
  ``__init__`` takes a ``restarts`` argument); a defense without iterations may ignore K;
* ``forward(x)`` takes images in [0, 1], shape (N, C, H, W), and returns the purified images in
  the same shape (the classifier then sees them);
* class attributes ``randomized`` (bool: does one input give another output on another call? then
  the EOT modes and ``runs=N`` apply) and ``differentiable`` (bool: may exact gradients flow
  through ``forward``? then the ``unrolled`` and ``eot`` modes apply; BPDA always does);
* optional: ``name`` (the ``defense`` column; default: the spec as given), ``landscape`` (default
  ``x``: the defense works on the input itself), ``passes`` (a dict with ``forward`` and
  ``backward`` counts it keeps up to date: the compute columns; without it they are NaN),
  ``natural_loss(x)`` (a per-image loss the defense lowers: ``pgd-aware`` then applies).

Example (``examples/jpeg.py``, run from the repository root)::

    >>> import torch
    >>> d = UserDefense.load("examples/jpeg.py:JpegCompression", {"quality": 75})
    >>> d.name, d.randomized, d.differentiable
    ('jpeg', False, False)
    >>> purifier = d.build(budget=0, restarts=1)      # a UserPurifier
    >>> purifier(torch.rand(2, 3, 32, 32)).shape
    torch.Size([2, 3, 32, 32])
"""
from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass

import torch
import torch.nn as nn

from landscape.errors import LandscapeError
from landscape.plugins import import_object, is_object_spec  # noqa: F401  (is_object_spec: re-exported)


class UserDefenseError(LandscapeError, ValueError):
    pass


@dataclass
class UserDefense:
    """A user defense class and its settings: what the grid and the factory need to know about it."""

    spec: str
    cls: type
    kwargs: dict
    name: str
    landscape: str
    randomized: bool
    differentiable: bool
    takes_restarts: bool

    @classmethod
    def load(cls, spec, kwargs: dict | None = None) -> "UserDefense":
        """Import ``spec`` (or take the class itself: the Python API) and check the protocol; every
        missing piece is named in one error line."""
        if isinstance(spec, type):
            obj, spec = spec, spec.__name__
        else:
            obj = import_object(spec, "defenses", UserDefenseError)
        where = f"defense {spec!r}"
        if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
            raise UserDefenseError(f"{where} is a {type(obj).__name__}, not a torch.nn.Module subclass "
                                   f"(see defense/user.py for the protocol)")
        missing = [a for a in ("randomized", "differentiable") if not isinstance(getattr(obj, a, None), bool)]
        if missing:
            raise UserDefenseError(f"{where} lacks the class attribute{'s' if len(missing) > 1 else ''} "
                                   f"{' and '.join(missing)} (True or False): "
                                   f"randomized = does one input give another output on another call; "
                                   f"differentiable = may exact gradients flow through forward")
        if obj.forward is nn.Module.forward:
            raise UserDefenseError(f"{where} has no forward(x) (images in [0, 1] -> purified images)")
        try:
            params = inspect.signature(obj.__init__).parameters
        except (TypeError, ValueError):
            params = {}
        accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        if "budget" not in params and not accepts_any:
            raise UserDefenseError(f"{where}: __init__ must take a budget argument (the K of defense.budgets; "
                                   f"a defense without iterations may ignore it)")
        kwargs = dict(kwargs or {})
        unknown = [k for k in kwargs if k not in params and not accepts_any]
        if unknown:
            raise UserDefenseError(f"{where}: __init__ takes no argument {unknown[0]!r} (from defense.kwargs)")
        name = getattr(obj, "name", None)
        name = spec if not isinstance(name, str) or not name else name
        landscape = getattr(obj, "landscape", "x")
        if not isinstance(landscape, str) or not landscape:
            raise UserDefenseError(f"{where}: landscape must be a non-empty string such as 'x', got {landscape!r}")
        return cls(spec, obj, kwargs, name, landscape, bool(obj.randomized), bool(obj.differentiable),
                   "restarts" in params)

    def build(self, budget: int, restarts: int = 1) -> "UserPurifier":
        kwargs = {"budget": int(budget), **self.kwargs}
        if self.takes_restarts:
            kwargs["restarts"] = int(restarts)
        try:
            module = self.cls(**kwargs)
        except Exception as exc:
            raise UserDefenseError(f"defense {self.spec!r} could not be built with {kwargs}: "
                                   f"{type(exc).__name__}: {exc}") from None
        if not isinstance(module, nn.Module):
            raise UserDefenseError(f"defense {self.spec!r} built a {type(module).__name__}, not an nn.Module")
        return UserPurifier(module.eval(), self, int(budget), int(restarts))


class UserPurifier(nn.Module):
    """A user defense behind the interface the attacks and the evaluator use for every purifier.

    What is deployed runs without gradients; :meth:`exact` is the copy whose gradients flow (the
    ``unrolled`` and ``eot`` modes), refused for a defense declared not differentiable."""

    def __init__(self, module: nn.Module, defense: UserDefense, budget: int, restarts: int):
        super().__init__()
        self.module, self.defense, self.budget, self.restarts = module, defense, budget, restarts
        self.differentiable = False
        for p in self.module.parameters():
            p.requires_grad_(False)

    @property
    def name(self) -> str:
        return self.defense.name

    @property
    def landscape(self) -> str:
        return self.defense.landscape

    @property
    def randomized(self) -> bool:
        return self.defense.randomized

    @property
    def counts_passes(self) -> bool:
        p = getattr(self.module, "passes", None)
        return isinstance(p, dict) and "forward" in p and "backward" in p

    @property
    def passes(self) -> dict:
        """The defense's own counts, if it keeps them (else no counts: the compute columns are NaN)."""
        if not self.counts_passes:
            raise AttributeError("passes")
        return self.module.passes

    @property
    def natural_loss(self):
        loss = getattr(self.module, "natural_loss", None)
        return loss if callable(loss) else None

    def exact(self, budget: int | None = None, restarts: int | None = None) -> "UserPurifier":
        if not self.defense.differentiable:
            raise UserDefenseError(f"defense {self.defense.name!r} declares differentiable = False: exact gradients "
                                   f"(modes unrolled, eot) do not apply; BPDA (bpda, bpda+eot) does")
        if (budget is not None and budget != self.budget) or (restarts is not None and restarts != self.restarts):
            raise UserDefenseError(f"defense {self.defense.name!r}: a copy at another budget cannot be made from an instance")
        other = copy.copy(self)
        other.differentiable = True
        return other

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.differentiable and torch.is_grad_enabled():
            out = self.module(x)
        else:
            with torch.no_grad():
                out = self.module(x.detach())
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise UserDefenseError(f"defense {self.defense.name!r}: forward must return images of the input's shape "
                                   f"{tuple(x.shape)}, got {got}")
        return out if self.differentiable and torch.is_grad_enabled() else out.detach()
