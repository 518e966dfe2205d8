"""``landscape report DIR --entry FILE``: the run's figures in the fields RobustBench entries use.

RobustBench (Croce et al. 2021) describes each model by a small JSON record (``robustbench.utils.ModelInfo``:
name, dataset, eps, clean_acc, autoattack_acc, number_forward_passes, ...; accuracies in percent). One
record is written per defended cell of the runs (model, defense, landscape, budget K), each from that
run's own rows, never re-measured: ``clean_acc`` is clean accuracy after purification, ``autoattack_acc``
the lowest AutoAttack accuracy over the modes it was run in (``null`` where AutoAttack was not run),
(any of ``autoattack``, ``autoattack-original``, ``autoattack-rand``), ``number_forward_passes`` one classifier pass plus the purifier's counted objective evaluations per
image. The ``landscape`` field holds what RobustBench has no field for (K, R, the space, the worst case
over the run's whole suite, the attacks behind it).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import yaml

from evaluator.report import eps_label, split_attack
from landscape.io import atomic_write_text

AUTOATTACKS = ("autoattack", "autoattack-original", "autoattack-rand")


def _restarts(run_dir: Path) -> int | None:
    cfg = run_dir / "config.yaml"
    if not cfg.is_file():
        return None
    r = (yaml.safe_load(cfg.read_text()) or {}).get("defense", {}).get("restarts")
    return None if r is None else int(r)


def entries(df: pd.DataFrame, dirs) -> list[dict]:
    """One RobustBench-style record per (run, model, defense, landscape, budget) that has clean accuracy."""
    folders = {Path(d).name: Path(d) for d in dirs}
    out = []
    cell = ["run", "model", "defense", "landscape", "budget"]
    for key, g in df.groupby(cell, sort=True):
        run, model, defense, landscape, budget = key
        clean = g[g["attack"] == "none"]
        if clean.empty:
            continue
        base = g["attack"].map(lambda a: split_attack(a)[0])
        aa = g[base.isin(AUTOATTACKS)]
        attacked = g[(g["attack"] != "none") & ~g["attack"].str.startswith("suite[")]
        suite = g[g["attack"].str.startswith("suite[")]
        worst = suite if not suite.empty else attacked
        threat = attacked.iloc[0] if not attacked.empty else None
        fwd = float(clean["purifier_forward"].iloc[0]) if "purifier_forward" in clean else float("nan")
        bwd = float(clean["purifier_backward"].iloc[0]) if "purifier_backward" in clean else float("nan")
        restarts = None if defense == "none" else _restarts(folders.get(run, Path(run)))
        out.append({
            "name": model if defense == "none" else f"{model} + {defense} (K={int(budget)})",
            "dataset": "cifar10",
            "threat_model": None if threat is None else threat["norm"],
            "eps": None if threat is None else eps_label(threat["norm"], float(threat["eps"])),
            "clean_acc": f"{100 * float(clean['accuracy'].iloc[0]):.2f}",
            "autoattack_acc": None if aa.empty else f"{100 * float(aa['accuracy'].min()):.2f}",
            "number_forward_passes": None if math.isnan(fwd) else int(round(1 + fwd)),
            "architecture": model,
            "footnote": (f"n = {int(clean['n'].iloc[0])} images ({clean['data'].iloc[0] if 'data' in clean else 'unknown data'}); "
                         f"measured by landscape eval, run {run}"
                         + ("; AutoAttack ran only non-adaptively (on the bare classifier), not through the purifier: "
                            "see landscape.worst_case_acc" if not aa.empty and defense != "none"
                            and set(aa["attack"].map(lambda a: split_attack(a)[1])) <= {"nonadaptive"} else "")),
            "landscape": {
                "defense": defense, "space": landscape, "budget_K": int(budget), "restarts_R": restarts,
                "purifier_forward_per_image": None if math.isnan(fwd) else fwd,
                "purifier_backward_per_image": None if math.isnan(bwd) else bwd,
                "autoattack_rows": sorted(aa["attack"]),
                "worst_case_acc": None if worst.empty else f"{100 * float(worst['accuracy'].min()):.2f}",
                "worst_case_attacks": None if worst.empty else str(worst.sort_values("accuracy")["attack"].iloc[0]),
            },
        })
    return out


def write_entries(df: pd.DataFrame, dirs, path: str | Path) -> Path:
    path = Path(path)
    atomic_write_text(path, json.dumps(entries(df, dirs), indent=2) + "\n")
    return path
