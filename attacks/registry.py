"""Attack names -> torchattacks attacks, with the defaults robustness papers use.

Linf eps 8/255 and L2 eps 0.5 unless set; PGD: 10 steps of 2/255 from a random start.
Restarts are run with ``torchattacks.MultiAttack`` (each restart attacks the images that
survived the previous ones), so no attack loop is written here.
"""
from __future__ import annotations

import torchattacks

from .autoattack import VERSIONS, build_autoattack
from .autoattack_original import build_original_autoattack
from .base import AttackError, AttackSpec, BoundAttack
from .defense_aware import DefenseAwarePGD


def _restarts(make, n: int):
    attacks = [make() for _ in range(n)]
    return attacks[0] if n == 1 else torchattacks.MultiAttack(attacks)


def _pgd(model, p):
    return _restarts(lambda: torchattacks.PGD(model, eps=p["eps"], alpha=p["alpha"], steps=p["steps"],
                                              random_start=bool(p["random_start"])), p["restarts"])


def _pgdl2(model, p):
    return _restarts(lambda: torchattacks.PGDL2(model, eps=p["eps"], alpha=p["alpha"], steps=p["steps"],
                                                random_start=bool(p["random_start"])), p["restarts"])


def _pgd_aware(model, p, natural_loss):
    if natural_loss is None:   # undefended: nothing to be aware of, the attack is PGD on the cross-entropy
        return _pgd(model, {**p, "restarts": 1})
    return DefenseAwarePGD(model, natural_loss, eps=p["eps"], alpha=p["alpha"], steps=p["steps"], weight=p["weight"],
                           random_start=bool(p["random_start"]))


def _apgd(loss):
    def build(model, p):
        return torchattacks.APGD(model, norm=p["norm"], eps=p["eps"], steps=p["steps"], n_restarts=p["restarts"],
                                 loss=loss, eot_iter=p["eot_iter"], seed=0)
    return build


ATTACKS: dict[str, AttackSpec] = {
    "fgsm": AttackSpec("fgsm", lambda m, p: torchattacks.FGSM(m, eps=p["eps"]), {"eps": None},
                       doc="FGSM (Goodfellow et al. 2015), Linf"),
    "pgd": AttackSpec("pgd", _pgd, {"eps": None, "alpha": 2 / 255, "steps": 10, "random_start": True, "restarts": 1},
                      doc="PGD (Madry et al. 2018), Linf"),
    "pgd-aware": AttackSpec("pgd-aware", _pgd_aware,
                            {"eps": None, "alpha": 2 / 255, "steps": 20, "weight": 10.0, "random_start": True},
                            uses_natural_loss=True,
                            doc="defense-aware PGD (Mao et al. 2021): cross-entropy minus weight x the defense's "
                                "self-supervised loss; needs a reverse-attack defense (plain PGD undefended)"),
    "pgdl2": AttackSpec("pgdl2", _pgdl2, {"eps": None, "alpha": 0.125, "steps": 10, "random_start": True, "restarts": 1},
                        norms=("L2",), doc="PGD, L2 (step 2.5 eps / steps by default)"),
    "cw": AttackSpec("cw", lambda m, p: torchattacks.CW(m, c=p["c"], kappa=p["kappa"], steps=p["steps"], lr=p["lr"]),
                     {"eps": None, "c": 1.0, "kappa": 0.0, "steps": 100, "lr": 0.01}, norms=("L2",), bounded=False,
                     doc="Carlini & Wagner 2017, L2; an example counts only if its L2 distance is within eps"),
    "apgd-ce": AttackSpec("apgd-ce", _apgd("ce"), {"eps": None, "norm": "Linf", "steps": 100, "restarts": 1, "eot_iter": 1},
                          norms=("Linf", "L2"), doc="APGD with cross-entropy (Croce & Hein 2020)"),
    "apgd-dlr": AttackSpec("apgd-dlr", _apgd("dlr"), {"eps": None, "norm": "Linf", "steps": 100, "restarts": 1, "eot_iter": 1},
                           norms=("Linf", "L2"), doc="APGD with the DLR loss (Croce & Hein 2020)"),
    "apgd-t": AttackSpec("apgd-t", lambda m, p: torchattacks.APGDT(m, norm=p["norm"], eps=p["eps"], steps=p["steps"],
                                                                   n_restarts=p["restarts"], eot_iter=p["eot_iter"],
                                                                   n_classes=p["n_classes"], seed=0),
                         {"eps": None, "norm": "Linf", "steps": 100, "restarts": 1, "eot_iter": 1, "n_classes": 10},
                         norms=("Linf", "L2"), doc="targeted APGD with the DLR loss over n_classes-1 targets"),
    "square": AttackSpec("square", lambda m, p: torchattacks.Square(m, norm=p["norm"], eps=p["eps"], n_queries=p["n_queries"],
                                                                    n_restarts=p["restarts"], p_init=p["p_init"], seed=0),
                         {"eps": None, "norm": "Linf", "n_queries": 5000, "restarts": 1, "p_init": 0.8},
                         norms=("Linf", "L2"), doc="Square attack (Andriushchenko et al. 2020), score-based black box"),
    "autoattack": AttackSpec("autoattack", build_autoattack,
                             {"eps": None, "norm": "Linf", "version": "standard", "steps": 100, "n_queries": 5000,
                              "eot_iter": 20, "n_classes": 10},
                             norms=("Linf", "L2"), doc="AutoAttack, the original's standard settings"),
    "autoattack-rand": AttackSpec("autoattack-rand", lambda m, p: build_autoattack(m, {**p, "version": "rand"}),
                                  {"eps": None, "norm": "Linf", "steps": 100, "eot_iter": 20, "n_classes": 10},
                                  norms=("Linf", "L2"), doc="AutoAttack rand version (APGD-CE, APGD-DLR, EOT 20)"),
    "autoattack-original": AttackSpec("autoattack-original", build_original_autoattack,
                                      {"eps": None, "norm": "Linf", "version": "standard", "steps": 100,
                                       "n_queries": 5000}, norms=("Linf", "L2"),
                                      doc="the original AutoAttack (pyautoattack), a cross-check of autoattack"),
}

NO_ATTACK = "none"


def attack_names() -> list[str]:
    return [NO_ATTACK] + list(ATTACKS)


def get_attack(name: str, params: dict | None = None, eps_defaults: dict | None = None) -> BoundAttack | None:
    """A checked attack by name (``None`` for ``none``, i.e. clean accuracy)."""
    if name == NO_ATTACK:
        if params:
            raise AttackError("attack 'none' takes no parameters")
        return None
    if name not in ATTACKS:
        raise AttackError(f"unknown attack {name!r}; valid choices: {', '.join(attack_names())}")
    params = dict(params or {})
    if name in ("autoattack", "autoattack-original") and params.get("version", "standard") not in VERSIONS:
        raise AttackError(f"{name} version must be one of {', '.join(VERSIONS)}, got {params['version']!r}")
    return ATTACKS[name].bind(params, eps_defaults)
