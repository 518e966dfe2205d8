"""The original AutoAttack (Croce & Hein, ICML 2020; the ``pyautoattack`` package), as an
independent cross-check of ``autoattack`` (which assembles the same ensemble from torchattacks).

The two should agree on the same images within a point: ``landscape report`` flags any larger
gap. The original also runs its own checks (a randomized model, probabilities for logits, zero
gradients) and logs what it finds; those messages are kept on the attack object (``warnings``, for
Python callers) instead of printed once per batch; the report's red flags run the same checks
itself (``evaluator/probes.py``), so nothing depends on these messages.

Arguments (config ``attack_params.autoattack-original``): ``norm`` (Linf | L2), ``eps``,
``version`` (standard | rand), ``steps`` (100, of APGD, APGD-T and FAB-T) and ``n_queries`` (5000,
Square's): the original's own values, settable like ``autoattack``'s so both run the same budget.

Example::

    >>> from attacks import get_attack
    >>> aa = get_attack("autoattack-original", {"eps": 8 / 255})
    >>> adv = aa.run(model, images, labels, seed=0)
"""
from __future__ import annotations

import logging

import torch


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


class OriginalAutoAttack:
    """Callable like a torchattacks attack (``atk(images, labels)``), with a ``seed`` per batch."""

    def __init__(self, model: torch.nn.Module, norm: str, eps: float, version: str = "standard", steps: int = 100,
                 n_queries: int = 5000):
        self.model, self.norm, self.eps, self.version, self.seed = model, norm, float(eps), version, 0
        self.steps, self.n_queries = int(steps), int(n_queries)
        self.warnings: list[str] = []

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        from pyautoattack import AutoAttack

        aa = AutoAttack(self.model, norm=self.norm, eps=self.eps, version=self.version, seed=int(self.seed),
                        device=_device(self.model))
        if self.steps != 100:
            for atk in (aa.apgd, aa.apgd_targeted):
                _set_apgd_iterations(atk, self.steps)
            aa.fab.n_iter = self.steps
        aa.square.n_queries = self.n_queries
        aa.verbose = False
        collect = _Collect()
        logger = logging.getLogger(f"landscape.autoattack-original.{id(self)}")
        logger.propagate = False
        logger.handlers = [collect]
        for part in (aa, aa.apgd, aa.apgd_targeted, aa.fab, aa.square):   # its attacks keep their own reference
            if hasattr(part, "logger"):
                part.logger = logger
        adv, _ = aa.run_standard_evaluation(images, labels, batch_size=len(images))
        self.warnings += [m for m in collect.messages if m not in self.warnings]
        return adv.detach()


def _set_apgd_iterations(atk, n: int) -> None:
    """APGD derives its checkpoint schedule from n_iter when built: set it as its constructor would."""
    atk.n_iter = atk.n_iter_orig = n
    atk.n_iter_2, atk.n_iter_min, atk.size_decr = max(int(0.22 * n), 1), max(int(0.06 * n), 1), max(int(0.03 * n), 1)


def _device(model: torch.nn.Module):
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def build_original_autoattack(model, p: dict) -> OriginalAutoAttack:
    return OriginalAutoAttack(model, p["norm"], p["eps"], p.get("version", "standard"), p["steps"], p["n_queries"])
