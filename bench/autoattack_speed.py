"""Wall time of ``autoattack`` (torchattacks components, the original's settings) against the original
package (``autoattack-original``) on the same images, same threads, interleaved; and where the time goes.

Each round runs both on the same images (first the one, then the other, alternating the order), in
batches of ``--batch-size``, and times every component (APGD-CE, APGD-T, FAB-T, Square) by wrapping
its entry point. Prints the median wall times, their ratio, both robust accuracies, and the profile.

    python bench/autoattack_speed.py --model resnet4b --eps 8/255 [--n 1000] [--rounds 2] [--threads 1]
    python bench/autoattack_speed.py --model resnet2b --eps 2/255
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from attacks import get_attack  # noqa: E402
from cifar10.classifiers import build_classifier  # noqa: E402
from cifar10.data import load_cifar10, select_subset  # noqa: E402
from landscape.config import parse_number  # noqa: E402

SHARED = Path(os.environ.get("LANDSCAPE_SHARED", REPO.parent / "shared"))


def timed(obj, method: str, name: str, profile: dict) -> None:
    """Wrap ``obj.method`` so its wall time adds up in ``profile[name]``."""
    inner = getattr(obj, method)

    def wrapper(*a, **k):
        t0 = time.perf_counter()
        try:
            return inner(*a, **k)
        finally:
            profile[name] += time.perf_counter() - t0
    setattr(obj, method, wrapper)


def run_ours(model, x, y, eps, bs, profile):
    bound = get_attack("autoattack", {"eps": eps})
    atk = bound.library_attack(model)
    for sub, name in zip(atk.attacks, ("apgd-ce", "apgd-t", "fab-t", "square")):
        if not getattr(sub, "_timed", False):
            timed(sub, "forward", name, profile)
            sub._timed = True
    return attack_all(bound, model, x, y, bs)


def run_original(model, x, y, eps, bs, profile):
    from pyautoattack import AutoAttack

    bound = get_attack("autoattack-original", {"eps": eps})
    original = bound.library_attack(model)
    make = AutoAttack.__init__

    def patched(self, *a, **k):   # time the components of every AutoAttack the adapter builds
        make(self, *a, **k)
        for obj, name in ((self.apgd, "apgd-ce"), (self.apgd_targeted, "apgd-t"), (self.fab, "fab-t"),
                          (self.square, "square")):
            timed(obj, "perturb", name, profile)
    AutoAttack.__init__ = patched
    try:
        return attack_all(bound, model, x, y, bs)
    finally:
        AutoAttack.__init__ = make
        del original


def attack_all(bound, model, x, y, bs):
    correct = 0
    for i in range(0, len(y), bs):
        adv = bound.run(model, x[i:i + bs], y[i:i + bs], seed=i)
        with torch.no_grad():
            correct += (model(adv).argmax(1) == y[i:i + bs]).sum().item()
    return correct / len(y)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet4b", choices=["resnet4b", "resnet2b"])
    ap.add_argument("--eps", default="8/255")
    ap.add_argument("--data", default=str(SHARED / "data" / "cifar10-lossless" / "cifar10_test_first1000.npz"))
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    eps = parse_number(args.eps, name="--eps")
    robust = SHARED / "weights" / "robust"
    model = build_classifier({"name": f"{robust / 'models.py'}:{args.model}", "weights": str(robust / f"{args.model}.pth")},
                             download=False).eval()
    data = select_subset(load_cifar10(args.data, "test", download=False), args.n, 0, "first")
    x, y = data.images, data.labels
    walls, accs, profiles = defaultdict(list), {}, {k: defaultdict(float) for k in ("autoattack", "autoattack-original")}
    runners = {"autoattack": run_ours, "autoattack-original": run_original}
    for r in range(args.rounds):
        order = list(runners) if r % 2 == 0 else list(runners)[::-1]
        for name in order:
            t0 = time.perf_counter()
            accs[name] = runners[name](model, x, y, eps, args.batch_size, profiles[name])
            walls[name].append(time.perf_counter() - t0)
            print(f"round {r + 1} {name}: {walls[name][-1]:.1f} s, robust accuracy {100 * accs[name]:.1f}%", flush=True)
    med = {k: statistics.median(v) for k, v in walls.items()}
    print(f"\n{args.model}, Linf {args.eps}, {len(y)} images ({data.source}), {args.threads} thread(s), "
          f"{args.rounds} interleaved rounds")
    print(f"{'':22s}{'wall s (median)':>16s}{'robust acc':>12s}" + "".join(f"{c:>10s}" for c in ("apgd-ce", "apgd-t", "fab-t", "square")))
    for name in runners:
        prof = profiles[name]
        print(f"{name:22s}{med[name]:16.1f}{100 * accs[name]:11.1f}%"
              + "".join(f"{prof[c] / args.rounds:10.1f}" for c in ("apgd-ce", "apgd-t", "fab-t", "square")))
    print(f"ratio autoattack / original: {med['autoattack'] / med['autoattack-original']:.2f} (target <= 1.0); "
          f"accuracy gap {100 * (accs['autoattack'] - accs['autoattack-original']):+.1f} points (target within 0.5)")


if __name__ == "__main__":
    main()
