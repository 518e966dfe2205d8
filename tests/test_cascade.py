"""A cascade: a costlier attack run only on the images that survived cheaper ones (``data.indices``), and
the worst case across the runs still counted on every image, exactly (an image broken once stays broken)."""
import subprocess
import sys
from pathlib import Path

import pandas as pd

from landscape_cli.main import main

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "worst_case_across_runs.py"


def across(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)


def test_a_costlier_attack_on_the_survivors_gives_the_worst_case_on_every_image(tiny, tmp_path):
    common = ["eval", f"model.name={tiny.spec}", f"model.weights={tiny.weights}", f"data.root={tiny.npz}",
              "data.download=false", "--quiet", "ray.num_workers=0", "device=cpu", "eps.Linf=0.06"]
    cheap, costly, first = tmp_path / "cheap", tmp_path / "costly", tmp_path / "first"
    assert main([*common, "--out", str(cheap), "attacks=[none,fgsm]"]) == 0
    survivors = tmp_path / "survivors.csv"
    done = across(cheap, "--defense", "none", "--survivors", survivors)
    assert done.returncode == 0, done.stderr
    fgsm = pd.read_parquet(cheap / "per_image.parquet").query("attack == 'fgsm'")
    robust = sorted(fgsm[fgsm["correct"]]["index"])
    assert 0 < len(robust) < len(fgsm) == 60
    assert pd.read_csv(survivors)["index"].tolist() == robust
    assert main([*common, "--out", str(costly), "attacks=[none,pgd]", "attack_params.pgd.steps=20",
                 "attack_params.pgd.alpha=0.01", f"data.indices={survivors}"]) == 0
    pgd = pd.read_parquet(costly / "per_image.parquet").query("attack == 'pgd'")
    assert sorted(pgd["index"]) == robust                                 # it ran on the survivors alone
    assert pgd["correct"].sum() < len(robust)                             # and broke some of them
    done = across(cheap, costly, "--out", tmp_path / "wc.csv")
    assert done.returncode == 0, done.stderr
    row = pd.read_csv(tmp_path / "wc.csv").iloc[0]
    assert row["images"] == "cascade" and row["n"] == 60                  # counted on every image
    assert row["worst_case"] == pgd["correct"].sum() / 60                 # the AND: survived fgsm, then pgd
    # a run on a plain subset (images that survived elsewhere are missing from it): the shared images, as before
    assert main([*common, "--out", str(first), "attacks=[none,pgd]", "attack_params.pgd.steps=10",
                 "data.n_examples=10", "data.selection=first"]) == 0
    assert across(cheap, first, "--out", tmp_path / "wc2.csv").returncode == 0
    shared = pd.read_csv(tmp_path / "wc2.csv").iloc[0]
    assert shared["images"] == "shared" and shared["n"] == 10


def test_survivors_need_exactly_one_cell(tiny, tmp_path):
    out = tmp_path / "run"                      # two cells: one per norm
    assert main(["eval", f"model.name={tiny.spec}", f"model.weights={tiny.weights}", f"data.root={tiny.npz}",
                 "data.download=false", "--quiet", "ray.num_workers=0", "device=cpu", "attacks=[none,fgsm,pgdl2]",
                 "attack_params.pgdl2.steps=2", "--out", str(out)]) == 0
    done = across(out, "--survivors", tmp_path / "s.csv")
    assert done.returncode != 0 and "exactly one cell" in done.stderr and not (tmp_path / "s.csv").exists()
    # the filters pick cells by defense, budget and landscape, so the two norms of one cell stay two
    assert across(out, "--survivors", tmp_path / "s.csv", "--defense", "none", "--budget", "0").returncode != 0


def test_paired_gain_is_the_mean_per_image_difference_with_an_interval_around_it():
    import importlib.util

    import numpy as np

    spec = importlib.util.spec_from_file_location("_worst_case_across_runs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rng = np.random.default_rng(1)
    undefended = pd.Series(rng.random(400) < 0.2, index=range(400))
    defended = undefended | pd.Series(rng.random(400) < 0.1, index=range(400))   # robust wherever undefended was, and more
    defended = defended.iloc[::-1]                                                 # order must not matter: paired by index
    g = module.paired_gain(defended, undefended)
    assert g["gain"] == (defended.sort_index().astype(int) - undefended.astype(int)).mean() > 0
    assert 0 < g["gain_low"] < g["gain"] < g["gain_high"]
    assert np.isnan(module.paired_gain(undefended, None)["gain"])
