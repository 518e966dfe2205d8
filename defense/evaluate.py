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


def _whole(cfg: dict, key: str, minimum: int, allow_none: bool = False):
    node = cfg
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if node is None and allow_none:
        return None
    if isinstance(node, bool) or not isinstance(node, int) or node < minimum:
        raise EvalError(f"{key} must be a whole number >= {minimum}{' (or null)' if allow_none else ''}, got {node!r}")
    return node


def check_config(cfg: dict) -> None:
    """Type and range checks of the plain settings, so bad values get a clear error, not a traceback."""
    _whole(cfg, "seed", 0)
    _whole(cfg, "threads", 0)
    _whole(cfg, "eval.batch_size", 1)
    _whole(cfg, "eval.shard_size", 1, allow_none=True)
    _whole(cfg, "data.n_examples", 0, allow_none=True)
    dev = cfg.get("device")
    if dev not in (None, "", "auto", "cpu") and not (isinstance(dev, str) and (dev == "cuda" or dev.startswith("cuda:"))):
        raise EvalError(f"device must be auto, cpu, cuda or cuda:N, got {dev!r}")
    params = cfg.get("attack_params") or {}
    if not isinstance(params, dict) or any(not isinstance(v, (dict, type(None))) for v in params.values()):
        raise EvalError(f"attack_params must map attack names to parameter mappings "
                        f"(e.g. attack_params.pgd.steps=20), got {params!r}")
    for key in ("defenses", "attacks"):
        value = cfg.get(key)
        if value is not None and not isinstance(value, (list, str)):
            raise EvalError(f"{key} must be a list such as [none, pgd], got {value!r}")


def build_units(cfg: dict) -> list[Unit]:
    check_config(cfg)
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
    """Per-image correctness (bool) of ``model`` (behind ``purifier``, if any) under ``unit``'s attack.

    Batch seeds derive from the image index at the start of each batch, so any split of the
    images into batch-aligned pieces (shards, workers) gives the same answer. The batch size itself
    is part of the experiment: attacks draw random starts per batch, so a different
    ``eval.batch_size`` draws different ones (and a resumed run refuses a changed batch size).
    """
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


@dataclass
class Shard:
    """A range of images of one grid cell: the unit of work, of resume and of retries."""

    unit: int
    start: int
    stop: int

    @property
    def key(self) -> str:
        return f"u{self.unit:04d}-i{self.start:06d}"


class EvalContext:
    """Everything needed to run any shard: built once by the driver, shipped whole to workers."""

    def __init__(self, cfg: dict, units: list, data: ImageSet, model: nn.Module, factory: DefenseFactory,
                 device: torch.device):
        self.cfg, self.units, self.data, self.model, self.factory, self.device = cfg, units, data, model, factory, device
        self.seed = int(cfg.get("seed", 0))
        self.batch_size = int(cfg["eval"]["batch_size"])
        shard_size = int(cfg["eval"].get("shard_size") or self.batch_size)
        if shard_size < 1 or shard_size % self.batch_size:
            raise EvalError(f"eval.shard_size ({shard_size}) must be a positive multiple of eval.batch_size "
                            f"({self.batch_size}), so that batch seeds do not depend on the split")
        self.shard_size = shard_size
        d = cfg.get("defense") or {}
        self.draws, self.max_gb = int(d.get("eot_draws", 1)), float(d.get("unrolled_max_gb", 4.0))
        self.model_name = str(cfg["model"]["name"])
        self.skipped: list[dict] = []

    @classmethod
    def build(cls, cfg: dict) -> "EvalContext":
        seed = int(cfg.get("seed", 0))
        torch.manual_seed(seed)
        units = build_units(cfg)  # check the grid before loading anything heavy
        if int(cfg["eval"]["batch_size"]) < 1:
            raise EvalError(f"eval.batch_size must be >= 1, got {cfg['eval']['batch_size']}")
        device = pick_device(cfg.get("device"))
        d = cfg["data"]
        data = select_subset(load_cifar10(d.get("root"), d.get("split", "test"), bool(d.get("download", True))),
                             d.get("n_examples"), seed, d.get("selection", "random"))
        model = build_classifier(cfg["model"], download=bool(d.get("download", True))).to(device)
        ctx = cls(cfg, units, data, model, DefenseFactory(cfg.get("defense") or {}, device, model), device)
        ctx.check_memory()
        return ctx

    def to(self, device) -> "EvalContext":
        """Move the models to a worker's device (the driver builds everything on its own)."""
        self.device = torch.device(device)
        self.model = self.model.to(self.device)
        self.factory.to(self.device)
        return self

    def check_memory(self) -> None:
        """Refuse, up front, the cells whose exact gradients would not fit the memory cap."""
        ok = []
        for i, unit in enumerate(self.units):
            if unit.mode in ("unrolled", "eot") and unit.attack is not None:
                purifier = self.factory.purifier(unit.defense, unit.budget)
                try:
                    surrogate(self.model, purifier, unit.mode, self.draws, self.max_gb,
                              batch=self.data.images[: self.batch_size].to(self.device))
                except AdaptiveError as exc:
                    self.skipped.append({"defense": unit.defense, "budget": unit.budget, "attack": unit.attack_name,
                                         "reason": str(exc)})
                    continue
            ok.append(i)
        self.runnable = ok

    def shards(self) -> list[Shard]:
        n = len(self.data)
        return [Shard(u, s, min(s + self.shard_size, n)) for u in self.runnable for s in range(0, n, self.shard_size)]

    def run_shard(self, shard: Shard, bar=None) -> pd.DataFrame:
        """Per-image records of one shard (with the shard's wall time spread over its images)."""
        unit = self.units[shard.unit]
        part = self.data.subset(torch.arange(shard.start, shard.stop))
        purifier = self.factory.purifier(unit.defense, unit.budget)
        t0 = time.perf_counter()
        correct = attack_correct(self.model, unit, part, self.batch_size, self.seed, self.device, bar, purifier,
                                 self.draws, self.max_gb)
        seconds = time.perf_counter() - t0
        return pd.DataFrame({"model": self.model_name, "defense": unit.defense, "landscape": unit.landscape,
                             "budget": unit.budget, "attack": unit.attack_name, "index": part.indices.numpy(),
                             "label": part.labels.numpy(), "correct": correct.numpy(), "shard": shard.key,
                             "seconds": seconds / max(len(part), 1)})

    def meta(self) -> pd.DataFrame:
        return pd.DataFrame([{
            "model": self.model_name, "defense": u.defense, "landscape": u.landscape, "budget": u.budget,
            "attack": u.attack_name, "norm": u.attack.norm if u.attack else "none",
            "eps": u.attack.eps if u.attack else 0.0, "data": self.data.source, "steps": _attack_steps(u.attack),
            "params": json.dumps(u.attack.params, sort_keys=True) if u.attack else "{}"} for u in self.units])


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


def results_from_records(per_image: pd.DataFrame, ctx: EvalContext) -> tuple[pd.DataFrame, pd.DataFrame]:
    keys = ["model", "defense", "landscape", "budget", "attack"]
    seconds = per_image.groupby(keys, sort=False)["seconds"].sum().reset_index()
    meta = ctx.meta().merge(seconds, on=keys, how="inner")
    order = {key: i for i, key in enumerate(ctx.meta()[keys].itertuples(index=False, name=None))}
    per_image = per_image.assign(_order=[order[t] for t in per_image[keys].itertuples(index=False, name=None)])
    per_image = per_image.sort_values(["_order", "index"], kind="stable").drop(columns="_order").reset_index(drop=True)
    results = aggregate(per_image.drop(columns=["seconds", "shard"], errors="ignore"), meta)
    results.attrs["skipped"] = ctx.skipped
    return results, per_image


def evaluate(cfg: dict, progress: bool = True, store=None, runner=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run the grid of ``cfg``; returns (results, per-image records).

    ``store`` (a :class:`~defense.shards.ShardStore`) keeps each finished shard on disk and skips
    the ones already there (resume). ``runner(ctx, shards, on_done, bar)`` runs shards elsewhere
    (e.g. on Ray actors); by default they run here, one after the other.
    """
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    ctx = EvalContext.build(cfg)
    shards = ctx.shards()
    done = store.done() if store is not None else set()
    todo = [s for s in shards if s.key not in done]
    collected = []

    def on_done(shard: Shard, records: pd.DataFrame) -> None:
        if store is not None:
            store.write(shard.key, records)
        else:
            collected.append(records)

    bar = tqdm(total=sum(s.stop - s.start for s in shards), initial=sum(s.stop - s.start for s in shards if s.key in done),
               desc="evaluating", unit="img", disable=not progress)
    for s in ctx.skipped:
        bar.write(f"skipped {s['defense']} K={s['budget']} {s['attack']}: {s['reason']}")
    if runner is None:
        for shard in todo:
            unit = ctx.units[shard.unit]
            bar.set_postfix_str(f"{unit.defense}/K={unit.budget}/{unit.attack_name}")
            on_done(shard, ctx.run_shard(shard, bar))
    else:
        runner(ctx, todo, on_done, bar)
    bar.close()
    if store is not None:
        per_image = store.read([s.key for s in shards])
    else:
        per_image = pd.concat(collected, ignore_index=True) if collected else pd.DataFrame()
    if per_image.empty:
        raise EvalError("nothing was evaluated (every cell was skipped)")
    return results_from_records(per_image, ctx)
