"""Why the GAN theta's last percent is slow: three probes of descent through a trained theta, no training.

The conditioned GAN theta reaches in one step what X reaches in about 50, then crawls (Z at K = 10 stays
4.8% above X at K = 200). Three cheap explanations are tested on held-out JPEG test images, each step rule
tuned on training images over one candidate set (the first two probes also tune X the same way):

* ``switch``: the first k of K steps in Z, the rest in X from theta's point. If X's landscape were the
  better one near the solution, this would beat Z alone.
* ``schedule``: Adam with its step decayed by a cosine to 0 at step K, against constant Adam, in Z at
  K = 10, 20 and in X at K = 200 (a schedule usually helps a fixed budget).
* ``start``: Z's starting points drawn from s * N(0, I) for s < 1 (theta was trained from s = 1): does theta
  use the starting z at all?

    python bench/gan_tail_probes.py --theta checkpoints/theta-gan-cifar10-conditioned-12k.pt --threads 1
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from landscape.space import Space  # noqa: E402
from landscape.stats import mean_interval  # noqa: E402
from landscape.trainer import load_theta  # noqa: E402
from tasks.registry import build_task  # noqa: E402

CANDIDATES = [("adam", a) for a in (0.03, 0.1, 0.3, 0.6, 1.0)] + [("sgd", s) for s in (10, 20, 30, 60, 100, 300)]
ADAM = (0.1, 0.3, 0.6, 1.0, 2.0)


def adam(space: Space, target, v0, steps: int, lr: float, cosine: bool) -> torch.Tensor:
    """Per-example loss after ``steps`` Adam steps (the betas of ``landscape.descent``), optionally cosine-decayed.

    Written out because ``descend`` has no step schedule; both arms of the probe use this one loop, and its
    constant arm reproduces ``descend`` (Z at K = 10: 0.01508 either way)."""
    v = v0.clone().requires_grad_(True)
    cond = space.condition(target)
    m, s, (b1, b2) = torch.zeros_like(v), torch.zeros_like(v), (0.9, 0.999)
    for t in range(1, steps + 1):
        loss = space.problem.objective(space.to_x(v, cond=cond) if space.learned else v, target)
        g, = torch.autograd.grad(loss.sum(), v)
        m, s = b1 * m + (1 - b1) * g, b2 * s + (1 - b2) * g * g
        step = lr * (0.5 * (1 + math.cos(math.pi * (t - 1) / steps)) if cosine else 1.0)
        with torch.no_grad():
            v -= step * (m / (1 - b1 ** t)) / ((s / (1 - b2 ** t)).sqrt() + 1e-8)
    with torch.no_grad():
        return space.problem.objective(space.to_x(v, cond=cond) if space.learned else v, target)


def tuned(run, tune_t, held, options):
    """The option with the lowest mean loss on the tuning targets, and its held-out mean [95% CI]."""
    scores = {o: float(run(tune_t, o).mean()) for o in options}
    best = min(scores, key=scores.get)
    return best, mean_interval(run(held, best).tolist())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--theta", default=str(REPO / "checkpoints/theta-gan-cifar10-conditioned-12k.pt"))
    ap.add_argument("--data", default=str(REPO.parent / "shared/data/cifar10-jpeg"))
    ap.add_argument("--n", type=int, default=200, help="held-out test images")
    ap.add_argument("--n-tune", type=int, default=64)
    ap.add_argument("--zlr", type=float, default=0.6, help="Adam step in Z for the switch probe's first k steps")
    ap.add_argument("--probes", nargs="*", default=["switch", "schedule", "start"])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = {"seed": 0, "data": {"root": args.data, "n_train": 10000, "n_heldout": 500, "download": False},
           "generator": {"name": "dcgan", "weights": str(REPO / "checkpoints/dcgan-cifar10.pt"), "kwargs": {}}}
    problem = build_task("gan-cifar10", cfg)
    theta, _ = load_theta(args.theta)
    tune_t = problem.sample_targets(args.n_tune, torch.Generator().manual_seed(1))   # as landscape invert draws them
    held = problem.heldout(args.n)
    X, Z = Space(problem), Space(problem, theta)
    start = lambda space, t, s=1.0: s * space.init(len(t), torch.Generator().manual_seed(0))  # noqa: E731
    show = lambda what, best, ci, t0: print(f"{what:<44} {ci[0]:.5f} [{ci[1]:.5f}, {ci[2]:.5f}]  "  # noqa: E731
                                            f"(chosen {best}; {time.time() - t0:.0f} s)", flush=True)

    if "switch" in args.probes:
        for k in (1, 2, 3, 5):
            def run(t, cand, k=k):
                x = Z.descend(t, start(Z, t), k, args.zlr, "adam").x.detach()
                return problem.objective(X.descend(t, x, 10 - k, cand[1], cand[0]).x.detach(), t).detach()
            t0 = time.time()
            show(f"switch: {k} Z steps (adam {args.zlr}), {10 - k} X steps", *tuned(run, tune_t, held, CANDIDATES), t0)
    if "schedule" in args.probes:
        for name, space, k in (("Z", Z, 10), ("Z", Z, 20), ("X", X, 200)):
            for cosine in (False, True):
                t0 = time.time()
                run = lambda t, lr, space=space, k=k, cosine=cosine: adam(space, t, start(space, t), k, lr, cosine)  # noqa: E731
                show(f"schedule: {name} K={k} adam {'cosine' if cosine else 'constant'}", *tuned(run, tune_t, held, ADAM), t0)
    if "start" in args.probes:
        for s in (1.0, 0.3, 0.1):
            for k in (1, 10, 20):
                t0 = time.time()
                run = lambda t, lr, s=s, k=k: Z.descend(t, start(Z, t, s), k, lr, "adam").losses[-1].detach()  # noqa: E731
                show(f"start: z0 ~ {s} N(0, I), K={k}", *tuned(run, tune_t, held, ADAM), t0)


if __name__ == "__main__":
    main()
