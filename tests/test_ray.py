"""Distributed evaluation on a real local Ray: same tables whatever the workers, crashes, resume, jobs."""
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from evaluator.results import TIMING_COLUMNS
from landscape_cli.main import main

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

MODEL_SRC = '''
import os, time
import torch, torch.nn as nn

class Slow(nn.Module):
    """A fixed random linear classifier; sleeps per call, and crashes its process once if a flag file exists
    (a worker's process: the driver, which built it and probes it before the run, is never the one to die);
    a worker on a node marked SLOW_HOLD=1 waits while the hold file exists, so another node gets work first."""
    def __init__(self, delay=0.0, crash_flag="", hold=""):
        super().__init__()
        self.home = os.getpid()
        g = torch.Generator().manual_seed(0)
        self.lin = nn.Linear(3 * 32 * 32, 10)
        with torch.no_grad():
            self.lin.weight.copy_(torch.randn(10, 3 * 32 * 32, generator=g) * 0.05)
            self.lin.bias.zero_()
        self.delay, self.crash_flag, self.hold = delay, crash_flag, hold
    def forward(self, x):
        # a worker on a node started with SLOW_HOLD=1 waits while the hold file exists (at most 5 minutes)
        t0 = time.time()
        while (self.hold and os.getpid() != self.home and os.environ.get("SLOW_HOLD") == "1"
               and os.path.exists(self.hold) and time.time() - t0 < 300):
            time.sleep(0.1)
        if self.crash_flag and os.getpid() != self.home and os.path.exists(self.crash_flag):
            os.remove(self.crash_flag)
            os._exit(1)
        if self.delay:
            time.sleep(self.delay)
        return self.lin(x.flatten(1))
'''


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray")
    rng = np.random.default_rng(0)
    images = (rng.random((48, 32, 32, 3)) * 255).astype(np.uint8)
    (root / "slow_model.py").write_text(MODEL_SRC)
    # Labels are the model's own predictions, so clean accuracy is 100% and the small attacks of
    # args_for leave an attacked accuracy strictly between 0 and 1: the comparisons check real work.
    namespace: dict = {}
    exec(MODEL_SRC, namespace)
    import torch
    with torch.no_grad():
        logits = namespace["Slow"]()(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)
    np.savez(root / "data.npz", images=images, labels=logits.argmax(1).numpy())
    return root


def args_for(root, out, *extra, delay=0.0, crash="", hold=""):
    return ["eval", "--quiet", "--out", str(out), f"data.root={root / 'data.npz'}",
            f"model.name={root / 'slow_model.py'}:Slow",
            f"model.kwargs={{delay: {delay}, crash_flag: '{crash}', hold: '{hold}'}}",
            "data.n_examples=48", "eval.batch_size=8", "attacks=[none,fgsm,pgd]", "attack_params.pgd.steps=3",
            "eps.Linf=1/255",
            "seed=3", *extra]


def submit_args(root, out, *extra, **kw):
    return [a for a in args_for(root, out, *extra, **kw)[1:] if a != "--quiet"]


def table(out):
    df = pd.read_csv(Path(out) / "results.csv")
    return df.drop(columns=TIMING_COLUMNS).sort_values(["defense", "budget", "attack"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def reference(setup):
    out = setup / "inproc"
    assert main(args_for(setup, out, "ray.num_workers=0")) == 0
    return table(out)


def test_same_table_with_one_and_two_workers(setup, reference):
    attacked = reference[reference["attack"] != "none"]["accuracy"]
    assert ((attacked > 0) & (attacked < 1)).all(), reference[["attack", "accuracy"]]
    for n in (1, 2):
        out = setup / f"ray{n}"
        assert main(args_for(setup, out, f"ray.num_workers={n}")) == 0
        pd.testing.assert_frame_equal(table(out), reference)
        per = pd.read_parquet(out / "per_image.parquet")
        assert not per.duplicated(["attack", "index"]).any()


def test_killed_actor_leaves_complete_results(setup, reference):
    flag = setup / "crash-once"
    flag.write_text("x")
    out = setup / "crash"
    assert main(args_for(setup, out, "ray.num_workers=2", crash=str(flag))) == 0
    assert not flag.exists()  # a worker really died
    pd.testing.assert_frame_equal(table(out), reference)
    shards = list((out / "shards").glob("*.parquet"))
    assert len(shards) == 3 * 48 // 8
    per = pd.read_parquet(out / "per_image.parquet")
    assert len(per) == 3 * 48 and not per.duplicated(["attack", "index"]).any()


def test_interrupted_driver_resumes_to_the_same_table(setup, reference):
    out = setup / "resume"
    cmd = [str(BIN / "landscape"), *args_for(setup, out, "ray.num_workers=0", delay=0.3)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "shards").glob("*.parquet"))) < 3:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list((out / "shards").glob("*.parquet")))
    assert 3 <= done < 18 and not (out / "results.csv").exists()
    assert main(args_for(setup, out, "ray.num_workers=0", delay=0.3)) == 0
    pd.testing.assert_frame_equal(table(out), reference)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="the watchdog reads /proc (Linux)")
def test_a_killed_driver_leaves_no_ray_process_behind(setup, reference):
    """SIGKILL of the driver while its local Ray starts (when the raylet's agents used to be orphaned) and
    once shards are done: a few seconds later none of that Ray's processes is alive; the run then resumes.
    The run's processes are its driver's Ray descendants, taken just before the kill (so another Ray on the
    machine does not count)."""
    from ray_jobs.watchdog import _cmdline, _is_ray, _stat, descendants

    out = setup / "orphans"
    cmd = [str(BIN / "landscape"), *args_for(setup, out, "ray.num_workers=2", delay=0.3)]
    for moment in ("starting", "running"):
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        ours: dict = {}
        while time.time() < deadline:
            ours = {p: t for p, t in descendants(proc.pid).items() if _is_ray(_cmdline(p))}
            if moment == "starting" and any("Agent" in _cmdline(p) for p in ours):
                break   # the first of its Ray's agents is up: the raylet is starting its children
            if moment == "running" and list((out / "shards").glob("*.parquet")):
                break
            time.sleep(0.05)
        assert ours, f"{moment}: no Ray process was started"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        alive = lambda: {p: _cmdline(p) for p, t in ours.items() if (_stat(p) or (0, None))[1] == t}  # noqa: E731
        deadline = time.time() + 20
        while time.time() < deadline and alive():
            time.sleep(0.5)
        assert not alive(), f"killed while {moment}: left behind {alive()}"
    assert main(args_for(setup, out, "ray.num_workers=0", delay=0.3)) == 0
    pd.testing.assert_frame_equal(table(out), reference)


def test_resume_refuses_a_different_config(setup, reference, capsys):
    assert main(args_for(setup, setup / "inproc", "ray.num_workers=0", "attack_params.pgd.steps=4")) == 2
    assert "different config" in capsys.readouterr().err


# -- a real cluster: ray start --head, a second node, the Jobs API -------------------------------
# Every port is the test's own (so another Ray on the machine, a user's evaluation, neither breaks the test
# cluster nor is broken by it), and teardown kills only the sessions its `ray start` calls opened: `ray stop`
# would stop every Ray on the machine.
HEAD_PORTS = ["--port=6479", "--dashboard-port=8365", "--ray-client-server-port=10201", "--node-manager-port=6490",
              "--object-manager-port=6492", "--dashboard-agent-listen-port=52465", "--dashboard-agent-grpc-port=52466",
              "--runtime-env-agent-port=52467", "--metrics-export-port=52468", "--min-worker-port=21000",
              "--max-worker-port=21499"]
NODE_PORTS = ["--node-manager-port=6491", "--object-manager-port=6493", "--dashboard-agent-listen-port=52475",
              "--dashboard-agent-grpc-port=52476", "--runtime-env-agent-port=52477", "--metrics-export-port=52478",
              "--min-worker-port=21500", "--max-worker-port=21999"]
_sessions: list[int] = []   # session ids of the `ray start` calls made here (each is its session's leader)
_temp_dirs: list[str] = []  # one per node: two nodes on one machine sharing one race on the job's unpacked working_dir


def _temp_dir() -> str:
    _temp_dirs.append(tempfile.mkdtemp(prefix="lsray-", dir="/tmp"))   # short: Ray's socket paths live under it
    return _temp_dirs[-1]


def _ray(*args, env):
    proc = subprocess.Popen([str(BIN / "ray"), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    if args[0] == "start":
        _sessions.append(proc.pid)
    stdout, stderr = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def _session(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(text[text.rindex(")") + 2:].split()[3])


def _stop_our_clusters(env) -> None:
    """SIGKILL every process of the sessions our `ray start` calls opened, and their descendants."""
    if not Path("/proc/self/stat").exists():   # not Linux: no way to tell our Ray from another's
        _ray("stop", "--force", env=env)
        return
    from ray_jobs.watchdog import _stat, descendants

    ours: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _session(int(entry)) in _sessions and (st := _stat(int(entry))):
            ours[int(entry)] = st[1]
            ours.update(descendants(int(entry)))
    for pid, start in ours.items():
        if (_stat(pid) or (0, None))[1] == start:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    deadline = time.time() + 20
    while time.time() < deadline and any((_stat(p) or (0, None))[1] == t for p, t in ours.items()):
        time.sleep(0.2)
    _sessions.clear()
    for path in _temp_dirs:
        shutil.rmtree(path, ignore_errors=True)
    _temp_dirs.clear()


@pytest.fixture
def cluster(tmp_path):
    temp_dir = _temp_dir()
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16), OMP_NUM_THREADS="1",
               PATH=f"{BIN}:{os.environ.get('PATH', '')}", SLOW_HOLD="1", RAY_TMPDIR=temp_dir)   # SLOW_HOLD: see Slow
    started = _ray("start", "--head", "--node-ip-address=127.0.0.1", f"--temp-dir={temp_dir}", *HEAD_PORTS,
                   "--num-cpus=1", "--disable-usage-stats", env=env)
    try:
        assert started.returncode == 0, started.stderr[-2000:]
        yield env, "http://127.0.0.1:8365"
    finally:
        _stop_our_clusters(env)


def test_submit_wait_runs_an_evaluation(cluster, setup, reference, tmp_path):
    env, address = cluster
    out = tmp_path / "job"
    cmd = [str(BIN / "landscape"), "submit", "--address", address, "--wait", *submit_args(setup, out)]
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "SUCCEEDED" in res.stdout
    pd.testing.assert_frame_equal(table(out), reference)
    bad = subprocess.run([str(BIN / "landscape"), "jobs", "status", "nope", "--address", address], cwd=REPO,
                         env=dict(env, RAY_AUTH_TOKEN="wrong"), capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "token" in bad.stderr


def test_the_token_is_sent_whatever_the_callers_auth_mode(cluster, setup, reference, tmp_path):
    """As the README says: a token given by --token-file, or in ~/.ray/auth_token, reaches a token-auth
    cluster from a shell that never set RAY_AUTH_MODE (Ray's client alone sends it only in token mode)."""
    env, address = cluster
    bare = {k: v for k, v in env.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")}
    token = tmp_path / "token"
    token.write_text(env["RAY_AUTH_TOKEN"])
    out = tmp_path / "job"
    cmd = [str(BIN / "landscape"), "submit", "--address", address, "--wait", "--token-file", str(token),
           *submit_args(setup, out, "ray.num_workers=1")]
    res = subprocess.run(cmd, cwd=REPO, env=bare, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    pd.testing.assert_frame_equal(table(out), reference)
    job_id = next(line.strip() for line in res.stdout.splitlines() if line.strip().startswith("raysubmit_"))
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text(env["RAY_AUTH_TOKEN"])
    status = subprocess.run([str(BIN / "landscape"), "jobs", "status", job_id, "--address", address], cwd=REPO,
                            env=dict(bare, HOME=str(home)), capture_output=True, text=True, timeout=60)
    assert status.returncode == 0 and "SUCCEEDED" in status.stdout, status.stderr[-2000:]
    # and without any token the cluster refuses, with the one-line hint
    refused = subprocess.run([str(BIN / "landscape"), "jobs", "status", job_id, "--address", address], cwd=REPO,
                             env=dict(bare, HOME=str(tmp_path / "nohome")), capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "token" in refused.stderr


def test_submit_runs_a_training_command(cluster, setup, tmp_path):
    """`landscape submit --command train-theta --task gan-cifar10`: one line per step of the GPU recipe; the
    config is resolved and checked before submission (a bad key is refused locally, in one line)."""
    env, address = cluster
    out = tmp_path / "theta"
    common = ["submit", "--address", address, "--wait", "--command", "train-theta", "--task", "gan-cifar10",
              "--out", str(out), f"data.root={setup / 'data.npz'}", "data.download=false", "data.n_train=32",
              "data.n_heldout=16", "theta.iterations=3", "theta.eval_every=0", "threads=1"]
    res = subprocess.run([str(BIN / "landscape"), *common], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "SUCCEEDED" in res.stdout and (out / "theta.pt").is_file()
    bad = subprocess.run([str(BIN / "landscape"), *common, "theta.no_such_key=1"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "no_such_key" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_second_node_receives_work_and_its_loss_is_survived(cluster, setup, reference, tmp_path):
    """Two nodes on this machine, each with its own ports and temp dir: with the default ports the test failed
    whenever another Ray ran on the machine, and nodes sharing a temp dir race on the job's unpacked working_dir
    (seen: the head's worker could not start). The head's worker is held (SLOW_HOLD=1 on the head, a hold file)
    until the second node has finished a shard, so one node cannot do all the work before the other's is up."""
    env, address = cluster
    node_env = {k: v for k, v in env.items() if k != "SLOW_HOLD"}
    node_env["RAY_TMPDIR"] = node_tmp = _temp_dir()
    node = _ray("start", "--address=127.0.0.1:6479", "--num-cpus=1", f"--temp-dir={node_tmp}", *NODE_PORTS,
                "--disable-usage-stats", env=node_env)
    assert node.returncode == 0, node.stderr[-2000:]
    out = tmp_path / "twonodes"
    hold = tmp_path / "hold"
    hold.write_text("x")
    cmd = [str(BIN / "landscape"), "submit", "--address", address, "--wait",
           *submit_args(setup, out, "ray.num_workers=2", "ray.max_restarts=5", delay=0.4, hold=str(hold))]
    job = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    nodes = set()
    deadline = time.time() + 240
    while time.time() < deadline and len(nodes) < 2:
        for f in (out / "shards").glob("*.parquet"):
            try:
                nodes |= set(pd.read_parquet(f)["node"])
            except Exception:
                pass
        if nodes:
            hold.unlink(missing_ok=True)   # the second node has done a shard: let the head's worker go on
        time.sleep(0.5)
    if len(nodes) < 2:
        job.kill()
        pytest.fail(f"{len(nodes)} node(s) finished a shard in 240 s; the job said:\n{job.communicate()[0][-3000:]}")
    raylets = subprocess.run(["pgrep", "-f", "node_manager_port=6491"], capture_output=True, text=True).stdout.split()
    assert raylets
    for pid in raylets:
        os.kill(int(pid), signal.SIGKILL)
    stdout, _ = job.communicate(timeout=300)
    assert job.returncode == 0, stdout[-3000:]
    pd.testing.assert_frame_equal(table(out), reference)
    per = pd.read_parquet(out / "per_image.parquet")
    assert len(per) == 3 * 48 and not per.duplicated(["attack", "index"]).any()


def test_the_runners_docstring_example_runs(setup, reference):
    """The example in ray_jobs/runner.py, run as written, gives the in-process table."""
    import doctest

    import ray_jobs.runner
    from evaluator.config import EVAL_DEFAULTS, OPEN_SECTIONS
    from landscape.config import load_config

    argv = args_for(setup, setup / "unused")
    overrides = [a for a in argv if "=" in a and not a.startswith("--")]
    cfg = load_config(EVAL_DEFAULTS, None, overrides, OPEN_SECTIONS)
    test = doctest.DocTestParser().get_doctest(ray_jobs.runner.__doc__, {"cfg": cfg}, "runner", None, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test, clear_globs=False)
    assert runner.failures == 0 and runner.tries == 4
    got = test.globs["results"].drop(columns=TIMING_COLUMNS).sort_values(["defense", "budget", "attack"])
    pd.testing.assert_frame_equal(got.reset_index(drop=True), reference, check_dtype=False)
