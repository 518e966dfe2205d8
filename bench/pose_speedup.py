"""Pose inversion: the X-space MPJPE (and 2D error) at K = 200 and the smallest K at which the learned Z reaches it.

On at least 500 held-out poses of the CMU test subjects (09, 13, 55), each seen by its own seeded camera
with 10% of joints missing, both spaces with step rules and sizes tuned per K on training-subject targets
(``compare_spaces``, once tuned for MPJPE and once for the 2D error); prints the step and wall-time ratios
(theta's forward and backward included in Z's time), and the lifting baseline's MPJPE and the time of
its single forward pass over the same poses.

    python bench/pose_speedup.py [--data ROOT] [--generator FILE] [--theta FILE] [--n 500] [--threads 1]
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

from landscape.compare import compare_spaces, steps_to_reach  # noqa: E402
from landscape.stats import mean_interval  # noqa: E402
from landscape.trainer import load_theta  # noqa: E402
from tasks.invert import candidates  # noqa: E402
from tasks.pose.metrics import mpjpe  # noqa: E402
from tasks.registry import TASKS, build_task  # noqa: E402

TASK = TASKS["pose-cmu"]

SHARED = Path(os.environ.get("LANDSCAPE_SHARED", REPO.parent / "shared"))
BUDGETS = [1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 100, 200]


def report(summary, metric: str, unit: str) -> None:
    s = summary[summary["metric"] == metric]
    x200 = s[(s.space == "X") & (s.budget == 200)].iloc[0]
    reached = None
    print(f"\n== {metric} ({unit}), tuned for {metric} ==")
    print(f"X (plain latent, {x200['rule']} lr={x200['lr']:g}) at K=200: {x200['mean']:.2f} "
          f"[{x200['ci_low']:.2f}, {x200['ci_high']:.2f}]")
    for k in BUDGETS:
        z = s[(s.space == "Z") & (s.budget == k)].iloc[0]
        x = s[(s.space == "X") & (s.budget == k)].iloc[0]
        print(f"  K={k:3d}: Z {z['mean']:8.2f} [{z['ci_low']:.2f}, {z['ci_high']:.2f}] ({z['rule']} {z['lr']:g})   "
              f"X {x['mean']:8.2f} ({x['rule']} {x['lr']:g})")
    k = steps_to_reach(s, metric, x200["mean"], "Z")
    if k is None:
        best = s[s.space == "Z"].sort_values("mean").iloc[0]
        print(f"Z never reaches X's K=200 {metric} within 200 steps (best Z: {best['mean']:.2f} at K={int(best['budget'])})")
        for kx in BUDGETS:
            xk = s[(s.space == "X") & (s.budget == kx)].iloc[0]
            kz = steps_to_reach(s, metric, xk["mean"], "Z")
            if kz is not None and kz < kx:
                print(f"  Z reaches X's K={kx} {metric} ({xk['mean']:.2f}) at K={kz} ({kx / kz:.1f}x fewer steps)")
        return reached
    z = s[(s.space == "Z") & (s.budget == k)].iloc[0]
    wall_x, wall_z = 200 * x200["seconds_per_step"], k * z["seconds_per_step"]
    print(f"Z reaches it at K={k}: step ratio {200 / k:.1f}x, wall-time ratio {wall_x / wall_z:.1f}x "
          f"({wall_x * 1000:.2f} ms vs {wall_z * 1000:.2f} ms per pose, from compare_spaces' timings)")
    return k, (x200["rule"], float(x200["lr"])), (z["rule"], float(z["lr"]))


def wall_time(problem, theta, target, space: str, k: int, step: tuple, repeats: int = 3) -> float:
    """Best of ``repeats`` wall times (s) of K steps on the whole batch (theta's cost included in Z)."""
    from landscape.space import Space

    sp = Space(problem, theta if space == "Z" else None)
    best = float("inf")
    for r in range(repeats):
        start = sp.init(len(target["keypoints"]), torch.Generator().manual_seed(r))
        t0 = time.perf_counter()
        sp.descend(target, start, k, step[1], step[0])
        best = min(best, time.perf_counter() - t0)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(SHARED / "data" / "mocap-cmu"))
    ap.add_argument("--generator", default=TASK.defaults["generator"]["weights"])
    ap.add_argument("--theta", default=str(REPO / TASK.invert["theta"]["weights"]))
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--n-tune", type=int, default=128)
    ap.add_argument("--baseline-iterations", type=int,
                    default=TASK.invert["analyses"]["baseline_iterations"])
    ap.add_argument("--baseline-width", type=int, default=TASK.invert["analyses"]["baseline_width"])
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.n < 500:
        print(f"note: {args.n} held-out poses, fewer than the 500 this benchmark is specified for")
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = {**TASK.defaults, "seed": 0}
    cfg["data"] = {**cfg["data"], "root": args.data}
    cfg["generator"] = {"weights": args.generator}
    problem = build_task("pose-cmu", cfg)
    theta, tcfg = load_theta(args.theta)
    inv = TASK.invert["invert"]
    tune = problem.sample_targets(args.n_tune, torch.Generator().manual_seed(1))
    heldout = problem.heldout(args.n)
    print(f"held-out poses: {args.n} (test subjects {sorted(problem.test_set.skeletons)}, {args.data}); "
          f"theta {args.theta} ({tcfg['rule']} lr_z={tcfg['lr_z']:g}, {tcfg['iterations']} iterations)")
    for metric, unit in (("mpjpe", "mm"), ("err2d", "px")):
        t0 = time.perf_counter()
        _, summary = compare_spaces(problem, theta, heldout, tune, BUDGETS, candidates(inv["search"]),
                                    candidates(inv["search"]), seed=0, batch_size=args.n, metric=metric)
        reached = report(summary, metric, unit)
        if reached:
            k, sx, sz = reached
            # compare_spaces times each candidate once, while other jobs share the CPU; time again, interleaved
            tx, tz = wall_time(problem, None, heldout, "X", 200, sx), wall_time(problem, theta, heldout, "Z", k, sz)
            print(f"  re-timed (best of 3, interleaved): X 200 steps {tx:.2f} s, Z {k} steps {tz:.2f} s for "
                  f"{args.n} poses: wall-time ratio {tx / tz:.1f}x")
        if metric == "mpjpe":
            pa = summary[(summary.metric == "pa_mpjpe") & (summary.budget.isin([10, 200]))]
            for _, r in pa.iterrows():
                print(f"  PA-MPJPE {r['space']} K={int(r['budget'])}: {r['mean']:.1f} mm")
        print(f"({time.perf_counter() - t0:.0f} s)")
    from tasks.pose.baseline import timed_predict, train_lifting

    net, info = train_lifting(problem, args.baseline_iterations, width=args.baseline_width, seed=0)
    pred, sec = timed_predict(net, heldout)
    m, lo, hi = mean_interval(mpjpe(pred, heldout["pose3d"]).tolist())
    print(f"\nlifting baseline (Martinez et al. 2017, width {info['width']}; {info['iterations']} iterations, "
          f"{info['train_seconds']:.0f} s "
          f"training): MPJPE {m:.1f} mm [{lo:.1f}, {hi:.1f}], one forward pass over {args.n} poses "
          f"{sec * 1000:.1f} ms ({sec / args.n * 1e6:.0f} us per pose)")


if __name__ == "__main__":
    main()
