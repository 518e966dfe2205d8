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
    # the costly attack split over two runs (the survivors halved, as two processes or sessions would): the same
    halves = [tmp_path / "half0.csv", tmp_path / "half1.csv"]
    for i, half in enumerate(halves):
        pd.DataFrame({"index": robust[i::2]}).to_csv(half, index=False)
        assert main([*common, "--out", str(tmp_path / f"costly{i}"), "attacks=[none,pgd]", "attack_params.pgd.steps=20",
                     "attack_params.pgd.alpha=0.01", f"data.indices={half}"]) == 0
    assert across(cheap, tmp_path / "costly0", tmp_path / "costly1", "--out", tmp_path / "wc-split.csv") == 0
    split = pd.read_csv(tmp_path / "wc-split.csv").iloc[0]
    assert split["images"] == "cascade" and split["n"] == 60
    assert split["worst_case"] == row["worst_case"]
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
    # the worst case across runs is the report's headline, before each run's own table; no per-run curves, which
    # would draw the cheap run and the run on its survivors as two defenses
    assert "headline.png" not in text and not (tmp_path / "report" / "headline.png").exists()
    assert text.index("## Worst case across runs") < text.index("## Each run") < text.index("### cheap")
    # the per-attack figure leaves out the run on the survivors (its accuracy is the survivors'), and says so
    per_attack = text[text.index("## Accuracy against K, per attack"):]
    assert "left out of this figure at those cells: costly (none K = 0)." in per_attack
    # a plain subset of the images (not survivors) is a run like any other: kept, nothing named
    assert main(["report", str(cheap), str(first), "--out", str(tmp_path / "subset")]) == 0
    text = (tmp_path / "subset" / "report.md").read_text()
    assert "## Worst case across runs" in text and "left out of this figure" not in text
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


def test_each_cell_counts_its_own_models_clean_images_and_the_defenders_passes(tiny, tmp_path, capsys):
    """Two backbones in one worst case: each undefended row's clean accuracy is its own model's; every defended
    cell carries the purifier passes per image its runs counted (R x (K + 1) + R x K, R = 2), and the figure gets a
    second row of panels against them."""
    import shutil

    import torch
    from _util import import_file
    from PIL import Image

    from cifar10.classifiers import build_classifier
    from cifar10.ssl_head import ContrastiveHead, feature_dim, save_head

    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(tiny.model_file, other / "tinynet.py")
    torch.manual_seed(3)   # an untrained TinyNet: another model, another clean accuracy
    untrained = import_file(other / "tinynet.py", "_tests_tinynet_other").TinyNet()
    torch.save({"state_dict": untrained.state_dict()}, other / "tinynet.pth")
    classifier = build_classifier({"name": tiny.spec, "weights": str(tiny.weights)}, download=False)
    save_head(tmp_path / "head.pt", ContrastiveHead(feature_dim(classifier), 16, 8))
    runs = {}
    for name, spec, weights in [("a", tiny.spec, tiny.weights), ("b", f"{other / 'tinynet.py'}:TinyNet", other / "tinynet.pth")]:
        runs[name] = tmp_path / name
        assert main(["eval", f"model.name={spec}", f"model.weights={weights}", f"data.root={tiny.npz}", "data.download=false",
                     "--quiet", "ray.num_workers=0", "device=cpu", "data.n_examples=16", "defenses=[none,reverse-x]",
                     f"defense.ssl_head={tmp_path / 'head.pt'}", "defense.budgets=[0,2]", "defense.restarts=2", "defense.modes=[bpda]",
                     "attacks=[none,fgsm]", "eps.Linf=0.05", "--out", str(runs[name])]) == 0
    second = tmp_path / "a-pgd"   # a second run on model a: its cells are attacked by two runs
    assert main(["eval", f"model.name={tiny.spec}", f"model.weights={tiny.weights}", f"data.root={tiny.npz}", "data.download=false",
                 "--quiet", "ray.num_workers=0", "device=cpu", "data.n_examples=16", "defenses=[none,reverse-x]",
                 f"defense.ssl_head={tmp_path / 'head.pt'}", "defense.budgets=[0,2]", "defense.restarts=2", "defense.modes=[bpda]",
                 "attacks=[none,pgd]", "attack_params.pgd.steps=2", "eps.Linf=0.05", "--out", str(second)]) == 0
    assert across(runs["a"], second, runs["b"], "--out", tmp_path / "wc.csv", "--plot", tmp_path / "wc.png") == 0
    table = pd.read_csv(tmp_path / "wc.csv")
    for name in ("a", "b"):
        res = pd.read_csv(runs[name] / "results.csv")
        own = res[(res["defense"] == "none") & (res["attack"] == "none")]["accuracy"].item()
        model = res["model"].iloc[0]
        assert table[(table["model"] == model) & (table["defense"] == "none")]["clean"].item() == own
    assert len({round(c, 6) for c in table[table["defense"] == "none"]["clean"]}) == 2   # two models, two figures
    for k in (0, 2):
        assert (table[(table["defense"] == "reverse-x") & (table["budget"] == k)]["passes"] == 2 * (k + 1) + 2 * k).all()
    assert (table[table["defense"] == "none"]["passes"] == 0).all()
    width, height = Image.open(tmp_path / "wc.png").size
    assert height > 0.35 * width   # two rows of panels (K, then compute) over two models' columns
    # --versus: each cell's paired difference from reverse-x at K = 0 of its own model, by hand from the per-image tables
    assert across(runs["a"], second, runs["b"], "--versus", "reverse-x@0", "--out", tmp_path / "vs.csv") == 0
    vs = pd.read_csv(tmp_path / "vs.csv")
    per = pd.concat([pd.read_parquet(d / "per_image.parquet") for d in (runs["a"], second, runs["b"])])
    for model in vs["model"].unique():
        robust = per[(per["model"] == model) & (per["defense"] == "reverse-x") & (per["attack"] != "none")].groupby(["budget", "index"])["correct"].all()
        by_hand = (robust[2].astype(float) - robust[0].astype(float)).mean()
        row = vs[(vs["model"] == model) & (vs["defense"] == "reverse-x") & (vs["budget"] == 2)].iloc[0]
        assert abs(row["versus_gain"] - by_hand) < 1e-12 and row["versus_low"] <= row["versus_gain"] <= row["versus_high"]
        assert vs[(vs["model"] == model) & (vs["budget"] == 0)]["versus_gain"].isna().all()   # itself; the backbone
    capsys.readouterr()
    assert across(runs["a"], "--versus", "reverse-y") == 2 and "no cell of defense 'reverse-y'" in capsys.readouterr().err


def test_two_runs_of_one_defense_with_other_steps_are_two_cells_not_one_worst_case(tiny, tmp_path, capsys):
    from cifar10.classifiers import build_classifier
    from cifar10.ssl_head import ContrastiveHead, feature_dim, save_head

    classifier = build_classifier({"name": tiny.spec, "weights": str(tiny.weights)}, download=False)
    save_head(tmp_path / "head.pt", ContrastiveHead(feature_dim(classifier), 16, 8))
    common = ["eval", f"model.name={tiny.spec}", f"model.weights={tiny.weights}", f"data.root={tiny.npz}", "data.download=false",
              "--quiet", "ray.num_workers=0", "device=cpu", "data.n_examples=16", "defenses=[reverse-x]",
              f"defense.ssl_head={tmp_path / 'head.pt'}", "defense.budgets=[2]", "defense.restarts=1", "defense.modes=[bpda]",
              "attacks=[none,fgsm]", "eps.Linf=0.05"]
    assert main([*common, "--out", str(tmp_path / "plain")]) == 0
    assert main([*common, "defense.reverse_steps={2: [adam, 0.2]}", "--out", str(tmp_path / "tuned")]) == 0
    assert across(tmp_path / "plain", tmp_path / "tuned", "--out", tmp_path / "wc.csv") == 0
    table = pd.read_csv(tmp_path / "wc.csv")
    assert len(table) == 2 and table["setting"].nunique() == 2 and (table["runs"].str.count(r"\+") == 0).all()
    parts = {p for st in table["setting"] for p in st.split("; ")}
    assert {f"step at K=2: sign {8 / 255 / 2:.4g}", "step at K=2: adam 0.2"} <= parts
    for name in ("plain", "tuned"):   # each cell is its own run's suite, not the AND of both
        res = pd.read_csv(tmp_path / name / "results.csv")
        suite = res[res["attack"].str.startswith("suite[")]["accuracy"]
        own = suite.item() if len(suite) else res[res["attack"] != "none"]["accuracy"].item()
        assert table[table["runs"] == name]["worst_case"].item() == own
    capsys.readouterr()
    assert across(tmp_path / "plain", tmp_path / "tuned", "--survivors", tmp_path / "s.csv", "--defense", "reverse-x") == 2
    assert "step at K=2: adam 0.2" in capsys.readouterr().err
    assert across(tmp_path / "plain", tmp_path / "tuned", "--survivors", tmp_path / "s.csv", "--defense", "reverse-x",
                  "--setting", "adam 0.2") == 0                            # --setting picks the tuned run's cell
    tuned = pd.read_parquet(tmp_path / "tuned" / "per_image.parquet").query("attack != 'none'")
    assert pd.read_csv(tmp_path / "s.csv")["index"].tolist() == sorted(tuned[tuned["correct"]]["index"])


def test_the_figure_marks_cells_missing_an_attack_not_cells_with_fewer_runs():
    from evaluator.across_runs import fewer_attacks

    series = pd.DataFrame({"runs": ["a+b+c+d", "e+f", "g+h+i"],
                           "attacks": ["aa,eot,exact,rand", "aa,eot,exact,rand", "aa,eot,exact"]})
    # the second cell had its attacks in two runs, not four: still complete; the third lacks one attack
    assert fewer_attacks(series).tolist() == [False, False, True]
