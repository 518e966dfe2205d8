"""Helpers shared by the tests (imported as ``_util``; pytest puts tests/ on sys.path).

The tiny classifier is a linear model on synthetic 3x32x32 images of two classes (darker and
brighter than mid-grey, each image at its own distance ``d`` from mid-grey, plus pixel noise).
It trains to 100% clean accuracy in about a second on a CPU, and an Linf perturbation a little
larger than ``d`` flips its prediction, so attacks have real work to do.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

RESNET_FILES = {
    "resnet20": "resnet20-12fca82f.th",
    "resnet32": "resnet32-d509ac18.th",
    "resnet44": "resnet44-014dd654.th",
    "resnet56": "resnet56-4bfd9763.th",
}
LOSSLESS_NPZ = "data/cifar10-lossless/cifar10_test_first1000.npz"

# The model file the tests write and load through 'path/to/file.py:TinyNet'.
TINYNET_SOURCE = '''\
import torch
import torch.nn as nn


class TinyNet(nn.Module):
    """A linear classifier on [0, 1] images, centred at mid-grey."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.fc = nn.Linear(3 * 32 * 32, num_classes)

    def forward(self, x):
        return self.fc((x - 0.5).flatten(1))
'''


def shared_root() -> Path:
    return Path(os.environ.get("LANDSCAPE_SHARED", REPO.parent / "shared"))


def landscape_command() -> list[str]:
    """The installed ``landscape`` console script, else ``python -m landscape_cli.main``."""
    script = Path(sys.executable).with_name("landscape")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "landscape_cli.main"]


def subprocess_env(**extra) -> dict:
    """The environment for a ``landscape`` subprocess: this one, one torch thread, unbuffered output."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra}


def make_synthetic(n_per_class: int, seed: int, noise: float = 0.03, offsets=(0.03, 0.15)):
    """Two linearly separable classes: class 0 darker than mid-grey, class 1 brighter.

    Each image is ``0.5 -/+ d`` (d uniform in ``offsets``, per image) plus Gaussian noise,
    quantised to uint8. Returns (float images (N,3,32,32) in [0,1], labels, uint8 images (N,32,32,3)).
    """
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(2).repeat_interleave(n_per_class)
    d = offsets[0] + (offsets[1] - offsets[0]) * torch.rand(len(y), generator=g)
    sign = torch.where(y == 1, 1.0, -1.0)
    x = (0.5 + sign * d).view(-1, 1, 1, 1) + noise * torch.randn(len(y), 3, 32, 32, generator=g)
    u8 = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    perm = torch.randperm(len(y), generator=g)  # interleave the classes
    u8, y = u8[perm], y[perm]
    return u8.float() / 255, y, u8.permute(0, 2, 3, 1).contiguous().numpy()


def import_file(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def train_tiny(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 100) -> torch.nn.Module:
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def assert_matches_finite_differences(f, x, indices, rtol=1e-4, atol=1e-9, h=1e-6) -> None:
    """autograd's gradient of the scalar ``f`` at ``x`` equals central differences at ``indices`` (float64)."""
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(f(xg), xg)
    for idx in indices:
        e = torch.zeros_like(x)
        e[idx] = h
        fd = (f(x + e) - f(x - e)) / (2 * h)
        assert torch.isclose(g[idx], fd, rtol=rtol, atol=atol), (idx, float(g[idx]), float(fd))
