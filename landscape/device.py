"""The torch device a config names: ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``."""
from __future__ import annotations

import torch

from .errors import LandscapeError


class DeviceError(LandscapeError, ValueError):
    pass


def pick_device(name: str | None) -> torch.device:
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(name, str) or not (name == "cpu" or name == "cuda" or name.startswith("cuda:")):
        raise DeviceError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(f"device={name} asked for, but CUDA is not available here; use device=cpu")
    return torch.device(name)
