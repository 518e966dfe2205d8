"""Ray's cost and scaling for one evaluation (ResNet-20, PGD-10, Linf 8/255), measured in one run:

* in-process against Ray with one worker (same threads): ratio of wall times, target <= 1.05;
* one worker with 2 torch threads against 2 workers with 1 thread each (scaling on 2 cores).

Times exclude starting Ray (reported separately) and include shipping the context to the actors.

    python bench/ray_overhead.py [--n 400] [--data ROOT] [--weights FILE]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import ray
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evaluator.config import EVAL_DEFAULTS, OPEN_SECTIONS  # noqa: E402
from evaluator.run import evaluate  # noqa: E402
from landscape.config import load_config  # noqa: E402
from ray_jobs.runner import RayRunner  # noqa: E402

SHARED = Path(os.environ.get("LANDSCAPE_SHARED", REPO.parent / "shared"))


def timed(cfg, runner=None):
    t = time.perf_counter()
    results, _ = evaluate(cfg, progress=False, runner=runner)
    return time.perf_counter() - t, results


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(SHARED / "data" / "cifar10-jpeg"))
    ap.add_argument("--weights", default=str(SHARED / "weights" / "resnet20-12fca82f.th"))
    ap.add_argument("--n", type=int, default=400)
    args = ap.parse_args()
    base = [f"model.weights={args.weights}", f"data.root={args.data}", f"data.n_examples={args.n}",
            "attacks=[pgd]", "eval.batch_size=100", "data.download=false"]
    cfg = load_config(EVAL_DEFAULTS, overrides=base, open_sections=OPEN_SECTIONS)

    torch.set_num_threads(2)
    t_in2, ref = timed(cfg)
    torch.set_num_threads(1)
    t_in1, _ = timed(cfg)

    t = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    t_start = time.perf_counter() - t
    try:
        r1 = RayRunner({"num_workers": 1, "cpus_per_worker": 1})
        t_ray1, res1 = timed(cfg, r1)
        r1.close()
        r12 = RayRunner({"num_workers": 1, "cpus_per_worker": 2})
        t_ray12, _ = timed(cfg, r12)
        r12.close()
        r2 = RayRunner({"num_workers": 2, "cpus_per_worker": 1})
        t_ray2, res2 = timed(cfg, r2)
        r2.close()
    finally:
        ray.shutdown()
    same = (res1["correct"].tolist() == ref["correct"].tolist() == res2["correct"].tolist())
    print(f"{args.n} images, PGD-10 on resnet20, {os.cpu_count()} cores; Ray start {t_start:.1f} s (excluded)")
    print(f"in-process, 1 thread : {t_in1:7.2f} s   Ray, 1 worker x 1 thread : {t_ray1:7.2f} s   ratio {t_ray1 / t_in1:.3f}"
          f" (target <= 1.05)")
    print(f"in-process, 2 threads: {t_in2:7.2f} s   Ray, 1 worker x 2 threads: {t_ray12:7.2f} s   ratio {t_ray12 / t_in2:.3f}")
    print(f"Ray, 2 workers x 1 thread: {t_ray2:7.2f} s   speed-up over 1 worker x 2 threads: {t_ray12 / t_ray2:.2f}x, "
          f"over 1 worker x 1 thread: {t_ray1 / t_ray2:.2f}x")
    print(f"identical tables in-process / 1 worker / 2 workers: {same}")


if __name__ == "__main__":
    main()
