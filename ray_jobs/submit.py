"""Submit ``landscape eval`` (or a training command) to a Ray cluster through the Ray Jobs API, and follow or stop it.

The job's working directory is a staged copy of this project (its packages, ``pyproject.toml``
and the resolved config as ``submitted-config.yaml``), uploaded by Ray, so the head node needs
no checkout. Data and weights are read on the cluster from the paths in the config (a shared
filesystem, or paths present on every node); results go to ``--out``, which must be a path the
cluster can write and you can read (a shared filesystem).

Token authentication (Ray >= 2.52; on by default for local clusters from 2.59): the client
sends the cluster's token, read from ``--token-file FILE``, ``RAY_AUTH_TOKEN``, the file named by
``RAY_AUTH_TOKEN_PATH``, or ``~/.ray/auth_token``, whatever the caller's ``RAY_AUTH_MODE`` (Ray's
client sends a token only in token mode, so this client switches it on when it finds one).
"""
from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path

from landscape.config import dump_config
from landscape.errors import LandscapeError

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("landscape", "cifar10", "defense", "evaluator", "attacks", "ray_jobs", "tasks", "landscape_cli", "configs",
            "checkpoints", "examples")
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
#: how long a submission waits for a just-started cluster's job agent ("No available agent to submit job")
AGENT_WAIT_S = 90


class SubmitError(LandscapeError, RuntimeError):
    pass


def token_source(token_file: str | None = None) -> str | None:
    """Where this client's token comes from (the first of ``token_file``, ``RAY_AUTH_TOKEN``,
    ``RAY_AUTH_TOKEN_PATH``, ``~/.ray/auth_token``), or None: no token to send."""
    if token_file:
        if not Path(token_file).is_file():
            raise SubmitError(f"token file {token_file} not found")
        return str(Path(token_file).resolve())
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "RAY_AUTH_TOKEN"
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path:
        if not Path(path).is_file():
            raise SubmitError(f"RAY_AUTH_TOKEN_PATH names {path}, which is not a file")
        return path
    default = Path.home() / ".ray" / "auth_token"
    return str(default) if default.is_file() else None


def _client(address: str, token_file: str | None = None):
    source = token_source(token_file)
    if token_file:   # the file given wins over a token in the environment
        os.environ["RAY_AUTH_TOKEN_PATH"] = source
        os.environ.pop("RAY_AUTH_TOKEN", None)
    if source is not None and os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
        # Ray's client attaches the token only in token mode: a token we were given is meant to be sent
        os.environ["RAY_AUTH_MODE"] = "token"
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except Exception as exc:
        msg = str(exc)
        if "token" in msg.lower() or "auth" in msg.lower():
            raise SubmitError(
                f"the cluster at {address} refused the client's token ({msg.splitlines()[0]}). Give the cluster's token "
                f"as RAY_AUTH_TOKEN=..., RAY_AUTH_TOKEN_PATH=FILE, --token-file FILE, or in ~/.ray/auth_token "
                f"(print it on the head node with `ray get-auth-token`)") from None
        raise SubmitError(f"cannot reach the Ray dashboard at {address}: {msg.splitlines()[0] if msg else exc}") from None


def requirements() -> list[str]:
    import tomllib

    return list(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"])


def stage(cfg: dict) -> Path:
    """A temporary copy of the project with the resolved config, to upload as the job's working_dir."""
    root = Path(tempfile.mkdtemp(prefix="landscape-job-"))
    for name in PACKAGES:
        src = REPO / name
        if src.exists():
            shutil.copytree(src, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, root / name)
    (root / "submitted-config.yaml").write_text(dump_config(cfg))
    return root


def submit(cfg: dict, address: str, out: str, wait: bool = False, pip: bool = False, token_file: str | None = None,
           log=print, command: str = "eval", task: str | None = None) -> tuple[str, str | None]:
    """Submit ``landscape <command>`` (the evaluation by default) with its resolved ``cfg``; returns (job id,
    final status if ``wait``)."""
    client = _client(address, token_file)
    workdir = stage(cfg)
    runtime_env = {"working_dir": str(workdir)}
    if pip:
        runtime_env["pip"] = requirements()
    import shlex

    entrypoint = (f"python -m landscape_cli.main {shlex.quote(command)}" + (f" --task {shlex.quote(task)}" if task else "")
                  + f" --config submitted-config.yaml --out {shlex.quote(str(out))} --quiet")
    try:
        deadline = time.time() + AGENT_WAIT_S
        while True:
            try:
                job_id = client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env,
                                           metadata={"tool": "landscape", "command": command, "out": str(out)})
                break
            except RuntimeError as exc:   # a cluster just started: its job agent is not up yet
                if "No available agent" not in str(exc) or time.time() > deadline:
                    raise
                time.sleep(2)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    log(job_id)
    if not wait:
        return job_id, None
    return job_id, follow(client, job_id, log)


def follow(client, job_id: str, log=print) -> str:
    async def tail():
        async for lines in client.tail_job_logs(job_id):
            log(lines, end="")

    try:
        asyncio.run(tail())
    except Exception:  # the log stream can close before the status settles; fall back to polling
        pass
    while True:
        status = str(client.get_job_status(job_id)).split(".")[-1]
        if status in TERMINAL:
            return status
        time.sleep(1)


def job_command(action: str, job_id: str, address: str, token_file: str | None = None, log=print) -> str:
    client = _client(address, token_file)
    if action == "status":
        status = str(client.get_job_status(job_id)).split(".")[-1]
        log(status)
        return status
    if action == "logs":
        log(client.get_job_logs(job_id), end="")
        return "ok"
    if action == "stop":
        stopped = client.stop_job(job_id)
        log("stopped" if stopped else "not running")
        return "ok"
    raise SubmitError(f"unknown jobs action {action!r}; valid: status, logs, stop")
