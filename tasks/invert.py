"""``landscape invert``: X against learned Z at every budget, as a table and a plot."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from landscape.compare import compare_spaces
from landscape.config import dump_config
from landscape.io import atomic_write, atomic_write_text, resolve_path
from landscape.trainer import load_theta
from tasks.registry import build_task, get_task


def candidates(spec: dict, scale: float = 1.0) -> list[tuple]:
    """(rule, lr) pairs; ``scale``: X's natural step size (``problem.step_scale``), so one grid serves both spaces."""
    return [(rule, float(lr) * scale) for rule, lrs in spec.items() for lr in lrs]


def plot_metric_vs_budget(summary: pd.DataFrame, metric: str, path: Path, title: str, ylog: bool = True) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for space, label, color in (("X", "plain space (X)", "tab:gray"), ("Z", "learned landscape (Z)", "tab:red")):
        g = summary[(summary["space"] == space) & (summary["metric"] == metric)].sort_values("budget")
        if g.empty:
            continue
        ax.plot(g["budget"], g["mean"], "o-", color=color, label=label)
        ax.fill_between(g["budget"], g["ci_low"], g["ci_high"], color=color, alpha=0.2)
    ax.set_xscale("log")
    if ylog:
        ax.set_yscale("log")
    ax.set_xlabel("descent steps K")
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=120))
    plt.close(fig)


def largest_budget_check(summary: pd.DataFrame, metric: str) -> str:
    """Does the learned space keep what X reaches? Z's mean at the largest K against X's (lower is better)."""
    k = int(summary["budget"].max())
    at = summary[(summary.budget == k) & (summary.metric == metric)].set_index("space")["mean"]
    if "Z" not in at:
        return f"K={k}: X {metric} {at['X']:.4g} (no learned space)"
    verdict = "not worse" if at["Z"] <= at["X"] else "WORSE: theta loses what X reaches"
    return f"K={k}: Z {metric} {at['Z']:.4g} vs X {at['X']:.4g}: {verdict}"


def run_invert(task: str, cfg: dict, out: Path, progress: bool = True) -> pd.DataFrame:
    problem = build_task(task, cfg)            # data and models first: a bad path leaves no folder behind
    theta, train_cfg = load_theta(resolve_path(cfg["theta"]["weights"]))
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", dump_config(cfg))
    inv = cfg["invert"]
    gen = torch.Generator().manual_seed(int(cfg["seed"]) + 1)
    tune_targets = problem.sample_targets(int(inv["n_tune"]), gen)
    heldout = problem.heldout(int(inv["n_images"]))
    log = print if progress else None
    per_example, summary = compare_spaces(problem, theta, heldout, tune_targets, inv["budgets"],
                                          candidates(inv["search"], float(problem.step_scale)), candidates(inv["search"]),
                                          seed=int(cfg["seed"]), batch_size=int(inv["batch_size"]), progress=log)
    summary.insert(0, "task", task)
    atomic_write(out / "per_example.parquet", lambda p: per_example.to_parquet(p, index=False))
    atomic_write(out / "summary.parquet", lambda p: summary.to_parquet(p, index=False))
    atomic_write(out / "summary.csv", lambda p: summary.to_csv(p, index=False))
    main_metric = inv["plot_metric"]
    if log:
        log(largest_budget_check(summary, main_metric))
    plot_metric_vs_budget(summary, main_metric, out / f"{main_metric}_vs_budget.png", f"{task}: {main_metric} vs K")
    analyses = get_task(task).analyses
    if analyses is not None and cfg["analyses"]["run"]:
        analyses(problem, theta, summary, cfg, out, log=print if progress else (lambda *_: None))
    return summary
