"""Inversion tasks by name: each task is one :class:`Task` record, defined in its own package.

A record holds everything the commands need of a task: how to build its
:class:`~landscape.problem.InversionProblem` from a config, the task's own config section, the
theta training settings (``landscape train-theta``), the ``landscape invert`` settings and the
analyses ``invert`` runs after its table.
"""
from __future__ import annotations

import torch

from landscape.errors import LandscapeError
from tasks.task import Task

__all__ = ["Task", "TaskError", "TASKS", "get_task", "build_task"]


class TaskError(LandscapeError, ValueError):
    pass


def _tasks() -> dict:
    from tasks.gan import TASK as gan
    from tasks.pose import TASK as pose
    from tasks.reverse import TASK as reverse

    return {t.name: t for t in (gan, reverse, pose)}


TASKS = _tasks()


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise TaskError(f"unknown task {name!r}; valid: {', '.join(TASKS)}")
    return TASKS[name]


def build_task(name: str, cfg: dict):
    task = get_task(name)
    torch.manual_seed(int(cfg.get("seed", 0)))
    return task.build(cfg)

