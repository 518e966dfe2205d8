"""Writing an evaluation's outputs: every file lands atomically or not at all."""
from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path

import pandas as pd

from landscape.config import dump_config
from landscape.io import atomic_write, atomic_write_text

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


def write_results(out_dir: str | Path, results: pd.DataFrame, per_image: pd.DataFrame, cfg: dict) -> Path:
    """``config.yaml``, ``versions.json``, ``per_image.parquet``, then ``results.parquet`` and ``results.csv``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
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
