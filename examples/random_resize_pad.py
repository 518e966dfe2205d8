"""Random resizing and padding: a randomized input transformation, and its break by EOT.

Paper: Xie, Wang, Zhang, Ren, Yuille, "Mitigating Adversarial Effects Through Randomization"
(ICLR 2018): each input is resized to a random size and zero-padded at a random offset onto a
larger canvas. Broken by Expectation over Transformation (EOT; Athalye et al., ICML 2018): the
transformation is differentiable, so an attack that averages its gradient over many random draws
succeeds.

Here, for 32 x 32 CIFAR images: a random size r in [32, max_size) and a random offset on a
max_size x max_size canvas (as in the paper, scaled from 299 -> [299, 331) on 331), then the canvas
is resampled to the input's size so the classifier sees what it was trained on. The three steps
are one bilinear ``grid_sample`` per batch (each image its own draw), differentiable throughout.
Randomness comes from torch's global generator, which the evaluator seeds per batch.

Arguments:
    budget (int): the evaluator's K; this defense has no iterations and ignores it.
    max_size (int): the canvas size, in pixels of the input (default 40 for 32-pixel images).

Example (the protocol of ``defense/user.py``; run it with ``landscape eval --config examples/random-resize-pad.yaml``)::

    >>> import torch
    >>> d = RandomResizePad(budget=0)
    >>> d(torch.rand(4, 3, 32, 32)).shape
    torch.Size([4, 3, 32, 32])
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


class RandomResizePad(nn.Module):
    name = "random-resize-pad"
    randomized = True        # every call draws new sizes and offsets: the EOT modes apply
    differentiable = True    # bilinear resampling: exact gradients flow (mode eot)

    def __init__(self, budget: int = 0, max_size: int = 40):
        super().__init__()
        if not isinstance(max_size, int) or max_size < 2:
            raise ValueError(f"max_size must be a whole number >= 2, got {max_size!r}")
        self.max_size = max_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, _ = x.shape
        canvas = max(self.max_size, h + 1)
        size = torch.randint(h, canvas, (n,), device=x.device).to(x.dtype)       # the resized image, in pixels
        top = torch.floor(torch.rand(n, device=x.device) * (canvas - size + 1))   # offsets on the canvas
        left = torch.floor(torch.rand(n, device=x.device) * (canvas - size + 1))
        scale = size / canvas                                                     # the image's share of the canvas
        cy, cx = (top + size / 2) / canvas * 2 - 1, (left + size / 2) / canvas * 2 - 1   # its centre, in [-1, 1]
        theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
        theta[:, 0, 0], theta[:, 1, 1] = 1 / scale, 1 / scale
        theta[:, 0, 2], theta[:, 1, 2] = -cx / scale, -cy / scale
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
