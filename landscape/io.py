"""Atomic file writes: a reader never sees a half-written result file."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from .errors import LandscapeError, first_line


class CheckpointError(LandscapeError, RuntimeError):
    """A checkpoint that cannot be read, or holds something other than what was asked for."""


class MissingCheckpointError(CheckpointError, FileNotFoundError):
    """A checkpoint file that is not there."""


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


#: the checkout the packages were installed from (committed checkpoints live in its checkpoints/)
REPO = Path(__file__).resolve().parents[1]


def resolve_path(path) -> Path:
    """A path as given if it exists (or is absolute), else relative to the repository, so the committed
    checkpoints (``checkpoints/...``) are found from any working directory."""
    p = Path(str(path)).expanduser()
    return p if p.is_absolute() or p.exists() else REPO / p


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write(path: str | Path, writer: Callable[[Path], None]) -> None:
    """Call ``writer(tmp_path)`` and move the file into place only if it returns."""
    with atomic_path(path) as tmp:
        writer(tmp)


def load_tensors(path: str | Path, error: type[Exception] = CheckpointError, what: str = "checkpoint",
                 hint: str = "", keys: tuple = ()) -> object:
    """``torch.load(path, weights_only=True)`` on the CPU, with one clear error for a missing or unreadable file.

    A missing file raises :class:`MissingCheckpointError`; an unreadable one, or a dict that lacks
    one of ``keys`` (a valid checkpoint of another kind), raises ``error``.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise MissingCheckpointError(f"{what} not found: {path}{f' ({hint})' if hint else ''}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:   # cut short, not a torch file, or a pickle of code (which weights_only refuses)
        reason = first_line(exc)
        if "Weights only load failed" in reason:
            reason = "it holds objects other than tensors and plain containers, which weights_only refuses to run"
        raise error(f"cannot read {what} {path} with weights_only=True: {reason}") from None
    missing = [k for k in keys if not isinstance(state, dict) or k not in state]
    if missing:
        raise error(f"{path} is not a {what} (it lacks {', '.join(missing)}){f'; {hint}' if hint else ''}")
    return state
