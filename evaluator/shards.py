"""Finished shards on disk: one parquet file each, written atomically, so a run can resume; and the
check that a resumed folder holds the same experiment."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from landscape.config import ConfigError
from landscape.io import atomic_write


class ShardStore:
    """``DIR/shards/<key>.parquet``; writing a shard twice leaves one file (retries never double-count).

    A shard file counts as done only if it reads back whole and holds the images it should (a file cut
    short or corrupted by a crash of the machine, left by another grid, or by other images): any other is moved to
    ``DIR/shards/invalid/`` (kept as evidence, never merged) and its shard is redone."""

    def __init__(self, out_dir: str | Path):
        self.dir = Path(out_dir) / "shards"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.invalid: list[str] = []   # the shard files set aside by done()

    def _indices(self, path: Path) -> list[int] | None:
        import pyarrow.parquet as pq

        try:
            return [int(i) for i in pq.read_table(path, columns=["index"]).column("index").to_pylist()]
        except Exception:   # cut short, not parquet, unreadable: not a finished shard
            return None

    def done(self, expected: dict[str, list[int]] | None = None) -> set[str]:
        """Keys of the finished shards; with ``expected`` ({key: the source indices of its images}), each file
        must hold exactly those images (a resumed run whose ``data.indices`` file changed redoes what changed)."""
        keys = set()
        for path in sorted(self.dir.glob("*.parquet")):
            held = self._indices(path)
            want = None if expected is None else expected.get(path.stem)
            if held is None or (want is not None and sorted(held) != sorted(want)):
                why = "unreadable" if held is None else (
                    f"{len(held)} rows, {len(want)} expected" if len(held) != len(want)
                    else "other images than this run's (the data or data.indices changed)")
                self._set_aside(path, why)
                continue
            keys.add(path.stem)
        return keys

    def _set_aside(self, path: Path, why: str) -> None:
        import time

        target = self.dir / "invalid" / f"{path.name}.{time.strftime('%Y%m%d-%H%M%S')}-{len(self.invalid)}"
        target.parent.mkdir(exist_ok=True)
        path.replace(target)
        self.invalid.append(f"{path.stem} ({why}; moved to {target})")

    def write(self, key: str, records: pd.DataFrame) -> None:
        try:
            atomic_write(self.dir / f"{key}.parquet", lambda p: records.to_parquet(p, index=False))
        except OSError as exc:   # a full disk, a lost mount: nothing half-written is left (atomic_write)
            raise ShardWriteError(f"could not write shard {key} to {self.dir}: {exc.strerror or exc}; the shards "
                                  f"finished before it are kept: free space (or fix the folder) and rerun the same "
                                  f"command to resume") from None

    def read(self, keys) -> pd.DataFrame:
        frames = [pd.read_parquet(self.dir / f"{k}.parquet") for k in keys if (self.dir / f"{k}.parquet").is_file()]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


class ShardWriteError(ConfigError):
    """A finished shard could not be written (the disk is full, the folder went away)."""


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
