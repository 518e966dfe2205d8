"""Plain descent in X against descent through theta in Z, at every budget K, each tuned fairly.

For each space, every candidate (rule, step size) is run once to the largest budget on
*tuning* targets; the loss after K steps is read off the same run for every K, and each K
gets the candidate that is best for it. The held-out targets are then solved with each
chosen candidate, and the task's per-example metrics are taken after exactly K steps.
"""
from __future__ import annotations

import time
from typing import Callable, Sequence

import pandas as pd
import torch

from .problem import InversionProblem, Target, target_index, target_len
from .space import Space
from .stats import mean_interval


def _run_all_budgets(space: Space, target, start, budgets, rule, lr, batch_size):
    """Per-example metrics after each K in ``budgets`` (dict K -> dict name -> tensor) and wall time per step."""
    kmax = max(budgets)
    out = {k: {} for k in budgets}
    seconds = 0.0
    n = target_len(target)
    for s in range(0, n, batch_size):
        tgt = target_index(target, slice(s, s + batch_size))
        t0 = time.perf_counter()
        res = space.descend(tgt, start[s:s + batch_size], kmax, lr, rule, keep_trajectory=True)
        seconds += time.perf_counter() - t0
        for k in budgets:
            with torch.no_grad():
                x = space.to_x(res.trajectory[k], tgt)
            for name, val in space.problem.metrics(x, tgt).items():
                out[k].setdefault(name, []).append(val.detach().cpu())
    return {k: {name: torch.cat(v) for name, v in d.items()} for k, d in out.items()}, seconds / max(kmax, 1) / n


def tune(space: Space, target: Target, start: torch.Tensor, budgets: Sequence[int], candidates: Sequence[tuple],
         batch_size: int = 256, metric: str | None = None) -> dict:
    """For each K, the (rule, lr) candidate with the lowest mean ``metric`` on the tuning targets."""
    scores = {}
    for rule, lr in candidates:
        res, _ = _run_all_budgets(space, target, start, budgets, rule, lr, batch_size)
        key = metric or next(iter(res[budgets[0]]))
        for k in budgets:
            val = float(torch.nan_to_num(res[k][key].double(), nan=float("inf")).mean())
            scores.setdefault(k, {})[(rule, lr)] = val
    return {k: min(s, key=s.get) for k, s in scores.items()}


def solve_space(space: Space, heldout: Target, tune_targets: Target, budgets: Sequence[int],
                candidates: Sequence[tuple], seed: int = 0, batch_size: int = 256, metric: str | None = None,
                progress: Callable[[str], None] | None = None) -> pd.DataFrame:
    """One space: tune (rule, lr) per K on ``tune_targets``, then per-example metrics on ``heldout``."""
    # The objective's own randomness (e.g. the reverse attack's augmentations) comes from torch's global
    # stream: fix it per space, so X's figures do not depend on what ran before (e.g. which theta was loaded)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return _solve_space(space, heldout, tune_targets, budgets, candidates, seed, batch_size, metric, progress)


def _solve_space(space, heldout, tune_targets, budgets, candidates, seed, batch_size, metric, progress):
    budgets = sorted(int(k) for k in budgets)
    gen = lambda: torch.Generator().manual_seed(seed)  # noqa: E731  same starts for every candidate
    if progress:
        progress(f"tuning {space.name} over {len(candidates)} step rules/sizes")
    chosen = tune(space, tune_targets, space.init(target_len(tune_targets), gen()), budgets, candidates, batch_size,
                  metric)
    start = space.init(target_len(heldout), gen())
    rows = []
    for (rule, lr) in sorted(set(chosen.values())):
        ks = [k for k in budgets if chosen[k] == (rule, lr)]
        if progress:
            progress(f"{space.name}: {rule} lr={lr:g} for K in {ks}")
        res, sec_per_step = _run_all_budgets(space, heldout, start, ks, rule, lr, batch_size)
        for k in ks:
            for name, vals in res[k].items():
                for i, v in enumerate(vals.tolist()):
                    rows.append((space.name, k, rule, lr, name, i, v, sec_per_step))
    return pd.DataFrame(rows, columns=["space", "budget", "rule", "lr", "metric", "example", "value",
                                       "seconds_per_step"])


def compare_spaces(problem: InversionProblem, theta, heldout: Target, tune_targets: Target, budgets: Sequence[int],
                   x_candidates: Sequence[tuple], z_candidates: Sequence[tuple], seed: int = 0, batch_size: int = 256,
                   metric: str | None = None, progress: Callable[[str], None] | None = None
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-example metrics (long table) and a summary (mean and 95% interval per space, K, metric)."""
    spaces = [(Space(problem), x_candidates)] + ([(Space(problem, theta), z_candidates)] if theta is not None else [])
    per_example = pd.concat([solve_space(space, heldout, tune_targets, budgets, candidates, seed, batch_size, metric,
                                         progress) for space, candidates in spaces], ignore_index=True)
    return per_example, summarize(per_example)


def summarize(per_example: pd.DataFrame) -> pd.DataFrame:
    out = []
    for (space, k, metric), g in per_example.groupby(["space", "budget", "metric"], sort=True):
        mean, lo, hi = mean_interval(g["value"].tolist())
        out.append({"space": space, "budget": k, "metric": metric, "rule": g["rule"].iloc[0], "lr": g["lr"].iloc[0],
                    "n": len(g), "mean": mean, "ci_low": lo, "ci_high": hi,
                    "seconds_per_step": g["seconds_per_step"].iloc[0]})
    return pd.DataFrame(out)


def steps_to_reach(summary: pd.DataFrame, metric: str, target_value: float, space: str = "Z",
                   lower_is_better: bool = True) -> int | None:
    """The smallest budget at which ``space`` reaches ``target_value`` of ``metric`` (None if never)."""
    g = summary[(summary["space"] == space) & (summary["metric"] == metric)].sort_values("budget")
    for k, v in zip(g["budget"], g["mean"]):
        if (v <= target_value) if lower_is_better else (v >= target_value):
            return int(k)
    return None
