"""Reverse-attack purification: the self-supervised loss plain descent on delta reaches at K = 40,
the smallest K at which the learned landscape reaches it (step and wall-time ratios), and clean
accuracy after purification at both, on held-out CIFAR-10 test images (the JPEG copy by default).

    python bench/reverse_speedup.py [--n 200] [--data ROOT] [--weights FILE] [--head FILE] [--theta FILE]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cifar10.classifiers import build_classifier  # noqa: E402
from cifar10.data import load_cifar10, select_subset  # noqa: E402
from cifar10.ssl_head import SelfSupervised, load_head  # noqa: E402
from defense.purifiers import ReversePurifier  # noqa: E402
from landscape.trainer import load_theta  # noqa: E402

SHARED = Path(os.environ.get("LANDSCAPE_SHARED", REPO.parent / "shared"))


def run(purifier, ssl, model, x, y, seed=0):
    torch.manual_seed(seed)
    t = time.perf_counter()
    out = purifier(x)
    seconds = time.perf_counter() - t
    with torch.no_grad():
        loss = float(ssl(out, generator=torch.Generator().manual_seed(123)).mean())
        acc = float((model(out).argmax(1) == y).float().mean())
    return loss, acc, seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(SHARED / "data" / "cifar10-jpeg"))
    ap.add_argument("--weights", default=str(SHARED / "weights" / "resnet20-12fca82f.th"))
    ap.add_argument("--head", default=str(REPO / "checkpoints" / "ssl-head-resnet20.pt"))
    ap.add_argument("--theta", default=str(REPO / "checkpoints" / "theta-reverse-cifar10.pt"))
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--budgets", type=int, nargs="+", default=[1, 2, 3, 5, 10, 20, 40])
    args = ap.parse_args()
    model = build_classifier({"name": "resnet20", "weights": args.weights}, download=False)
    ssl = SelfSupervised(model, load_head(args.head))
    theta, tcfg = load_theta(args.theta)
    data = select_subset(load_cifar10(args.data, "test", download=False), args.n, 1)
    x, y = data.images, data.labels
    with torch.no_grad():
        base_acc = float((model(x).argmax(1) == y).float().mean())
        base_loss = float(ssl(x, generator=torch.Generator().manual_seed(123)).mean())
    print(f"{len(x)} held-out test images ({data.source}; JPEG copy of CIFAR-10 unless the path says otherwise)")
    print(f"undefended: clean accuracy {100 * base_acc:.1f}%, SSL loss {base_loss:.4f}")
    lx, ax_, sx = run(ReversePurifier(ssl, 40, 1), ssl, model, x, y)
    print(f"reverse-x K=40 (sign steps): SSL loss {lx:.4f}, clean accuracy {100 * ax_:.1f}%, {sx:.1f} s")
    hit = None
    for k in args.budgets:
        lz, az, sz = run(ReversePurifier(ssl, k, 1, steps=(tcfg["rule"], float(tcfg["lr_z"])), theta=theta), ssl, model, x, y)
        lxk, axk, sxk = run(ReversePurifier(ssl, k, 1), ssl, model, x, y)
        print(f"  K={k:3d}: Z loss {lz:.4f} acc {100 * az:.1f}% ({sz:.1f} s) | X loss {lxk:.4f} acc {100 * axk:.1f}% ({sxk:.1f} s)")
        if hit is None and lz <= lx:
            hit = (k, lz, az, sz)
    if hit is None:
        print("the learned landscape does not reach the K=40 loss within these budgets")
    else:
        k, lz, az, sz = hit
        print(f"Z reaches the X K=40 loss at K={k}: step ratio {40 / k:.1f}x, wall-time ratio {sx / sz:.1f}x; "
              f"clean accuracy after purification {100 * az:.1f}% (Z, K={k}) vs {100 * ax_:.1f}% (X, K=40)")


if __name__ == "__main__":
    main()
