"""The evaluation grid: every (model, defense, landscape, budget, attack) cell, checked once.

:func:`build_units` checks every setting that needs no data or model (types, ranges, names) and
returns the cells; the driver builds it once and the rest of a run works from it.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

from attacks import NO_ATTACK, get_attack
from attacks.adaptive import MODES
from attacks.base import BoundAttack
from defense.defenses import DEFENSE_DEFAULTS, DEFENSES, NATURAL_LOSS_DEFENSES, DefenseError, resolve_defenses
from landscape.errors import LandscapeError


class EvalError(LandscapeError, ValueError):
    """The evaluation config asks for something that does not exist."""


def attack_steps(attack) -> int:
    """Iterations of an attack (queries for Square, 1 for FGSM, 0 for none): for the report's sanity checks."""
    if attack is None:
        return 0
    p = attack.params
    return int(p.get("steps") or p.get("n_queries") or 1) * int(p.get("restarts", 1))


def derive_seed(*parts) -> int:
    """A stable 31-bit seed from the run seed and the identity of a piece of work."""
    return zlib.crc32("|".join(str(p) for p in parts).encode()) & 0x7FFFFFFF


@dataclass
class Unit:
    """One cell of the grid: a defended model at budget K under one attack in one adaptive mode."""

    defense: str
    landscape: str
    budget: int
    attack_name: str
    attack: BoundAttack | None
    mode: str | None = None
    draws: int | None = None     # EOT draws of this cell (a list of defense.eot_draws); None: the run's one value
    defense_randomized: bool = True   # False: a user defense that declares itself deterministic

    @property
    def randomized(self) -> bool:
        """Would another seed give another answer? (a purifier's random starts, an attack's random
        start, restarts or queries); ``runs=N`` repeats only these cells."""
        if self.defense != "none" and self.defense_randomized:
            return True
        if self.attack is None:
            return False
        return self.attack.name not in DETERMINISTIC_ATTACKS and self.attack.params.get("random_start", True) is not False


#: attacks with no randomness of their own (given the image, the same adversarial example every time)
DETERMINISTIC_ATTACKS = {"fgsm", "cw"}


def run_seed(seed: int, run: int) -> int:
    """The seed of repeat ``run`` (0: the run seed itself, so ``runs=1`` is the plain run)."""
    return int(seed) if run == 0 else derive_seed(seed, "run", run)


def _whole(cfg: dict, key: str, minimum: int, allow_none: bool = False, maximum: int | None = None):
    node = cfg
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if node is None and allow_none:
        return None
    if isinstance(node, bool) or not isinstance(node, int) or node < minimum or (maximum is not None and node > maximum):
        bound = f">= {minimum}" if maximum is None else f"in {minimum}..{maximum}"
        raise EvalError(f"{key} must be a whole number {bound}{' (or null)' if allow_none else ''}, got {node!r}")
    return node


#: keys that take another type besides their default's (a list of draws, a table given inline, one name)
OTHER_TYPES = {"defense.eot_draws": (list,), "defense.step_sizes": (dict, list), "defenses": (str,),
               "attacks": (str,), "defense.reverse_steps": (dict, list)}


def check_types(cfg: dict, defaults: dict, prefix: str = "") -> None:
    """Each setting has its default's type (a list where a list is expected, a number where a number is, a
    mapping where a mapping is): a value of another type gets a clear error here, not a traceback later."""
    for key, default in defaults.items():
        path = f"{prefix}{key}"
        if key not in cfg or default is None:
            continue
        value = cfg[key]
        extra = OTHER_TYPES.get(path, ())
        if isinstance(default, bool):
            ok, what = isinstance(value, bool), "true or false"
        elif isinstance(default, (int, float)):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            what = "a number"
        elif isinstance(default, str):
            ok, what = isinstance(value, (str, int, float)) and not isinstance(value, bool), "a string"
        elif isinstance(default, list):
            ok, what = isinstance(value, list), "a list such as [a, b]"
        elif isinstance(default, dict):
            if isinstance(value, dict):
                check_types(value, default, path + ".")
            ok, what = isinstance(value, dict) or (value is None and not default), "a mapping such as {a: 1}"
        else:
            continue
        if not ok and not isinstance(value, extra):
            raise EvalError(f"{path} must be {what}, got {value!r}")


def check_config(cfg: dict) -> None:
    """Type and range checks of the plain settings, so bad values get a clear error, not a traceback."""
    from evaluator.config import EVAL_DEFAULTS

    check_types(cfg, EVAL_DEFAULTS)
    _whole(cfg, "seed", 0, maximum=2 ** 63 - 1)   # torch's seed range
    if "runs" in cfg:
        _whole(cfg, "runs", 1)
    _whole(cfg, "threads", 0, maximum=4096)
    _whole(cfg, "eval.batch_size", 1)
    shard = _whole(cfg, "eval.shard_size", 1, allow_none=True)
    batch = cfg["eval"]["batch_size"]
    if shard is not None and shard % batch:
        raise EvalError(f"eval.shard_size ({shard}) must be a positive multiple of eval.batch_size "
                        f"({batch}), so that batch seeds do not depend on the split")
    _whole(cfg, "data.n_examples", 0, allow_none=True)
    dev = cfg.get("device")
    if dev not in (None, "", "auto", "cpu") and not (isinstance(dev, str) and (dev == "cuda" or dev.startswith("cuda:"))):
        raise EvalError(f"device must be auto, cpu, cuda or cuda:N, got {dev!r}")
    params = cfg.get("attack_params") or {}
    if not isinstance(params, dict) or any(not isinstance(v, (dict, type(None))) for v in params.values()):
        raise EvalError(f"attack_params must map attack names to parameter mappings "
                        f"(e.g. attack_params.pgd.steps=20), got {params!r}")
    for key in ("defenses", "attacks", "defense.modes"):
        value = cfg.get(key) if "." not in key else (cfg.get("defense") or {}).get("modes")
        if value is not None and not isinstance(value, (list, str)):
            raise EvalError(f"{key} must be a list such as [none, pgd], got {value!r}")
        # names (a defense may also be a class, given by the Python API)
        if isinstance(value, list) and any(not isinstance(v, str) and not (key == "defenses" and isinstance(v, type))
                                           for v in value):
            raise EvalError(f"{key} must list names such as [none, pgd], got {value!r}")


#: attack parameters that may be lists: the attacker's budget as a second axis of the grid
BUDGET_KEYS = ("steps", "n_queries")


def _whole_list(values, what: str) -> list[int]:
    if (not isinstance(values, list) or not values or len(set(map(str, values))) != len(values)
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values)):
        raise EvalError(f"{what} must be a whole number >= 1 or a non-empty list of distinct ones, got {values!r}")
    return values


def expand_budgets(name: str, params: dict | None) -> list[tuple[str, dict]]:
    """(label, params) per attacker budget: ``pgd`` with ``steps: [10, 50]`` is ``pgd[steps=10]``
    and ``pgd[steps=50]``; without a list, the attack as named."""
    params = dict(params or {})
    lists = [k for k in BUDGET_KEYS if isinstance(params.get(k), list)]
    if not lists:
        return [(name, params)]
    if len(lists) > 1:
        raise EvalError(f"attack_params.{name}: only one budget may be a list, got lists for {', '.join(lists)}")
    key = lists[0]
    values = _whole_list(params[key], f"attack_params.{name}.{key}")
    return [(f"{name}[{key}={v}]", {**params, key: v}) for v in values]


def build_units(cfg: dict) -> list[Unit]:
    check_config(cfg)
    entries = cfg.get("defenses") or ["none"]
    if isinstance(entries, str):
        entries = [entries]
    kwargs = (cfg.get("defense") or {}).get("kwargs") or {}   # a mapping: check_types saw to it
    try:
        resolved = resolve_defenses(entries, kwargs)   # your own defenses are imported and checked here
    except DefenseError as exc:
        raise EvalError(str(exc)) from None
    defenses = list(resolved)
    user = {name: u for name, u in resolved.items() if u is not None}
    landscape_of = {d: user[d].landscape if d in user else DEFENSES[d] for d in defenses}
    natural = set(NATURAL_LOSS_DEFENSES) | {d for d, u in user.items() if callable(getattr(u.cls, "natural_loss", None))}
    names = cfg.get("attacks") or [NO_ATTACK]
    if isinstance(names, str):
        names = [names]
    if len(set(names)) != len(names):
        raise EvalError(f"attacks lists a name twice: {names}")
    params = cfg.get("attack_params") or {}
    for key in params:
        if key not in names:   # unknown names raise; known-but-unused are checked
            for _, p in expand_budgets(key, params[key]):
                get_attack(key, p, cfg.get("eps"))
    attacks = {n: get_attack(n, params.get(n), cfg.get("eps")) if n == NO_ATTACK else None for n in names}
    labels = {}   # base name -> [(label, bound attack)], one per attacker budget
    for n in names:
        labels[n] = ([(n, None)] if n == NO_ATTACK else
                     [(label, get_attack(n, p, cfg.get("eps"))) for label, p in expand_budgets(n, params.get(n))])
        attacks[n] = labels[n][0][1]
    dcfg = cfg.get("defense") or {}
    budgets = dcfg.get("budgets", [0])
    if not isinstance(budgets, list) or any(isinstance(k, bool) or not isinstance(k, int) for k in budgets):
        raise EvalError(f"defense.budgets must be a list of whole numbers such as [0, 5, 20], got {budgets!r}")
    if any(k < 0 for k in budgets):
        raise EvalError(f"defense.budgets must be >= 0, got {budgets}")
    modes = dcfg.get("modes") or ["nonadaptive"]
    for m in modes:
        if m not in MODES:
            raise EvalError(f"unknown adaptive mode {m!r} in defense.modes; valid: {', '.join(MODES)}")
    if len(set(modes)) != len(modes):
        raise EvalError(f"defense.modes lists a mode twice: {modes}")
    per_attack = dcfg.get("attack_modes") or {}
    if not isinstance(per_attack, dict):
        raise EvalError(f"defense.attack_modes must map attack names to lists of modes, got {per_attack!r}")
    for n, ms in per_attack.items():
        if n not in names or attacks[n] is None:
            raise EvalError(f"defense.attack_modes names {n!r}, which is not an attack of this run ({', '.join(names)})")
        if not isinstance(ms, list) or not ms or any(m not in MODES for m in ms) or len(set(ms)) != len(ms):
            raise EvalError(f"defense.attack_modes.{n} must be a non-empty list of distinct modes ({', '.join(MODES)}), "
                            f"got {ms!r}")
    for n, atk in attacks.items():
        if atk is not None and atk.spec.uses_natural_loss:
            wrong = [d for d in defenses if d not in natural]
            if wrong:
                raise EvalError(f"attack {n!r} needs a defense with a self-supervised loss "
                                f"({', '.join(sorted(natural - {'none'}))}, or your own with a natural_loss method; "
                                f"none runs it as PGD), not {', '.join(wrong)}")
    eot = dcfg.get("eot_draws", DEFENSE_DEFAULTS["eot_draws"])
    draws = [None] if not isinstance(eot, list) else _whole_list(eot, "defense.eot_draws")
    if not isinstance(eot, list):
        _whole({"eot_draws": eot}, "eot_draws", 1)

    def modes_of(n):   # (mode, label suffix, draws): an EOT mode once per listed number of draws
        for m in per_attack.get(n, modes):
            for dr in (draws if "eot" in m else [None]):
                yield m, (f"+{m}" if dr is None else f"+{m}[draws={dr}]"), dr

    units = []
    for d in defenses:
        if d == "none":
            units += [Unit(d, "none", 0, label, atk) for n in names for label, atk in labels[n]]
            continue
        rand = user[d].randomized if d in user else True
        for k in budgets:
            for n in names:
                for label, atk in labels[n]:
                    if atk is None:
                        units.append(Unit(d, landscape_of[d], k, label, None, defense_randomized=rand))
                    else:
                        units += [Unit(d, landscape_of[d], k, label + suffix, atk, m, dr, rand)
                                  for m, suffix, dr in modes_of(n)]
    return units
