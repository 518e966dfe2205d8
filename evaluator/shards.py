"""Finished shards on disk: one parquet file each, written atomically, so a run can resume; and the
check that a resumed folder holds the same experiment."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from landscape.config import ConfigError
from landscape.io import atomic_write


class ShardStore:
    """``DIR/shards/<key>.parquet``; writing a shard twice leaves one file (retries never double-count)."""

    def __init__(self, out_dir: str | Path):
        self.dir = Path(out_dir) / "shards"
        self.dir.mkdir(parents=True, exist_ok=True)

    def done(self) -> set[str]:
        return {p.stem for p in self.dir.glob("*.parquet")}

    def write(self, key: str, records: pd.DataFrame) -> None:
        atomic_write(self.dir / f"{key}.parquet", lambda p: records.to_parquet(p, index=False))

    def read(self, keys) -> pd.DataFrame:
        frames = [pd.read_parquet(self.dir / f"{k}.parquet") for k in keys if (self.dir / f"{k}.parquet").is_file()]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def check_same_config(out: Path, cfg: dict) -> None:
    """A folder holds one experiment: resuming with a different config is refused."""
    import yaml

    from evaluator.config import EXECUTION_KEYS

    saved_path = out / "config.yaml"
    if not saved_path.is_file():
        return
    saved = yaml.safe_load(saved_path.read_text()) or {}

    def flat(d, prefix=""):
        items = {}
        for k, v in d.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict) and v:
                items.update(flat(v, key + "."))
            else:
                items[key] = v
        return items

    from evaluator.config import EVAL_DEFAULTS

    defaults = flat(EVAL_DEFAULTS)   # a key the saved run predates had its default then
    a, b = {**{k: v for k, v in defaults.items() if k in flat(cfg)}, **flat(saved)}, flat(cfg)
    ignore = lambda k: any(k == e or k.startswith(e + ".") for e in EXECUTION_KEYS)  # noqa: E731
    differ = sorted(k for k in set(a) | set(b) if not ignore(k) and a.get(k) != b.get(k))
    if differ:
        shown = ", ".join(f"{k} ({a.get(k)!r} there, {b.get(k)!r} now)" for k in differ[:5])
        raise ConfigError(f"{out} holds a run with a different config: {shown}; use another --out to start a new run")
