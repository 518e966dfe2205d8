"""Running the grid: the context every shard needs, the batch loop, and the driver.

Work is done per image and kept per image (``per_image``), so a worst case over a suite of
attacks counts an image as robust only if it survives them all, and later shards of the
grid can be merged without changing the figures. Each batch's seed derives from the run
seed and the batch's identity, so results do not depend on how the work is split.

The driver builds one :class:`EvalContext` (images, classifier, and every purifier model the
grid needs, loaded once) and ships it whole to the workers; a worker never opens a file.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from attacks.adaptive import AdaptiveError, Defended, surrogate
from attacks.queries import QueryCounter
from cifar10.classifiers import build_classifier
from cifar10.data import ImageSet, load_cifar10, read_indices, select_indices, select_subset
from defense.defenses import DEFENSE_DEFAULTS, DefenseFactory
from evaluator.grid import EvalError, Unit, attack_steps, build_units, derive_seed, run_seed
from evaluator.probes import PROBE_IMAGES, probe
from evaluator.results import results_from_records, write_results
from evaluator.shards import ShardStore, check_same_config
from landscape.config import dump_config
from landscape.device import pick_device
from landscape.errors import LandscapeError, first_line
from landscape.io import atomic_write, atomic_write_text


def attack_correct(model: nn.Module, unit: Unit, data: ImageSet, batch_size: int, seed: int,
                   device: torch.device, bar=None, purifier: nn.Module | None = None, draws: int = 1,
                   max_gb: float = 4.0, passes: dict | None = None, cache: dict | None = None) -> torch.Tensor:
    """Per-image correctness (bool) of ``model`` (behind ``purifier``, if any) under ``unit``'s attack.

    ``cache`` (a dict), when given, keeps non-adaptive adversarial batches for the next cell that needs them.
    ``passes`` (a dict), when given, receives the deployed purifier's forward and backward passes of
    its objective on these images (``forward``, ``backward``: the defender's compute, counted; the
    attack's own queries excluded) and the attack's queries of the model it attacks (``attack_forward``,
    ``attack_backward``: rows through the surrogate, so under EOT one query stands for ``draws`` purifications).

    Batch seeds derive from the image index at the start of each batch, so any split of the
    images into batch-aligned pieces (shards, workers) gives the same answer. The batch size itself
    is part of the experiment: attacks draw random starts per batch, so a different
    ``eval.batch_size`` draws different ones (and a resumed run refuses a changed batch size).
    """
    out = torch.zeros(len(data), dtype=torch.bool)
    deployed = model if purifier is None else Defended(model, purifier)
    natural = getattr(purifier, "natural_loss", None)
    # A non-adaptive attack never sees the purifier: its adversarial images are the same for every
    # defense and K (and for the undefended row), so they are drawn once per batch and reused (``cache``).
    transfer = unit.attack is not None and unit.mode in (None, "nonadaptive")
    target = None
    if unit.attack is not None:
        target = QueryCounter(surrogate(model, purifier, unit.mode or "nonadaptive", draws, max_gb,
                                        batch=data.images[:batch_size].to(device)))
    for start in range(0, len(data), batch_size):
        x = data.images[start:start + batch_size].to(device)
        y = data.labels[start:start + batch_size].to(device)
        first = int(data.indices[start])
        if transfer:
            batch_seed = derive_seed(seed, "nonadaptive", unit.attack.name, first)
        else:
            batch_seed = derive_seed(seed, unit.defense, unit.landscape, unit.budget, unit.attack_name, first)
        if unit.attack is not None:
            uses = unit.attack.spec.uses_natural_loss
            key = (unit.attack.name, json.dumps(unit.attack.params, sort_keys=True), data.source, first, len(y),
                   batch_seed, natural if uses else None)
            if transfer and cache is not None and key in cache:
                x, queries = cache[key]
                x = x.to(device)
            else:
                before_q = target.counts()
                x = unit.attack.run(target, x, y, batch_seed, natural if uses else None)
                queries = tuple(a - b for a, b in zip(target.counts(), before_q))
                if transfer and cache is not None:
                    cache[key] = (x.cpu(), queries)
            if passes is not None:   # what this batch's examples cost the attacker, cached or not
                passes["attack_forward"] = passes.get("attack_forward", 0) + queries[0]
                passes["attack_backward"] = passes.get("attack_backward", 0) + queries[1]
        torch.manual_seed(batch_seed + 1)  # the deployed purifier's own random starts
        before = dict(purifier.passes) if purifier is not None and hasattr(purifier, "passes") else None
        with torch.no_grad():
            out[start:start + len(y)] = (deployed(x).argmax(1) == y).cpu()
        if passes is not None and before is not None:
            for kind in ("forward", "backward"):
                passes[kind] = passes.get(kind, 0) + purifier.passes[kind] - before[kind]
        if bar is not None:
            bar.update(len(y))
    return out


class ShardError(LandscapeError, RuntimeError):
    """A cell raised while running one shard; the message names the cell and the shard."""


class ShardFailed(Exception):
    """Raised by a runner when a shard's own code raised on a worker: the shard and the worker's exception."""

    def __init__(self, shard, cause: BaseException):
        super().__init__(f"shard {shard.key}: {type(cause).__name__}: {cause}")
        self.shard, self.cause = shard, cause


@dataclass
class Shard:
    """A range of images of one grid cell: the unit of work, of resume and of retries."""

    unit: int
    start: int
    stop: int
    run: int = 0     # the repeat (``runs=N``), each with its own derived seed

    @property
    def key(self) -> str:
        return f"u{self.unit:04d}-i{self.start:06d}" if self.run == 0 else f"u{self.unit:04d}-r{self.run:02d}-i{self.start:06d}"


class EvalContext:
    """Everything needed to run any shard: built once by the driver, shipped whole to workers."""

    def __init__(self, cfg: dict, units: list, data: ImageSet, model: nn.Module, factory: DefenseFactory,
                 device: torch.device):
        self.cfg, self.units, self.data, self.model, self.factory, self.device = cfg, units, data, model, factory, device
        self.seed = int(cfg.get("seed", 0))
        self.runs = int(cfg.get("runs", 1))
        self.batch_size = int(cfg["eval"]["batch_size"])
        shard_size = int(cfg["eval"].get("shard_size") or self.batch_size)
        if shard_size < 1 or shard_size % self.batch_size:
            raise EvalError(f"eval.shard_size ({shard_size}) must be a positive multiple of eval.batch_size "
                            f"({self.batch_size}), so that batch seeds do not depend on the split")
        self.shard_size = shard_size
        d = cfg.get("defense") or {}
        eot = d.get("eot_draws", DEFENSE_DEFAULTS["eot_draws"])
        # a list of draws lives on each EOT cell (Unit.draws, never None then); the single value is the run's
        self.draws = int(eot) if not isinstance(eot, list) else DEFENSE_DEFAULTS["eot_draws"]
        self.max_gb = float(d.get("unrolled_max_gb", DEFENSE_DEFAULTS["unrolled_max_gb"]))
        self.model_name = str(cfg["model"]["name"])
        self.skipped: list[dict] = []
        self.transfer_cache: dict = {}   # non-adaptive adversarial batches, shared by every defense and K (per worker)

    @classmethod
    def build(cls, cfg: dict, units: list | None = None, model: nn.Module | None = None,
              data: ImageSet | None = None) -> "EvalContext":
        """Load the images, the classifier and every purifier model the grid needs (``units``: the grid,
        if the caller built it already; ``model``, ``data``: given in memory by the Python API, instead
        of ``model.name`` and ``data.root``)."""
        seed = int(cfg.get("seed", 0))
        torch.manual_seed(seed)
        units = build_units(cfg) if units is None else units  # check the grid before loading anything heavy
        device = pick_device(cfg.get("device"))
        d = cfg["data"]
        if data is None:
            data = load_cifar10(d.get("root"), d.get("split", "test"), bool(d.get("download", True)))
        if d.get("indices") is not None:   # exactly these images (e.g. the survivors of cheaper attacks)
            data = select_indices(data, read_indices(d["indices"]))
        else:
            data = select_subset(data, d.get("n_examples"), seed, d.get("selection", "random"))
        if model is None:
            model = build_classifier(cfg["model"], download=bool(d.get("download", True)))
        model = model.eval().to(device)
        entries = cfg.get("defenses") or ["none"]
        factory = DefenseFactory(cfg.get("defense") or {}, device, model, [entries] if isinstance(entries, str) else entries)
        ctx = cls(cfg, units, data, model, factory, device)
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
                user = self.factory.user.get(unit.defense)
                if user is not None and not user.differentiable:
                    self.skipped.append({"defense": unit.defense, "budget": unit.budget, "attack": unit.attack_name,
                                         "reason": "the defense declares differentiable = False: exact gradients do not "
                                                   "apply (BPDA does: modes bpda, bpda+eot)"})
                    continue
                try:
                    surrogate(self.model, purifier, unit.mode, unit.draws or self.draws, self.max_gb,
                              batch=self.data.images[: self.batch_size].to(self.device))
                except AdaptiveError as exc:
                    self.skipped.append({"defense": unit.defense, "budget": unit.budget, "attack": unit.attack_name,
                                         "reason": str(exc)})
                    continue
            ok.append(i)
        self.runnable = ok

    def shards(self) -> list[Shard]:
        """Every cell's image ranges, once per repeat for the randomized cells (``runs``), run by run."""
        n = len(self.data)
        return [Shard(u, s, min(s + self.shard_size, n), r) for r in range(self.runs) for u in self.runnable
                if r == 0 or self.units[u].randomized for s in range(0, n, self.shard_size)]

    def run_shard(self, shard: Shard, bar=None) -> pd.DataFrame:
        """Per-image records of one shard (with the shard's wall time spread over its images)."""
        unit = self.units[shard.unit]
        part = self.data.subset(torch.arange(shard.start, shard.stop))
        purifier = self.factory.purifier(unit.defense, unit.budget)
        t0 = time.perf_counter()
        passes: dict = {}
        correct = attack_correct(self.model, unit, part, self.batch_size, run_seed(self.seed, shard.run), self.device,
                                 bar, purifier, unit.draws or self.draws, self.max_gb, passes, self.transfer_cache)
        seconds = time.perf_counter() - t0
        n = max(len(part), 1)
        if purifier is not None and not hasattr(purifier, "passes"):   # a user defense that keeps no counts
            passes["forward"] = passes["backward"] = float("nan")
        return pd.DataFrame({"model": self.model_name, "defense": unit.defense, "landscape": unit.landscape,
                             "budget": unit.budget, "attack": unit.attack_name, "index": part.indices.numpy(),
                             "label": part.labels.numpy(), "correct": correct.numpy(), "shard": shard.key,
                             "seconds": seconds / n, "purifier_forward": passes.get("forward", 0) / n,
                             "purifier_backward": passes.get("backward", 0) / n,
                             "attack_forward": passes.get("attack_forward", 0) / n,
                             "attack_backward": passes.get("attack_backward", 0) / n, "run": shard.run})

    def describe_failure(self, shard: Shard, exc: BaseException, store=None) -> str:
        """One line: which cell and shard failed, with what, and what was kept."""
        u = self.units[shard.unit]
        kept = (f"the {len(store.done())} finished shards are kept in {store.dir}: rerun the same command to resume"
                if store is not None else "nothing was written")
        first = first_line(exc)
        return (f"cell defense={u.defense} K={u.budget} attack={u.attack_name} (shard {shard.key}, images "
                f"{shard.start}-{shard.stop - 1}) failed: {type(exc).__name__}: {first}; {kept}")

    def meta(self) -> pd.DataFrame:
        return pd.DataFrame([{
            "model": self.model_name, "defense": u.defense, "landscape": u.landscape, "budget": u.budget,
            "attack": u.attack_name, "norm": u.attack.norm if u.attack else "none",
            "eps": u.attack.eps if u.attack else 0.0, "data": self.data.source, "steps": attack_steps(u.attack),
            "params": json.dumps(u.attack.params, sort_keys=True) if u.attack else "{}"} for u in self.units])


def uses_ray(ray_cfg: dict) -> bool:
    """Does ``landscape eval`` run its shards on Ray? Always on a cluster (``ray.address``, or inside a
    Ray job, which sets ``RAY_ADDRESS``) and with ``ray.num_workers >= 1``; never with 0. By default
    (``null``) on one machine, only where a local Ray can gain: two or more GPUs, one actor each. On
    CPUs torch already uses every core in one process, and a local Ray only adds its start-up and the
    shipping of the context (measured: ``bench/ray_overhead.py``, README "Ray on one machine")."""
    if ray_cfg.get("address") or os.environ.get("RAY_ADDRESS"):
        return True
    n = ray_cfg.get("num_workers")
    if n is not None:
        return int(n) != 0
    return torch.cuda.device_count() >= 2


def evaluate(cfg: dict, progress: bool = True, store=None, runner=None,
             ctx: EvalContext | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run the grid of ``cfg``; returns (results, per-image records).

    ``store`` (a :class:`~evaluator.shards.ShardStore`) keeps each finished shard on disk and skips
    the ones already there (resume). ``runner(ctx, shards, on_done, bar)`` runs shards elsewhere
    (e.g. :class:`ray_jobs.runner.RayRunner`); by default they run here, one after the other.
    ``ctx``: a context already built from ``cfg``.
    """
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    ctx = EvalContext.build(cfg) if ctx is None else ctx
    shards = ctx.shards()
    images = ctx.data.indices.tolist()
    done = store.done({s.key: images[s.start:s.stop] for s in shards}) if store is not None else set()
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
    for s in (store.invalid if store is not None else []):   # said even when quiet: a shard is being redone
        tqdm.write(f"shard file set aside and redone: {s}", file=sys.stderr)
    if runner is None:
        for shard in todo:
            unit = ctx.units[shard.unit]
            bar.set_postfix_str(f"{unit.defense}/K={unit.budget}/{unit.attack_name}")
            try:
                records = ctx.run_shard(shard, bar)
            except Exception as exc:   # e.g. CUDA out of memory inside one cell
                bar.close()
                raise ShardError(ctx.describe_failure(shard, exc, store)) from exc
            on_done(shard, records)
    else:
        try:
            runner(ctx, todo, on_done, bar)
        except ShardFailed as exc:    # a cell raised on a worker (not a worker that died: that is retried)
            bar.close()
            raise ShardError(ctx.describe_failure(exc.shard, exc.cause, store)) from None
    bar.close()
    if store is not None:
        per_image = store.read([s.key for s in shards])
    else:
        per_image = pd.concat(collected, ignore_index=True) if collected else pd.DataFrame()
    if per_image.empty:
        raise EvalError("nothing was evaluated (every cell was skipped)")
    return results_from_records(per_image, ctx.meta(), ctx.skipped)


def run_to_folder(cfg: dict, out: str | Path, progress: bool = True, runner=None) -> tuple[pd.DataFrame, Path]:
    """``landscape eval``: check everything, load everything, then write into ``out`` (resuming what is there).

    Nothing is written before the grid is checked and the images and models are loaded, so a run that
    fails on a bad setting, a missing data folder or a bad checkpoint leaves no folder behind."""
    out = Path(out)
    units = build_units(cfg)
    check_same_config(out, cfg)
    ctx = EvalContext.build(cfg, units)
    try:
        probes = probe(ctx)   # the red flags' evidence about the models (randomized? gradients? logits?)
    except LandscapeError:
        raise
    except Exception as exc:
        first = first_line(exc)
        raise EvalError(f"probing the models on {min(len(ctx.data), PROBE_IMAGES)} images, before any shard, failed: "
                        f"{type(exc).__name__}: {first}; nothing was written") from exc
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", dump_config(cfg))
    atomic_write(out / "probes.csv", lambda p: probes.to_csv(p, index=False))
    results, per_image = evaluate(cfg, progress=progress, store=ShardStore(out), runner=runner, ctx=ctx)
    return results, write_results(out, results, per_image)
