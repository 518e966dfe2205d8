"""The reverse-attack commands end to end on the tiny model: train-ssl-head (with its bank of
negatives), train-theta --task reverse-cifar10, eval with reverse-x / reverse-z under BPDA, and
train-classifier --on-purified with the reverse purifier."""
import json

import pandas as pd
import torch

from cifar10.classifiers import build_classifier
from cifar10.ssl_head import load_head
from landscape_cli.main import main


def test_reverse_commands_end_to_end(tiny, tmp_path):
    common = [f"model.name={tiny.spec}", f"model.weights={tiny.weights}", f"data.root={tiny.npz}",
              "data.download=false", "--quiet"]
    head = tmp_path / "head.pt"
    assert main(["train-ssl-head", "--out", str(head), *common, "train.epochs=1", "train.batch_size=16",
                 "train.hidden=16", "train.out_dim=8", "train.bank_size=16", "data.n_heldout=16"]) == 0
    assert load_head(head).bank.shape == (16, 8)

    theta = tmp_path / "theta"
    assert main(["train-theta", "--task", "reverse-cifar10", "--out", str(theta), *common, f"ssl_head={head}",
                 "data.n_train=16", "data.n_heldout=8", "theta.iterations=2", "theta.batch_size=4", "theta.unroll=2",
                 "theta.width=8", "theta.z_dim=null", "theta.skip=identity", "theta.rule=sgd", "theta.lr_z=10",
                 "theta.collect_steps=2", "theta.checkpoint_every=1"]) == 0
    assert (theta / "theta.pt").is_file()
    recorded = torch.load(theta / "theta.pt", weights_only=True)["train_config"]["extra"]
    assert recorded == {"task": "reverse-cifar10", "eps_rev": 8 / 255, "ssl_head": str(head)}

    # X against Z, both tuned over one grid of steps (X's in units of eps_rev, Z's in units of 1)
    inv = tmp_path / "invert"
    assert main(["invert", "--task", "reverse-cifar10", "--out", str(inv), *common, f"ssl_head={head}",
                 f"theta.weights={theta / 'theta.pt'}", "data.n_train=16", "data.n_heldout=8", "invert.n_images=8",
                 "invert.n_tune=4", "invert.budgets=[1,2]", "invert.search={sign: [0.25, 0.5]}"]) == 0
    summary = pd.read_csv(inv / "summary.csv")
    eps = 8 / 255
    assert set(summary["space"]) == {"X", "Z"} and set(summary["metric"]) == {"ssl_loss"}
    grid = {0.25, 0.5, 0.05, 0.1, 0.2}   # sign as given, adam's defaults kept (a mapping override merges)
    assert {round(lr / eps, 6) for lr in summary[summary.space == "X"]["lr"]} <= grid
    assert {round(lr, 6) for lr in summary[summary.space == "Z"]["lr"]} <= grid

    out = tmp_path / "eval"
    assert main(["eval", "--out", str(out), *common, "data.n_examples=16", "defenses=[none,reverse-x,reverse-z]",
                 f"defense.ssl_head={head}", f"defense.reverse_theta={theta / 'theta.pt'}", "defense.budgets=[0,2]",
                 "defense.restarts=1", "defense.modes=[nonadaptive,bpda]", "attacks=[none,fgsm]", "eps.Linf=0.08",
                 "ray.num_workers=0", "device=cpu"]) == 0
    res = pd.read_csv(out / "results.csv")
    # the theta maps into the 8/255 ball it was trained for: another defense.eps_rev is refused before anything runs
    bad = tmp_path / "eval-other-eps"
    assert main(["eval", "--out", str(bad), *common, "data.n_examples=16", "defenses=[reverse-z]",
                 f"defense.ssl_head={head}", f"defense.reverse_theta={theta / 'theta.pt'}", "defense.budgets=[2]",
                 "defense.eps_rev=16/255", "attacks=[none]", "ray.num_workers=0"]) != 0
    assert not (bad / "results.csv").exists()
    for defense in ("reverse-x", "reverse-z"):
        rows = res[res["defense"] == defense]
        assert set(rows["budget"]) == {0, 2}
        assert {"none", "fgsm+nonadaptive", "fgsm+bpda"} <= set(rows["attack"])
        assert (rows["n"] == 16).all() and (rows["correct"] == (rows["accuracy"] * 16).round()).all()
        acc = rows.set_index(["budget", "attack"])["accuracy"]
        clean = res[(res.defense == "none") & (res.attack == "none")]["accuracy"].item()
        # an 8/255 reversal keeps the tiny model's clean accuracy (its images sit further than that from the boundary)
        assert acc[(2, "none")] >= clean - 2 / 16
        # FGSM at 0.08 still works through it (non-adaptively and with BPDA), and a suite is never above a member
        assert acc[(2, "fgsm+nonadaptive")] < acc[(2, "none")] and acc[(2, "fgsm+bpda")] < acc[(2, "none")]
        suite = rows[rows["attack"].str.startswith("suite[") & (rows["budget"] == 2)]["accuracy"].item()
        assert suite <= min(acc[(2, "fgsm+nonadaptive")], acc[(2, "fgsm+bpda")])

    clf = tmp_path / "clf.pt"
    assert main(["train-classifier", "--on-purified", "--out", str(clf), *common, "purifier.defense=reverse-x",
                 "purifier.budget=2", "purifier.restarts=1", f"defense.ssl_head={head}", "data.n_train=32",
                 "data.n_heldout=16", "train.epochs=1"]) == 0
    summary = json.loads(clf.with_suffix(".json").read_text())
    assert 0 <= summary["after"]["purified"] <= 1 and summary["n_train"] == 32
    model = build_classifier({"name": tiny.spec, "weights": str(clf)}, download=False)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
