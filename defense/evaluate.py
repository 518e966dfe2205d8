"""The evaluation grid: every (model, defense, landscape, budget, attack) on the same images.

Work is done per image and kept per image (``per_image``), so a worst case over a suite of
attacks counts an image as robust only if it survives them all, and later shards of the
grid can be merged without changing the figures. Each batch's seed derives from the run
seed and the batch's identity, so results do not depend on how the work is split.
"""
from __future__ import annotations

import time
import zlib
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from attacks import NO_ATTACK, get_attack
from attacks.base import BoundAttack
from landscape.stats import wilson_interval

from .classifiers import build_classifier
from .data import ImageSet, load_cifar10, select_subset

RESULT_COLUMNS = ["model", "defense", "landscape", "budget", "attack", "norm", "eps", "n", "correct",
                  "accuracy", "ci_low", "ci_high", "seconds", "data"]
DEFENSES = ("none",)


class EvalError(ValueError):
    """The evaluation config asks for something that does not exist."""


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
    """One cell of the grid: a defended model under one attack."""

    defense: str
    landscape: str
    budget: int
    attack_name: str
    attack: BoundAttack | None


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
    return [Unit(d, "none", 0, n, attacks[n]) for d in defenses for n in names]


def attack_correct(model: nn.Module, unit: Unit, data: ImageSet, batch_size: int, seed: int,
                   device: torch.device, bar=None) -> torch.Tensor:
    """Per-image correctness (bool) of ``model`` under ``unit``'s attack."""
    out = torch.zeros(len(data), dtype=torch.bool)
    for start in range(0, len(data), batch_size):
        x = data.images[start:start + batch_size].to(device)
        y = data.labels[start:start + batch_size].to(device)
        if unit.attack is not None:
            first = int(data.indices[start])
            x = unit.attack.run(model, x, y, derive_seed(seed, unit.defense, unit.landscape, unit.budget,
                                                        unit.attack_name, first))
        with torch.no_grad():
            out[start:start + len(y)] = (model(x).argmax(1) == y).cpu()
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
                       "attack": f"suite[{'+'.join(names)}]", "norm": norm, "eps": eps, "n": len(survived),
                       "correct": int(survived.sum()), "seconds": float(group["seconds"].sum()),
                       "data": group["data"].iloc[0]})
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

    records, meta = [], []
    bar = tqdm(total=len(units) * len(data), desc="evaluating", unit="img", disable=not progress)
    for unit in units:
        bar.set_postfix_str(f"{unit.defense}/{unit.attack_name}")
        start = time.perf_counter()
        correct = attack_correct(model, unit, data, batch_size, seed, device, bar)
        seconds = time.perf_counter() - start
        records.append(pd.DataFrame({"model": model_name, "defense": unit.defense, "landscape": unit.landscape,
                                     "budget": unit.budget, "attack": unit.attack_name,
                                     "index": data.indices.numpy(), "label": data.labels.numpy(),
                                     "correct": correct.numpy()}))
        meta.append({"model": model_name, "defense": unit.defense, "landscape": unit.landscape, "budget": unit.budget,
                     "attack": unit.attack_name, "norm": unit.attack.norm if unit.attack else "none",
                     "eps": unit.attack.eps if unit.attack else 0.0, "seconds": seconds, "data": data.source})
    bar.close()
    per_image = pd.concat(records, ignore_index=True)
    return aggregate(per_image, pd.DataFrame(meta)), per_image
