"""Which way of learning theta pays off: each training variant, its training time, and the K at which Z
reaches what plain descent in X reaches at the reference budget.

For ``--task`` (``gan-cifar10`` or ``pose-cmu``; the reverse attack's variants are trained one by one with
``landscape train-theta --task reverse-cifar10`` and compared by ``bench/invert_variants.py``, see
``docs/ablation/reverse-cifar10/README.md``), each variant of the built-in list (method x width x
trajectory length x rule) is trained from scratch for ``--minutes`` of training time with the one
trainer (``landscape.trainer``), then evaluated on held-out targets: X and every theta are tuned per K
over the **same** candidate set (the task's ``invert.search``) on training targets; the table gives,
per variant, the held-out loss at K = 1, 10, 50, 200 with 95% intervals, the smallest K at which Z's
mean reaches X's at the reference budget (K = 200), and the step and wall-time ratios. ``--theta NAME=FILE``
adds a theta trained elsewhere (e.g. a longer run). Writes ``OUT/ablation.csv``, ``OUT/ablation.md`` and
``OUT/loss_vs_k.png``.

    python bench/landscape_ablation.py --task gan-cifar10 --minutes 4 --out docs/ablation/gan-cifar10 \\
        [--only NAME ...] [--theta long=results/theta/theta.pt] [--n 200] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from landscape.compare import solve_space, summarize  # noqa: E402
from landscape.io import atomic_write, atomic_write_text, resolve_path  # noqa: E402
from landscape.space import Space  # noqa: E402
from landscape.trainer import ThetaTrainer, TrainConfig, load_theta  # noqa: E402
from tasks.invert import candidates  # noqa: E402
from tasks.registry import TASKS, build_task  # noqa: E402

SHARED = Path(os.environ.get("LANDSCAPE_SHARED", REPO.parent / "shared"))
BUDGETS = [1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 100, 200]
COORD = dict(method="coordinate", rule="adam", lr_z=0.1, theta_lr=1e-4, weight_decay=0.01, collect_every=4,
             collect_batch=64, batch_size=64, buffer_size=20000, z_dim=128)
VARIANTS = {
    "gan-cifar10": {
        "unrolled w256 d2 T5 sgd (the earlier recipe)": dict(method="unrolled", batch_size=32, lr_z=30.0, rule="sgd",
                                                             theta_lr=1e-3, z_dim=None, buffer_size=4096,
                                                             collect_every=10, weight_decay=0.0),
        "coordinate w256 d2 T20 adam": dict(COORD, width=256, depth=2, collect_steps=20),
        "coordinate w768 d3 T20 adam": dict(COORD, width=768, depth=3, collect_steps=20),
        "coordinate w768 d3 T10 adam": dict(COORD, width=768, depth=3, collect_steps=10),
        "coordinate w768 d3 T20 sgd": dict(COORD, width=768, depth=3, collect_steps=20, rule="sgd", lr_z=30.0),
    },
    "pose-cmu": {
        "unrolled w256 d2 T10 adam (committed recipe)": {},
        "coordinate w256 d2 T30 adam": dict(COORD, width=256, depth=2, collect_steps=30, z_dim=64, lr_z=0.3),
        "coordinate w768 d3 T30 adam": dict(COORD, width=768, depth=3, collect_steps=30, z_dim=64, lr_z=0.3),
    },
}
METRIC = {"gan-cifar10": "mse", "pose-cmu": "mpjpe"}


def task_config(task: str, data: str | None) -> dict:
    t = TASKS[task]
    cfg = {"seed": 0, **{k: (dict(v) if isinstance(v, dict) else v) for k, v in t.defaults.items()}}
    if task == "gan-cifar10":
        cfg["data"] = dict(cfg["data"], root=data or str(SHARED / "data/cifar10-jpeg"), download=False)
    else:
        cfg["data"] = dict(cfg["data"], root=data or str(SHARED / "data/mocap-cmu"))
    return cfg


def steps_to(summary: pd.DataFrame, metric: str, value: float) -> int | None:
    g = summary[(summary.space == "Z") & (summary.metric == metric)].sort_values("budget")
    hit = g[g["mean"] <= value]
    return int(hit["budget"].iloc[0]) if len(hit) else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="gan-cifar10", choices=sorted(VARIANTS))
    ap.add_argument("--minutes", type=float, default=4.0, help="training time per variant")
    ap.add_argument("--only", nargs="*", help="names (or prefixes) of the variants to run")
    ap.add_argument("--theta", action="append", default=[], help="NAME=FILE: also evaluate a theta trained elsewhere")
    ap.add_argument("--n", type=int, default=200, help="held-out targets")
    ap.add_argument("--n-tune", type=int, default=64)
    ap.add_argument("--data")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    task, metric = args.task, METRIC[args.task]
    out = Path(args.out or REPO / "docs" / "ablation" / task)
    problem = build_task(task, task_config(task, args.data))
    heldout = problem.heldout(args.n)
    tune = problem.sample_targets(args.n_tune, torch.Generator().manual_seed(1))
    search = candidates(TASKS[task].invert["invert"]["search"])
    log = lambda m: print(m, flush=True)  # noqa: E731
    log(f"{task}: {args.n} held-out targets; X and every Z tuned per K over {search}")
    per_x = solve_space(Space(problem), heldout, tune, BUDGETS, search, batch_size=args.n, metric=metric)
    x = summarize(per_x)
    x_ref = x[(x.metric == metric) & (x.budget == 200)].iloc[0]
    log(f"X at K=200: {metric} {x_ref['mean']:.4g} [{x_ref.ci_low:.4g}, {x_ref.ci_high:.4g}] ({x_ref.rule} {x_ref.lr:g})")

    thetas = {}
    for name, overrides in VARIANTS[task].items():
        if args.only and not any(name.startswith(o) for o in args.only):
            continue
        tcfg = TrainConfig.from_dict({**TASKS[task].theta, "iterations": 10 ** 7, "checkpoint_every": 10 ** 7,
                                      **overrides, "seed": 0})
        log(f"training {name} for {args.minutes:g} min")
        trainer = ThetaTrainer(problem, tcfg)
        trainer.train(progress=False, seconds=60 * args.minutes)
        thetas[name] = (trainer.theta.eval().requires_grad_(False), trainer.iteration, trainer.elapsed)
    for spec in args.theta:
        name, path = spec.split("=", 1)
        theta, tc = load_theta(resolve_path(path))
        thetas[name] = (theta, None, None)

    rows, curves = [], {"X (plain, tuned per K)": x[x.metric == metric]}
    for name, (theta, iterations, seconds) in thetas.items():
        z = summarize(solve_space(Space(problem, theta), heldout, tune, BUDGETS, search, batch_size=args.n,
                                  metric=metric))
        zm = z[z.metric == metric].set_index("budget")
        curves[name] = z[z.metric == metric]
        k = steps_to(z, metric, x_ref["mean"])
        row = {"variant": name, "train_iterations": iterations,
               "train_minutes": None if seconds is None else round(seconds / 60, 1),
               "params_M": round(sum(p.numel() for p in theta.parameters()) / 1e6, 2),
               "K_to_reach_X200": k, "step_ratio": None if k is None else round(200 / k, 1)}
        if k is not None:
            xs = x[(x.metric == metric) & (x.budget == 200)]["seconds_per_step"].iloc[0] * 200
            row["wall_ratio"] = round(xs / (zm.loc[k, "seconds_per_step"] * k), 1)
        for kk in (1, 10, 50, 200):
            row[f"{metric}@K={kk}"] = f"{zm.loc[kk, 'mean']:.4g} [{zm.loc[kk, 'ci_low']:.4g}, {zm.loc[kk, 'ci_high']:.4g}]"
        row["Z@200 vs X@200"] = "not worse" if zm.loc[200, "mean"] <= x_ref["mean"] else "WORSE"
        rows.append(row)
        log(f"{name}: reaches X's K=200 {metric} at K={k}; Z@200 {zm.loc[200, 'mean']:.4g}")
    xrow = {"variant": "X (plain, tuned per K)"}
    for kk in (1, 10, 50, 200):
        r = x[(x.metric == metric) & (x.budget == kk)].iloc[0]
        xrow[f"{metric}@K={kk}"] = f"{r['mean']:.4g} [{r.ci_low:.4g}, {r.ci_high:.4g}]"
    table = pd.DataFrame([xrow] + rows)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "ablation.csv", lambda p: table.to_csv(p, index=False))
    md = (f"# {task}: learned-landscape ablation\n\nMeasured by `python bench/landscape_ablation.py --task {task} "
          f"--minutes {args.minutes:g}` on {args.n} held-out targets ({metric}); every space tuned per K over "
          f"{len(search)} (rule, lr) candidates on {args.n_tune} training targets.\n\n" + table.astype(object).where(table.notna(), "").to_markdown(index=False)
          + "\n")
    atomic_write_text(out / "ablation.md", md)
    plot(curves, metric, out / "loss_vs_k.png", task)
    print(table.to_string(index=False))
    print(f"wrote {out / 'ablation.csv'}, {out / 'ablation.md'}, {out / 'loss_vs_k.png'}")


def plot(curves: dict, metric: str, path: Path, task: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for i, (name, g) in enumerate(curves.items()):
        g = g.sort_values("budget")
        style = dict(color="black", lw=2.5) if name.startswith("X") else dict(color=f"C{i}")
        ax.plot(g["budget"], g["mean"], "o-", ms=3, label=name, **style)
        ax.fill_between(g["budget"], g["ci_low"], g["ci_high"], alpha=0.12, color=style["color"])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("descent steps K")
    ax.set_ylabel(f"held-out {metric}")
    ax.set_title(f"{task}: each space tuned per K over the same candidates")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=120))
    plt.close(fig)


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"({(time.perf_counter() - t0) / 60:.1f} min)")
