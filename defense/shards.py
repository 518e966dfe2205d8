"""Finished shards on disk: one parquet file each, written atomically, so a run can resume."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

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
