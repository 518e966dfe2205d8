"""attacks: the registry's checks, AutoAttack's settings, and attacks that really attack.

The model is the tiny linear classifier of ``conftest.tiny`` (100% clean accuracy on separable
synthetic images whose distance from the class boundary is 0.03..0.15 in Linf), so an Linf eps of
0.2 is enough to flip every image and a tiny eps flips none.
"""
from __future__ import annotations

import pytest
import torch
import torchattacks
from _util import accuracy

from attacks import ATTACKS, NO_ATTACK, AttackError, attack_names, get_attack
from attacks.base import BoundAttack, perturbation_norm

BIG_EPS = 0.2          # Linf; below the 0.25 that would need eps_confirmed


# ----------------------------------------------------------------------------- registry checks

def test_attack_names():
    names = attack_names()
    assert names[0] == NO_ATTACK
    for n in ("fgsm", "pgd", "pgdl2", "cw", "apgd-ce", "apgd-dlr", "apgd-t", "square", "autoattack",
              "autoattack-rand"):
        assert n in names and n in ATTACKS
    assert get_attack("none") is None


def test_unknown_attack_lists_valid_choices():
    with pytest.raises(AttackError) as exc:
        get_attack("pgd-inf")
    msg = str(exc.value)
    assert "'pgd-inf'" in msg
    for n in attack_names():
        assert n in msg


def test_none_takes_no_parameters():
    with pytest.raises(AttackError, match="no parameters"):
        get_attack("none", {"eps": 0.1})


@pytest.mark.parametrize("name, params, match", [
    ("pgd", {"eps": -1}, "eps must be >= 0"),
    ("fgsm", {"eps": -0.01}, "eps must be >= 0"),
    ("pgd", {"eps": float("nan")}, "eps must be >= 0"),
    ("pgd", {"steps": 0}, "steps must be >= 1"),
    ("apgd-ce", {"steps": -5}, "steps must be >= 1"),
    ("pgd", {"restarts": 0}, "restarts must be >= 1"),
    ("square", {"n_queries": 0}, "n_queries must be >= 1"),
    ("pgd", {"alpha": 0}, "alpha"),
    ("cw", {"lr": -1}, "lr"),
    ("pgd", {"steps": 2.5}, "whole number"),
    ("apgd-ce", {"norm": "L1"}, "norm must be one of"),
    ("autoattack", {"version": "fast"}, "version"),
])
def test_bad_parameters_rejected(name, params, match):
    with pytest.raises(AttackError, match=match):
        get_attack(name, params)


def test_non_numeric_parameter_rejected():
    from landscape.config import ConfigError

    with pytest.raises(ConfigError, match="pgd.eps"):
        get_attack("pgd", {"eps": "eight"})


def test_unknown_parameter_lists_valid_ones():
    with pytest.raises(AttackError) as exc:
        get_attack("pgd", {"stepz": 3})
    msg = str(exc.value)
    assert "stepz" in msg
    for p in ("alpha", "eps", "random_start", "restarts", "steps", "eps_confirmed"):
        assert p in msg


def test_defaults_and_conversions():
    pgd = get_attack("pgd")
    assert isinstance(pgd, BoundAttack)
    assert (pgd.norm, pgd.eps) == ("Linf", pytest.approx(8 / 255))
    assert pgd.params["steps"] == 10 and pgd.params["alpha"] == pytest.approx(2 / 255)
    assert get_attack("pgdl2").eps == 0.5 and get_attack("pgdl2").norm == "L2"
    p = get_attack("pgd", {"eps": "4/255", "steps": "20", "alpha": "1/255"}).params
    assert p["eps"] == pytest.approx(4 / 255) and p["steps"] == 20 and isinstance(p["steps"], int)
    assert p["alpha"] == pytest.approx(1 / 255)
    # the run's eps defaults (config key eps) apply when the attack sets none
    assert get_attack("fgsm", None, {"Linf": "2/255", "L2": 0.25}).eps == pytest.approx(2 / 255)
    assert get_attack("apgd-ce", {"norm": "L2"}, {"Linf": "2/255", "L2": 0.25}).eps == 0.25
    assert get_attack("fgsm", {"eps": 0}).eps == 0.0


def test_l2_attack_with_linf_looking_eps_needs_confirmation():
    with pytest.raises(AttackError) as exc:
        get_attack("pgdl2", {"eps": "8/255"})
    assert "eps_confirmed" in str(exc.value) and "L2" in str(exc.value)
    atk = get_attack("pgdl2", {"eps": "8/255", "eps_confirmed": True})
    assert atk.eps == pytest.approx(8 / 255) and atk.norm == "L2"
    assert "eps_confirmed" not in atk.params
    # the same through the run-wide eps default
    with pytest.raises(AttackError, match="eps_confirmed"):
        get_attack("cw", None, {"L2": 8 / 255})


def test_linf_attack_with_l2_looking_eps_needs_confirmation():
    with pytest.raises(AttackError, match="eps_confirmed"):
        get_attack("pgd", {"eps": 0.5})
    assert get_attack("pgd", {"eps": 0.5, "eps_confirmed": True}).eps == 0.5
    with pytest.raises(AttackError, match="eps_confirmed"):
        get_attack("apgd-ce", {"norm": "Linf"}, {"Linf": 0.5})


# ----------------------------------------------------------------------------- AutoAttack's settings

def _tiny_model():
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3072, 10))


def test_autoattack_standard_has_the_original_settings():
    atk = get_attack("autoattack").library_attack(_tiny_model())
    assert isinstance(atk, torchattacks.MultiAttack)
    kinds = [type(a) for a in atk.attacks]
    assert kinds == [torchattacks.APGD, torchattacks.APGDT, torchattacks.FAB, torchattacks.Square]
    apgd, apgdt, fab, square = atk.attacks
    assert apgd.steps == 100 and apgd.loss == "ce" and apgd.n_restarts == 1
    assert apgdt.steps == 100 and apgdt.n_target_classes == 9
    assert fab.steps == 100 and fab.multi_targeted is True and fab.n_target_classes == 9
    assert square.n_queries == 5000
    for a in atk.attacks:
        assert a.norm == "Linf" and a.eps == pytest.approx(8 / 255)


def test_autoattack_l2_and_overrides():
    atk = get_attack("autoattack", {"norm": "L2", "steps": 20, "n_queries": 300}).library_attack(_tiny_model())
    assert all(a.norm == "L2" and a.eps == 0.5 for a in atk.attacks)
    assert [a.steps for a in atk.attacks[:3]] == [20, 20, 20]
    assert atk.attacks[3].n_queries == 300


@pytest.mark.parametrize("name, params", [("autoattack", {"version": "rand"}), ("autoattack-rand", {})])
def test_autoattack_rand_version(name, params):
    atk = get_attack(name, params).library_attack(_tiny_model())
    assert isinstance(atk, torchattacks.MultiAttack)
    assert [type(a) for a in atk.attacks] == [torchattacks.APGD, torchattacks.APGD]
    assert sorted(a.loss for a in atk.attacks) == ["ce", "dlr"]
    assert all(a.eot_iter == 20 and a.steps == 100 for a in atk.attacks)


def test_pgd_restarts_use_multiattack():
    atk = get_attack("pgd", {"restarts": 3}).library_attack(_tiny_model())
    assert isinstance(atk, torchattacks.MultiAttack) and len(atk.attacks) == 3
    assert all(isinstance(a, torchattacks.PGD) for a in atk.attacks)
    assert isinstance(get_attack("pgd").library_attack(_tiny_model()), torchattacks.PGD)


# ----------------------------------------------------------------------------- attacks that attack

def test_tiny_model_is_accurate(tiny):
    assert tiny.clean_acc == 1.0


@pytest.mark.parametrize("name, params", [
    ("fgsm", {}),
    ("pgd", {"alpha": BIG_EPS / 4}),
    ("apgd-ce", {"steps": 20}),
    ("square", {"n_queries": 1000}),
])
def test_attack_lowers_accuracy(tiny, name, params):
    x, y = tiny.x, tiny.y
    atk = get_attack(name, {**params, "eps": BIG_EPS})
    adv = atk.run(tiny.model, x, y, seed=0)
    assert adv.shape == x.shape and adv.dtype == x.dtype
    assert perturbation_norm(adv - x, "Linf").max() <= BIG_EPS + 1e-6      # within the budget
    assert adv.min() >= 0 and adv.max() <= 1                                 # a valid image
    assert accuracy(tiny.model, adv, y) <= 0.1 < tiny.clean_acc


@pytest.mark.parametrize("name", ["fgsm", "pgd", "apgd-ce"])
def test_attack_at_tiny_eps_changes_nothing(tiny, name):
    atk = get_attack(name, {"eps": 0.005, **({"steps": 5} if name != "fgsm" else {})})
    adv = atk.run(tiny.model, tiny.x, tiny.y, seed=0)
    assert accuracy(tiny.model, adv, tiny.y) == tiny.clean_acc


def test_l2_attacks_lower_accuracy(tiny):
    # an Linf distance of d over 3072 pixels is an L2 distance of d * sqrt(3072) ~ 55 d
    for name, params in [("pgdl2", {"eps": 10.0, "alpha": 2.5}), ("apgd-ce", {"norm": "L2", "eps": 10.0, "steps": 20})]:
        adv = get_attack(name, params).run(tiny.model, tiny.x, tiny.y, seed=0)
        assert perturbation_norm(adv - tiny.x, "L2").max() <= 10.0 + 1e-4
        assert accuracy(tiny.model, adv, tiny.y) <= 0.1, name


def test_pgd_same_seed_same_examples_other_seed_differs(tiny):
    atk = get_attack("pgd", {"eps": 0.08, "alpha": 0.02})
    a = atk.run(tiny.model, tiny.x, tiny.y, seed=5)
    b = atk.run(tiny.model, tiny.x, tiny.y, seed=5)
    c = atk.run(tiny.model, tiny.x, tiny.y, seed=6)
    fresh = get_attack("pgd", {"eps": 0.08, "alpha": 0.02}).run(tiny.model, tiny.x, tiny.y, seed=5)
    assert torch.equal(a, b)
    assert torch.equal(a, fresh)          # a newly built attack gives the same examples
    assert not torch.equal(a, c)          # the random start depends on the seed


def test_seeded_library_attacks_follow_the_batch_seed(tiny):
    # APGD and Square reset the RNG to their own .seed; run() must hand them the batch's seed
    atk = get_attack("square", {"eps": 0.1, "n_queries": 30})
    a = atk.run(tiny.model, tiny.x, tiny.y, seed=1)
    assert torch.equal(a, atk.run(tiny.model, tiny.x, tiny.y, seed=1))
    assert not torch.equal(a, atk.run(tiny.model, tiny.x, tiny.y, seed=2))


def test_run_with_a_new_model_rebuilds_the_library_attack(tiny):
    atk = get_attack("fgsm", {"eps": BIG_EPS})
    first = atk.library_attack(tiny.model)
    assert atk.library_attack(tiny.model) is first
    other = _tiny_model().eval()
    assert atk.library_attack(other) is not first


# ----------------------------------------------------------------------------- CW's budget

def test_cw_reverts_examples_beyond_eps(tiny):
    x, y = tiny.x[:20], tiny.y[:20]
    params = {"c": 10.0, "steps": 30, "lr": 0.05}
    free = get_attack("cw", {**params, "eps": 1e6}).run(tiny.model, x, y, seed=0)
    norms = perturbation_norm(free - x, "L2")
    fooled = tiny.model(free).argmax(1) != y
    assert fooled.float().mean() >= 0.5            # CW itself works on this model
    # a tiny budget: every found example is beyond it, so every image is returned clean
    tiny_eps = get_attack("cw", {**params, "eps": 1e-3, "eps_confirmed": True})
    adv = tiny_eps.run(tiny.model, x, y, seed=0)
    assert torch.equal(adv, x)
    assert accuracy(tiny.model, adv, y) == tiny.clean_acc
    # a budget between: examples within it are kept as found, the others reverted
    eps = norms[fooled].median().item()
    adv = get_attack("cw", {**params, "eps": eps, "eps_confirmed": True}).run(tiny.model, x, y, seed=0)
    within = norms <= eps + 1e-6
    assert within.any() and (~within).any()
    assert torch.equal(adv[within], free[within])
    assert torch.equal(adv[~within], x[~within])
    assert perturbation_norm(adv - x, "L2").max() <= eps + 1e-6


@pytest.mark.parametrize("name, params", [
    ("autoattack", {"steps": 5, "n_queries": 50}),
    ("autoattack-rand", {"steps": 5, "eot_iter": 2}),
    ("apgd-t", {"steps": 5}),
    ("apgd-dlr", {"steps": 10}),
])
def test_ensembles_and_targeted_attacks_run(tiny, name, params):
    x, y = tiny.x[:20], tiny.y[:20]
    atk = get_attack(name, {**params, "eps": BIG_EPS})
    adv = atk.run(tiny.model, x, y, seed=0)
    assert perturbation_norm(adv - x, "Linf").max() <= BIG_EPS + 1e-6
    assert accuracy(tiny.model, adv, y) <= 0.1
    assert torch.equal(adv, atk.run(tiny.model, x, y, seed=0))     # reproducible by seed


def test_autoattack_square_keeps_the_originals_schedule():
    square = get_attack("autoattack").library_attack(_tiny_model()).attacks[3]
    assert square.p_init == 0.8 and square.rescale_schedule is False


def test_autoattack_and_the_original_agree_on_the_same_images(tiny):
    # a cheap budget, the same for both: 10 steps, 300 Square queries, on 12 images at an eps that leaves some robust
    x, y = tiny.x[:12], tiny.y[:12]
    budget = {"eps": 0.08, "steps": 10, "n_queries": 300}
    ours = accuracy(tiny.model, get_attack("autoattack", budget).run(tiny.model, x, y, seed=0), y)
    original = get_attack("autoattack-original", budget)
    adv = original.run(tiny.model, x, y, seed=0)
    assert perturbation_norm(adv - x, "Linf").max() <= 0.08 + 1e-6
    theirs = accuracy(tiny.model, adv, y)
    assert 0 < theirs < 1 and abs(ours - theirs) <= 1 / 12, (ours, theirs)
    aa = original.library_attack(tiny.model)
    assert (aa.steps, aa.n_queries) == (10, 300) and aa.warnings == []   # a plain model: the original's checks pass


def test_the_originals_own_checks_are_kept_for_a_randomized_model(tiny):
    from test_red_flags import Noisy

    noisy = Noisy(tiny.model)
    atk = get_attack("autoattack-original", {"eps": 0.01, "steps": 2, "n_queries": 5})
    atk.run(noisy, tiny.x[:4], tiny.y[:4], seed=0)
    assert any("randomized" in w for w in atk.library_attack(noisy).warnings)
