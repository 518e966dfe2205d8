"""Run evaluation shards on a pool of Ray actors, one per GPU (or per CPU slot), with retries.

The driver builds the evaluation context once (classifier, generator, theta, images) and puts
it in Ray's object store, so worker nodes need no local copy of any weights or data. Each
actor takes the next shard as soon as it is free (dynamic scheduling). When an actor dies (a
crash, a lost node) its shard goes back in the queue and a fresh actor replaces it, so no shard
is lost; shards are written by the driver under their key, so none is counted twice.

Like ``ray.util.ActorPool``, it is one small object: give it the Ray settings, hand it to
:func:`evaluator.run.evaluate`, and close it (or use it as a context manager). Example (run by
``tests/test_ray.py``, with ``cfg`` a config of ``landscape eval``)::

    >>> from evaluator.run import evaluate
    >>> from ray_jobs.runner import RayRunner
    >>> with RayRunner({"address": None, "num_workers": 2}) as runner:
    ...     results, per_image = evaluate(cfg, progress=False, runner=runner)
    >>> bool(per_image["node"].str.len().gt(0).all())   # every record names the Ray node that ran it
    True
"""
from __future__ import annotations

import os
import sys
import time
from collections import deque

import ray
import torch
from ray.exceptions import RayActorError, RayError, RayTaskError

from evaluator.run import ShardFailed
from landscape.plugins import USER_MODULE_PREFIX


@ray.remote
class EvalActor:
    """Holds one copy of the evaluation context and evaluates shards of it."""

    def __init__(self, ctx, threads: int, use_gpu: bool):
        torch.set_num_threads(max(1, int(threads)))
        self.ctx = ctx.to("cuda" if use_gpu and torch.cuda.is_available() else "cpu")

    def ready(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def pid(self) -> int:
        return os.getpid()

    def run(self, shard):
        records = self.ctx.run_shard(shard)
        records["node"] = ray.get_runtime_context().get_node_id()
        return records


def _register_user_modules() -> None:
    """Models loaded from a file path live in modules workers cannot import: send them by value."""
    from ray import cloudpickle

    for name, module in list(sys.modules.items()):
        if name.startswith(USER_MODULE_PREFIX):
            cloudpickle.register_pickle_by_value(module)


class RayRunner:
    """Connects to (or starts) Ray and runs shards on a pool of :class:`EvalActor`."""

    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.started = False
        self.watchdog = None
        self.actors: dict = {}

    def _connect(self) -> None:
        """Join or start Ray on first use, so a config error never waits for a cluster."""
        address = self.cfg.get("address")
        if not ray.is_initialized():
            kwargs = dict(include_dashboard=False, log_to_driver=True, configure_logging=False)
            if address:
                ray.init(address=address, **kwargs)
            else:
                from ray_jobs import watchdog

                self.watchdog = watchdog.start()   # reaps this local Ray's processes if this driver is killed
                ray.init(**kwargs)
                self.started = True

    def __enter__(self) -> "RayRunner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for actor in list(self.actors):
            ray.kill(actor, no_restart=True)
        self.actors.clear()
        if self.started and ray.is_initialized():
            ray.shutdown()
        if self.watchdog is not None:   # a normal end: Ray stopped its own processes
            self.watchdog.terminate()
            self.watchdog.wait(timeout=10)
            self.watchdog = None

    # -- the pool ----------------------------------------------------------------------------
    def _pool_shape(self) -> tuple[int, int, float]:
        res = ray.cluster_resources()
        gpus = res.get("GPU", 0)
        per_gpu = self.cfg.get("gpus_per_worker")
        per_gpu = (1 if gpus else 0) if per_gpu is None else float(per_gpu)
        per_cpu = max(1, int(self.cfg.get("cpus_per_worker") or 1))
        n = self.cfg.get("num_workers")
        if n is None:
            n = int(gpus // per_gpu) if per_gpu else int(res.get("CPU", 1) // per_cpu)
        return max(1, int(n)), per_cpu, per_gpu

    def _spawn(self, ctx_ref, per_cpu, per_gpu):
        # Ray's own actor restart is off: a dead actor is replaced here by a fresh one, which Ray may
        # place on any node that still has room (a lost node's actor cannot restart in place).
        actor = EvalActor.options(num_cpus=per_cpu, num_gpus=per_gpu, max_restarts=0).remote(ctx_ref, per_cpu,
                                                                                            per_gpu > 0)
        self.actors[actor] = actor.ready.remote()
        return actor

    def __call__(self, ctx, shards, on_done, bar=None) -> None:
        if not shards:
            return
        self._connect()
        _register_user_modules()
        n, per_cpu, per_gpu = self._pool_shape()
        n = min(n, len(shards))
        ctx_ref = ray.put(ctx)
        self.replacements, self.max_replacements = 0, int(self.cfg.get("max_restarts", 3)) * n
        for _ in range(n):
            self._spawn(ctx_ref, per_cpu, per_gpu)
        queue = deque(shards)
        idle: list = []
        running: dict = {}          # future -> (actor, shard)
        starting = dict(self.actors)  # actor -> ready future
        t0, images = time.perf_counter(), 0
        while queue or running:
            # actors that became ready join the idle list
            if starting:
                ready, _ = ray.wait(list(starting.values()), num_returns=len(starting), timeout=0)
                for actor, fut in list(starting.items()):
                    if fut in ready:
                        del starting[actor]
                        try:
                            ray.get(fut)
                            idle.append(actor)
                        except RayError:
                            self._replace(actor, ctx_ref, per_cpu, per_gpu, starting)
            while idle and queue:
                actor, shard = idle.pop(), queue.popleft()
                running[actor.run.remote(shard)] = (actor, shard)
            if not running:
                if starting:
                    ray.wait(list(starting.values()), num_returns=1, timeout=1.0)
                    continue
                raise RuntimeError("no Ray worker could start; check the cluster's resources (ray status)")
            done, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
            for fut in done:
                actor, shard = running.pop(fut)
                try:
                    records = ray.get(fut)
                except RayTaskError as exc:   # the shard's own code raised (an actor that died is RayActorError)
                    raise ShardFailed(shard, getattr(exc, "cause", None) or exc) from None
                except RayActorError:
                    queue.appendleft(shard)            # redo it elsewhere; the dead actor is replaced
                    self._replace(actor, ctx_ref, per_cpu, per_gpu, starting)
                    if bar is not None:
                        bar.write(f"a worker died during shard {shard.key}; it will be redone")
                    continue
                on_done(shard, records)
                idle.append(actor)
                images += shard.stop - shard.start
                if bar is not None:
                    bar.update(shard.stop - shard.start)
                    rate = images / max(time.perf_counter() - t0, 1e-9)
                    bar.set_postfix_str(f"{rate:.1f} img/s, workers alive {len(idle) + len(running)}")

    def _replace(self, actor, ctx_ref, per_cpu, per_gpu, starting) -> None:
        self.replacements += 1
        if self.replacements > self.max_replacements:
            raise RuntimeError(f"{self.replacements} Ray workers died (ray.max_restarts={self.cfg.get('max_restarts')} "
                               f"per worker); giving up. Finished shards are kept: rerun the same command to resume.")
        self.actors.pop(actor, None)
        try:
            ray.kill(actor, no_restart=True)
        except RayError:
            pass
        new = self._spawn(ctx_ref, per_cpu, per_gpu)
        starting[new] = self.actors[new]
