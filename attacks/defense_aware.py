"""Defense-aware PGD: the attack the reverse-attack paper itself uses against its defense.

Mao, Chiquier, Wang, Yang, Vondrick, "Adversarial Attacks are Reversible with Natural
Supervision", ICCV 2021, Section 5 (defense-aware attack): the attacker knows the reversal
lowers a self-supervised loss L_s, so it maximizes L_ce(f(x')) - lambda * L_s(x') within the
eps-ball: the adversarial image already looks natural to L_s, and the reversal has little to undo.
torchattacks has no attack with this loss, so this is PGD (Madry et al. 2018) written as a
torchattacks ``Attack``, with the objective as its one difference from ``torchattacks.PGD``.

Arguments: ``model`` (what the cross-entropy is taken on: the bare classifier, or a surrogate of the
defended one), ``natural_loss`` (images -> per-image L_s; a reverse purifier's ``natural_loss``),
``eps``, ``alpha`` (step), ``steps``, ``weight`` (lambda; the paper's 10), ``random_start``.

Example::

    >>> atk = DefenseAwarePGD(classifier, purifier.natural_loss, eps=8/255, alpha=2/255, steps=20)
    >>> adv = atk(images, labels)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torchattacks.attack import Attack


class DefenseAwarePGD(Attack):
    def __init__(self, model, natural_loss, eps=8 / 255, alpha=2 / 255, steps=20, weight=10.0, random_start=True):
        super().__init__("DefenseAwarePGD", model)
        self.natural_loss, self.eps, self.alpha, self.steps = natural_loss, eps, alpha, steps
        self.weight, self.random_start = float(weight), random_start
        self.supported_mode = ["default"]

    def objective(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per image: cross-entropy of the model minus ``weight`` times the self-supervised loss (maximized)."""
        return F.cross_entropy(self.get_logits(images), labels, reduction="none") - self.weight * self.natural_loss(images)

    def forward(self, images, labels):
        images = images.clone().detach().to(self.device)
        labels = labels.clone().detach().to(self.device)
        adv = images.clone()
        if self.random_start:
            adv = (adv + torch.empty_like(adv).uniform_(-self.eps, self.eps)).clamp(0, 1).detach()
        for _ in range(self.steps):
            adv.requires_grad_(True)
            (grad,) = torch.autograd.grad(self.objective(adv, labels).sum(), adv)
            adv = adv.detach() + self.alpha * grad.sign()
            adv = (images + (adv - images).clamp(-self.eps, self.eps)).clamp(0, 1).detach()
        return adv
