"""Choose the reverse attack's radius eps_rev (and its step scale) on *training* images, never on
the test images a sweep reports: for each attack radius, the candidate with the highest robust
accuracy (worst case of PGD non-adaptive and PGD+BPDA, at K = 40) among those that keep clean
accuracy after purification within 3 points of the undefended backbone.

    python bench/choose_eps_rev.py --model resnet4b [--eps 8/255 2/255] [--n 200] [--out FILE.csv]

Prints a table and writes it as CSV (atomically); the chosen rows are marked.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evaluator.config import EVAL_DEFAULTS, OPEN_SECTIONS  # noqa: E402
from evaluator.run import evaluate  # noqa: E402
from landscape.config import load_config, parse_number  # noqa: E402
from landscape.io import atomic_write  # noqa: E402

SHARED = Path(os.environ.get("LANDSCAPE_SHARED", REPO.parent / "shared"))
CANDIDATES = {"2/255": [("2/255", 1.0), ("2/255", 2.5), ("4/255", 1.0), ("4/255", 2.5)],
              "8/255": [("4/255", 2.5), ("8/255", 1.0), ("8/255", 2.5), ("16/255", 1.0), ("16/255", 2.5)]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet4b", choices=["resnet4b", "resnet2b"])
    ap.add_argument("--head", default=None, help="default: checkpoints/ssl-head-<model>.pt")
    ap.add_argument("--data", default=str(SHARED / "data" / "cifar10-jpeg"))
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--budget", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None)
    ap.add_argument("--eps", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES), help="attack radii to choose for")
    args = ap.parse_args()
    robust = SHARED / "weights" / "robust"
    rows = []
    for eps in args.eps:
        candidates = CANDIDATES[eps]
        for eps_rev, scale in [(None, None)] + candidates:
            overrides = [f"model.name={robust / 'models.py'}:{args.model}", f"model.weights={robust / (args.model + '.pth')}",
                         f"data.root={args.data}", "data.split=train", f"data.n_examples={args.n}", "data.download=false",
                         f"eps.Linf={eps}", "attacks=[none,pgd]", "attack_params.pgd.steps=20",
                         f"attack_params.pgd.alpha={parse_number(eps) / 4}",
                         "defense.restarts=1", "defense.modes=[nonadaptive,bpda]", f"defense.budgets=[{args.budget}]",
                         f"defense.ssl_head={args.head or REPO / 'checkpoints' / f'ssl-head-{args.model}.pt'}",
                         f"threads={args.threads}", "ray.num_workers=0", "eval.batch_size=200", "device=cpu"]
            if eps_rev is None:
                overrides.append("defenses=[none]")
            else:
                overrides += ["defenses=[reverse-x]", f"defense.eps_rev={eps_rev}", f"defense.reverse_step_scale={scale}"]
            cfg = load_config(EVAL_DEFAULTS, None, overrides, OPEN_SECTIONS)
            res, _ = evaluate(cfg, progress=False)
            acc = dict(zip(res["attack"], res["accuracy"]))
            suite = min(v for a, v in acc.items() if a != "none")
            rows.append({"model": args.model, "attack_eps": eps, "eps_rev": eps_rev or "-", "step_scale": scale or 0.0,
                         "budget": args.budget if eps_rev else 0, "clean": acc["none"],
                         "pgd_nonadaptive": acc.get("pgd+nonadaptive", acc.get("pgd")),
                         "pgd_bpda": acc.get("pgd+bpda", float("nan")), "worst": suite, "n": int(res["n"].iloc[0])})
            print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    df["chosen"] = False
    for eps, group in df.groupby("attack_eps"):
        base = group[group["eps_rev"] == "-"]["clean"].item()
        ok = group[(group["eps_rev"] != "-") & (group["clean"] >= base - 0.03)]
        if len(ok):
            best = ok.sort_values(["worst", "clean"], ascending=False).index[0]
            df.loc[best, "chosen"] = True
    tag = "-".join(e.split("/")[0] for e in args.eps)
    write_table(df, args.out or REPO / "docs" / "robust-reverse" / f"eps-rev-{args.model}-linf{tag}.csv", args.n, args.data)


def write_table(df: pd.DataFrame, out, n: int, data) -> None:
    """Print the table of candidates and write it as CSV, atomically (also bench/choose_reverse_steps.py's)."""
    print(df.to_string(index=False))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda p: df.to_csv(p, index=False))
    print(f"written {out} ({n} training images of {data}; JPEG copy of CIFAR-10 unless the path says otherwise)")


if __name__ == "__main__":
    main()
