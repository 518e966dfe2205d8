"""The per-image worst case over the attacks of several ``landscape eval`` runs, on the images they share.

A run's suite row counts an image only if it survives every attack *of that run*. When the
attacks of one experiment are split over runs (a cheap grid on 1,000 images, the expensive
adaptive attacks on the first 200 of them), this counts an image as robust only if it survives
every attack of every run at the same (model, defense, landscape, budget, norm, eps), on the
images all those runs evaluated. Prints a table and writes it as CSV with ``--out``.

    python bench/worst_case_across_runs.py results/robust-reverse-x results/robust-reverse-adaptive-x [--out FILE]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from landscape.io import atomic_write  # noqa: E402
from landscape.stats import wilson_interval  # noqa: E402


def worst_case(dirs) -> pd.DataFrame:
    frames = []
    for d in dirs:
        path = Path(d) / "per_image.parquet"
        if not path.is_file():
            raise SystemExit(f"error: {d} holds no per_image.parquet (is it a finished `landscape eval --out` folder?)")
        per = pd.read_parquet(path)
        meta = pd.read_csv(Path(d) / "results.csv")[["defense", "landscape", "budget", "attack", "norm", "eps"]]
        frames.append(per.merge(meta, on=["defense", "landscape", "budget", "attack"]).assign(run=Path(d).name))
    df = pd.concat(frames, ignore_index=True)
    attacked = df[df["attack"] != "none"]
    rows = []
    for key, g in attacked.groupby(["model", "defense", "landscape", "budget", "norm", "eps"], sort=True):
        runs = sorted(g["run"].unique())
        shared = set.intersection(*(set(g[g["run"] == r]["index"]) for r in runs))
        g = g[g["index"].isin(shared)]
        survived = g.groupby("index")["correct"].all()
        clean = df[(df["attack"] == "none") & (df["defense"] == key[1]) & (df["budget"] == key[3])
                   & (df["landscape"] == key[2]) & df["index"].isin(shared)].drop_duplicates("index")
        lo, hi = wilson_interval(int(survived.sum()), len(survived))
        rows.append({"defense": key[1], "landscape": key[2], "budget": key[3], "norm": key[4], "eps": key[5],
                     "runs": "+".join(runs), "attacks": ",".join(sorted(g["attack"].unique())), "n": len(survived),
                     "clean": float(clean["correct"].mean()) if len(clean) else float("nan"),
                     "worst_case": float(survived.mean()), "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dirs", nargs="+")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    table = worst_case(args.dirs)
    print(table.drop(columns="attacks").to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if args.out:
        atomic_write(args.out, lambda p: table.to_csv(p, index=False))
        print(f"written {args.out}")


if __name__ == "__main__":
    main()
