"""The reverse attack as an inversion problem, so the task-agnostic trainer can learn its landscape.

The variable u (one per image, shaped like the image) gives the perturbation
delta = eps_rev * tanh(u), always inside the Linf ball; the forward model is the
self-supervised loss of clamp(x + delta). Training targets are training images, half of them
FGSM-perturbed at 8/255 so theta learns to reverse attacks, not only to polish clean images.
"""
from __future__ import annotations

import torch

from landscape.problem import InversionProblem, ProblemError


class ReverseAttackProblem(InversionProblem):
    def __init__(self, ssl: torch.nn.Module, train_images: torch.Tensor, heldout_images: torch.Tensor,
                 eps_rev: float = 8 / 255, attacked_train: torch.Tensor | None = None):
        self.ssl, self.eps = ssl, float(eps_rev)
        self.latent_shape = tuple(train_images.shape[1:])
        self.train_images, self.heldout_images = train_images, heldout_images
        self.attacked_train = attacked_train

    def delta(self, u: torch.Tensor) -> torch.Tensor:
        return self.eps * torch.tanh(u)

    def forward(self, u):
        self.check_x(u)
        return self.delta(u)

    def loss(self, delta, target):
        if target.shape != delta.shape:
            raise ProblemError(f"targets {tuple(target.shape)} do not match perturbations {tuple(delta.shape)}")
        return self.ssl((target + delta).clamp(0, 1))

    def sample_targets(self, n, generator=None):
        idx = torch.randint(len(self.train_images), (n,), generator=generator)
        if self.attacked_train is None:
            return self.train_images[idx]
        use_attacked = torch.rand(n, generator=generator) < 0.5
        return torch.where(use_attacked.view(-1, 1, 1, 1), self.attacked_train[idx], self.train_images[idx])

    def heldout(self, n=None):
        return self.heldout_images if n is None else self.heldout_images[:n]

    def metrics(self, u, target):
        with torch.no_grad():
            return {"ssl_loss": self.objective(u, target)}


def fgsm_images(classifier, images, labels, eps=8 / 255, batch_size=250):
    """FGSM-perturbed copies (torchattacks), the cheap stand-in for attacked inputs during training."""
    import torchattacks

    atk = torchattacks.FGSM(classifier, eps=eps)
    return torch.cat([atk(images[i:i + batch_size], labels[i:i + batch_size]) for i in range(0, len(images), batch_size)])
