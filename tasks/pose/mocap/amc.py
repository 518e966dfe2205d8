"""Acclaim AMC motions: one row of channels per frame, laid out by the skeleton (``Skeleton.channel_names``).

Row layout: root TX TY TZ (mm) RX RY RZ (degrees) whatever the ASF's ``:root order``, then each bone's
dof values in the ASF's bone order and dof order (AMC files list bones in their own order; CMU's do).
Every frame must carry every bone that has dof, with exactly that many values, and frame numbers
must run consecutively: a truncated or edited file fails loudly instead of yielding shifted poses.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks.pose.mocap.asf import ROOT_CHANNELS, MocapError, Skeleton

CMU_FPS = 120.0


@dataclass(frozen=True, eq=False)
class Motion:
    """An AMC clip: ``channels`` (frames, skeleton.n_dof) float64 and the files' ``frames`` numbers."""

    skeleton: Skeleton
    channels: np.ndarray
    frames: np.ndarray
    source: str = "<string>"
    fps: float = CMU_FPS          # AMC files store no rate; CMU captured at 120 Hz

    def __len__(self) -> int:
        return len(self.channels)


def read_amc(path: str | Path, skeleton: Skeleton) -> Motion:
    """Parse an AMC file for ``skeleton``; raises ``MocapError`` naming the file, frame, line and problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="latin-1")
    except OSError as e:
        raise MocapError(f"{path}: cannot read AMC file ({e.strerror or e})") from e
    return parse_amc(text, skeleton, source=str(path))


def parse_amc(text: str, skeleton: Skeleton, source: str = "<string>") -> Motion:
    """Parse AMC text (see ``read_amc``); ``source`` names the file in errors."""
    n_dof = skeleton.n_dof
    layout = {b.name: (off, len(b.dof)) for b, off in zip(skeleton.bones, skeleton.dof_offsets())}
    root_cols = [ROOT_CHANNELS.index(c) for c in skeleton.root_order]
    required = {b.name for b in skeleton.bones if b.dof} | {"root"}
    angle_scale, mm = 1.0, skeleton.mm_per_unit

    rows: list[list[float]] = []
    numbers: list[int] = []
    row: list[float] | None = None
    seen: set[str] = set()
    frame_line = 0

    def close_frame():
        missing = required - seen
        if missing:
            order = [n for n in ["root"] + skeleton.names if n in missing]
            raise MocapError(f"{source}: frame {numbers[-1]} (starting line {frame_line}) is missing bones "
                             f"{order} (file truncated?)")
        rows.append(row)

    for no, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(":"):
            if row is not None:
                raise MocapError(f"{source}, line {no}: header keyword {line!r} after the first frame")
            if line.upper().startswith(":RADIANS"):
                angle_scale = 180.0 / math.pi
            continue
        tok = line.split()
        if len(tok) == 1 and tok[0].isdigit():
            number = int(tok[0])
            if row is not None:
                close_frame()
                if number != numbers[-1] + 1:
                    raise MocapError(f"{source}, line {no}: frame number {number} follows frame {numbers[-1]} "
                                     f"(frames must be consecutive)")
            numbers.append(number)
            row, seen, frame_line = [0.0] * n_dof, set(), no
            continue
        name = tok[0]
        if row is None:
            raise MocapError(f"{source}, line {no}: expected a frame number before {line[:40]!r}")
        if name == "root":
            off, n = 0, 6
        elif name in layout:
            off, n = layout[name]
        else:
            raise MocapError(f"{source}, line {no}: frame {numbers[-1]}: unknown bone {name!r}")
        if name in seen:
            raise MocapError(f"{source}, line {no}: frame {numbers[-1]}: bone {name!r} appears twice")
        seen.add(name)
        if len(tok) - 1 != n:
            raise MocapError(f"{source}, line {no}: frame {numbers[-1]}: bone {name!r} needs {n} values, "
                             f"got {len(tok) - 1}")
        try:
            values = [float(t) for t in tok[1:]]
        except ValueError:
            raise MocapError(f"{source}, line {no}: frame {numbers[-1]}: non-number in {line!r}") from None
        if name == "root":
            for col, v in zip(root_cols, values):
                row[col] = v * mm if col < 3 else v * angle_scale
        else:
            row[off:off + n] = [v * angle_scale for v in values] if angle_scale != 1.0 else values
    if row is None:
        raise MocapError(f"{source}: no frames (empty or truncated AMC file)")
    close_frame()
    channels = np.asarray(rows, dtype=np.float64)
    if not np.all(np.isfinite(channels)):
        bad = int(np.argwhere(~np.isfinite(channels))[0, 0])
        raise MocapError(f"{source}: frame {numbers[bad]} has a non-finite value")
    return Motion(skeleton=skeleton, channels=channels, frames=np.asarray(numbers, dtype=np.int64), source=source)
