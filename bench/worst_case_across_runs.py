"""The per-image worst case over the attacks of several ``landscape eval`` runs, on the images they share.

A run's suite row counts an image only if it survives every attack *of that run*. When the
attacks of one experiment are split over runs (a cheap grid on 1,000 images, the expensive
adaptive attacks on the first 200 of them), this counts an image as robust only if it survives
every attack of every run at the same (model, defense, landscape, budget, norm, eps), on the
images all those runs evaluated. Prints a table and writes it as CSV with ``--out``.

    python bench/worst_case_across_runs.py results/robust-reverse-x results/robust-reverse-adaptive-x [--out FILE] [--plot PNG]

``--plot``: the worst case and the clean accuracy against K per defended model, with 95% intervals and the
undefended worst case as a band (the report's headline is per run; this one is across them).
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
    ap.add_argument("--plot", default=None)
    args = ap.parse_args()
    table = worst_case(args.dirs)
    print(table.drop(columns="attacks").to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if args.out:
        atomic_write(args.out, lambda p: table.to_csv(p, index=False))
        print(f"written {args.out}")
    if args.plot:
        plot(table, args.plot)
        print(f"written {args.plot}")


def plot(table: pd.DataFrame, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(table.groupby(["norm", "eps"], sort=True))
    fig, axes = plt.subplots(1, len(panels), figsize=(9.0 * len(panels), 4.4), squeeze=False)
    for ax, ((norm, eps), t) in zip(axes[0], panels):
        base = t[t["defense"] == "none"]
        for _, b in base.iterrows():
            ax.axhspan(100 * b["ci_low"], 100 * b["ci_high"], color="0.85")
            ax.axhline(100 * b["worst_case"], color="black", lw=1.5, label="undefended: worst case")
            ax.axhline(100 * b["clean"], color="black", lw=1, ls="--", label="undefended: clean")
        for i, ((d, _), g) in enumerate(t[t["defense"] != "none"].groupby(["defense", "landscape"], sort=True)):
            g = g.sort_values("budget")
            ks = g["budget"].where(g["budget"] > 0, 0.5)
            lo, hi = 100 * (g["worst_case"] - g["ci_low"]), 100 * (g["ci_high"] - g["worst_case"])
            ax.errorbar(ks, 100 * g["worst_case"], yerr=[lo, hi], fmt="o-", color=f"C{i}", capsize=3,
                        label=f"{d}: worst case over every attack of every run")
            few = g["runs"].str.count(r"\+") < g["runs"].str.count(r"\+").max()   # a K some run did not cover
            if few.any():
                ax.plot(ks[few], 100 * g["worst_case"][few], "o", color="white", mec=f"C{i}", ms=6, zorder=5,
                        label=f"{d}: (open) fewer runs' attacks at this K")
            ax.plot(ks, 100 * g["clean"], "s--", color=f"C{i}", label=f"{d}: clean after purification")
        ax.set_xscale("log")
        ax.set_xlabel("defense budget K (K = 0 drawn at 0.5)")
        ax.set_ylabel("accuracy (%), 95% Wilson interval")
        ax.set_ylim(0, 100)
        ax.set_title(f"{norm} eps = {eps * 255:.3g}/255" if norm == "Linf" else f"{norm} eps = {eps:g}", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=120))
    plt.close(fig)


if __name__ == "__main__":
    main()
