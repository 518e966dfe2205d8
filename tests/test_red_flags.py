"""The red flags that need the models themselves (evaluator/probes.py, AutoAttack's own checks): each
fires on a planted model (randomized, a zero-gradient layer, a softmax head) and stays quiet on a plain one."""
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from test_report import row

from cifar10.data import ImageSet
from evaluator.config import EVAL_DEFAULTS
from evaluator.grid import build_units
from evaluator.probes import probe
from evaluator.report import sanity_checks
from landscape.config import merge


class Noisy(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model((x + 0.02 * torch.randn_like(x)).clamp(0, 1))


class Rounded(torch.nn.Module):
    """Quantizes its input first: the gradient with respect to the input is zero everywhere."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(torch.round(x * 8) / 8)


class Softmax(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return torch.softmax(self.model(x), 1)


def probes_of(model, tiny):
    cfg = merge(EVAL_DEFAULTS, {"defenses": ["none"], "attacks": ["none", "pgd"]})
    data = ImageSet(tiny.x, tiny.y, torch.arange(len(tiny.y)), "synthetic")
    ctx = SimpleNamespace(data=data, model=model.eval(), units=build_units(cfg), device=torch.device("cpu"), draws=8,
                          max_gb=4.0, factory=SimpleNamespace(purifier=lambda d, k: None))
    return probe(ctx).assign(run="r")


def flags(probes, attacks=("pgd",)):
    rows = [row("none", 1.0, "none", "none", 0)] + [row(a, 0.2, "none", "none", 0) for a in attacks]
    c = sanity_checks(pd.DataFrame(rows), probes=probes)
    return c[c["summary"] == True].set_index("check")["status"]  # noqa: E712


CHECKS = ["randomized model attacked without EOT", "zero or non-finite gradients", "model outputs probabilities"]


def test_a_plain_model_raises_no_flag(tiny):
    got = flags(probes_of(tiny.model, tiny))
    assert all(got[c] == "ok" for c in CHECKS), got


@pytest.mark.parametrize("wrap, check", [(Noisy, CHECKS[0]), (Rounded, CHECKS[1]), (Softmax, CHECKS[2])])
def test_each_planted_model_raises_its_flag(tiny, wrap, check):
    got = flags(probes_of(wrap(tiny.model), tiny))
    assert got[check] == "FAIL" and all(got[c] == "ok" for c in CHECKS if c != check), got


def test_a_randomized_model_attacked_with_eot_is_ok(tiny):
    noisy = probes_of(Noisy(tiny.model), tiny)
    assert flags(noisy, attacks=("pgd", "autoattack-rand"))[CHECKS[0]] == "ok"
    assert flags(None)[CHECKS[0]] == "not run"
