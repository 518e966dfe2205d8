"""The attacker's budget as a second axis: lists of steps (or queries) and of EOT draws expand the
grid to defense K x attacker budget; the report draws the heatmap and the convergence curves, and
flags an attack whose accuracy still falls when its steps double."""
import pandas as pd
import pytest
from test_report import row, sound

from evaluator.config import EVAL_DEFAULTS
from evaluator.grid import EvalError, build_units
from evaluator.report import sanity_checks
from landscape.config import merge
from landscape_cli.main import main


def test_lists_expand_the_grid_and_bad_lists_are_refused():
    cfg = {"defenses": ["none", "reverse-x"], "attacks": ["none", "pgd", "fgsm"],
           "attack_params": {"pgd": {"steps": [5, 10]}},
           "defense": {"budgets": [0, 4], "modes": ["bpda", "eot"], "eot_draws": [2, 8]}}
    units = build_units(merge(EVAL_DEFAULTS, cfg))
    names = sorted({u.attack_name for u in units if u.defense == "reverse-x" and u.budget == 4})
    assert names == ["fgsm+bpda", "fgsm+eot[draws=2]", "fgsm+eot[draws=8]", "none", "pgd[steps=10]+bpda",
                     "pgd[steps=10]+eot[draws=2]", "pgd[steps=10]+eot[draws=8]", "pgd[steps=5]+bpda",
                     "pgd[steps=5]+eot[draws=2]", "pgd[steps=5]+eot[draws=8]"]
    assert {u.attack.params["steps"] for u in units if u.attack_name.startswith("pgd[steps=10]")} == {10}
    assert {u.draws for u in units if "draws=8" in u.attack_name} == {8}
    assert {u.draws for u in units if u.mode == "bpda"} == {None}
    for bad in ({"attack_params": {"pgd": {"steps": []}}}, {"attack_params": {"pgd": {"steps": [5, 5]}}},
                {"attack_params": {"pgd": {"steps": [5, 0]}}}, {"attack_params": {"pgd": {"steps": [2.5]}}},
                {"defense": {"budgets": [1], "eot_draws": []}}, {"defense": {"budgets": [1], "eot_draws": [0]}}):
        with pytest.raises(EvalError):
            build_units(merge(EVAL_DEFAULTS, {"defenses": ["none", "reverse-x"], "attacks": ["none", "pgd"], **bad}))


def test_doubling_steps_that_still_lowers_accuracy_is_flagged():
    def status(rows):
        c = sanity_checks(pd.DataFrame(sound() + rows))
        return c[(c["check"] == "attack had not converged") & (c["summary"] == True)]["status"].item()  # noqa: E712
    assert status([]) == "not run"
    converged = [row("pgd[steps=10]+bpda", 0.31, steps=10), row("pgd[steps=20]+bpda", 0.305, steps=20)]
    assert status(converged) == "ok"
    falling = [row("pgd[steps=10]+bpda", 0.40, steps=10), row("pgd[steps=20]+bpda", 0.30, steps=20)]
    assert status(falling) == "FAIL"


def test_eval_and_report_over_defense_k_and_attacker_budget(tiny, tmp_path):
    from cifar10.classifiers import build_classifier
    from cifar10.ssl_head import ContrastiveHead, feature_dim, save_head

    classifier = build_classifier({"name": tiny.spec, "weights": str(tiny.weights)}, download=False)
    save_head(tmp_path / "head.pt", ContrastiveHead(feature_dim(classifier), 16, 8))
    out = tmp_path / "eval"
    assert main(["eval", "--out", str(out), f"model.name={tiny.spec}", f"model.weights={tiny.weights}",
                 f"data.root={tiny.npz}", "data.download=false", "data.n_examples=12", "--quiet", "ray.num_workers=0",
                 "device=cpu", "defenses=[none,reverse-x]", "defense.budgets=[0,2]", "defense.restarts=1",
                 f"defense.ssl_head={tmp_path / 'head.pt'}", "defense.modes=[bpda,bpda+eot]", "defense.eot_draws=[1,2]",
                 "attacks=[none,pgd]", "attack_params.pgd.steps=[1,4]", "eps.Linf=0.05"]) == 0
    res = pd.read_csv(out / "results.csv")
    cells = res[(res["defense"] == "reverse-x") & ~res["attack"].str.startswith("suite[")]
    assert set(cells["attack"]) == {"none", "pgd[steps=1]+bpda", "pgd[steps=4]+bpda", "pgd[steps=1]+bpda+eot[draws=1]",
                                    "pgd[steps=1]+bpda+eot[draws=2]", "pgd[steps=4]+bpda+eot[draws=1]",
                                    "pgd[steps=4]+bpda+eot[draws=2]"}
    assert set(cells.set_index("attack").loc["pgd[steps=4]+bpda", "steps"]) == {4}
    # the attack's queries, counted: 4 steps are 4 forward passes and 4 gradients per image
    assert (cells.set_index("attack").loc["pgd[steps=4]+bpda", ["attack_forward", "attack_backward"]] == 4).all().all()
    assert main(["report", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "attacker_budget.png" in text and "attack had not converged" in text
    # the run probed its models: the reverse purifier is randomized, and this grid attacks it with EOT
    probes = pd.read_csv(out / "probes.csv")
    assert probes[(probes["defense"] == "reverse-x") & (probes["mode"] == "none")]["randomized"].all()
    assert not probes[(probes["defense"] == "none") & (probes["mode"] == "none")]["randomized"].any()
    flag = next(line for line in text.splitlines() if line.startswith("| randomized model attacked without EOT"))
    assert flag.split("|")[2].strip() == "ok"
    for png in ("attacker_budget.png", "attacker_convergence.png"):
        assert (out / png).stat().st_size > 5000
