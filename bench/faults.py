"""Faults against real runs, and what each cost: ``python bench/faults.py [--seed 0] [--small]``.

A seeded schedule of faults, each against a fresh ``landscape eval`` of one grid whose attacked
accuracy lies strictly between 0 and 1 (a fixed random linear classifier on synthetic images whose
labels are its own predictions, FGSM and PGD at a small radius, 6 cells x 6 shards, each batch
slowed by a sleep so that faults land mid-run):

* SIGKILL of Ray worker processes from outside at random moments (1, 3, 10 kills; local Ray, 2 workers);
* SIGKILL of the driver at random moments, each followed by a rerun (1 and 3 times);
* a shard file cut short, and one replaced by a readable file of the wrong size, after a finished run;
* a full disk during the third shard write (the write raises ENOSPC), then a rerun;
* an exception inside one cell (a CUDA out-of-memory, simulated), then a rerun without it.

For each: how many faults were injected or detected (``faults``: kills done; shard files set aside;
the disk-full error and the failing cell reported in one line), the final table against the in-process
reference (identical?), shards lost (expected but missing) and doubled (an image counted twice in ``per_image.parquet``), Ray processes left behind
by the run, and the wall-time cost against a run without faults. ``--small`` runs one of each kind
(the test suite runs it).
"""
from __future__ import annotations

import argparse
import errno
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
BIN = Path(sys.executable).parent
from evaluator.results import TIMING_COLUMNS  # noqa: E402

MODEL = '''
import time, torch, torch.nn as nn

class Linear(nn.Module):
    """A fixed random linear classifier; sleeps per call so that faults land mid-run."""
    def __init__(self, delay=0.0):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.lin = nn.Linear(3 * 32 * 32, 10)
        with torch.no_grad():
            self.lin.weight.copy_(torch.randn(10, 3 * 32 * 32, generator=g) * 0.05)
            self.lin.bias.zero_()
        self.delay = delay
    def forward(self, x):
        if self.delay:
            time.sleep(self.delay)
        return self.lin(x.flatten(1))
'''

FLAKY = '''
import os, torch.nn as nn

class Flaky(nn.Module):
    """The identity; raises at K = 2 on full batches while a flag file exists."""
    name = "flaky"
    randomized = False
    differentiable = True
    def __init__(self, budget, flag=""):
        super().__init__()
        self.budget, self.flag = budget, flag
    def forward(self, x):
        if self.budget == 2 and len(x) == 8 and self.flag and os.path.exists(self.flag):
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return x
'''
N, BATCH = 48, 8


def make_setup(root: Path) -> Path:
    import torch

    rng = np.random.default_rng(0)
    images = (rng.random((N, 32, 32, 3)) * 255).astype(np.uint8)
    (root / "linear.py").write_text(MODEL)
    (root / "flaky.py").write_text(FLAKY)
    ns: dict = {}
    exec(MODEL, ns)
    with torch.no_grad():
        logits = ns["Linear"]()(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)
    np.savez(root / "data.npz", images=images, labels=logits.argmax(1).numpy())
    return root


def argv(root: Path, out: Path, *extra: str, delay: float = 0.0) -> list[str]:
    return ["eval", "--quiet", "--out", str(out), f"data.root={root / 'data.npz'}", "data.download=false",
            f"model.name={root / 'linear.py'}:Linear", f"model.kwargs={{delay: {delay}}}", f"data.n_examples={N}",
            f"eval.batch_size={BATCH}", "attacks=[none, fgsm, pgd]", "attack_params.pgd.steps=3", "eps.Linf=1/255",
            f"defenses=[none, {root / 'flaky.py'}:Flaky]", "defense.budgets=[1, 2]", "defense.modes=[nonadaptive]",
            "seed=3", "device=cpu", *extra]


def expected_shards(out: Path) -> int:
    return 8 * (N // BATCH)   # none: 2 cells; flaky: 2 K x 3 attacks = 6 cells; one shard per batch


def table(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "results.parquet").drop(columns=TIMING_COLUMNS)


def ray_processes() -> set[int]:
    from ray_jobs.watchdog import ray_processes

    return ray_processes() if Path("/proc").is_dir() else set()


def landscape(args: list[str], env=None) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "landscape"), *args], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env)


def shards_done(out: Path) -> int:
    return len(list((out / "shards").glob("*.parquet"))) if (out / "shards").is_dir() else 0


def audit(out: Path, reference: pd.DataFrame) -> dict:
    same = (out / "results.parquet").is_file() and table(out).equals(reference)
    per = pd.read_parquet(out / "per_image.parquet") if (out / "per_image.parquet").is_file() else pd.DataFrame()
    doubled = int(per.duplicated(["defense", "budget", "attack", "index", "run"]).sum()) if len(per) else 0
    return {"identical table": bool(same), "lost shards": max(expected_shards(out) - shards_done(out), 0),
            "doubled": doubled}


def worker_kills(root, out, kills, rng, reference) -> dict:
    before = ray_processes()
    proc = landscape(argv(root, out, "ray.num_workers=2", f"ray.max_restarts={kills + 2}", delay=0.05))
    done_kills = 0
    while proc.poll() is None and done_kills < kills:
        time.sleep(rng.uniform(0.3, 1.5))
        actors = [p for p in ray_processes() - before if "EvalActor" in _cmd(p)]
        if actors:
            try:
                os.kill(rng.choice(actors), signal.SIGKILL)
                done_kills += 1
            except OSError:
                pass
    proc.wait()
    return {"runs": 1, "faults": done_kills, **audit(out, reference), "left": len(_settle(before))}


def driver_kills(root, out, kills, rng, reference) -> dict:
    before = ray_processes()
    runs = 0
    for _ in range(kills):
        target = shards_done(out) + rng.randint(1, 6)
        proc = landscape(argv(root, out, "ray.num_workers=2", delay=0.05))
        runs += 1
        deadline = time.time() + 120
        while proc.poll() is None and shards_done(out) < target and time.time() < deadline:
            time.sleep(0.05)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
    left = _settle(before)
    proc = landscape(argv(root, out, "ray.num_workers=2", delay=0.05))
    proc.wait()
    return {"runs": runs + 1, "faults": kills, **audit(out, reference), "left": len(left | _settle(before))}


def cut_shards(root, out, _, rng, reference) -> dict:
    proc = landscape(argv(root, out, "ray.num_workers=0"))
    proc.wait()
    files = sorted((out / "shards").glob("*.parquet"))
    cut, wrong = rng.sample(files, 2)
    data = cut.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    pd.read_parquet(wrong).head(1).to_parquet(wrong, index=False)
    (out / "results.csv").unlink()
    (out / "results.parquet").unlink()
    proc = landscape(argv(root, out, "ray.num_workers=0"))
    _, err = proc.communicate()
    return {"runs": 2, "faults": err.count("set aside"), **audit(out, reference), "left": 0}


def full_disk(root, out, _, rng, reference) -> dict:
    """In this process: the third shard write raises ENOSPC after its bytes reached the temporary file."""
    import evaluator.shards
    from landscape_cli.main import main

    real, calls = evaluator.shards.atomic_write, {"n": 0}

    def filling(path, writer):
        calls["n"] += 1
        if calls["n"] == 3:
            def full(p):
                writer(p)
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(path, full)
        return real(path, writer)

    import contextlib
    import io

    evaluator.shards.atomic_write = filling
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            rc1 = main(argv(root, out, "ray.num_workers=0"))
    finally:
        evaluator.shards.atomic_write = real
    tmp_left = [p for p in (out / "shards").iterdir() if p.suffix == ".tmp"]
    with contextlib.redirect_stdout(io.StringIO()):
        rc2 = main(argv(root, out, "ray.num_workers=0"))
    return {"runs": 2, "faults": int(rc1 == 2), **audit(out, reference), "left": len(tmp_left) + (rc2 != 0)}


def cell_exception(root, out, _, rng, reference) -> dict:
    flag = out.parent / f"{out.name}.flag"
    flag.write_text("")
    extra = ["ray.num_workers=2", f"defense.kwargs={{flag: '{flag}'}}"]
    proc = landscape(argv(root, out, *extra))
    _, err = proc.communicate()
    named = proc.returncode == 2 and "defense=flaky K=2" in err and "shard u" in err
    flag.unlink()
    proc = landscape(argv(root, out, *extra))
    proc.wait()
    return {"runs": 2, "faults": int(named), **audit(out, reference), "left": 0}


def _cmd(pid: int) -> str:
    from ray_jobs.watchdog import _cmdline

    return _cmdline(pid)


def _settle(before: set[int], wait_s: float = 15.0) -> set[int]:
    """Ray processes of this run still alive after ``wait_s`` seconds."""
    deadline = time.time() + wait_s
    while time.time() < deadline and ray_processes() - before:
        time.sleep(0.5)
    return ray_processes() - before


#: (name, function, counts, the no-fault baseline its wall time is compared with)
FAULTS = [("worker SIGKILL", worker_kills, [1, 3, 10], "ray"), ("driver SIGKILL + rerun", driver_kills, [1, 3], "ray"),
          ("shard cut short / wrong size", cut_shards, [2], "in-process"),
          ("full disk at a shard write", full_disk, [1], "in-process"),
          ("exception in one cell", cell_exception, [1], "ray")]


def run_schedule(seed: int = 0, small: bool = False, log=print) -> pd.DataFrame:
    rng = random.Random(seed)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = make_setup(Path(tmp))
        base = {}
        for kind, extra, delay in (("in-process", "ray.num_workers=0", 0.0), ("ray", "ray.num_workers=2", 0.05)):
            t = time.perf_counter()
            landscape(argv(root, root / f"reference-{kind}", extra, delay=delay)).wait()
            base[kind] = time.perf_counter() - t
        reference = table(root / "reference-in-process")
        assert table(root / "reference-ray").equals(reference), "Ray and in-process references differ"
        accs = reference.loc[reference["attack"] != "none", "accuracy"]
        assert ((accs > 0) & (accs < 1)).any(), "the grid's attacked accuracy must lie strictly between 0 and 1"
        for name, fn, counts, kind in FAULTS:
            for count in (counts[:1] if small else counts):
                out = root / f"{fn.__name__}-{count}"
                t = time.perf_counter()
                row = fn(root, out, count, rng, reference)
                wall = time.perf_counter() - t
                rows.append({"fault": name, "count": count, **row, "wall s": round(wall, 1),
                             "x no-fault run": round(wall / base[kind], 2), "baseline": f"{kind} {base[kind]:.1f} s"})
                log(rows[-1])
    return pd.DataFrame(rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--small", action="store_true", help="one count of each fault (the test suite's run)")
    args = ap.parse_args()
    df = run_schedule(args.seed, args.small, log=lambda r: print(r, file=sys.stderr, flush=True))
    print(df.to_markdown(index=False))


if __name__ == "__main__":
    main()
