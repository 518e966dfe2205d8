"""AutoAttack with the original's settings, assembled from torchattacks components.

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020. torchattacks 3.5.1's ``AutoAttack`` keeps the library
defaults of 10 steps for APGD, APGD-T and FAB; the original ``standard`` version runs each
with 100 steps (APGD-T and FAB-T over 9 target classes) and Square with 5000 queries, and
the ``rand`` version (for defenses with randomness) runs APGD-CE and APGD-DLR with
expectation over 20 transformations (EOT). An image counts as robust only if it survives
every attack of the ensemble (``torchattacks.MultiAttack`` attacks the survivors in turn).
Square keeps the original's schedule of square sizes (p_init 0.8, not rescaled to n_queries).
``autoattack-original`` runs the original package on the same images as a cross-check.

Arguments (config ``attack_params.autoattack``): ``norm`` (Linf | L2), ``eps``,
``version`` (standard | rand), ``steps`` (100), ``n_queries`` (5000), ``eot_iter`` (20, rand
only), ``n_classes`` (10).

Example::

    >>> from attacks import get_attack
    >>> aa = get_attack("autoattack", {"eps": 8 / 255})
    >>> adv = aa.run(model, images, labels, seed=0)
"""
from __future__ import annotations

import torchattacks

VERSIONS = ("standard", "rand")


def build_autoattack(model, p: dict):
    version = p.get("version", "standard")
    common = dict(norm=p["norm"], eps=p["eps"], seed=0, verbose=False)
    steps = p["steps"]
    if version == "standard":
        return torchattacks.MultiAttack([
            torchattacks.APGD(model, loss="ce", steps=steps, n_restarts=1, **common),
            torchattacks.APGDT(model, steps=steps, n_restarts=1, n_classes=p["n_classes"], **common),
            torchattacks.FAB(model, steps=steps, n_restarts=1, multi_targeted=True, n_classes=p["n_classes"], **common),
            # the original's schedule of the square size p (torchattacks rescales it to n_queries by default)
            torchattacks.Square(model, n_queries=p["n_queries"], n_restarts=1, p_init=0.8, resc_schedule=False, **common),
        ])
    if version == "rand":
        return torchattacks.MultiAttack([
            torchattacks.APGD(model, loss="ce", steps=steps, n_restarts=1, eot_iter=p["eot_iter"], **common),
            torchattacks.APGD(model, loss="dlr", steps=steps, n_restarts=1, eot_iter=p["eot_iter"], **common),
        ])
    raise ValueError(f"autoattack version must be one of {', '.join(VERSIONS)}, got {version!r}")
