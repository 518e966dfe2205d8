"""One record per inversion task (see :mod:`tasks.registry`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Task:
    name: str
    build: Callable[[dict], object]            # cfg -> InversionProblem
    defaults: dict                             # the task's section of every task command's config
    theta: dict                                # TrainConfig defaults (train-theta)
    invert: dict | None = None                 # invert defaults (theta weights, invert, analyses); None: no invert
    analyses: Callable | None = None           # (problem, theta, summary, cfg, out, log) -> None
    record: Callable[[dict], dict] | None = None  # cfg -> task settings a trained theta is only valid for (kept in it)
