"""Atomic file writes: a reader never sees a half-written result file."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the mode open() would
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write(path: str | Path, writer: Callable[[Path], None]) -> None:
    """Call ``writer(tmp_path)`` and move the file into place only if it returns."""
    with atomic_path(path) as tmp:
        writer(tmp)


def load_tensors(path: str | Path, error: type[Exception] = FileNotFoundError, what: str = "checkpoint",
                 hint: str = "") -> object:
    """``torch.load(path, weights_only=True)`` on the CPU, with one clear error for a missing or unreadable file."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise error(f"{what} not found: {path}{f' ({hint})' if hint else ''}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise error(f"cannot read {what} {path} with weights_only=True: {exc}") from None
