"""Choose the reverse purifier's step per budget K on *training* images, for the plain space (reverse-x)
and the learned one (reverse-z) by one rule: the candidate with the highest robust accuracy under
PGD-20 with exact gradients unrolled through the K steps (``--modes``: the per-image worst case over
several gradients, e.g. ``unrolled bpda+eot``), among those that keep clean accuracy after
purification within 3 points of the undefended backbone on the same images (ties: higher clean).

Why: ``landscape invert`` tunes reverse-z's steps for the lowest self-supervised loss, while reverse-x's
step (``reverse_step_scale`` x eps_rev / K) was chosen for the robustness trade-off at K = 40 only.
Comparing the two at other K on test images is fair only when both are tuned the same way.

Both spaces get the same six candidates in their own units (X: eps_rev, the unit ``landscape invert``
uses there; Z: 1, pre-tanh): sign steps of s / K units for s in {0.5, 1, 2.5} and Adam steps of a
units for a in {0.25, 0.5, 1}. The same images, attack and seeds for every candidate.

    python bench/choose_reverse_steps.py --model resnet4b --budgets 1 5 40 [--spaces x z] [--theta FILE] [--n 200]
        [--modes unrolled bpda+eot] [--out FILE.csv]

Prints each row as it is measured, then the table with the chosen rows marked, written as CSV
(atomically); ``--out`` defaults to docs/robust-reverse/steps-<model>-linf<eps>.csv.
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
from choose_eps_rev import write_table  # noqa: E402  (this folder: the same table writer)

SHARED = Path(os.environ.get("LANDSCAPE_SHARED", REPO.parent / "shared"))
SIGN_SCALES = (0.5, 1.0, 2.5)      # sign step = s / K units
ADAM_LRS = (0.25, 0.5, 1.0)        # Adam step = a units
THETAS = {"resnet4b": "checkpoints/theta-reverse-resnet4b-shift.pt", "resnet2b": "checkpoints/theta-reverse-resnet2b-shift.pt"}


def candidates(budget: int, unit: float) -> list[tuple[str, float, str]]:
    """(rule, lr, label) for one K in one space's unit."""
    k = max(budget, 1)
    return ([("sign", s * unit / k, f"sign {s:g}/K") for s in SIGN_SCALES]
            + [("adam", a * unit, f"adam {a:g}") for a in ADAM_LRS])


def chosen(df: pd.DataFrame, margin: float = 0.03) -> pd.Series:
    """Per (space, K): the highest robust accuracy among candidates with clean >= backbone - margin."""
    mark = pd.Series(False, index=df.index)
    base = df[df["space"] == "-"]["clean"]
    if base.empty:
        return mark
    floor = base.iloc[0] - margin
    for _, group in df[df["space"] != "-"].groupby(["space", "budget"]):
        ok = group[group["clean"] >= floor - 1e-12]
        if len(ok):
            mark[ok.sort_values(["robust", "clean"], ascending=False).index[0]] = True
    return mark


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet4b", choices=["resnet4b", "resnet2b"])
    ap.add_argument("--eps", default="8/255", help="the attack's Linf radius")
    ap.add_argument("--eps-rev", default="16/255")
    ap.add_argument("--budgets", type=int, nargs="+", default=[1, 5, 40])
    ap.add_argument("--spaces", nargs="+", default=["x", "z"], choices=["x", "z"])
    ap.add_argument("--data", default=str(SHARED / "data" / "cifar10-jpeg"))
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--theta", default=None, help="reverse-z's theta (default: the committed shift theta of --model)")
    ap.add_argument("--modes", nargs="+", default=["unrolled"],
                    help="the gradients PGD-20 takes through the purifier (the robust figure is the per-image worst case "
                         "over them): unrolled (exact), bpda+eot, eot, bpda; exact PGD alone overrates Adam steps "
                         "(docs/robust-reverse section 13)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    robust, eps_rev = SHARED / "weights" / "robust", parse_number(args.eps_rev)
    common = [f"model.name={robust / 'models.py'}:{args.model}", f"model.weights={robust / (args.model + '.pth')}",
              f"data.root={args.data}", "data.split=train", f"data.n_examples={args.n}", "data.download=false",
              f"eps.Linf={args.eps}", "attacks=[none,pgd]", "attack_params.pgd.steps=20",
              f"attack_params.pgd.alpha={parse_number(args.eps) / 4}", "defense.restarts=1", f"defense.modes=[{','.join(args.modes)}]",
              "defense.attack_modes={}", "defense.unrolled_max_gb=8.0", f"defense.eps_rev={args.eps_rev}",
              f"defense.ssl_head={REPO / 'checkpoints' / f'ssl-head-{args.model}.pt'}",
              f"threads={args.threads}", "ray.num_workers=0", f"eval.batch_size={args.batch_size}", "device=cpu"]
    jobs = [("-", 0, None, None, "backbone")]
    for space in args.spaces:
        for k in args.budgets:
            jobs += [(space, k, rule, lr, label) for rule, lr, label in candidates(k, eps_rev if space == "x" else 1.0)]
    rows = []
    for space, k, rule, lr, label in jobs:
        overrides = list(common)
        if space == "-":
            overrides += ["defenses=[none]", "defense.budgets=[0]"]
        else:
            overrides += [f"defenses=[reverse-{space}]", f"defense.budgets=[{k}]", f"defense.reverse_steps={{{k}: [{rule}, {lr!r}]}}"]
            if space == "z":
                overrides.append(f"defense.reverse_theta={args.theta or REPO / THETAS[args.model]}")
        cfg = load_config(EVAL_DEFAULTS, None, overrides, OPEN_SECTIONS)
        res, _ = evaluate(cfg, progress=False)
        acc = dict(zip(res["attack"], res["accuracy"]))
        robust_acc = min(v for a, v in acc.items() if a != "none")
        theta = (args.theta or THETAS[args.model]) if space == "z" else "-"
        rows.append({"model": args.model, "attack_eps": args.eps, "eps_rev": args.eps_rev, "space": space.upper() if space != "-" else "-",
                     "theta": Path(theta).name if theta != "-" else "-",
                     "budget": k, "rule": rule or "-", "lr": lr if lr is not None else float("nan"), "candidate": label,
                     "clean": acc["none"], "robust": robust_acc, "robust_under": "pgd-20" + ("" if space == "-" else " " + "+".join(args.modes)),
                     "n": int(res["n"].iloc[0])})
        print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    df["chosen"] = chosen(df)
    tag = args.eps.split("/")[0]
    write_table(df, args.out or REPO / "docs" / "robust-reverse" / f"steps-{args.model}-linf{tag}.csv", args.n, args.data)


if __name__ == "__main__":
    main()
