"""The Python API: ``landscape.evaluate(...)``, the same code path as ``landscape eval``.

It builds the same config (the defaults, an optional YAML file, ``key=value`` overrides, then the
arguments), checks it the same way and runs the same grid; with ``out`` it writes the same folder
(resumable, readable by ``landscape report``). What a notebook has in memory may be given as is: a
model (an ``nn.Module`` taking [0, 1] images and returning logits), a defense class (the protocol
of ``defense/user.py``), images and labels as tensors; such a run is returned, not written.

Example (a tiny model and 8 random images, in about a second)::

    >>> import torch, landscape
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
    >>> images, labels = torch.rand(8, 3, 32, 32), torch.randint(0, 10, (8,))
    >>> table = landscape.evaluate(model, attacks=["none", "fgsm"], data=(images, labels), device="cpu",
    ...                            progress=False)
    >>> list(table["attack"])
    ['none', 'fgsm']
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
import torch.nn as nn

from landscape.config import ConfigError, load_config, merge


def _config(model, defense, attacks, budgets, data, config, overrides, settings) -> tuple[dict, dict]:
    """(the run's config, the in-memory objects it refers to: model, data, defense classes)."""
    from evaluator.config import EVAL_DEFAULTS, OPEN_SECTIONS
    from landscape.config import _check_keys

    cfg = load_config(EVAL_DEFAULTS, config, list(overrides), OPEN_SECTIONS)
    update: dict = {}
    for key, value in settings.items():   # data__n_examples=100 is data.n_examples
        node = update
        parts = key.split("__")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    _check_keys(update, EVAL_DEFAULTS, "", OPEN_SECTIONS)
    cfg = merge(cfg, update)
    objects: dict = {}
    if isinstance(model, nn.Module):
        objects["model"] = model
        cfg["model"] = {**cfg["model"], "name": f"python:{type(model).__name__}", "weights": None}
    elif model is not None:
        cfg["model"] = {**cfg["model"], "name": str(model)}
    if defense is not None:
        entries = defense if isinstance(defense, (list, tuple)) else [defense]
        named = []
        for d in entries:
            if isinstance(d, type):       # a class defined here (a notebook): the grid imports nothing
                objects.setdefault("defenses", []).append(d)
                named.append(d)
            else:
                named.append(str(d))
        cfg["defenses"] = (["none"] if "none" not in named else []) + named
    if attacks is not None:
        attacks = [attacks] if isinstance(attacks, str) else list(attacks)
        cfg["attacks"] = attacks if "none" in attacks else ["none", *attacks]   # clean accuracy, always
    if budgets is not None:
        cfg["defense"] = {**cfg["defense"], "budgets": list(budgets) if isinstance(budgets, (list, tuple)) else [budgets]}
    if isinstance(data, (tuple, list)):
        objects["data"] = _image_set(*data)
    elif data is not None:
        cfg["data"] = {**cfg["data"], "root": str(data)}
    return cfg, objects


def _image_set(images, labels):
    from cifar10.data import ImageSet

    if not isinstance(images, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise ConfigError("data=(images, labels) takes two tensors")
    if images.dim() != 4 or len(images) != len(labels) or labels.dim() != 1:
        raise ConfigError(f"data=(images, labels): images (N, C, H, W) and labels (N,), got {tuple(images.shape)} "
                          f"and {tuple(labels.shape)}")
    images = images.float()
    if not torch.isfinite(images).all() or images.min() < 0 or images.max() > 1:
        raise ConfigError("data=(images, labels): images must be finite and in [0, 1]")
    return ImageSet(images.cpu(), labels.long().cpu(), torch.arange(len(labels)), "tensors")


def evaluate(model=None, defense=None, attacks=None, budgets=None, data=None, *, config: str | Path | None = None,
             overrides=(), out: str | Path | None = None, per_image: bool = False, progress: bool = True,
             **settings):
    """Evaluate ``model`` (behind ``defense``) under ``attacks``; returns the results table (one row per
    cell, the columns of ``results.csv``), or ``(results, per_image)`` with ``per_image=True``.

    Arguments:
        model: a ``model.name`` (``resnet20``, ``robustbench:<name>``, ``file.py:Class``) or an ``nn.Module``
            taking [0, 1] images and returning logits (None: the config's).
        defense: a defense name (``reverse-x``, ...), your own as ``file.py:Class`` or a class, or a list of
            them; the undefended model is always evaluated beside it (None: the config's ``defenses``).
        attacks: attack names (``none``, clean accuracy, is always added); None: the config's.
        budgets: the defense's budgets K (``defense.budgets``).
        data: a ``data.root`` (a folder or ``.npz``), or ``(images, labels)`` tensors.
        config: a YAML config file, as ``landscape eval --config``; ``overrides``: its ``key=value`` strings.
        out: write the run's folder there, as ``landscape eval --out`` (resumes what is there).
        settings: any key of the config, nested with ``__``: ``runs=3``, ``eps={"Linf": "4/255"}``,
            ``data__n_examples=100``, ``attack_params={"pgd": {"steps": 20}}``, ``ray__num_workers=2``.
    """
    from evaluator.run import EvalContext, run_to_folder, uses_ray
    from evaluator.run import evaluate as run_grid

    cfg, objects = _config(model, defense, attacks, budgets, data, config, overrides, settings)
    if out is not None and objects:
        raise ConfigError(f"out={out}: a run of in-memory objects ({', '.join(sorted(objects))}) cannot be written as a "
                          f"resumable folder; name them instead (model='file.py:Class', data='path', "
                          f"defense='file.py:Class'), or keep the returned table")
    runner = None
    if uses_ray(cfg["ray"]):
        from ray_jobs.runner import RayRunner

        runner = RayRunner(cfg["ray"])
    try:
        if out is not None:
            results, path = run_to_folder(cfg, out, progress=progress, runner=runner)
            table = pd.read_parquet(Path(path).with_suffix(".parquet"))
            records = pd.read_parquet(Path(out) / "per_image.parquet")
        else:
            if cfg.get("threads"):
                torch.set_num_threads(int(cfg["threads"]))
            ctx = EvalContext.build(cfg, model=objects.get("model"), data=objects.get("data"))
            table, records = run_grid(cfg, progress=progress, runner=runner, ctx=ctx)
    finally:
        if runner is not None:
            runner.close()
    return (table, records) if per_image else table
