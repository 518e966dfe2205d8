"""Build the purifiers named in ``defenses`` for each budget K from the ``defense`` config section."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from landscape.config import parse_number

from .purifiers import GeneratorPurifier, ReversePurifier

DEFENSES = ("none", "purify-x", "purify-z", "reverse-x", "reverse-z")
REPO = Path(__file__).resolve().parents[1]


class DefenseError(ValueError):
    pass


def _resolve(path) -> Path:
    p = Path(str(path)).expanduser()
    return p if p.is_absolute() or p.exists() else REPO / p


def load_step_table(spec, space: str, default: tuple):
    """{K: (rule, lr)} from an ``invert`` summary CSV (its tuned step per space and K), a mapping, or a default."""
    if spec is None:
        return default
    if isinstance(spec, dict):
        return {int(k): (str(v[0]), float(v[1])) for k, v in spec.items()}
    if isinstance(spec, (list, tuple)) and len(spec) == 2:
        return (str(spec[0]), float(spec[1]))
    path = _resolve(spec)
    if not path.is_file():
        raise DefenseError(f"step-size table {path} not found (write one with `landscape invert`, or give "
                           f"{{K: [rule, lr]}})")
    df = pd.read_csv(path)
    df = df[df["space"] == space.upper()].drop_duplicates("budget")
    if df.empty:
        raise DefenseError(f"step-size table {path} has no rows for space {space.upper()}")
    return {int(k): (str(r), float(lr)) for k, r, lr in zip(df["budget"], df["rule"], df["lr"])}


class DefenseFactory:
    """Loads the generator and theta once; hands out a purifier per (defense, K)."""

    def __init__(self, cfg: dict, device: torch.device, classifier: torch.nn.Module | None = None):
        self.cfg, self.device, self.classifier = cfg, device, classifier
        self._G = self._theta = self._ssl = self._rtheta = None

    @property
    def generator(self):
        if self._G is None:
            from .generator import build_generator

            g = dict(self.cfg["generator"])
            if g.get("weights"):
                g["weights"] = str(_resolve(g["weights"]))
            self._G = build_generator(g).to(self.device)
        return self._G

    @property
    def theta(self):
        if self._theta is None:
            from landscape.trainer import load_theta

            self._theta, self._theta_cfg = load_theta(_resolve(self.cfg["theta"]), self.device)
        return self._theta

    @property
    def ssl(self):
        if self._ssl is None:
            from .ssl_head import SelfSupervised, load_head

            if self.classifier is None:
                raise DefenseError("the reverse-attack purifier needs the classifier")
            self._ssl = SelfSupervised(self.classifier, load_head(_resolve(self.cfg["ssl_head"]))).to(self.device)
        return self._ssl

    @property
    def reverse_theta(self):
        if self._rtheta is None:
            from landscape.trainer import load_theta

            self._rtheta, self._rtheta_cfg = load_theta(_resolve(self.cfg["reverse_theta"]), self.device)
        return self._rtheta

    def to(self, device) -> None:
        self.device = torch.device(device)
        if self._ssl is not None:
            self._ssl = self._ssl.to(self.device)
        if self._rtheta is not None:
            self._rtheta = self._rtheta.to(self.device)
        if self._G is not None:
            self._G = self._G.to(self.device)
        if self._theta is not None:
            self._theta = self._theta.to(self.device)

    def purifier(self, defense: str, budget: int):
        if defense == "none":
            return None
        if defense not in DEFENSES:
            raise DefenseError(f"unknown defense {defense!r}; valid: {', '.join(DEFENSES)}")
        c = self.cfg
        if defense.startswith("reverse-"):
            eps = parse_number(c.get("eps_rev", 8 / 255), name="defense.eps_rev")
            spec = c.get("reverse_steps")
            if defense == "reverse-x":
                steps = load_step_table(spec, "x", None) if spec else None
                return ReversePurifier(self.ssl, budget, int(c["restarts"]), eps, steps)
            theta = self.reverse_theta
            steps = load_step_table(spec, "z", None) if spec else (self._rtheta_cfg["rule"], float(self._rtheta_cfg["lr_z"]))
            return ReversePurifier(self.ssl, budget, int(c["restarts"]), eps, steps, theta=theta)
        if defense == "purify-x":
            steps = load_step_table(c.get("step_sizes"), "x", ("adam", 0.1))
            return GeneratorPurifier(self.generator, budget, int(c["restarts"]), steps)
        theta = self.theta
        steps = load_step_table(c.get("step_sizes"), "z", ("sgd", float(self._theta_cfg["lr_z"])))
        return GeneratorPurifier(self.generator, budget, int(c["restarts"]), steps, theta=theta)
