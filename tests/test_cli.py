"""``landscape eval`` end to end: outputs, suite rows, determinism, errors, atomic results."""
from __future__ import annotations

import json
import signal
import subprocess
import time

import pandas as pd
import pytest
import torch
import yaml
from _util import LOSSLESS_NPZ, RESNET_FILES, landscape_command, subprocess_env

from evaluator.results import RESULT_COLUMNS, TIMING_COLUMNS
from landscape_cli.main import main

OUTPUTS = ("results.csv", "results.parquet", "per_image.parquet", "config.yaml", "versions.json")
COLUMNS = ["model", "defense", "landscape", "budget", "attack", "norm", "eps", "n", "correct", "accuracy",
           "ci_low", "ci_high", "seconds"]
N = 40
EPS = 0.08   # about half of the synthetic images lie within this Linf distance of the boundary
IN_PROCESS = "ray.num_workers=0"   # no local Ray cluster: seconds per run instead of ~10


def tiny_args(tiny, out, *extra):
    return ["eval", "--out", str(out), "--quiet",
            f"model.name={tiny.spec}", f"model.weights={tiny.weights}",
            f"data.root={tiny.npz}", f"data.n_examples={N}", "data.download=false",
            "attacks=[none, fgsm, pgd]", f"eps.Linf={EPS}", "attack_params.pgd.alpha=0.02", "device=cpu",
            IN_PROCESS, *extra]


def suite_name(res: pd.DataFrame) -> str:
    """The one suite row's attack name (``suite[fgsm+pgd]`` in the README), naming both attacks."""
    names = [a for a in res["attack"] if a.startswith("suite[")]
    assert len(names) == 1, list(res["attack"])
    assert "fgsm" in names[0] and "pgd" in names[0] and names[0].endswith("]")
    return names[0]


def run_main(argv, capsys):
    try:
        rc = main(argv)
    except SystemExit as exc:       # argparse errors
        rc = exc.code
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


@pytest.fixture(scope="module")
def tiny_run(tiny, tmp_path_factory):
    """One in-process run on the tiny model, shared by the checks on its outputs."""
    out = tmp_path_factory.mktemp("run") / "out"
    config = out.parent / "cfg.yaml"
    config.write_text("seed: 0\neval:\n  batch_size: 16\n")        # batches of 16, 16, 8
    rc = main(tiny_args(tiny, out, "--config", str(config)))
    assert rc == 0
    return out


def test_outputs_exist(tiny_run):
    for name in OUTPUTS:
        assert (tiny_run / name).is_file(), name
    assert not [p.name for p in tiny_run.iterdir() if p.name.endswith(".tmp")]


def test_results_table(tiny_run, tiny):
    res = pd.read_csv(tiny_run / "results.csv")
    readme_columns = COLUMNS + ["data"]
    assert [c for c in res.columns if c in readme_columns] == readme_columns    # all there, in the README's order
    assert [c for c in RESULT_COLUMNS if c in readme_columns] == readme_columns
    suite = suite_name(res)
    assert list(res["attack"]) == ["none", "fgsm", "pgd", suite]
    assert (res["model"] == tiny.spec).all() and (res["defense"] == "none").all()
    assert (res["landscape"] == "none").all() and (res["budget"] == 0).all()
    assert (res["n"] == N).all()
    assert (res["data"] == f"npz:{tiny.npz}").all()
    rows = res.set_index("attack")
    assert rows.loc["none", "norm"] == "none" and rows.loc["none", "eps"] == 0
    assert rows.loc["none", "accuracy"] == 1.0                  # the tiny model is perfect on clean images
    for name in ("fgsm", "pgd", suite):
        assert rows.loc[name, "norm"] == "Linf" and rows.loc[name, "eps"] == pytest.approx(EPS)
    # the attacks bite, but not completely, at this eps
    assert 0 < rows.loc["pgd", "accuracy"] < 1 and 0 < rows.loc["fgsm", "accuracy"] < 1
    assert (res["accuracy"] == res["correct"] / res["n"]).all()
    assert ((res["ci_low"] <= res["accuracy"] + 1e-9) & (res["accuracy"] <= res["ci_high"] + 1e-9)).all()
    assert (res["ci_low"] < res["ci_high"]).all()
    assert (res["seconds"] >= 0).all()
    cells = ~res["attack"].str.startswith("suite[")            # one image in one run: the total over n x runs
    assert res.loc[cells, "seconds_per_image"].to_numpy() == pytest.approx(
        (res.loc[cells, "seconds"] / (res.loc[cells, "n"] * res.loc[cells, "runs"])).to_numpy())
    assert rows.loc[suite, "seconds_per_image"] == pytest.approx(rows.loc[["fgsm", "pgd"], "seconds_per_image"].sum())
    parquet = pd.read_parquet(tiny_run / "results.parquet")
    pd.testing.assert_frame_equal(parquet.reset_index(drop=True), res, check_dtype=False)


def test_suite_row_is_the_worst_case_per_image(tiny_run):
    res = pd.read_csv(tiny_run / "results.csv")
    name = suite_name(res)
    res = res.set_index("attack")
    per = pd.read_parquet(tiny_run / "per_image.parquet")
    assert len(per) == 3 * N
    assert {"index", "label", "correct", "attack"} <= set(per.columns)
    suite = res.loc[name]
    assert suite["accuracy"] <= min(res.loc["fgsm", "accuracy"], res.loc["pgd", "accuracy"])
    both = per[per["attack"].isin(["fgsm", "pgd"])].groupby("index")["correct"].all()
    assert suite["correct"] == both.sum() and suite["n"] == N
    for name in ("none", "fgsm", "pgd"):
        assert res.loc[name, "correct"] == per.loc[per["attack"] == name, "correct"].sum()
    # the same images under every attack, drawn by seed (so not simply the first N)
    indices = [sorted(per.loc[per["attack"] == a, "index"]) for a in ("none", "fgsm", "pgd")]
    assert indices[0] == indices[1] == indices[2] and len(set(indices[0])) == N
    assert indices[0] != list(range(N))


def test_config_and_versions_written(tiny_run, tiny):
    cfg = yaml.safe_load((tiny_run / "config.yaml").read_text())
    assert cfg["data"]["n_examples"] == N
    assert cfg["eval"]["batch_size"] == 16                      # from --config
    assert cfg["attacks"] == ["none", "fgsm", "pgd"]
    assert cfg["model"]["name"] == tiny.spec
    assert cfg["attack_params"] == {"pgd": {"alpha": 0.02}}
    versions = json.loads((tiny_run / "versions.json").read_text())
    assert versions["torch"] == torch.__version__.split("+")[0]
    assert versions["landscape-defense"] and versions["python"]


def test_same_seed_same_counts_other_seed_other_images(tiny, tiny_run, tmp_path, capsys):
    # the same run again (options after the overrides this time): identical figures, image by image
    argv = tiny_args(tiny, tmp_path / "again", "eval.batch_size=16")
    argv = ["eval"] + argv[4:] + ["--out", str(tmp_path / "again"), "--quiet"]
    assert argv[1].startswith("model.name=")
    rc, out, _ = run_main(argv, capsys)
    assert rc == 0
    assert "suite[" in out and "wrote" in out                   # the table is printed
    first = pd.read_csv(tiny_run / "results.csv")
    again = pd.read_csv(tmp_path / "again" / "results.csv")
    assert list(first["correct"]) == list(again["correct"])
    keys = ["attack", "index"]
    timing = TIMING_COLUMNS                                         # wall time is the one thing allowed to differ
    p1 = pd.read_parquet(tiny_run / "per_image.parquet").sort_values(keys).reset_index(drop=True)
    p2 = pd.read_parquet(tmp_path / "again" / "per_image.parquet").sort_values(keys).reset_index(drop=True)
    pd.testing.assert_frame_equal(p1.drop(columns=timing, errors="ignore"), p2.drop(columns=timing, errors="ignore"))
    rc, _, _ = run_main(tiny_args(tiny, tmp_path / "seed1", "seed=1"), capsys)
    assert rc == 0
    p3 = pd.read_parquet(tmp_path / "seed1" / "per_image.parquet")
    assert set(p3["index"]) != set(p1["index"])


def test_shard_size_does_not_change_results(tiny, tmp_path, capsys):
    tables = []
    for shard in (8, 40):
        out = tmp_path / f"shard{shard}"
        rc, _, err = run_main(tiny_args(tiny, out, "eval.batch_size=8", f"eval.shard_size={shard}"), capsys)
        assert rc == 0, err
        per = pd.read_parquet(out / "per_image.parquet").sort_values(["attack", "index"]).reset_index(drop=True)
        tables.append((pd.read_csv(out / "results.csv"), per))
    assert list(tables[0][0]["correct"]) == list(tables[1][0]["correct"])
    assert (tables[0][1]["correct"] == tables[1][1]["correct"]).all()
    rc, _, err = run_main(tiny_args(tiny, tmp_path / "bad", "eval.batch_size=8", "eval.shard_size=12"), capsys)
    assert rc == 2 and "multiple of eval.batch_size" in err


def test_batch_size_is_part_of_the_experiment(tiny, tmp_path, capsys):
    """Attacks draw random starts per batch, so eval.batch_size is part of the experiment (shards and
    workers are not): a resumed run that changes it is refused rather than silently mixing draws."""
    out = tmp_path / "run"
    rc, _, err = run_main(tiny_args(tiny, out, "eval.batch_size=8"), capsys)
    assert rc == 0, err
    rc, _, err = run_main(tiny_args(tiny, out, "eval.batch_size=16"), capsys)
    assert rc == 2 and "different config" in err and "eval.batch_size" in err

def test_format_table(tiny_run):
    from evaluator.results import format_table

    res = pd.read_csv(tiny_run / "results.csv")
    text = format_table(res)
    lines = text.splitlines()
    assert len(lines) == 1 + len(res)
    assert "95% CI" in lines[0] and "accuracy" in lines[0]
    assert "20.4/255" in text                           # eps 0.08 shown in /255 units
    assert "100.00%" in lines[1]                        # clean accuracy of the tiny model
    assert suite_name(res) in lines[-1]


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize("override, expected", [
    ("attacks=[none, foo]", ["unknown attack 'foo'", "valid choices", "pgd", "autoattack"]),
    ("attack_params.pgd.eps=-1", ["'pgd'", "eps must be >= 0"]),
    ("data.n_exampels=5", ["unknown config key 'data.n_exampels'", "data.n_examples"]),
    ("attack_params.pgdd.steps=3", ["unknown attack 'pgdd'"]),
    ("attack_params.pgd.stepz=3", ["stepz", "steps"]),
    ("attack_params.pgdl2.eps=8/255", ["eps_confirmed"]),
    ("model.name=resnet99", ["unknown model.name 'resnet99'", "resnet20", "file.py:Class"]),
    ("defenses=[purify]", ["unknown defense 'purify'"]),
    ("=3", ["empty key"]),
])
def test_bad_input_exit_code_2_and_message(tiny, tmp_path, capsys, override, expected):
    rc, out, err = run_main(tiny_args(tiny, tmp_path / "out", override), capsys)
    assert rc == 2
    assert err.startswith("landscape eval: error:")
    for text in expected:
        assert text in err, (text, err)
    assert "Traceback" not in err
    assert not (tmp_path / "out" / "results.csv").exists()


@pytest.mark.parametrize("override", ["attack_params.pgd.steps=.inf", "attack_params.pgd.steps=.nan",
                                      "eval.batch_size=abc", "seed=abc", "device=gpu", "data.n_examples=abc",
                                      "data.n_examples=2.5", "threads=-1", "attack_params.pgd=5"])
def test_bad_values_exit_2_without_traceback(tiny, tmp_path, capsys, override):
    """Values of the wrong type or range for known keys end in OverflowError/ValueError/TypeError/
    RuntimeError tracebacks (exit 1), not exit 2 with a message: attacks/base.py AttackSpec.bind calls
    int() on inf/nan; evaluate() calls int() on seed and eval.batch_size; pick_device hands any string
    to torch.device; select_subset uses n_examples unchecked; threads<0 reaches torch.set_num_threads;
    a scalar attack_params.<name> reaches dict()."""
    try:
        rc, _, err = run_main(tiny_args(tiny, tmp_path / "out", override), capsys)
    except Exception as exc:  # noqa: BLE001 - the point is that nothing escapes main()
        pytest.fail(f"{override}: {type(exc).__name__} escaped main(): {exc}")
    assert rc == 2 and err.startswith("landscape eval: error:")


def test_missing_data_root(tiny, tmp_path, capsys):
    missing = tmp_path / "nowhere"
    rc, _, err = run_main(tiny_args(tiny, tmp_path / "out", f"data.root={missing}"), capsys)
    assert rc == 2
    assert str(missing.resolve()) in err and "data.root" in err


def test_missing_weights(tiny, tmp_path, capsys):
    rc, _, err = run_main(tiny_args(tiny, tmp_path / "out", "model.name=resnet20", "model.weights=null"), capsys)
    assert rc == 2
    assert "resnet20-12fca82f.th" in err


@pytest.mark.parametrize("argv, expected", [
    (["eval", "foo"], "foo"),
    (["eval", "data.n_examples=5", "--nosuchflag"], "--nosuchflag"),
    (["frobnicate"], "frobnicate"),
    ([], "command"),
])
def test_argparse_errors_exit_2(argv, expected, capsys):
    rc, _, err = run_main(argv, capsys)
    assert rc == 2
    assert expected in err and "usage" in err


# ----------------------------------------------------------------------------- as a process

def test_console_script_gives_the_same_table(tiny, tiny_run, tmp_path):
    """The installed command, in a fresh process (whose torch RNG starts from a random seed), gives the
    in-process run's table image by image. (The local-Ray path is covered by tests/test_ray.py.)"""
    out = tmp_path / "out"
    proc = subprocess.run(landscape_command() + tiny_args(tiny, out, "eval.batch_size=16"), capture_output=True,
                          text=True, timeout=180, env=subprocess_env())
    assert proc.returncode == 0, proc.stderr
    assert "fgsm" in proc.stdout and "wrote" in proc.stdout
    res = pd.read_csv(out / "results.csv")
    ref = pd.read_csv(tiny_run / "results.csv")
    assert list(res["attack"]) == list(ref["attack"])
    assert list(res["correct"]) == list(ref["correct"]) and list(res["n"]) == list(ref["n"])
    keys = ["attack", "index"]
    p1 = pd.read_parquet(out / "per_image.parquet").sort_values(keys).reset_index(drop=True)
    p2 = pd.read_parquet(tiny_run / "per_image.parquet").sort_values(keys).reset_index(drop=True)
    assert (p1["correct"] == p2["correct"]).all() and (p1["index"] == p2["index"]).all()


def test_console_script_error_exit_code(tiny, tmp_path):
    proc = subprocess.run(landscape_command() + tiny_args(tiny, tmp_path / "bad", "attacks=[nope]"),
                          capture_output=True, text=True, timeout=120, env=subprocess_env())
    assert proc.returncode == 2
    assert "unknown attack 'nope'" in proc.stderr and "Traceback" not in proc.stderr


def test_interrupted_run_leaves_no_results(tiny, tmp_path):
    out = tmp_path / "out"
    argv = tiny_args(tiny, out, "attacks=[none, pgd]", "attack_params.pgd.steps=1000000")
    argv.remove("--quiet")           # the progress bar on stderr says when PGD has started
    log = tmp_path / "stderr.txt"
    with open(log, "w") as err:
        proc = subprocess.Popen(landscape_command() + argv, stdout=subprocess.DEVNULL, stderr=err,
                                env=subprocess_env())
        try:
            deadline = time.monotonic() + 90
            while "pgd" not in log.read_text():           # the bar's postfix names the unit running
                assert proc.poll() is None, f"eval ended early (rc {proc.returncode}): {log.read_text()}"
                assert time.monotonic() < deadline, f"PGD never started: {log.read_text()}"
                time.sleep(0.1)
            time.sleep(1.5)                                 # well inside the attack
            assert proc.poll() is None
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "results.csv").exists()
    assert not (out / "results.parquet").exists()


# ----------------------------------------------------------------------------- the real model

def test_resnet20_under_pgd(shared, tmp_path, capsys):
    weights, npz = shared(f"weights/{RESNET_FILES['resnet20']}", LOSSLESS_NPZ)
    out = tmp_path / "out"
    rc, _, err = run_main(["eval", "--out", str(out), "--quiet", "model.name=resnet20", f"model.weights={weights}",
                           f"data.root={npz}", "data.n_examples=100", "data.download=false", "attacks=[none, pgd]",
                           "device=cpu", IN_PROCESS], capsys)
    assert rc == 0, err
    res = pd.read_csv(out / "results.csv").set_index("attack")
    assert res.loc["none", "n"] == 100
    assert res.loc["none", "accuracy"] >= 0.8
    assert res.loc["pgd", "eps"] == pytest.approx(8 / 255)
    assert res.loc["pgd", "accuracy"] <= 0.05
