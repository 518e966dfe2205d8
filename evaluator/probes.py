"""Probes of the models a run attacks, for the report's red flags (AutoAttack's own checks, Croce & Hein 2020).

Run once per run, by the driver, on a few of the run's images (``PROBE_IMAGES``), before any attack:

* per defended cell (defense, K): is the deployed model randomized? (the logits of the same images
  differ across ``CALLS`` calls); a randomized model attacked without EOT is a classic overestimate;
* per cell and adaptive mode: the share of images whose input gradient of the cross-entropy, through
  the model the attack differentiates (the surrogate), is exactly zero or not finite (masked or
  shattered gradients: a gradient attack then cannot move);
* the bare classifier: does it output probabilities (rows in [0, 1] summing to 1) instead of logits?
  (a softmax head squashes the cross-entropy's gradient; every attack here expects logits).
"""
from __future__ import annotations

import pandas as pd
import torch
import torch.nn.functional as F

from attacks.adaptive import AdaptiveError, Defended, surrogate

PROBE_IMAGES = 16
CALLS = 5
RANDOMIZED_TOL = 1e-4   # the original's threshold on the spread of logits across calls


def looks_like_probabilities(logits: torch.Tensor, tol: float = 1e-5) -> bool:
    return bool(logits.min() >= -tol and logits.max() <= 1 + tol and (logits.sum(1) - 1).abs().max() <= tol)


def gradient_shares(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(zero, non-finite) shares of images whose input gradient of the cross-entropy is all zero / not finite."""
    x = x.clone().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), x)
    flat = g.flatten(1)
    nonfinite = ~torch.isfinite(flat).all(1)
    zero = (flat == 0).all(1) & ~nonfinite
    return float(zero.float().mean()), float(nonfinite.float().mean())


def probe(ctx) -> pd.DataFrame:
    """One row per (defense, landscape, budget, mode) of the run's grid (mode ``none``: the deployed model).
    Draws its randomness on a forked stream: the run's own figures do not depend on whether it probed."""
    with torch.random.fork_rng():
        return _probe(ctx)


def _probe(ctx) -> pd.DataFrame:
    x = ctx.data.images[:PROBE_IMAGES].to(ctx.device)
    y = ctx.data.labels[:PROBE_IMAGES].to(ctx.device)
    rows = []
    with torch.no_grad():
        softmax = looks_like_probabilities(ctx.model(x))
    seen, probed = set(), set()   # cells whose deployed model, and (cell, mode)s whose gradients, were probed
    runnable = getattr(ctx, "runnable", range(len(ctx.units)))   # a skipped cell is never attacked: nothing to probe
    for unit in (ctx.units[i] for i in runnable):
        cell = (unit.defense, unit.landscape, unit.budget)
        purifier = ctx.factory.purifier(unit.defense, unit.budget)
        if cell not in seen:
            seen.add(cell)
            deployed = ctx.model if purifier is None else Defended(ctx.model, purifier)
            with torch.no_grad():
                calls = torch.stack([deployed(x) for _ in range(CALLS)])
            spread = float((calls - calls[0]).abs().max())
            rows.append({"defense": unit.defense, "landscape": unit.landscape, "budget": unit.budget, "mode": "none",
                         "randomized": spread > RANDOMIZED_TOL, "logit_spread": spread, "softmax_output": softmax,
                         "zero_grad_share": float("nan"), "nonfinite_grad_share": float("nan")})
        if unit.attack is None:
            continue
        mode = unit.mode or "nonadaptive"
        if (cell, mode) in probed:
            continue
        probed.add((cell, mode))
        try:
            target = surrogate(ctx.model, purifier, mode, min(unit.draws or ctx.draws, 2), ctx.max_gb, batch=x)
        except AdaptiveError:
            continue   # the cell is skipped for memory (listed in skipped.csv)
        zero, nonfinite = gradient_shares(target, x, y)
        rows.append({"defense": unit.defense, "landscape": unit.landscape, "budget": unit.budget, "mode": mode,
                     "randomized": float("nan"), "logit_spread": float("nan"), "softmax_output": softmax,
                     "zero_grad_share": zero, "nonfinite_grad_share": nonfinite})
    return pd.DataFrame(rows)
