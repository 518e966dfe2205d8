"""Repeated runs (``runs=N``): every randomized cell again with a derived seed; the tables give the
runs' mean, std and worst, and the per-image worst case over runs; shards resume per run."""
import pandas as pd

from evaluator.grid import run_seed
from evaluator.results import TIMING_COLUMNS
from landscape_cli.main import main


def _eval(tiny, out, *extra):
    return main(["eval", "--out", str(out), f"model.name={tiny.spec}", f"model.weights={tiny.weights}",
                 f"data.root={tiny.npz}", "data.download=false", "data.n_examples=16", "--quiet", "ray.num_workers=0",
                 "device=cpu", "defenses=[none,reverse-x]", "defense.budgets=[2]", "defense.restarts=1",
                 "defense.modes=[bpda]", "defense.ssl_head=" + str(out.parent / "head.pt"), "attacks=[none,fgsm,pgd]",
                 "eps.Linf=0.05", "attack_params.pgd.steps=3", "runs=3", *extra])


def test_three_runs_derived_seeds_worst_case_and_resume(tiny, tmp_path):
    from cifar10.classifiers import build_classifier
    from cifar10.ssl_head import ContrastiveHead, feature_dim, save_head

    classifier = build_classifier({"name": tiny.spec, "weights": str(tiny.weights)}, download=False)
    save_head(tmp_path / "head.pt", ContrastiveHead(feature_dim(classifier), 16, 8))
    assert len({run_seed(0, r) for r in range(3)}) == 3 and run_seed(7, 0) == 7
    assert _eval(tiny, tmp_path / "a") == 0
    res = pd.read_csv(tmp_path / "a" / "results.csv")
    per = pd.read_parquet(tmp_path / "a" / "per_image.parquet")
    runs = per.groupby(["defense", "attack"])["run"].agg(lambda r: sorted(set(r)))
    # what no seed changes runs once: clean accuracy and FGSM of the bare classifier
    assert runs[("none", "none")] == [0] and runs[("none", "fgsm")] == [0]
    assert runs[("none", "pgd")] == [0, 1, 2] and all(runs["reverse-x"].map(lambda r: r == [0, 1, 2]))
    cells = res[~res["attack"].str.startswith("suite[")].set_index(["defense", "attack"])
    assert cells.loc[("none", "fgsm"), "runs"] == 1 and pd.isna(cells.loc[("none", "fgsm"), "acc_std"])
    for key, g in per.groupby(["defense", "attack"]):
        row = cells.loc[key]
        by_run = g.groupby("run")["correct"].mean()
        assert row["runs"] == len(by_run) and abs(row["acc_mean"] - by_run.mean()) < 1e-12
        assert row["acc_worst_run"] == by_run.min()
        # an image counts only if it was correct in every run
        assert row["correct"] == int(g.groupby("index")["correct"].all().sum())
        assert row["accuracy"] <= row["acc_worst_run"] + 1e-12
    suite = res[(res["defense"] == "reverse-x") & res["attack"].str.startswith("suite[")].iloc[0]
    members = per[(per["defense"] == "reverse-x") & (per["attack"] != "none")]
    assert suite["correct"] == int(members.groupby("index")["correct"].all().sum()) and suite["runs"] == 3

    # the same command elsewhere gives the same tables; a lost shard of run 2 is redone, nothing else
    assert _eval(tiny, tmp_path / "b") == 0
    again = pd.read_csv(tmp_path / "b" / "results.csv")
    timing = TIMING_COLUMNS
    pd.testing.assert_frame_equal(res.drop(columns=timing), again.drop(columns=timing))
    shards = sorted((tmp_path / "b" / "shards").glob("*-r02-*.parquet"))
    assert shards
    shards[0].unlink()
    assert _eval(tiny, tmp_path / "b") == 0
    pd.testing.assert_frame_equal(res.drop(columns=timing), pd.read_csv(tmp_path / "b" / "results.csv").drop(columns=timing))
    assert _eval(tiny, tmp_path / "bad", "runs=0") == 2


def test_a_folder_written_before_repeats_existed_resumes(tiny, tmp_path):
    """Its config has no ``runs`` and its shards no ``run`` column: both mean one run."""
    import yaml

    from cifar10.classifiers import build_classifier
    from cifar10.ssl_head import ContrastiveHead, feature_dim, save_head

    classifier = build_classifier({"name": tiny.spec, "weights": str(tiny.weights)}, download=False)
    save_head(tmp_path / "head.pt", ContrastiveHead(feature_dim(classifier), 16, 8))
    out = tmp_path / "old"
    assert _eval(tiny, out, "runs=1") == 0
    ref = pd.read_csv(out / "results.csv")
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    del cfg["runs"]
    (out / "config.yaml").write_text(yaml.safe_dump(cfg))
    shards = sorted((out / "shards").glob("*.parquet"))
    for shard in shards[: len(shards) // 2]:   # half the shards as the old code wrote them
        pd.read_parquet(shard).drop(columns=["run"]).to_parquet(shard, index=False)
    shards[-1].unlink()                        # and one still to do
    assert _eval(tiny, out, "runs=1") == 0
    pd.testing.assert_frame_equal(ref.drop(columns=TIMING_COLUMNS), pd.read_csv(out / "results.csv").drop(columns=TIMING_COLUMNS))
