"""Inversion tasks by name: each builds an :class:`InversionProblem` from its config section."""
from __future__ import annotations

from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
CHECKPOINTS = REPO / "checkpoints"


class TaskError(ValueError):
    pass


def _gan_cifar10(cfg: dict):
    from defense.data import load_cifar10, select_subset
    from defense.generator import build_generator

    from .gan_inversion import GanInversion

    d = cfg["data"]
    G = build_generator(cfg["generator"])
    train = select_subset(load_cifar10(d["root"], "train", bool(d["download"])), d["n_train"], cfg["seed"])
    test = select_subset(load_cifar10(d["root"], "test", bool(d["download"])), d["n_heldout"], cfg["seed"])
    # Held-out order shuffled by seed, so any first n images cover all classes.
    order = torch.randperm(len(test), generator=torch.Generator().manual_seed(int(cfg["seed"])))
    return GanInversion(G, train.images, test.images[order])


def _gan_analyses(*args, **kwargs):
    from .gan_analyses import run_all

    return run_all(*args, **kwargs)


TASKS = {"gan-cifar10": _gan_cifar10}
TASK_ANALYSES = {"gan-cifar10": _gan_analyses}

TASK_DEFAULTS = {
    "gan-cifar10": {
        "data": {"root": None, "n_train": 10000, "n_heldout": 500, "download": True},
        "generator": {"name": "dcgan", "weights": str(CHECKPOINTS / "dcgan-cifar10.pt"), "kwargs": {}},
    },
}


def build_task(name: str, cfg: dict):
    if name not in TASKS:
        raise TaskError(f"unknown task {name!r}; valid: {', '.join(TASKS)}")
    torch.manual_seed(int(cfg.get("seed", 0)))
    return TASKS[name](cfg)
