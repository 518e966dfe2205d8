"""Purifier-aware classifier: fine-tune the classifier on what the purifier outputs.

A classifier trained on natural images misreads a weak generator's reconstructions; trained on
them, it reads them. Purifying thousands of training images is affordable with the learned
landscape (a few steps in Z instead of hundreds in the latent space).
"""
from __future__ import annotations

import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm


def purify_all(purifier: nn.Module, images: torch.Tensor, batch_size: int = 250, seed: int = 0,
               progress: bool = False) -> torch.Tensor:
    torch.manual_seed(seed)
    out = []
    for i in tqdm(range(0, len(images), batch_size), desc="purifying", disable=not progress):
        out.append(purifier(images[i:i + batch_size]))
    return torch.cat(out)


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> float:
    model.eval()
    with torch.no_grad():
        correct = sum(int((model(images[i:i + batch_size]).argmax(1) == labels[i:i + batch_size]).sum())
                      for i in range(0, len(images), batch_size))
    return correct / max(len(labels), 1)


def finetune(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, epochs: int = 5, lr: float = 1e-3,
             batch_size: int = 128, seed: int = 0, progress: bool = False) -> dict:
    """Fine-tune every parameter of ``model`` (which takes [0, 1] images) on (purified) ``images``."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=lr)
    history, t0 = [], time.perf_counter()
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(images), generator=gen)
        total = 0.0
        for i in tqdm(range(0, len(images), batch_size), desc=f"fine-tune {epoch + 1}/{epochs}", disable=not progress):
            idx = perm[i:i + batch_size]
            x, y = images[idx], labels[idx]
            flip = torch.rand(len(x), generator=gen) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        history.append({"epoch": epoch + 1, "loss": total / len(images)})
    for p in params:
        p.requires_grad_(False)
    model.eval()
    return {"history": history, "seconds": time.perf_counter() - t0}
