"""A cascade: a costlier attack run only on the images that survived cheaper ones (``data.indices``), and
the worst case across the runs still counted on every image, exactly (an image broken once stays broken)."""
import pandas as pd

from evaluator.across_runs import paired_gain
from landscape_cli.main import main


def across(*args) -> int:
    return main(["worst-case", *map(str, args)])


def test_a_costlier_attack_on_the_survivors_gives_the_worst_case_on_every_image(tiny, tmp_path, capsys):
    common = ["eval", f"model.name={tiny.spec}", f"model.weights={tiny.weights}", f"data.root={tiny.npz}",
              "data.download=false", "--quiet", "ray.num_workers=0", "device=cpu", "eps.Linf=0.06"]
    cheap, costly, first = tmp_path / "cheap", tmp_path / "costly", tmp_path / "first"
    assert main([*common, "--out", str(cheap), "attacks=[none,fgsm]"]) == 0
    survivors = tmp_path / "survivors.csv"
    assert across(cheap, "--defense", "none", "--survivors", survivors) == 0
    fgsm = pd.read_parquet(cheap / "per_image.parquet").query("attack == 'fgsm'")
    robust = sorted(fgsm[fgsm["correct"]]["index"])
    assert 0 < len(robust) < len(fgsm) == 60
    assert pd.read_csv(survivors)["index"].tolist() == robust
    assert main([*common, "--out", str(costly), "attacks=[none,pgd]", "attack_params.pgd.steps=20",
                 "attack_params.pgd.alpha=0.01", f"data.indices={survivors}"]) == 0
    pgd = pd.read_parquet(costly / "per_image.parquet").query("attack == 'pgd'")
    assert sorted(pgd["index"]) == robust                                 # it ran on the survivors alone
    assert pgd["correct"].sum() < len(robust)                             # and broke some of them
    assert across(cheap, costly, "--out", tmp_path / "wc.csv", "--plot", tmp_path / "wc.png") == 0
    assert (tmp_path / "wc.png").stat().st_size > 0
    row = pd.read_csv(tmp_path / "wc.csv").iloc[0]
    assert row["images"] == "cascade" and row["n"] == 60                  # counted on every image
    assert row["worst_case"] == pgd["correct"].sum() / 60                 # the AND: survived fgsm, then pgd
    # a run on a plain subset (images that survived elsewhere are missing from it): the shared images, as before
    assert main([*common, "--out", str(first), "attacks=[none,pgd]", "attack_params.pgd.steps=10",
                 "data.n_examples=10", "data.selection=first"]) == 0
    assert across(cheap, first, "--out", tmp_path / "wc2.csv") == 0
    shared = pd.read_csv(tmp_path / "wc2.csv").iloc[0]
    assert shared["images"] == "shared" and shared["n"] == 10
    # the report over several runs carries the same worst case, with its figure
    assert main(["report", str(cheap), str(costly), "--out", str(tmp_path / "report")]) == 0
    text = (tmp_path / "report" / "report.md").read_text()
    section = text[text.index("## Worst case across runs"):]
    assert f"{100 * row['worst_case']:.1f} [" in section and "cascade" in section
    assert (tmp_path / "report" / "worst_case_across_runs.png").stat().st_size > 0
    assert main(["report", str(cheap), "--out", str(tmp_path / "one")]) == 0   # one run: no such section
    assert "Worst case across runs" not in (tmp_path / "one" / "report.md").read_text()


def test_survivors_need_exactly_one_cell(tiny, tmp_path, capsys):
    out = tmp_path / "run"                      # two cells: one per norm
    assert main(["eval", f"model.name={tiny.spec}", f"model.weights={tiny.weights}", f"data.root={tiny.npz}",
                 "data.download=false", "--quiet", "ray.num_workers=0", "device=cpu", "attacks=[none,fgsm,pgdl2]",
                 "attack_params.pgdl2.steps=2", "--out", str(out)]) == 0
    capsys.readouterr()
    assert across(out, "--survivors", tmp_path / "s.csv") == 2
    err = capsys.readouterr().err
    assert "exactly one cell" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "s.csv").exists()
    # the filters pick cells by defense, budget and landscape, so the two norms of one cell stay two
    assert across(out, "--survivors", tmp_path / "s.csv", "--defense", "none", "--budget", "0") == 2
    assert across(tmp_path / "nothing-here") == 2 and "no per_image.parquet" in capsys.readouterr().err


def test_paired_gain_is_the_mean_per_image_difference_with_an_interval_around_it():
    import numpy as np

    rng = np.random.default_rng(1)
    undefended = pd.Series(rng.random(400) < 0.2, index=range(400))
    defended = undefended | pd.Series(rng.random(400) < 0.1, index=range(400))   # robust wherever undefended was, and more
    defended = defended.iloc[::-1]                                                 # order must not matter: paired by index
    g = paired_gain(defended, undefended)
    assert g["gain"] == (defended.sort_index().astype(int) - undefended.astype(int)).mean() > 0
    assert 0 < g["gain_low"] < g["gain"] < g["gain_high"]
    assert np.isnan(paired_gain(undefended, None)["gain"])
