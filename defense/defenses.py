"""Build the purifiers named in ``defenses`` for each budget K from the ``defense`` config section."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from .purifiers import GeneratorPurifier

DEFENSES = ("none", "purify-x", "purify-z")
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

    def __init__(self, cfg: dict, device: torch.device):
        self.cfg, self.device = cfg, device
        self._G = self._theta = None

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

    def to(self, device) -> None:
        self.device = torch.device(device)
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
        if defense == "purify-x":
            steps = load_step_table(c.get("step_sizes"), "x", ("adam", 0.1))
            return GeneratorPurifier(self.generator, budget, int(c["restarts"]), steps)
        theta = self.theta
        steps = load_step_table(c.get("step_sizes"), "z", ("sgd", float(self._theta_cfg["lr_z"])))
        return GeneratorPurifier(self.generator, budget, int(c["restarts"]), steps, theta=theta)
