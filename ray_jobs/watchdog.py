"""Reaps the processes of a local Ray whose driver was killed: ``python -m ray_jobs.watchdog DRIVER_PID [PID ...]``.

``ray.init()`` without an address starts a local Ray (GCS, raylet, dashboard, agents) as children of
the driver. When the driver is SIGKILLed while Ray starts, the raylet's agents (DashboardAgent,
RuntimeEnvAgent, about 200 MB) are left behind, re-parented to init, ignoring SIGTERM. This
watchdog, started by :class:`ray_jobs.runner.RayRunner` just before it starts a local Ray, follows
the driver's new descendants whose command line names Ray (not the PIDs given after the driver's,
which existed before) and, once the driver is gone, SIGKILLs those still alive. Each process is
known by its PID and start time, so a reused PID is never killed. Linux only (it reads ``/proc``);
elsewhere the runner does not start it. A normal end (``ray.shutdown()``) stops it with SIGTERM.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

POLL_S = 0.2


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent PID, start time) of a live process, or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()   # after "pid (comm) "
    return int(fields[1]), int(fields[19])


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _is_ray(cmd: str) -> bool:
    return "ray::" in cmd or "/ray/" in cmd or "raylet" in cmd or "gcs_server" in cmd


def ray_processes() -> set[int]:
    """PIDs of every Ray process alive on this machine (agents, raylets, GCS, workers)."""
    return {int(p) for p in os.listdir("/proc") if p.isdigit() and _is_ray(_cmdline(int(p)))}


def descendants(root: int) -> dict[int, int]:
    """{pid: start time} of every live descendant of ``root``."""
    parents: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None:
                parents.setdefault(st[0], []).append(int(entry))
                starts[int(entry)] = st[1]
    out, todo = {}, [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in out:
                out[child] = starts[child]
                todo.append(child)
    return out


def watch(driver: int, exclude: set[int]) -> int:
    """Follow ``driver``'s Ray descendants until it exits; then kill those left. Returns how many were killed."""
    tracked: dict[int, int] = {}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    me = os.getpid()
    while _stat(driver) is not None:
        for pid, start in descendants(driver).items():
            if pid not in exclude and pid != me and pid not in tracked and _is_ray(_cmdline(pid)):
                tracked[pid] = start
        time.sleep(POLL_S)
    killed = 0
    for pid, start in tracked.items():
        st = _stat(pid)
        if st is not None and st[1] == start:   # the same process, not a reused PID
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except OSError:
                pass
    return killed


def start(exclude_children: bool = True):
    """Start a watchdog of this process (Linux); returns the ``subprocess.Popen`` or None."""
    import subprocess

    if not Path("/proc/self/stat").exists():
        return None
    me = os.getpid()
    existing = list(descendants(me)) if exclude_children else []
    return subprocess.Popen([sys.executable, "-m", "ray_jobs.watchdog", str(me), *map(str, existing)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True,   # not in the driver's process group: a kill of the group spares it
                            cwd=str(Path(__file__).resolve().parents[1]))


if __name__ == "__main__":
    watch(int(sys.argv[1]), {int(a) for a in sys.argv[2:]})
