"""The reverse attack's own evaluation tools: the defense-aware attack, per-attack modes, the worst
case over attacks, and the defender's compute counted in passes."""
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from test_reverse import TinyNet, structured_images

from attacks import get_attack
from attacks.defense_aware import DefenseAwarePGD
from cifar10.ssl_head import ContrastiveHead, SelfSupervised
from defense.purifiers import ReversePurifier
from evaluator.grid import EvalError, build_units
from landscape.errors import LandscapeError
from landscape_cli.main import main


def test_the_defense_aware_objective_is_cross_entropy_minus_weight_times_the_natural_loss():
    net = TinyNet().eval()
    natural = lambda x: (x ** 2).flatten(1).mean(1)  # noqa: E731  deterministic, so the sum can be checked by hand
    atk = DefenseAwarePGD(net, natural, eps=8 / 255, alpha=2 / 255, steps=3, weight=10.0)
    x, y = structured_images(4), torch.tensor([0, 1, 2, 0])
    logits = net(x)
    by_hand = [F.cross_entropy(logits[i:i + 1], y[i:i + 1]).item() - 10.0 * (x[i] ** 2).mean().item() for i in range(4)]
    assert torch.allclose(atk.objective(x, y), torch.tensor(by_hand), atol=1e-5)
    torch.manual_seed(0)
    adv = atk(x, y)
    assert (adv - x).abs().max() <= 8 / 255 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    assert atk.objective(adv, y).sum() > atk.objective(x, y).sum()   # it climbed its own objective
    # the natural-loss term pulls the other way: with weight 0 it is plain PGD and the natural loss ends higher
    torch.manual_seed(0)
    plain = DefenseAwarePGD(net, natural, eps=8 / 255, alpha=2 / 255, steps=3, weight=0.0)(x, y)
    assert natural(adv).sum() < natural(plain).sum()


def test_pgd_aware_through_the_registry_reads_the_reverse_purifiers_loss():
    ssl = SelfSupervised(TinyNet(), ContrastiveHead(8, 16, 8))
    purifier = ReversePurifier(ssl, budget=2)
    atk = get_attack("pgd-aware", {"steps": 2})
    x, y = structured_images(4), torch.tensor([0, 1, 2, 0])
    adv = atk.run(TinyNet().eval(), x, y, seed=0, natural_loss=purifier.natural_loss)
    assert isinstance(atk.library_attack(TinyNet(), purifier.natural_loss), DefenseAwarePGD)
    assert (adv - x).abs().max() <= 8 / 255 + 1e-6


def base_cfg(**defense):
    return {"seed": 0, "threads": 0, "eval": {"batch_size": 8}, "data": {}, "defenses": ["none", "reverse-x"],
            "attacks": ["none", "fgsm", "pgd-aware"], "defense": {"budgets": [1], "modes": ["nonadaptive", "bpda"],
                                                                  **defense}}


def test_attack_modes_give_each_attack_its_own_modes_and_pgd_aware_needs_a_reverse_defense():
    units = build_units(base_cfg(attack_modes={"pgd-aware": ["bpda"]}))
    names = [u.attack_name for u in units if u.defense == "reverse-x"]
    assert names == ["none", "fgsm+nonadaptive", "fgsm+bpda", "pgd-aware+bpda"]
    with pytest.raises(EvalError, match="attack_modes names 'pgd'"):
        build_units(base_cfg(attack_modes={"pgd": ["bpda"]}))
    with pytest.raises(EvalError, match="distinct modes"):
        build_units(base_cfg(attack_modes={"fgsm": ["magic"]}))
    with pytest.raises(EvalError, match="distinct modes"):   # a repeated mode would count its images twice
        build_units(base_cfg(attack_modes={"fgsm": ["bpda", "bpda"]}))
    with pytest.raises(EvalError, match="twice"):
        build_units(base_cfg(modes=["bpda", "bpda"]))
    with pytest.raises(LandscapeError, match="weight"):
        get_attack("pgd-aware", {"weight": 0})
    cfg = base_cfg()
    cfg["defenses"] = ["none", "purify-x"]
    with pytest.raises(EvalError, match="self-supervised loss"):
        build_units(cfg)


@pytest.mark.parametrize("restarts,budget", [(1, 3), (2, 5)])
def test_a_plain_purifier_counts_r_times_k_plus_one_forward_and_r_k_backward_passes(restarts, budget):
    ssl = SelfSupervised(TinyNet(), ContrastiveHead(8, 16, 8))
    purifier = ReversePurifier(ssl, budget=budget, restarts=restarts)
    purifier(structured_images(6))
    purifier(structured_images(4))
    assert purifier.passes == {"forward": 10 * restarts * (budget + 1), "backward": 10 * restarts * budget, "images": 10}


def test_eval_reports_passes_per_image_and_the_worst_case_is_the_and_of_survivals(tiny, tmp_path):
    from cifar10.classifiers import build_classifier
    from cifar10.ssl_head import feature_dim, save_head

    classifier = build_classifier({"name": tiny.spec, "weights": str(tiny.weights)}, download=False)
    head = tmp_path / "head.pt"
    save_head(tmp_path / "wrong.pt", ContrastiveHead(feature_dim(classifier) + 1, 16, 8))
    common = ["eval", f"model.name={tiny.spec}", f"model.weights={tiny.weights}", f"data.root={tiny.npz}",
              "data.download=false", "--quiet", "ray.num_workers=0", "device=cpu"]
    # a head trained on another backbone's features is refused by name, before anything is written
    assert main([*common, "--out", str(tmp_path / "bad"), "defenses=[reverse-x]", f"defense.ssl_head={tmp_path / 'wrong.pt'}",
                 "attacks=[none]", "defense.budgets=[1]"]) == 2
    assert not (tmp_path / "bad").exists()
    save_head(head, ContrastiveHead(feature_dim(classifier), 16, 8))
    out = tmp_path / "eval"
    assert main([*common, "--out", str(out), "data.n_examples=16",
                 "defenses=[none,reverse-x]", f"defense.ssl_head={head}", "defense.budgets=[0,3]", "defense.restarts=2",
                 "defense.modes=[nonadaptive,bpda]", "defense.attack_modes={pgd-aware: [nonadaptive]}",
                 "attacks=[none,fgsm,pgd-aware]", "attack_params.pgd-aware.steps=2", "eps.Linf=0.08"]) == 0
    res = pd.read_csv(out / "results.csv")
    rev = res[res["defense"] == "reverse-x"]
    for k in (0, 3):
        rows = rev[rev["budget"] == k]
        assert (rows["purifier_forward"] == 2 * (k + 1)).all() and (rows["purifier_backward"] == 2 * k).all()
    assert (res[res["defense"] == "none"]["purifier_forward"] == 0).all()
    per = pd.read_parquet(out / "per_image.parquet")
    for k in (0, 3):
        cell = per[(per["defense"] == "reverse-x") & (per["budget"] == k) & (per["attack"] != "none")]
        assert set(cell["attack"]) == {"fgsm+nonadaptive", "fgsm+bpda", "pgd-aware+nonadaptive"}
        survived = cell.groupby("index")["correct"].all()
        suite = rev[(rev["budget"] == k) & rev["attack"].str.startswith("suite[")]
        assert suite["correct"].item() == int(survived.sum()) and suite["n"].item() == 16
    # the attacker's queries, counted through the model it attacks: FGSM one forward and one gradient per
    # image, PGD-aware two steps of each (shared, not recounted as zero, where non-adaptive images are reused)
    q = res.set_index(["defense", "budget", "attack"])
    for cell in [("none", 0, "fgsm"), ("reverse-x", 3, "fgsm+nonadaptive"), ("reverse-x", 3, "fgsm+bpda")]:
        assert (q.loc[cell, "attack_forward"], q.loc[cell, "attack_backward"]) == (1, 1), cell
    assert (q.loc[("reverse-x", 0, "pgd-aware+nonadaptive"), ["attack_forward", "attack_backward"]] == 2).all()
    assert (res[res["attack"] == "none"][["attack_forward", "attack_backward"]] == 0).all().all()


def test_non_adaptive_adversarial_images_are_drawn_once_and_shared_by_every_cell():
    from cifar10.data import ImageSet
    from evaluator.grid import Unit
    from evaluator.run import attack_correct

    net = TinyNet().eval()
    ssl = SelfSupervised(net, ContrastiveHead(8, 16, 8))
    x = structured_images(8)
    data = ImageSet(x, torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]), torch.arange(8), "test")
    atk = get_attack("fgsm", {"eps": 0.05})
    calls = []
    run = atk.run
    atk.run = lambda *a, **k: calls.append(1) or run(*a, **k)
    cache: dict = {}
    cpu = torch.device("cpu")
    undefended = attack_correct(net, Unit("none", "none", 0, "fgsm", atk), data, 4, 0, cpu, cache=cache)
    assert len(calls) == 2 and len(cache) == 2              # two batches, attacked once each
    for k in (0, 3):
        attack_correct(net, Unit("reverse-x", "x", k, "fgsm+nonadaptive", atk, "nonadaptive"), data, 4, 0, cpu,
                       purifier=ReversePurifier(ssl, budget=k), cache=cache)
    assert len(calls) == 2                                   # every defended cell reused them
    # and the undefended figure is what the same images give without the cache
    assert torch.equal(attack_correct(net, Unit("none", "none", 0, "fgsm", atk), data, 4, 0, cpu), undefended)
    attack_correct(net, Unit("reverse-x", "x", 3, "fgsm+bpda", atk, "bpda"), data, 4, 0, cpu,
                   purifier=ReversePurifier(ssl, budget=3), cache=cache)
    assert len(calls) == 6          # 2 more without the cache, 2 more: an adaptive attack attacks its own surrogate


def test_reverse_step_scale_sets_the_plain_sign_step():
    ssl = SelfSupervised(TinyNet(), ContrastiveHead(8, 16, 8))
    eps = 16 / 255
    assert ReversePurifier(ssl, budget=4, eps_rev=eps).steps == ("sign", eps / 4)
    assert ReversePurifier(ssl, budget=4, eps_rev=eps, step_scale=2.5).steps == ("sign", 2.5 * eps / 4)
