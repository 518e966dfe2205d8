"""Attacks on a purification defense: which model the attacker differentiates.

The defended model is ``classifier(purifier(x))``. Any attack of the registry is run against
a *surrogate* chosen by the mode, and the adversarial examples are then scored on the real
defended model (one fresh draw of the purifier's random starts). Modes, named in the results'
``attack`` column as ``<attack>+<mode>``:

* ``nonadaptive`` -- the bare classifier (the purifier is unknown to the attacker);
* ``bpda`` -- the purifier runs forward, its backward is the identity (Athalye et al. 2018);
* ``unrolled`` -- exact gradients through all K steps of the purifier (memory grows with K;
  refused with a clear error above ``max_gb`` instead of crashing);
* ``eot`` -- expectation over ``draws`` random starts of the purifier, with exact gradients;
* ``bpda+eot`` -- expectation over draws, each with the BPDA backward.

EOT averages class probabilities over the draws (the surrogate returns log E[softmax]), so
every torchattacks attack sees the expected prediction and its gradient.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from landscape.errors import LandscapeError

MODES = ("nonadaptive", "bpda", "eot", "bpda+eot", "unrolled")


class AdaptiveError(LandscapeError, ValueError):
    pass


class BPDA(nn.Module):
    """Forward: the purifier. Backward: the identity."""

    def __init__(self, purifier: nn.Module):
        super().__init__()
        self.purifier = purifier

    def forward(self, x):
        with torch.no_grad():
            p = self.purifier(x)
        return x + (p - x).detach()


class EOT(nn.Module):
    """log of the class probabilities averaged over ``draws`` runs of a random model, in one batch."""

    def __init__(self, model: nn.Module, draws: int):
        super().__init__()
        if draws < 1:
            raise AdaptiveError(f"EOT draws must be >= 1, got {draws}")
        self.model, self.draws = model, int(draws)

    def forward(self, x):
        n = len(x)
        logits = self.model(x.repeat(self.draws, *([1] * (x.dim() - 1))))
        probs = F.softmax(logits, 1).view(self.draws, n, -1).mean(0)
        return probs.clamp_min(1e-12).log()


class Defended(nn.Module):
    """classifier(purifier(x)): what is deployed, and what adaptive attacks differentiate."""

    def __init__(self, classifier: nn.Module, purifier: nn.Module):
        super().__init__()
        self.classifier, self.purifier = classifier, purifier

    def forward(self, x):
        return self.classifier(self.purifier(x))


def _saved_bytes(purifier: nn.Module, x: torch.Tensor) -> int:
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    sample = x.detach().clone().requires_grad_(True)
    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        purifier(sample)
    return total


def unrolled_bytes(purifier: nn.Module, x: torch.Tensor) -> int:
    """Bytes autograd keeps for exact gradients through the purifier on the batch ``x`` (measured, then scaled).

    Measures what autograd saves with a budget of 1 (two objective evaluations) on one and on two
    images, splits it into a per-evaluation part (weights) and a per-image part, and scales to the
    real budget and restarts: bytes = (K + 1) * (weights + images * R * per_image) / 2 evaluations.
    """
    pair = x[:1].repeat(2, *([1] * (x.dim() - 1)))
    if not hasattr(purifier, "problem"):
        # not an inversion purifier (a user defense): measured as it is, on one and two images, scaled to the batch
        one, two = _saved_bytes(purifier, x[:1]), _saved_bytes(purifier, pair)
        per_image = max(two - one, 0)
        return int(max(one - per_image, 0) + len(x) * per_image)
    probe = purifier.exact(budget=1, restarts=1)
    one, two = _saved_bytes(probe, x[:1]), _saved_bytes(probe, pair)
    per_image = max(two - one, 0) / 2
    weights = max(one / 2 - per_image, 0)
    return int((purifier.budget + 1) * (weights + len(x) * purifier.restarts * per_image))


def surrogate(classifier: nn.Module, purifier: nn.Module | None, mode: str, draws: int = 1,
              max_gb: float = 4.0, batch: torch.Tensor | None = None) -> nn.Module:
    """The model the attacker differentiates in ``mode``, in eval mode.

    torchattacks restores a model's mode after each attack: a wrapper left in nn.Module's default
    training mode would be switched to train() recursively, putting the shared classifier's batch
    norm in training mode (batch statistics, drifting running stats) for everything after it."""
    return _surrogate(classifier, purifier, mode, draws, max_gb, batch).eval()


def _surrogate(classifier, purifier, mode, draws, max_gb, batch) -> nn.Module:
    if purifier is None:
        return classifier
    if mode not in MODES:
        raise AdaptiveError(f"unknown adaptive mode {mode!r}; valid: {', '.join(MODES)}")
    if mode == "nonadaptive":
        return classifier
    if mode in ("bpda", "bpda+eot"):
        model = nn.Sequential(BPDA(purifier), classifier)
        return EOT(model, draws) if mode == "bpda+eot" else model
    exact = purifier.exact()
    if batch is not None:
        # 15% margin: the estimate ran about 7% below autograd's measured total (bench/purify_throughput.py)
        need = 1.15 * unrolled_bytes(exact, batch.repeat(draws if mode == "eot" else 1, *([1] * (batch.dim() - 1))))
        if need > max_gb * 2 ** 30:
            raise AdaptiveError(
                f"'{mode}' gradients through K={purifier.budget} steps x R={purifier.restarts} restarts on a batch of "
                f"{len(batch)} need about {need / 2 ** 30:.1f} GiB (cap {max_gb:g} GiB): lower eval.batch_size, K or R, "
                f"or raise defense.unrolled_max_gb")
    model = Defended(classifier, exact)
    return EOT(model, draws) if mode == "eot" else model
