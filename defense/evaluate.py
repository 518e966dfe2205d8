"""The evaluation grid: every (model, defense, landscape, budget, attack) on the same images.

Work is done per image and kept per image (``per_image``), so a worst case over a suite of
attacks counts an image as robust only if it survives them all, and later shards of the
grid can be merged without changing the figures. Each batch's seed derives from the run
seed and the batch's identity, so results do not depend on how the work is split.
"""
from __future__ import annotations

import json
import time
import zlib
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from attacks import NO_ATTACK, get_attack
from attacks.adaptive import MODES, AdaptiveError, Defended, surrogate
from attacks.base import BoundAttack
from landscape.stats import wilson_interval

from .classifiers import build_classifier
from .data import ImageSet, load_cifar10, select_subset
from .defenses import DEFENSES, DefenseFactory

RESULT_COLUMNS = ["model", "defense", "landscape", "budget", "attack", "norm", "eps", "n", "correct",
                  "accuracy", "ci_low", "ci_high", "seconds", "data", "steps", "params"]


class EvalError(ValueError):
    """The evaluation config asks for something that does not exist."""


def _attack_steps(attack) -> int:
    """Iterations of an attack (queries for Square, 1 for FGSM, 0 for none): for the report's sanity checks."""
    if attack is None:
        return 0
    p = attack.params
    return int(p.get("steps") or p.get("n_queries") or 1) * int(p.get("restarts", 1))


def derive_seed(*parts) -> int:
    """A stable 31-bit seed from the run seed and the identity of a piece of work."""
    return zlib.crc32("|".join(str(p) for p in parts).encode()) & 0x7FFFFFFF


def pick_device(name: str | None) -> torch.device:
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise EvalError(f"device={name} asked for, but CUDA is not available here; use device=cpu")
    return torch.device(name)


@dataclass
class Unit:
    """One cell of the grid: a defended model at budget K under one attack in one adaptive mode."""

    defense: str
    landscape: str
    budget: int
    attack_name: str
    attack: BoundAttack | None
    mode: str | None = None


def build_units(cfg: dict) -> list[Unit]:
    defenses = cfg.get("defenses") or ["none"]
    for d in defenses:
        if d not in DEFENSES:
            raise EvalError(f"unknown defense {d!r}; valid choices: {', '.join(DEFENSES)}")
    names = cfg.get("attacks") or [NO_ATTACK]
    if isinstance(names, str):
        names = [names]
    if len(set(names)) != len(names):
        raise EvalError(f"attacks lists a name twice: {names}")
    params = cfg.get("attack_params") or {}
    for key in params:
        if key not in names:
            get_attack(key, params[key], cfg.get("eps"))  # unknown names raise; known-but-unused are checked
    attacks = {n: get_attack(n, params.get(n), cfg.get("eps")) for n in names}
    dcfg = cfg.get("defense") or {}
    budgets = [int(k) for k in dcfg.get("budgets", [0])]
    if any(k < 0 for k in budgets):
        raise EvalError(f"defense.budgets must be >= 0, got {budgets}")
    modes = dcfg.get("modes") or ["nonadaptive"]
    for m in modes:
        if m not in MODES:
            raise EvalError(f"unknown adaptive mode {m!r} in defense.modes; valid: {', '.join(MODES)}")
    units = []
    for d in defenses:
        if d == "none":
            units += [Unit(d, "none", 0, n, attacks[n]) for n in names]
            continue
        for k in budgets:
            for n in names:
                if attacks[n] is None:
                    units.append(Unit(d, d[-1], k, n, None))
                else:
                    units += [Unit(d, d[-1], k, f"{n}+{m}", attacks[n], m) for m in modes]
    return units


def attack_correct(model: nn.Module, unit: Unit, data: ImageSet, batch_size: int, seed: int,
                   device: torch.device, bar=None, purifier: nn.Module | None = None, draws: int = 1,
                   max_gb: float = 4.0) -> torch.Tensor:
    """Per-image correctness (bool) of ``model`` (behind ``purifier``, if any) under ``unit``'s attack."""
    out = torch.zeros(len(data), dtype=torch.bool)
    deployed = model if purifier is None else Defended(model, purifier)
    target = None
    if unit.attack is not None:
        target = surrogate(model, purifier, unit.mode or "nonadaptive", draws, max_gb,
                           batch=data.images[:batch_size].to(device))
    for start in range(0, len(data), batch_size):
        x = data.images[start:start + batch_size].to(device)
        y = data.labels[start:start + batch_size].to(device)
        batch_seed = derive_seed(seed, unit.defense, unit.landscape, unit.budget, unit.attack_name,
                                 int(data.indices[start]))
        if unit.attack is not None:
            x = unit.attack.run(target, x, y, batch_seed)
        torch.manual_seed(batch_seed + 1)  # the deployed purifier's own random starts
        with torch.no_grad():
            out[start:start + len(y)] = (deployed(x).argmax(1) == y).cpu()
        if bar is not None:
            bar.update(len(y))
    return out


def aggregate(per_image: pd.DataFrame, meta: pd.DataFrame) -> pd.DataFrame:
    """One row per grid cell, plus a ``suite[...]`` row per (defense, norm, eps) with several attacks."""
    keys = ["model", "defense", "landscape", "budget", "attack"]
    counts = per_image.groupby(keys, sort=False)["correct"].agg(["size", "sum"]).reset_index()
    rows = counts.merge(meta, on=keys, how="left")
    rows = rows.rename(columns={"size": "n", "sum": "correct"})

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
        survived = sel.groupby("index")["correct"].all()
        suites.append({"model": model, "defense": defense, "landscape": landscape, "budget": budget,
                       "attack": f"suite[{','.join(names)}]", "norm": norm, "eps": eps, "n": len(survived),
                       "correct": int(survived.sum()), "seconds": float(group["seconds"].sum()),
                       "data": group["data"].iloc[0], "steps": 0, "params": "{}"})
    if suites:
        rows = pd.concat([rows, pd.DataFrame(suites)], ignore_index=True)
    rows["n"] = rows["n"].astype(int)
    rows["correct"] = rows["correct"].astype(int)
    rows["accuracy"] = rows["correct"] / rows["n"]
    ci = [wilson_interval(c, n) for c, n in zip(rows["correct"], rows["n"])]
    rows["ci_low"] = [lo for lo, _ in ci]
    rows["ci_high"] = [hi for _, hi in ci]
    return rows[RESULT_COLUMNS]


def evaluate(cfg: dict, progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run the whole grid of ``cfg`` in this process; returns (results, per-image records)."""
    seed = int(cfg.get("seed", 0))
    torch.manual_seed(seed)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    units = build_units(cfg)  # check the grid before loading anything heavy
    batch_size = int(cfg["eval"]["batch_size"])
    if batch_size < 1:
        raise EvalError(f"eval.batch_size must be >= 1, got {batch_size}")
    device = pick_device(cfg.get("device"))
    dcfg = cfg["data"]
    data = select_subset(load_cifar10(dcfg.get("root"), dcfg.get("split", "test"), bool(dcfg.get("download", True))),
                         dcfg.get("n_examples"), seed, dcfg.get("selection", "random"))
    model = build_classifier(cfg["model"], download=bool(dcfg.get("download", True))).to(device)
    model_name = str(cfg["model"]["name"])

    factory = DefenseFactory(cfg.get("defense") or {}, device)
    dcfg = cfg.get("defense") or {}
    records, meta, skipped = [], [], []
    bar = tqdm(total=len(units) * len(data), desc="evaluating", unit="img", disable=not progress)
    for unit in units:
        bar.set_postfix_str(f"{unit.defense}/K={unit.budget}/{unit.attack_name}")
        purifier = factory.purifier(unit.defense, unit.budget)
        start = time.perf_counter()
        try:
            correct = attack_correct(model, unit, data, batch_size, seed, device, bar, purifier,
                                     int(dcfg.get("eot_draws", 1)), float(dcfg.get("unrolled_max_gb", 4.0)))
        except AdaptiveError as exc:
            skipped.append({"defense": unit.defense, "budget": unit.budget, "attack": unit.attack_name,
                            "reason": str(exc)})
            bar.write(f"skipped {unit.defense} K={unit.budget} {unit.attack_name}: {exc}")
            bar.update(len(data))
            continue
        seconds = time.perf_counter() - start
        records.append(pd.DataFrame({"model": model_name, "defense": unit.defense, "landscape": unit.landscape,
                                     "budget": unit.budget, "attack": unit.attack_name,
                                     "index": data.indices.numpy(), "label": data.labels.numpy(),
                                     "correct": correct.numpy()}))
        meta.append({"model": model_name, "defense": unit.defense, "landscape": unit.landscape, "budget": unit.budget,
                     "attack": unit.attack_name, "norm": unit.attack.norm if unit.attack else "none",
                     "eps": unit.attack.eps if unit.attack else 0.0, "seconds": seconds, "data": data.source,
                     "steps": _attack_steps(unit.attack),
                     "params": json.dumps(unit.attack.params, sort_keys=True) if unit.attack else "{}"})
    bar.close()
    per_image = pd.concat(records, ignore_index=True)
    results = aggregate(per_image, pd.DataFrame(meta))
    results.attrs["skipped"] = skipped
    return results, per_image
