"""Bad input, generated: any ``key=value`` override or YAML config either runs or ends in one clear
error line with status 2, never a traceback, and never leaves a result file behind; the same for
corrupted checkpoints and image files that are not images."""
from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from landscape_cli.main import main


def base(tiny, out):
    return ["eval", "--out", str(out), "--quiet", f"model.name={tiny.spec}", f"model.weights={tiny.weights}",
            f"data.root={tiny.npz}", "data.n_examples=8", "data.download=false", "eval.batch_size=8",
            "attacks=[none, fgsm]", "eps.Linf=0.08", "device=cpu", "ray.num_workers=0"]


def outcome(argv, capsys):
    threads = torch.get_num_threads()   # a run's `threads` is process-wide: put it back for the next test
    try:
        rc = main(argv)
    except SystemExit as exc:      # argparse
        rc = exc.code
    finally:
        torch.set_num_threads(threads)
    captured = capsys.readouterr()
    return rc, captured.err


def assert_clean(rc, err, out):
    assert rc in (0, 2), (rc, err)
    assert "Traceback" not in err, err
    if rc == 2:
        lines = [line for line in err.strip().splitlines() if line.strip()]
        assert len(lines) == 1 and "error" in lines[0], err
        assert not (out / "results.csv").exists() and not (out / "results.parquet").exists()
    else:
        assert (out / "results.csv").exists()


# values as a user might type them: wrong types, negative or huge numbers, NaN/inf, empty lists, odd names
WILD = st.one_of(
    st.sampled_from(["nan", "inf", "-inf", ".nan", "[]", "{}", "null", "true", "''", "-1", "0", "1e309", "1.5",
                     "10000000000", "-3/255", "8/255", "abc", "[1, a]", "[nan]", "[[1]]", "{a: 1}", "/nonexistent/x",
                     "::", "a:b", "[none, none]", "[-1]", "[0.5]"]),
    st.integers(min_value=-10**12, max_value=10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(alphabet="abc123-_/.:[]{}, ", max_size=12),
)
# keys whose valid values mean work: generated values stay invalid or small, so a run stays short
WORK = st.one_of(st.sampled_from(["-1", "0", "nan", "1.5", "[]", "abc", "true", "null", "1", "2"]),
                 st.integers(min_value=-5, max_value=3).map(str))
KEYS = ["seed", "eval.shard_size", "data.n_examples", "data.selection", "data.split", "data.root",
        "model.name", "model.weights", "model.mean", "model.std", "eps.Linf", "eps.L2", "attacks", "defenses",
        "defense.budgets", "defense.modes", "defense.attack_modes", "defense.eps_rev", "defense.theta",
        "defense.kwargs", "attack_params.fgsm.eps", "attack_params", "device", "nonexistent.key", "eval.progress"]
WORK_KEYS = ["runs", "threads", "eval.batch_size", "defense.restarts", "defense.eot_draws", "attack_params.pgd.steps"]


# derandomize: the same examples on every machine and run (CI starts without hypothesis's example database)
@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_override_runs_or_fails_with_one_line(tiny, tmp_path_factory, capsys, data):
    key = data.draw(st.sampled_from(KEYS + WORK_KEYS), label="key")
    value = data.draw(WORK if key in WORK_KEYS else WILD, label="value")
    out = tmp_path_factory.mktemp("bad") / "out"
    rc, err = outcome(base(tiny, out) + [f"{key}={value}"], capsys)
    assert_clean(rc, err, out)


YAML = st.one_of(
    st.sampled_from(["", "- a\n- b\n", "just text", "a: [1, 2", "seed: [1]\n", "eval: 3\n", "data: {root: 7}\n",
                     "defense:\n  budgets: nan\n", "attacks: {pgd: 1}\n", "model: null\n", "eps: {Linf: -1}\n",
                     "\t- tab", "? a\n: b\n", "seed: !!python/object:os.system ls\n"]),
    st.dictionaries(st.sampled_from(["seed", "runs", "eval", "data", "eps", "defense", "junk"]),
                    st.one_of(st.integers(-3, 3), st.text(max_size=5), st.none(), st.lists(st.integers(-1, 2), max_size=2),
                              st.floats(allow_nan=True)), max_size=3).map(lambda d: "\n".join(f"{k}: {v!r}" for k, v in d.items())),
)


@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=YAML)
def test_any_yaml_config_runs_or_fails_with_one_line(tiny, tmp_path_factory, capsys, text):
    folder = tmp_path_factory.mktemp("yaml")
    path = folder / "cfg.yaml"
    path.write_text(text)
    out = folder / "out"
    rc, err = outcome(base(tiny, out) + ["--config", str(path)], capsys)
    assert_clean(rc, err, out)


class NotAllowed:   # a pickled class: weights_only loading refuses it
    pass


def corrupted_checkpoints(good: bytes):
    state = torch.load(io.BytesIO(good), weights_only=True)
    wrong_shape = {k: v for k, v in state.items()}
    wrong_shape["theta"] = {k: torch.zeros(3, 3) for k in state["theta"]}
    buf = io.BytesIO()
    torch.save(wrong_shape, buf)
    shapes = buf.getvalue()
    return {"truncated": good[: len(good) // 3], "empty": b"", "text": b"not a checkpoint at all",
            "wrong keys": _saved({"weights": torch.zeros(2)}), "wrong shapes": shapes,
            "pickled class": pickle.dumps({"theta": NotAllowed()}), "a list": _saved([torch.zeros(1)])}


def _saved(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def test_corrupted_theta_checkpoints_fail_with_one_line(tiny, tmp_path, capsys):
    from _util import REPO

    good = (REPO / "checkpoints" / "theta-gan-cifar10.pt").read_bytes()
    for name, blob in corrupted_checkpoints(good).items():
        path = tmp_path / f"{name.replace(' ', '-')}.pt"
        path.write_bytes(blob)
        out = tmp_path / f"out-{name.replace(' ', '-')}"
        rc, err = outcome(base(tiny, out) + ["defenses=[purify-z]", "defense.budgets=[1]", "attacks=[none]",
                                             f"defense.theta={path}", "defense.step_sizes={1: [adam, 0.1]}"], capsys)
        assert rc == 2, (name, err)
        assert_clean(rc, err, out)
        assert not out.exists(), f"{name}: a run that failed before its first shard left {out} behind"


@pytest.mark.parametrize("name, images, labels", [
    ("nan", np.full((4, 32, 32, 3), np.nan, dtype=np.float32), np.zeros(4, dtype=np.int64)),
    ("wrong range", np.full((4, 32, 32, 3), 300.0, dtype=np.float32), np.zeros(4, dtype=np.int64)),
    ("wrong shape", np.zeros((4, 16, 16), dtype=np.uint8), np.zeros(4, dtype=np.int64)),
    ("labels out of range", np.zeros((4, 32, 32, 3), dtype=np.uint8), np.full(4, 12, dtype=np.int64)),
    ("label count", np.zeros((4, 32, 32, 3), dtype=np.uint8), np.zeros(3, dtype=np.int64)),
])
def test_image_files_that_are_not_images_fail_with_one_line(tiny, tmp_path, capsys, name, images, labels):
    npz = tmp_path / "data.npz"
    np.savez(npz, images=images, labels=labels)
    out = tmp_path / "out"
    rc, err = outcome(base(tiny, out) + [f"data.root={npz}"], capsys)
    assert rc == 2, (name, err)
    assert_clean(rc, err, out)
    assert not out.exists()


def test_every_torch_load_is_weights_only():
    """Checkpoints are loaded with weights_only=True everywhere (one helper, landscape.io.load_tensors)."""
    import re

    from _util import REPO

    offenders = []
    for path in REPO.rglob("*.py"):
        if ".venv" in path.parts or "tests" in path.parts:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"torch\.load\(", line) and "weights_only=True" not in line:
                offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert not offenders, offenders
