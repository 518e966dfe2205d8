"""JPEG compression: a classic input transformation, and a classic break.

Paper: Guo, Rana, Cisse, van der Maaten, "Countering Adversarial Images using Input
Transformations" (ICLR 2018; JPEG after Dziugaite et al. 2016). Broken by BPDA (Athalye, Carlini,
Wagner, "Obfuscated Gradients Give a False Sense of Security", ICML 2018): JPEG's quantization
has no useful gradient, but attacking with the identity as its backward pass (BPDA) goes straight
through, since the compressed image stays close to its input.

Arguments:
    budget (int): the evaluator's K; this defense has no iterations and ignores it.
    quality (int): JPEG quality, 1..100 (default 75, the paper's).

Example (the protocol of ``defense/user.py``; run it with ``landscape eval --config examples/jpeg.yaml``)::

    >>> import torch
    >>> d = JpegCompression(budget=0, quality=75)
    >>> x = torch.rand(2, 3, 32, 32)
    >>> y = d(x)
    >>> y.shape, bool((y - x).abs().mean() < 0.2)
    (torch.Size([2, 3, 32, 32]), True)
"""
import io

import numpy as np
import torch
import torch.nn as nn
from PIL import Image


class JpegCompression(nn.Module):
    name = "jpeg"
    randomized = False       # the same input always gives the same output
    differentiable = False   # rounding to 8 bits and quantized DCT coefficients: BPDA is the attack

    def __init__(self, budget: int = 0, quality: int = 75):
        super().__init__()
        if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
            raise ValueError(f"quality must be a whole number in 1..100, got {quality!r}")
        self.quality = quality

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u8 = (x.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        out = np.empty_like(u8)
        for i, image in enumerate(u8):   # Pillow's libjpeg, one image at a time (about 0.1 ms each)
            buffer = io.BytesIO()
            Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(buffer, "JPEG",
                                                                                      quality=self.quality)
            buffer.seek(0)
            out[i] = np.asarray(Image.open(buffer)).reshape(image.shape)
        return torch.from_numpy(out).permute(0, 3, 1, 2).to(device=x.device, dtype=x.dtype) / 255
