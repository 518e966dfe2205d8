"""The reverse attack as an inversion problem: the one objective that ``reverse-x``, ``reverse-z`` and
the theta they use all share.

X is a perturbation delta of the image (the target), feasible when ||delta||_inf <= eps_rev; the
loss is the self-supervised loss of clamp(target + delta) (Mao et al., ICCV 2021). The plain
space starts uniformly in the ball and projects back onto it after each step (the paper's
projected sign steps); the learned space maps theta's output into the ball with eps_rev * tanh,
so every point it visits is feasible. What the inversion returns (``solution``) is the
purified image clamp(target + delta).

Training targets (for theta) are training images, half of them FGSM-perturbed at 8/255, so
theta learns to reverse attacks, not only to polish clean images. A purifier builds the problem
without training images: its targets are the images it purifies.
"""
from __future__ import annotations

import torch

from landscape.problem import InversionProblem, ProblemError


class ReverseAttackProblem(InversionProblem):
    """``ssl`` (images -> per-image loss), ``eps_rev``, ``groups`` (restarts laid out with
    repeat_interleave, kept apart when the head draws negatives from the batch)."""

    def __init__(self, ssl: torch.nn.Module, eps_rev: float = 8 / 255, train_images: torch.Tensor | None = None,
                 heldout_images: torch.Tensor | None = None, attacked_train: torch.Tensor | None = None,
                 groups: int = 1, image_shape: tuple = (3, 32, 32)):
        self.ssl, self.eps, self.groups = ssl, float(eps_rev), int(groups)
        self.step_scale = self.eps   # steps in X are multiples of eps_rev (landscape invert's grid)
        if not self.eps > 0:
            raise ProblemError(f"eps_rev must be > 0, got {eps_rev}")
        shape = train_images.shape[1:] if train_images is not None else image_shape
        self.latent_shape = tuple(int(s) for s in shape)
        self.train_images, self.heldout_images, self.attacked_train = train_images, heldout_images, attacked_train

    def init(self, n, generator=None):
        return (torch.rand((n, *self.latent_shape), generator=generator) * 2 - 1) * self.eps

    def project(self, delta):
        return delta.clamp(-self.eps, self.eps)

    def constrain(self, u):
        return self.eps * torch.tanh(u)

    def forward(self, delta):
        self.check_x(delta)
        return delta

    def loss(self, delta, target):
        if target.shape != delta.shape:
            raise ProblemError(f"targets {tuple(target.shape)} do not match perturbations {tuple(delta.shape)}")
        return self.ssl((target + delta).clamp(0, 1), groups=self.groups)

    @property
    def natural_loss(self):
        """images -> the self-supervised loss of images as they are (what the reversal lowers; a
        defense-aware attack keeps it low): the head itself, shared by every purifier built on it."""
        return self.ssl

    def condition(self, target):
        """A conditioned theta sees the image to purify, centred to [-1, 1]."""
        return (2 * target - 1).flatten(1)

    def solution(self, delta, target):
        return (target + delta).clamp(0, 1)

    def sample_targets(self, n, generator=None):
        if self.train_images is None:
            raise ProblemError("this reverse-attack problem has no training images (a purifier's problem)")
        idx = torch.randint(len(self.train_images), (n,), generator=generator)
        if self.attacked_train is None:
            return self.train_images[idx]
        use_attacked = torch.rand(n, generator=generator) < 0.5
        use_attacked = use_attacked.to(self.train_images.device).view(-1, 1, 1, 1)
        return torch.where(use_attacked, self.attacked_train[idx], self.train_images[idx])

    def heldout(self, n=None):
        if self.heldout_images is None:
            raise ProblemError("this reverse-attack problem has no held-out images (a purifier's problem)")
        return self.heldout_images if n is None else self.heldout_images[:n]

    def metrics(self, delta, target):
        with torch.no_grad():
            return {"ssl_loss": self.objective(delta, target)}


def fgsm_images(classifier, images, labels, eps=8 / 255, batch_size=250):
    """FGSM-perturbed copies (torchattacks), the cheap stand-in for attacked inputs during training."""
    import torchattacks

    atk = torchattacks.FGSM(classifier, eps=eps)
    return torch.cat([atk(images[i:i + batch_size], labels[i:i + batch_size]) for i in range(0, len(images), batch_size)])
