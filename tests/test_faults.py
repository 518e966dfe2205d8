"""Faults a long evaluation meets: shard files cut short, a full disk, a cell that raises. Each ends
in one clear error (or a shard redone) and, after a rerun, in the table of a run without faults."""
from __future__ import annotations

import errno

import pandas as pd
import pytest

from evaluator.results import TIMING_COLUMNS
from landscape_cli.main import main


def flaky_source() -> str:
    """bench/faults.py's Flaky defense: the identity; raises at K = 2 on full batches of 8 while a flag file
    exists (a CUDA out-of-memory in one cell; the driver's probe of 16 images passes)."""
    import sys

    from _util import REPO

    sys.path.insert(0, str(REPO / "bench"))
    import faults

    return faults.FLAKY


def args(tiny, out, *extra):
    return ["eval", "--out", str(out), "--quiet", f"model.name={tiny.spec}", f"model.weights={tiny.weights}",
            f"data.root={tiny.npz}", "data.n_examples=24", "data.download=false", "eval.batch_size=8",
            "attacks=[none, pgd]", "eps.Linf=0.08", "attack_params.pgd.alpha=0.02", "attack_params.pgd.steps=2",
            "device=cpu", "seed=2", "ray.num_workers=0", *extra]


def table(out):
    return pd.read_parquet(out / "results.parquet").drop(columns=TIMING_COLUMNS)


def run(argv, capsys):
    rc = main(argv)
    return rc, capsys.readouterr()


@pytest.fixture(scope="module")
def reference(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("faults") / "reference"
    assert main(args(tiny, out)) == 0
    return table(out)


def test_a_shard_cut_short_or_of_the_wrong_size_is_redone_never_merged(tiny, reference, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(args(tiny, out)) == 0
    shards = sorted((out / "shards").glob("*.parquet"))
    cut, wrong = shards[0], shards[1]
    data = cut.read_bytes()
    cut.write_bytes(data[: len(data) // 2])                      # a crash of the machine mid-write
    pd.read_parquet(wrong).head(1).to_parquet(wrong, index=False)  # a readable file with too few rows
    (out / "results.csv").unlink()
    rc, captured = run(args(tiny, out), capsys)
    assert rc == 0
    assert captured.err.count("set aside") == 2
    pd.testing.assert_frame_equal(table(out), reference)
    assert len(list((out / "shards" / "invalid").iterdir())) == 2
    per = pd.read_parquet(out / "per_image.parquet")
    assert not per.duplicated(["attack", "index"]).any()


def test_a_resumed_run_whose_indices_file_changed_redoes_the_shards_of_other_images(tiny, tmp_path, capsys):
    """``data.indices=FILE`` is recorded as the path: a file edited between two runs of the same command
    must not leave the old images' shards standing for the new ones."""
    survivors = tmp_path / "survivors.csv"
    survivors.write_text("index\n" + "\n".join(map(str, range(0, 16))) + "\n")
    out = tmp_path / "run"
    base = [a for a in args(tiny, out) if not a.startswith("data.n_examples")]
    assert main([*base, f"data.indices={survivors}"]) == 0
    survivors.write_text("index\n" + "\n".join(map(str, range(8, 24))) + "\n")   # same count, half the images new
    rc, captured = run([*base, f"data.indices={survivors}"], capsys)
    assert rc == 0
    fresh = tmp_path / "fresh"
    assert main([a.replace(str(out), str(fresh)) for a in base] + [f"data.indices={survivors}"]) == 0
    pd.testing.assert_frame_equal(table(out), table(fresh))
    assert "other images than this run's" in captured.err
    assert sorted(pd.read_parquet(out / "per_image.parquet")["index"].unique()) == list(range(8, 24))


def test_a_full_disk_during_a_shard_write_leaves_nothing_half_written(tiny, reference, tmp_path, capsys, monkeypatch):
    import evaluator.shards

    real = evaluator.shards.atomic_write
    calls = {"n": 0}

    def filling(path, writer):
        calls["n"] += 1
        if calls["n"] == 3:
            def full(p):
                writer(p)   # the bytes land in the temporary file, then the disk is full
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(path, full)
        return real(path, writer)

    monkeypatch.setattr(evaluator.shards, "atomic_write", filling)
    out = tmp_path / "run"
    rc, captured = run(args(tiny, out), capsys)
    assert rc == 2
    err = captured.err.strip()
    assert "No space left on device" in err and "rerun the same command" in err and len(err.splitlines()) == 1
    assert not (out / "results.csv").exists()
    assert len(list((out / "shards").glob("*.parquet"))) == 2
    assert not [p for p in (out / "shards").iterdir() if p.name.endswith(".tmp")]
    monkeypatch.setattr(evaluator.shards, "atomic_write", real)
    assert main(args(tiny, out)) == 0
    pd.testing.assert_frame_equal(table(out), reference)


@pytest.mark.parametrize("workers", [0, 2])
def test_an_exception_in_one_cell_names_it_keeps_the_rest_and_resumes(tiny, tmp_path, capsys, workers):
    path = tmp_path / "flaky.py"
    path.write_text(flaky_source())
    flag = tmp_path / "flag"
    flag.write_text("")
    extra = [f"defenses=[none, {path}:Flaky]", "defense.budgets=[1, 2]", "defense.modes=[nonadaptive]",
             f"defense.kwargs={{flag: '{flag}'}}"]
    clean = tmp_path / "clean"
    assert main(args(tiny, clean, *extra[:-1], "ray.num_workers=0")) == 0
    out = tmp_path / "run"
    rc, captured = run(args(tiny, out, *extra, f"ray.num_workers={workers}"), capsys)
    assert rc == 2
    err = captured.err.strip()
    assert "defense=flaky K=2" in err and "shard u" in err and "CUDA out of memory" in err
    assert "rerun the same command to resume" in err and "Traceback" not in err
    assert not (out / "results.csv").exists()
    kept = len(list((out / "shards").glob("*.parquet")))
    assert kept >= 1
    flag.unlink()
    assert main(args(tiny, out, *extra, f"ray.num_workers={workers}")) == 0
    pd.testing.assert_frame_equal(table(out), table(clean))


def test_the_fault_bench_small_schedule_loses_and_doubles_nothing():
    """bench/faults.py --small: one of each fault against real runs (local Ray where the fault needs it)."""
    import sys

    from _util import REPO

    sys.path.insert(0, str(REPO / "bench"))
    import faults

    df = faults.run_schedule(seed=0, small=True, log=lambda row: None)
    assert len(df) == 5
    assert df["identical table"].all() and (df["lost shards"] == 0).all() and (df["doubled"] == 0).all()
    assert (df["left"] == 0).all() and (df["faults"] >= 1).all()
