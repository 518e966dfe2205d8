"""The generator's model-card figures: a sample grid, and the reconstruction PSNR of held-out
CIFAR-10 test images after 200 steps of latent descent (Adam), with 1 and 4 restarts, plus how
often ResNet-20 classifies those reconstructions correctly (what a generator purifier needs).

    python bench/generator_quality.py [--generator FILE] [--n 200] [--grid FILE.png]
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
from cifar10.generator import load_generator  # noqa: E402
from defense.purifiers import GeneratorPurifier  # noqa: E402
from landscape.io import atomic_write  # noqa: E402
from landscape.stats import mean_interval  # noqa: E402
from tasks.gan.problem import psnr  # noqa: E402

SHARED = Path(os.environ.get("LANDSCAPE_SHARED", REPO.parent / "shared"))


def grid(G, path, n=64, seed=0):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with torch.no_grad():
        x = G(torch.randn(n, G.latent_dim, generator=torch.Generator().manual_seed(seed)))
    side = int(n ** 0.5)
    img = x[: side * side].view(side, side, 3, 32, 32).permute(0, 3, 1, 4, 2).reshape(side * 32, side * 32, 3)
    fig = plt.figure(figsize=(6, 6))
    plt.imshow(img.numpy())
    plt.axis("off")
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=100, bbox_inches="tight"))
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generator", default=str(REPO / "checkpoints" / "dcgan-cifar10.pt"))
    ap.add_argument("--data", default=str(SHARED / "data" / "cifar10-jpeg"))
    ap.add_argument("--weights", default=str(SHARED / "weights" / "resnet20-12fca82f.th"))
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--grid", default=str(REPO / "checkpoints" / "dcgan-cifar10-samples.png"))
    args = ap.parse_args()
    G = load_generator(args.generator)
    grid(G, args.grid)
    data = select_subset(load_cifar10(args.data, "test", download=False), args.n, 0)
    clf = build_classifier({"name": "resnet20", "weights": args.weights}, download=False)
    with torch.no_grad():
        base = float((clf(data.images).argmax(1) == data.labels).float().mean())
    print(f"{len(data)} held-out test images ({data.source}; JPEG copy of CIFAR-10); ResNet-20 on originals {100 * base:.1f}%")
    for restarts in (1, 4):
        torch.manual_seed(0)
        p = GeneratorPurifier(G, 200, restarts, ("adam", 0.1))
        t = time.perf_counter()
        rec = torch.cat([p(data.images[i:i + 100]) for i in range(0, len(data), 100)])
        sec = time.perf_counter() - t
        mse = ((rec - data.images) ** 2).flatten(1).mean(1)
        m, lo, hi = mean_interval(psnr(mse).tolist())
        with torch.no_grad():
            acc = float((clf(rec).argmax(1) == data.labels).float().mean())
        print(f"200 Adam steps (lr 0.1), {restarts} restart(s): PSNR {m:.2f} dB [{lo:.2f}, {hi:.2f}], MSE {float(mse.mean()):.4f}, "
              f"ResNet-20 on reconstructions {100 * acc:.1f}%, {sec:.0f} s")
    print(f"sample grid: {args.grid}")


if __name__ == "__main__":
    main()
