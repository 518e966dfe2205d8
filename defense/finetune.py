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

from cifar10.classifiers import MODEL_DEFAULTS
from defense.defenses import DEFENSE_DEFAULTS

#: every key of the command that trains this, with its default
CLASSIFIER_DEFAULTS = {
    "seed": 0,
    "threads": 0,
    "device": "cpu",
    "model": dict(MODEL_DEFAULTS),
    "data": {"root": None, "n_train": 5000, "n_heldout": 500, "download": True},
    "purifier": {"defense": "purify-z", "budget": 10, "restarts": 1},
    "defense": dict(DEFENSE_DEFAULTS),
    "train": {"epochs": 5, "lr": 1.0e-3, "batch_size": 128, "progress": True},
}


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


def train_from_config(cfg: dict, out, progress: bool = True) -> dict:
    """``landscape train-classifier --on-purified``: fine-tune on purified training images, write the
    classifier and a summary (accuracy on purified and clean held-out images, before and after)."""
    import json
    from pathlib import Path

    from cifar10.classifiers import build_classifier
    from cifar10.data import load_cifar10, select_subset
    from defense.defenses import DefenseFactory
    from landscape.io import atomic_write, atomic_write_text

    d, p, t = cfg["data"], cfg["purifier"], cfg["train"]
    show = bool(t["progress"]) and progress
    model = build_classifier(cfg["model"], download=bool(d["download"]))
    dcfg = dict(cfg["defense"], restarts=int(p["restarts"]))
    purifier = DefenseFactory(dcfg, torch.device("cpu"), model, [p["defense"]]).purifier(p["defense"], int(p["budget"]))
    train = select_subset(load_cifar10(d["root"], "train", bool(d["download"])), d["n_train"], cfg["seed"])
    test = select_subset(load_cifar10(d["root"], "test", bool(d["download"])), d["n_heldout"], cfg["seed"])
    t0 = time.perf_counter()
    purified_train = purify_all(purifier, train.images, seed=cfg["seed"], progress=show)
    purify_seconds = time.perf_counter() - t0
    purified_test = purify_all(purifier, test.images, seed=cfg["seed"] + 1, progress=show)
    before = {"clean": accuracy(model, test.images, test.labels), "purified": accuracy(model, purified_test, test.labels)}
    fit = finetune(model, purified_train, train.labels, int(t["epochs"]), float(t["lr"]), int(t["batch_size"]),
                   int(cfg["seed"]), progress=show)
    after = {"clean": accuracy(model, test.images, test.labels), "purified": accuracy(model, purified_test, test.labels)}
    out = Path(out)
    inner = getattr(model, "model", model)
    atomic_write(out, lambda f: torch.save({"state_dict": inner.state_dict(), "config": cfg}, f))
    summary = {"before": before, "after": after, "purify_train_seconds": purify_seconds, **fit,
               "n_train": len(train), "n_heldout": len(test), "data": train.source}
    atomic_write_text(out.with_suffix(".json"), json.dumps(summary, indent=2) + "\n")
    return summary
