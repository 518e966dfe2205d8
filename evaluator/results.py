"""Writing an evaluation's outputs: every file lands atomically or not at all."""
from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path

import pandas as pd

from attacks import NO_ATTACK
from landscape.config import dump_config
from landscape.io import atomic_write, atomic_write_text
from landscape.stats import wilson_interval

RESULT_COLUMNS = ["model", "defense", "landscape", "budget", "attack", "norm", "eps", "n", "correct",
                  "accuracy", "ci_low", "ci_high", "runs", "acc_mean", "acc_std", "acc_worst_run", "seconds",
                  "seconds_per_image", "purifier_forward", "purifier_backward", "attack_forward", "attack_backward",
                  "data", "steps", "params"]
#: per-image compute columns, counted: the deployed purifier's objective evaluations and gradients, and the
#: attack's forward passes and input gradients of the model it attacks (0 for clean accuracy)
PASS_COLUMNS = ["purifier_forward", "purifier_backward", "attack_forward", "attack_backward"]
#: wall time, the one thing two runs of the same command may disagree on: ``seconds`` is the cell's total
#: (every image, every run), ``seconds_per_image`` the wall time of one image in one run (a suite: the sum of
#: its members', the time its attacker spends on one image)
TIMING_COLUMNS = ["seconds", "seconds_per_image"]


def seconds_per_image(rows: pd.DataFrame) -> pd.Series:
    """A cell's wall time of one image in one run: its total over n images and its runs (1 if unrecorded)."""
    return rows["seconds"] / (rows["n"] * (rows["runs"] if "runs" in rows else 1))



PACKAGES = ("landscape-defense", "torch", "torchvision", "torchattacks", "robustbench", "pyautoattack", "ray",
            "numpy", "pandas", "pyarrow")


def package_versions() -> dict:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _run_stats(per_run: pd.Series) -> dict:
    """Accuracies of the repeats of one cell: how many, their mean, std (NaN for one) and the worst."""
    return {"runs": int(len(per_run)), "acc_mean": float(per_run.mean()),
            "acc_std": float(per_run.std()) if len(per_run) > 1 else float("nan"), "acc_worst_run": float(per_run.min())}


def aggregate(per_image: pd.DataFrame, meta: pd.DataFrame) -> pd.DataFrame:
    """One row per grid cell, plus a ``suite[...]`` row per (defense, norm, eps) with several attacks.

    ``per_image`` has a ``run`` column (``results_from_records`` gives older records run 0). With repeats
    (``runs=N``) an image counts as correct only if it was in every
    run (``correct``, ``accuracy`` and the interval are that per-image worst case); ``acc_mean``,
    ``acc_std`` and ``acc_worst_run`` describe the runs' own accuracies."""
    keys = ["model", "defense", "landscape", "budget", "attack"]
    worst = per_image.groupby(keys + ["index"], sort=False)["correct"].all().reset_index()
    counts = worst.groupby(keys, sort=False)["correct"].agg(["size", "sum"]).reset_index()
    per_run = per_image.groupby(keys + ["run"], sort=False)["correct"].mean()
    stats = pd.DataFrame([{**dict(zip(keys, k)), **_run_stats(g)} for k, g in per_run.groupby(level=keys, sort=False)])
    rows = counts.merge(stats, on=keys, how="left").merge(meta, on=keys, how="left")
    rows = rows.rename(columns={"size": "n", "sum": "correct"})
    rows["seconds_per_image"] = seconds_per_image(rows)

    suites = []
    attacked = rows[rows["attack"] != NO_ATTACK]
    for (model, defense, landscape, budget, norm, eps), group in attacked.groupby(
            ["model", "defense", "landscape", "budget", "norm", "eps"], sort=False):
        if len(group) < 2:
            continue
        names = list(group["attack"])
        sel = per_image[(per_image["model"] == model) & (per_image["defense"] == defense)
                        & (per_image["landscape"] == landscape) & (per_image["budget"] == budget)
                        & per_image["attack"].isin(names)]
        survived = sel.groupby("index")["correct"].all()   # every attack, every run
        # run r of the suite: each member's run r (a member that was not repeated: its one run)
        accs = []
        for r in sorted(sel["run"].unique()):
            parts = [g[g["run"] == (r if r in set(g["run"]) else 0)] for _, g in sel.groupby("attack")]
            accs.append(float(pd.concat(parts).groupby("index")["correct"].all().mean()))
        suites.append({"model": model, "defense": defense, "landscape": landscape, "budget": budget,
                       "attack": f"suite[{','.join(names)}]", "norm": norm, "eps": eps, "n": len(survived),
                       "correct": int(survived.sum()), **_run_stats(pd.Series(accs)),
                       "seconds": float(group["seconds"].sum()),
                       "seconds_per_image": float(group["seconds_per_image"].sum()),
                       "purifier_forward": float(group["purifier_forward"].max()),
                       "purifier_backward": float(group["purifier_backward"].max()),
                       # the suite's attacker ran every member on every image (no early stop across members)
                       "attack_forward": float(group["attack_forward"].sum()),
                       "attack_backward": float(group["attack_backward"].sum()),
                       "data": group["data"].iloc[0], "steps": 0, "params": "{}"})
    if suites:
        rows = pd.concat([rows, pd.DataFrame(suites)], ignore_index=True)
    rows["n"] = rows["n"].astype(int)
    rows["correct"] = rows["correct"].astype(int)
    rows["runs"] = rows["runs"].astype(int)
    rows["accuracy"] = rows["correct"] / rows["n"]
    ci = [wilson_interval(c, n) for c, n in zip(rows["correct"], rows["n"])]
    rows["ci_low"] = [lo for lo, _ in ci]
    rows["ci_high"] = [hi for _, hi in ci]
    return rows[RESULT_COLUMNS]


def results_from_records(per_image: pd.DataFrame, cells: pd.DataFrame, skipped: list = ()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Results (one row per cell, in the grid's order) and the per-image records sorted the same way.

    ``cells``: one row per grid cell with its attack's settings (``EvalContext.meta``)."""
    keys = ["model", "defense", "landscape", "budget", "attack"]
    for col in PASS_COLUMNS:   # records written before the pass counter had none: NaN (not counted, not zero)
        if col not in per_image:
            per_image = per_image.assign(**{col: float("nan")})
    grouped = per_image.groupby(keys, sort=False)
    seconds = grouped["seconds"].sum().reset_index().merge(grouped[PASS_COLUMNS].mean().reset_index(), on=keys)
    meta = cells.merge(seconds, on=keys, how="inner")
    order = {key: i for i, key in enumerate(cells[keys].itertuples(index=False, name=None))}
    per_image = per_image.assign(_order=[order[t] for t in per_image[keys].itertuples(index=False, name=None)])
    # records written before repeats existed (no column, or NaN beside newer shards): run 0
    per_image = per_image.assign(run=per_image["run"].fillna(0).astype(int) if "run" in per_image else 0)
    per_image = per_image.sort_values(["_order", "run", "index"], kind="stable").drop(columns="_order").reset_index(drop=True)
    results = aggregate(per_image.drop(columns=["seconds", "shard", *PASS_COLUMNS], errors="ignore"), meta)
    results.attrs["skipped"] = list(skipped)
    return results, per_image


def write_results(out_dir: str | Path, results: pd.DataFrame, per_image: pd.DataFrame, cfg: dict | None = None) -> Path:
    """``versions.json``, ``per_image.parquet``, then ``results.parquet`` and ``results.csv`` (and
    ``config.yaml`` when ``cfg`` is given; ``landscape eval`` writes it before the first shard)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg is not None:
        atomic_write_text(out / "config.yaml", dump_config(cfg))
    atomic_write_text(out / "versions.json", json.dumps(package_versions(), indent=2) + "\n")
    atomic_write(out / "per_image.parquet", lambda p: per_image.to_parquet(p, index=False))
    skipped = results.attrs.get("skipped") or []
    if skipped:
        atomic_write(out / "skipped.csv", lambda p: pd.DataFrame(skipped).to_csv(p, index=False))
    results = results.copy()
    results.attrs = {}
    atomic_write(out / "results.parquet", lambda p: results.to_parquet(p, index=False))
    atomic_write(out / "results.csv", lambda p: results.to_csv(p, index=False))
    return out / "results.csv"


def format_table(results: pd.DataFrame) -> str:
    view = results.copy()
    view["eps"] = view["eps"].map(lambda e: f"{e * 255:.3g}/255" if 0 < e < 0.25 else f"{e:.3g}")
    view["accuracy"] = view["accuracy"].map(lambda a: f"{100 * a:.2f}%")
    view["95% CI"] = [f"[{100 * lo:.1f}, {100 * hi:.1f}]" for lo, hi in zip(results["ci_low"], results["ci_high"])]
    view["seconds"] = view["seconds"].map(lambda s: f"{s:.1f}")
    cols = ["model", "defense", "landscape", "budget", "attack", "norm", "eps", "n", "correct", "accuracy", "95% CI",
            "seconds"]
    return view[cols].to_string(index=False)
