"""GAN inversion on CIFAR-10: find the latent whose generated image matches a real one.

X is the generator's latent space; the forward model is G; the loss is the per-example mean
squared error over pixels (over the observed pixels when the target carries a ``mask``,
which is how masked reconstruction is posed). Training targets are CIFAR-10 training images;
the held-out set is test images the trainer never sees. The generator purifier (Defense-GAN)
is this same problem with the input image as its target, built without training images.
"""
from __future__ import annotations

import torch

from landscape.problem import InversionProblem, ProblemError, Target


def psnr(mse: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of images in [0, 1] from their per-example MSE."""
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-12))


class GanInversion(InversionProblem):
    """Invert a generator G: latent (N, d) -> images (N, 3, H, W) in [0, 1]."""

    def __init__(self, generator: torch.nn.Module, train_images: torch.Tensor | None = None,
                 heldout_images: torch.Tensor | None = None):
        self.G = generator.eval()
        for p in self.G.parameters():
            p.requires_grad_(False)
        self.latent_shape = (int(generator.latent_dim),)
        self.train_images = train_images
        self.heldout_images = heldout_images
        if train_images is not None and heldout_images is not None and train_images.shape[1:] != heldout_images.shape[1:]:
            raise ProblemError(f"training images {tuple(train_images.shape[1:])} and held-out images "
                               f"{tuple(heldout_images.shape[1:])} differ in shape")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_x(x)
        return self.G(x)

    def loss(self, prediction: torch.Tensor, target: Target) -> torch.Tensor:
        if isinstance(target, dict):
            image, mask = target["image"], target["mask"]
            if image.shape != prediction.shape:
                raise ProblemError(f"target images {tuple(image.shape)} do not match generated {tuple(prediction.shape)}")
            se = ((prediction - image) ** 2 * mask).flatten(1).sum(1)
            return se / (mask.expand_as(image).flatten(1).sum(1)).clamp_min(1)
        if target.shape != prediction.shape:
            raise ProblemError(f"target images {tuple(target.shape)} do not match generated {tuple(prediction.shape)}")
        return ((prediction - target) ** 2).flatten(1).mean(1)

    def condition(self, target: Target) -> torch.Tensor:
        """A conditioned theta sees the target image, centred to [-1, 1] (unobserved pixels 0 under a mask)."""
        if isinstance(target, dict):
            return ((2 * target["image"] - 1) * target["mask"]).flatten(1)
        return (2 * target - 1).flatten(1)

    def sample_targets(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.train_images is None:
            raise ProblemError("this GAN-inversion problem has no training images (a purifier's problem)")
        idx = torch.randint(len(self.train_images), (n,), generator=generator)
        return self.train_images[idx]

    def heldout(self, n: int | None = None) -> torch.Tensor:
        if self.heldout_images is None:
            raise ProblemError("this GAN-inversion problem has no held-out images (a purifier's problem)")
        return self.heldout_images if n is None else self.heldout_images[:n]

    def metrics(self, x: torch.Tensor, target: Target) -> dict:
        with torch.no_grad():
            mse = self.objective(x, target)
        return {"mse": mse, "psnr": psnr(mse)}


def center_mask(n: int, size: int = 32, keep: str = "left") -> torch.Tensor:
    """A (n, 1, size, size) mask observing one half of each image (``left`` or ``top``)."""
    mask = torch.zeros(n, 1, size, size)
    if keep == "left":
        mask[..., : size // 2] = 1
    elif keep == "top":
        mask[..., : size // 2, :] = 1
    else:
        raise ValueError(f"keep must be 'left' or 'top', got {keep!r}")
    return mask
