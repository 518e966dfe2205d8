"""Loss vs K of several ``landscape invert`` runs on one figure and one table: X once (every run
solves X the same way, with the same draws), then each run's Z, with 95% intervals, and the smallest
K at which each Z reaches X's loss at the reference budget.

    python bench/invert_variants.py results/invert-a:"label A" results/invert-b:"label B" \
        --metric ssl_loss --out docs/ablation/reverse-cifar10/variants
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from landscape.compare import steps_to_reach  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="DIR:label, each a landscape invert --out folder")
    ap.add_argument("--metric", default="ssl_loss")
    ap.add_argument("--out", required=True, help="path prefix: writes PREFIX.csv, PREFIX.md and PREFIX.png")
    args = ap.parse_args()
    runs = [(Path(r.split(":", 1)[0]), r.split(":", 1)[1] if ":" in r else Path(r).name) for r in args.runs]
    summaries = {label: (lambda s: s[s["metric"] == args.metric])(pd.read_csv(d / "summary.csv")) for d, label in runs}
    first = next(iter(summaries.values()))
    x = first[first.space == "X"].sort_values("budget")
    for label, s in summaries.items():   # X must be the same in every run, or the comparison is not one
        other = s[s.space == "X"].sort_values("budget")
        if not (other["mean"].round(9).tolist() == x["mean"].round(9).tolist()):
            sys.exit(f"X differs between runs ({label}): they were not solved on the same targets and draws")
    kref = int(x["budget"].max())
    ref = float(x[x.budget == kref]["mean"].iloc[0])
    rows = [{"variant": "X (plain, tuned per K)", **{f"K={int(k)}": f"{m:.3f} [{lo:.3f}, {hi:.3f}]" for k, m, lo, hi in
                                                    zip(x.budget, x["mean"], x.ci_low, x.ci_high)}}]
    for label, s in summaries.items():
        z = s[s.space == "Z"].sort_values("budget")
        k = steps_to_reach(s, args.metric, ref, "Z")
        rows.append({"variant": label, **{f"K={int(b)}": f"{m:.3f} [{lo:.3f}, {hi:.3f}]" for b, m, lo, hi in
                                         zip(z.budget, z["mean"], z.ci_low, z.ci_high)},
                     f"K to reach X@{kref}": k if k is not None else "never", "step ratio": f"{kref / k:.1f}" if k else ""})
    table = pd.DataFrame(rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out.with_suffix(".csv"), index=False)
    out.with_suffix(".md").write_text(table.to_markdown(index=False) + "\n")
    print(table.to_markdown(index=False))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.2))
    ax.plot(x.budget, x["mean"], "o-", color="0.3", label="X (plain, tuned per K)")
    ax.fill_between(x.budget, x.ci_low, x.ci_high, color="0.3", alpha=0.15)
    for label, s in summaries.items():
        z = s[s.space == "Z"].sort_values("budget")
        line, = ax.plot(z.budget, z["mean"], "o-", ms=3, label=f"Z: {label}")
        ax.fill_between(z.budget, z.ci_low, z.ci_high, color=line.get_color(), alpha=0.12)
    ax.axhline(ref, color="0.3", ls=":", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("descent steps K")
    ax.set_ylabel(args.metric)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=120)
    print(f"wrote {out.with_suffix('.csv')}, .md, .png")


if __name__ == "__main__":
    main()
