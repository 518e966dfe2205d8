"""GAN inversion: the X-space loss at K = 200 and the smallest K at which the learned Z reaches it.

On at least 200 held-out CIFAR-10 test images (the JPEG copy unless --data says otherwise), both
spaces with step sizes tuned per K on training images; prints the step ratio and the wall-time
ratio (theta's forward and backward included in Z's time).

    python bench/landscape_speedup.py [--data ROOT] [--generator FILE] [--theta FILE] [--n 200]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from landscape.compare import compare_spaces, steps_to_reach  # noqa: E402
from landscape.trainer import load_theta  # noqa: E402
from tasks.invert import candidates  # noqa: E402
from tasks.registry import TASKS, build_task  # noqa: E402

TASK = TASKS["gan-cifar10"]

SHARED = Path(os.environ.get("LANDSCAPE_SHARED", REPO.parent / "shared"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(SHARED / "data" / "cifar10-jpeg"))
    ap.add_argument("--generator", default=TASK.defaults["generator"]["weights"])
    ap.add_argument("--theta", default=str(REPO / TASK.invert["theta"]["weights"]))
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--n-tune", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--steps", default=str(REPO / "checkpoints" / "gan-cifar10-step-sizes.csv"),
                    help="tune only among the (rule, lr) that `landscape invert` chose (a CSV it wrote); "
                         "'full' searches the whole invert grid again")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = {"seed": 0, "data": {"root": args.data, "n_train": 5000, "n_heldout": args.n, "download": False},
           "generator": {"weights": args.generator}}
    problem = build_task("gan-cifar10", cfg)
    theta, tcfg = load_theta(args.theta)
    inv = TASK.invert["invert"]
    budgets = [1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 100, 200]
    tune = problem.sample_targets(args.n_tune, torch.Generator().manual_seed(1))
    if args.steps == "full":
        x_cand = z_cand = candidates(inv["search"])
    else:
        from defense.defenses import load_step_table

        x_cand, z_cand = (sorted(set(load_step_table(args.steps, sp, None).values())) for sp in ("x", "z"))
    print(f"step rules searched per K: X {x_cand}, Z {z_cand}")
    _, summary = compare_spaces(problem, theta, problem.heldout(args.n), tune, budgets, x_cand, z_cand, seed=0,
                                batch_size=args.n, metric="mse")
    mse = summary[summary["metric"] == "mse"]
    x200 = mse[(mse.space == "X") & (mse.budget == 200)].iloc[0]
    k = steps_to_reach(mse, "mse", x200["mean"], "Z")
    print(f"held-out images: {args.n} ({args.data}; figures on the JPEG copy of CIFAR-10 unless that path says otherwise)")
    print(f"X (plain latent, {x200['rule']} lr={x200['lr']:g}) at K=200: MSE {x200['mean']:.5f} "
          f"[{x200['ci_low']:.5f}, {x200['ci_high']:.5f}]")
    for _, r in mse[mse.space == "Z"].iterrows():
        print(f"  Z K={int(r['budget']):3d}: MSE {r['mean']:.5f}   X K={int(r['budget']):3d}: "
              f"{mse[(mse.space == 'X') & (mse.budget == r['budget'])]['mean'].item():.5f}")
    for kz in (1, 2, 5, 10):
        zk = mse[(mse.space == "Z") & (mse.budget == kz)]
        if len(zk):
            kx = steps_to_reach(mse, "mse", zk["mean"].item(), "X")
            print(f"  X needs K={kx} to reach Z's K={kz} loss {zk['mean'].item():.5f}" if kx else
                  f"  X does not reach Z's K={kz} loss within 200 steps")
    if k is None:
        print("Z never reaches the X K=200 loss within 200 steps")
        return
    z = mse[(mse.space == "Z") & (mse.budget == k)].iloc[0]
    wall_x = 200 * x200["seconds_per_step"]
    wall_z = k * z["seconds_per_step"]
    print(f"Z reaches it at K={k}: step ratio {200 / k:.1f}x, wall-time ratio {wall_x / wall_z:.1f}x "
          f"({wall_x * 1000:.1f} ms vs {wall_z * 1000:.1f} ms per image)")


if __name__ == "__main__":
    main()
