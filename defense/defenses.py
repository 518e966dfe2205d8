"""The defenses by name, and the factory that builds their purifiers for each budget K.

The factory loads every model the named defenses need (generator, theta, self-supervised head)
and reads their step-size tables **once, when it is built** (in the driver). It then holds only
modules and numbers, so it travels whole through Ray's object store: a worker never opens a
checkpoint, and worker nodes need no copy of any weights.

Example::

    >>> factory = DefenseFactory(cfg["defense"], torch.device("cpu"), classifier, ["reverse-x"])
    >>> purifier = factory.purifier("reverse-x", budget=20)
"""
from __future__ import annotations

import pandas as pd
import torch

from landscape.config import parse_number
from landscape.errors import LandscapeError
from landscape.io import resolve_path
from tasks.gan.problem import GanInversion
from tasks.reverse.problem import ReverseAttackProblem

from .purifiers import GeneratorPurifier, ReversePurifier
from .user import UserDefense, is_object_spec

#: each defense and its landscape (the ``landscape`` column of the results)
DEFENSES = {"none": "none", "purify-x": "x", "purify-z": "z", "reverse-x": "x", "reverse-z": "z"}
#: the inversion problem each built-in purifier solves per input (the purifier *is* that problem)
PROBLEMS = {"purify-x": GanInversion, "purify-z": GanInversion,
            "reverse-x": ReverseAttackProblem, "reverse-z": ReverseAttackProblem}
#: defenses a defense-aware attack (``pgd-aware``) can run against: those whose problem declares a
#: ``natural_loss`` (a user defense: its own ``natural_loss`` method); undefended, it is plain PGD
NATURAL_LOSS_DEFENSES = {"none"} | {d for d, problem in PROBLEMS.items() if hasattr(problem, "natural_loss")}

#: every ``defense`` key of ``landscape eval`` (and ``train-classifier``), with its default
DEFENSE_DEFAULTS = {
    "budgets": [0, 1, 2, 5, 10, 20, 50, 100, 200],
    "restarts": 4,
    "modes": ["nonadaptive", "bpda"],   # nonadaptive | bpda | eot | bpda+eot | unrolled
    "attack_modes": {},                 # per attack, its own modes (e.g. {autoattack: [nonadaptive]}); else modes
    "eot_draws": 8,
    "unrolled_max_gb": 4.0,
    "generator": {"name": "dcgan", "weights": "checkpoints/dcgan-cifar10.pt", "kwargs": {}},
    "theta": "checkpoints/theta-gan-cifar10.pt",
    "step_sizes": "checkpoints/gan-cifar10-step-sizes.csv",  # tuned (rule, lr) per space and K, or {K: [rule, lr]}
    # reverse-x / reverse-z (the self-supervised reverse attack of Mao et al. 2021)
    "ssl_head": "checkpoints/ssl-head-resnet20.pt",
    "reverse_theta": "checkpoints/theta-reverse-cifar10.pt",
    "eps_rev": "8/255",
    "reverse_steps": None,  # null: sign steps of reverse_step_scale x eps_rev / K in X, theta's own rule in Z; or {K: [rule, lr]}
    "reverse_step_scale": 1.0,  # the paper's 2.5 moves further (costs a non-robust model clean accuracy)
    # your own defenses (defenses=[path/file.py:Class]): the keyword arguments each is built with, besides K
    "kwargs": {},
}


class DefenseError(LandscapeError, ValueError):
    pass


def resolve_defenses(entries, kwargs: dict | None = None) -> dict:
    """{name in the results: None for a built-in defense, or its :class:`UserDefense`} for the entries of
    ``defenses`` (built-in names or ``file.py:Class`` / ``module:Class``), checked; the order is kept."""
    out: dict = {}
    for entry in entries:
        if isinstance(entry, str) and entry in DEFENSES:
            name, user = entry, None
        elif is_object_spec(entry) or isinstance(entry, type):
            user = UserDefense.load(entry, kwargs)
            name = user.name
            if name in DEFENSES:
                raise DefenseError(f"defense {entry!r} calls itself {name!r}, a built-in defense's name: rename it")
        else:
            raise DefenseError(f"unknown defense {entry!r}; valid choices: {', '.join(DEFENSES)}, "
                               f"or your own as path/to/file.py:Class or module:Class (see defense/user.py)")
        if name in out:
            raise DefenseError(f"defenses lists {name!r} twice")
        out[name] = user
    return out


def load_step_table(spec, space: str, default: tuple):
    """{K: (rule, lr)} from an ``invert`` summary CSV (its tuned step per space and K) or a ``choose_reverse_steps``
    table (its chosen rows), a mapping, or a default."""
    if spec is None:
        return default
    if isinstance(spec, dict):
        return {int(k): (str(v[0]), float(v[1])) for k, v in spec.items()}
    if isinstance(spec, (list, tuple)) and len(spec) == 2:
        return (str(spec[0]), float(spec[1]))
    path = resolve_path(spec)
    if not path.is_file():
        raise DefenseError(f"step-size table {path} not found (write one with `landscape invert`, or give "
                           f"{{K: [rule, lr]}})")
    df = pd.read_csv(path)
    df = df[df["space"] == space.upper()]
    if "chosen" in df.columns:   # bench/choose_reverse_steps.py's table: every candidate, the chosen marked
        df = df[df["chosen"].astype(str).str.lower() == "true"]
        if df.empty:
            raise DefenseError(f"step-size table {path} marks no chosen step for space {space.upper()} (no candidate "
                               f"kept clean accuracy within the rule's margin): give defense.reverse_steps={{K: [rule, lr]}}")
    df = df.drop_duplicates("budget")
    if df.empty:
        raise DefenseError(f"step-size table {path} has no rows for space {space.upper()}")
    return {int(k): (str(r), float(lr)) for k, r, lr in zip(df["budget"], df["rule"], df["lr"])}


class DefenseFactory:
    """Loads what ``defenses`` need, once; hands out a purifier per (defense, K)."""

    def __init__(self, cfg: dict, device: torch.device, classifier: torch.nn.Module | None, defenses):
        self.cfg, self.device, self.classifier = cfg, torch.device(device), classifier
        kwargs = cfg.get("kwargs") or {}
        if not isinstance(kwargs, dict):
            raise DefenseError(f"defense.kwargs must be a mapping of keyword arguments, got {kwargs!r}")
        resolved = resolve_defenses(defenses, kwargs)
        self.user = {name: u for name, u in resolved.items() if u is not None}
        self.defenses = set(resolved) - {"none"}
        self.restarts = int(cfg.get("restarts", 1))
        self.models: dict = {}   # name -> nn.Module, all on self.device
        self.steps: dict = {}    # defense -> (rule, lr) or {K: (rule, lr)}
        self._load()

    def _load(self) -> None:
        from landscape.trainer import load_theta

        c, want = self.cfg, self.defenses
        if want & {"purify-x", "purify-z"}:
            from cifar10.generator import build_generator

            self.models["generator"] = build_generator(c["generator"])
            self.steps["purify-x"] = load_step_table(c.get("step_sizes"), "x", ("adam", 0.1))
        if "purify-z" in want:
            self.models["theta"], tcfg = load_theta(resolve_path(c["theta"]))
            self.steps["purify-z"] = load_step_table(c.get("step_sizes"), "z", (tcfg["rule"], float(tcfg["lr_z"])))
        if want & {"reverse-x", "reverse-z"}:
            from cifar10.ssl_head import SelfSupervised, feature_dim, load_head

            if self.classifier is None:
                raise DefenseError("the reverse-attack purifier needs the classifier")
            self.eps_rev = parse_number(c.get("eps_rev", 8 / 255), name="defense.eps_rev")
            if not self.eps_rev > 0:
                raise DefenseError(f"defense.eps_rev must be > 0, got {c.get('eps_rev')!r}")
            head = load_head(resolve_path(c["ssl_head"]))
            dim = feature_dim(self.classifier)
            if head.in_dim != dim:
                raise DefenseError(f"self-supervised head {c['ssl_head']} reads {head.in_dim}-d features, but this "
                                   f"classifier's penultimate features are {dim}-d: train a head for it with "
                                   f"`landscape train-ssl-head model.name=...` and set defense.ssl_head")
            self.models["ssl"] = SelfSupervised(self.classifier, head)
            spec = c.get("reverse_steps")
            self.steps["reverse-x"] = load_step_table(spec, "x", None) if spec else None
            self.step_scale = parse_number(c.get("reverse_step_scale", 1.0), name="defense.reverse_step_scale")
            if not self.step_scale > 0:
                raise DefenseError(f"defense.reverse_step_scale must be > 0, got {c.get('reverse_step_scale')!r}")
        if "reverse-z" in want:
            self.models["reverse_theta"], tcfg = load_theta(resolve_path(c["reverse_theta"]))
            trained_at = (tcfg.get("extra") or {}).get("eps_rev")
            if trained_at is not None and abs(float(trained_at) - self.eps_rev) > 1e-9:
                raise DefenseError(f"reverse theta {c['reverse_theta']} was trained at eps_rev {float(trained_at) * 255:.4g}/255, "
                                   f"but defense.eps_rev is {self.eps_rev * 255:.4g}/255: its landscape maps into "
                                   f"the other ball; set defense.eps_rev to match, or train a theta at this radius "
                                   f"(`landscape train-theta --task reverse-cifar10 eps_rev=...`)")
            spec = c.get("reverse_steps")
            self.steps["reverse-z"] = load_step_table(spec, "z", None) if spec else (tcfg["rule"], float(tcfg["lr_z"]))
        # your own defenses: one instance per budget, built here, so a worker never builds (or opens) anything
        self.user_purifiers = {(name, int(k)): u.build(int(k), self.restarts)
                               for name, u in self.user.items() for k in (c.get("budgets") or [0])}
        self.to(self.device)

    def to(self, device) -> "DefenseFactory":
        self.device = torch.device(device)
        self.models = {k: m.to(self.device) for k, m in self.models.items()}
        self.user_purifiers = {k: p.to(self.device) for k, p in self.user_purifiers.items()}
        return self

    def purifier(self, defense: str, budget: int):
        if defense == "none":
            return None
        if defense not in self.defenses:
            raise DefenseError(f"defense {defense!r} was not loaded; this factory holds: "
                               f"{', '.join(sorted(self.defenses)) or 'none'}")
        if defense in self.user:
            key = (defense, int(budget))
            if key not in self.user_purifiers:
                self.user_purifiers[key] = self.user[defense].build(int(budget), self.restarts).to(self.device)
            return self.user_purifiers[key]
        m, steps = self.models, self.steps[defense]
        if defense == "reverse-x":
            return ReversePurifier(m["ssl"], budget, self.restarts, self.eps_rev, steps, step_scale=self.step_scale)
        if defense == "reverse-z":
            return ReversePurifier(m["ssl"], budget, self.restarts, self.eps_rev, steps, theta=m["reverse_theta"])
        if defense == "purify-x":
            return GeneratorPurifier(m["generator"], budget, self.restarts, steps)
        return GeneratorPurifier(m["generator"], budget, self.restarts, steps, theta=m["theta"])
