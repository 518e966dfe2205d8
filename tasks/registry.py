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


def _reverse_cifar10(cfg: dict):
    from defense.classifiers import build_classifier
    from defense.data import load_cifar10, select_subset
    from defense.ssl_head import SelfSupervised, load_head
    from landscape.config import parse_number

    from .reverse_attack import ReverseAttackProblem, fgsm_images

    d = cfg["data"]
    classifier = build_classifier(cfg["model"], download=bool(d["download"]))
    ssl = SelfSupervised(classifier, load_head(_resolve(cfg["ssl_head"])))
    train = select_subset(load_cifar10(d["root"], "train", bool(d["download"])), d["n_train"], cfg["seed"])
    test = select_subset(load_cifar10(d["root"], "test", bool(d["download"])), d["n_heldout"], cfg["seed"])
    order = torch.randperm(len(test), generator=torch.Generator().manual_seed(int(cfg["seed"])))
    attacked = fgsm_images(classifier, train.images, train.labels) if cfg.get("attacked_targets", True) else None
    return ReverseAttackProblem(ssl, train.images, test.images[order], parse_number(cfg["eps_rev"]), attacked)


def _resolve(path) -> Path:
    p = Path(str(path)).expanduser()
    return p if p.is_absolute() or p.exists() else REPO / p


def _gan_analyses(*args, **kwargs):
    from .gan_analyses import run_all

    return run_all(*args, **kwargs)


def _pose_cmu(cfg: dict):
    from .pose_inversion import build_pose_problem

    return build_pose_problem(cfg, _resolve(cfg["generator"]["weights"]))


def _pose_analyses(*args, **kwargs):
    from .pose_analyses import run_all

    return run_all(*args, **kwargs)


TASKS = {"gan-cifar10": _gan_cifar10, "reverse-cifar10": _reverse_cifar10, "pose-cmu": _pose_cmu}
TASK_ANALYSES = {"gan-cifar10": _gan_analyses, "pose-cmu": _pose_analyses}

TASK_DEFAULTS = {
    "gan-cifar10": {
        "data": {"root": None, "n_train": 10000, "n_heldout": 500, "download": True},
        "generator": {"name": "dcgan", "weights": str(CHECKPOINTS / "dcgan-cifar10.pt"), "kwargs": {}},
    },
    "reverse-cifar10": {
        "data": {"root": None, "n_train": 5000, "n_heldout": 500, "download": True},
        "model": {"name": "resnet20", "weights": None, "kwargs": {}, "mean": None, "std": None, "strict": True,
                  "model_dir": None, "threat_model": "Linf"},
        "ssl_head": str(CHECKPOINTS / "ssl-head-resnet20.pt"),
        "eps_rev": "8/255",
        "attacked_targets": True,
    },
    "pose-cmu": {
        # root: null = $LANDSCAPE_MOCAP, else ./data/mocap-cmu (../shared/data/mocap-cmu on this project's machines)
        "data": {"root": None, "every": 4, "heldout_every": 8},
        "generator": {"weights": str(CHECKPOINTS / "pose-vae-cmu.pt")},
        "camera": {"azimuth": [-180.0, 180.0], "elevation": [-5.0, 25.0], "distance": [4000.0, 6000.0],
                   "focal": [900.0, 1100.0], "principal": [500.0, 500.0], "aim_jitter_mm": 300.0},
        "problem": {"drop_prob": 0.1, "sigma_px": 5.0, "prior_weight": 1.0, "noise_px": 0.0},
    },
}


def build_task(name: str, cfg: dict):
    if name not in TASKS:
        raise TaskError(f"unknown task {name!r}; valid: {', '.join(TASKS)}")
    torch.manual_seed(int(cfg.get("seed", 0)))
    return TASKS[name](cfg)
