"""PGD-10 (Linf 8/255) images/s against ResNet-20: the evaluator versus a bare torchattacks loop.

Both run in this one process on the same 500 test images, alternating, several rounds; the
figure is the median. The evaluator's overhead over the library must stay under 5%.

    python bench/attack_throughput.py [--data ROOT] [--weights FILE] [--n 500] [--rounds 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torchattacks

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cifar10.classifiers import build_classifier  # noqa: E402
from cifar10.data import load_cifar10, select_subset  # noqa: E402
from evaluator.config import EVAL_DEFAULTS  # noqa: E402
from evaluator.grid import build_units  # noqa: E402
from evaluator.run import attack_correct  # noqa: E402
from landscape.config import load_config  # noqa: E402

SHARED = Path(os.environ.get("LANDSCAPE_SHARED", REPO.parent / "shared"))


def bare_loop(model, images, labels, batch_size):
    """What a user would write with torchattacks alone."""
    atk = torchattacks.PGD(model, eps=8 / 255, alpha=2 / 255, steps=10, random_start=True)
    correct = 0
    for i in range(0, len(labels), batch_size):
        x, y = images[i:i + batch_size], labels[i:i + batch_size]
        adv = atk(x, y)
        with torch.no_grad():
            correct += (model(adv).argmax(1) == y).sum().item()
    return correct


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(SHARED / "data" / "cifar10-jpeg"))
    ap.add_argument("--weights", default=str(SHARED / "weights" / "resnet20-12fca82f.th"))
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=200)
    args = ap.parse_args()

    cfg = load_config(EVAL_DEFAULTS, overrides=[f"model.weights={args.weights}", f"data.root={args.data}",
                                                f"data.n_examples={args.n}", "attacks=[pgd]",
                                                f"eval.batch_size={args.batch_size}"])
    data = select_subset(load_cifar10(args.data, "test", download=False), args.n, 0)
    model = build_classifier(cfg["model"], download=False)
    unit = build_units(cfg)[0]
    device = torch.device("cpu")

    t_eval, t_bare = [], []
    for _ in range(args.rounds):
        t = time.perf_counter()
        c_eval = int(attack_correct(model, unit, data, args.batch_size, 0, device).sum())
        t_eval.append(time.perf_counter() - t)
        t = time.perf_counter()
        c_bare = bare_loop(model, data.images, data.labels, args.batch_size)
        t_bare.append(time.perf_counter() - t)
    e, b = statistics.median(t_eval), statistics.median(t_bare)
    print(f"images: {len(data)} ({data.source}; JPEG copy of CIFAR-10), torch threads: {torch.get_num_threads()}")
    print(f"evaluator  PGD-10: {len(data) / e:8.1f} images/s  (median of {args.rounds}: {e:.2f} s, robust {c_eval})")
    print(f"torchattacks loop: {len(data) / b:8.1f} images/s  (median of {args.rounds}: {b:.2f} s, robust {c_bare})")
    print(f"overhead ratio evaluator/bare: {e / b:.3f}  (target < 1.05)")


if __name__ == "__main__":
    main()
