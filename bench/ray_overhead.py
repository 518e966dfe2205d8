"""What Ray costs the README's default job on one machine: whole ``landscape eval`` processes, timed.

For each number of images (400, 1,000, 1,600 by default) three commands run, interleaved, ``--reps``
times each (the median is reported; this machine is noisy): the default (``ray.num_workers`` null:
the rule of ``evaluator.run.uses_ray`` picks in-process or a local Ray), ``ray.num_workers=0`` (in this
process) and ``ray.num_workers=2`` (a local Ray with two workers, forced). Each is a fresh process, so
Ray's start-up, the import of the packages and the loading of data and models are all counted, as a
user waits for them. The default config: ResNet-20, clean, FGSM and PGD-10 at Linf 8/255.

    python bench/ray_overhead.py [--sizes 400 1000 1600] [--reps 3] [--data ROOT] [--weights FILE]

Target (issue 16): the default within 5% of in-process wall time at 1,000 images.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LANDSCAPE_SHARED", REPO.parent / "shared"))
MODES = {"default": [], "in-process": ["ray.num_workers=0"], "local Ray x2": ["ray.num_workers=2"]}


def run_once(n: int, extra: list[str], data: str, weights: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "landscape_cli.main", "eval", "--quiet", "--out", f"{tmp}/out",
               f"data.root={data}", "data.download=false", f"model.weights={weights}", f"data.n_examples={n}", *extra]
        t = time.perf_counter()
        res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        wall = time.perf_counter() - t
        if res.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{res.stderr[-2000:]}")
        return wall


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(SHARED / "data" / "cifar10-jpeg"))
    ap.add_argument("--weights", default=str(SHARED / "weights" / "resnet20-12fca82f.th"))
    ap.add_argument("--sizes", type=int, nargs="+", default=[400, 1000, 1600])
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    import torch

    print(f"{os.cpu_count()} cores, {torch.cuda.device_count()} GPUs; whole `landscape eval` processes, "
          f"median of {args.reps}, interleaved")
    print(f"{'images':>6}  {'default':>9}  {'in-process':>10}  {'local Ray x2':>12}  {'default / in-process':>20}  "
          f"{'Ray x2 / in-process':>19}")
    for n in args.sizes:
        walls = {m: [] for m in MODES}
        for _ in range(args.reps):
            for mode, extra in MODES.items():
                walls[mode].append(run_once(n, extra, args.data, args.weights))
        med = {m: statistics.median(v) for m, v in walls.items()}
        print(f"{n:>6}  {med['default']:8.1f}s  {med['in-process']:9.1f}s  {med['local Ray x2']:11.1f}s  "
              f"{med['default'] / med['in-process']:>20.3f}  {med['local Ray x2'] / med['in-process']:>19.3f}", flush=True)


if __name__ == "__main__":
    main()
