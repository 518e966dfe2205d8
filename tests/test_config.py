"""landscape.config: YAML files, key=value overrides, the schema of defaults, open sections."""
from __future__ import annotations

import copy

import pytest
import yaml
from _util import REPO

from evaluator.config import EVAL_DEFAULTS, OPEN_SECTIONS
from landscape.config import ConfigError, load_config, overrides_to_dict, parse_number, parse_value

SCHEMA = {
    "seed": 0,
    "model": {"name": "resnet20", "weights": None, "kwargs": {}},
    "data": {"root": None, "n_examples": 1000},
    "attacks": ["none"],
    "eps": {"Linf": "8/255", "L2": 0.5},
    "attack_params": {},
}
OPEN = ("attack_params", "model.kwargs")


def normalize_eps(cfg: dict) -> dict:
    """A copy of ``cfg`` with the eps budgets as floats ("8/255" -> 0.0313...)."""
    out = copy.deepcopy(cfg)
    out["eps"] = {k: parse_number(v) for k, v in out["eps"].items()}
    return out


# ----------------------------------------------------------------------------- values

@pytest.mark.parametrize("text, expected", [
    ("8/255", 8 / 255),
    (" 1/2 ", 0.5),
    ("0.5", 0.5),
    (3, 3.0),
    (0.25, 0.25),
    ("1e-3", 1e-3),
    ("-2/4", -0.5),
])
def test_parse_number_accepts_numbers_and_fractions(text, expected):
    value = parse_number(text)
    assert isinstance(value, float)
    assert value == pytest.approx(expected, rel=0, abs=1e-15)


@pytest.mark.parametrize("bad", ["abc", "1/0", "", True, None, [1]])
def test_parse_number_rejects_non_numbers(bad):
    with pytest.raises(ConfigError, match="number"):
        parse_number(bad, name="eps")
    assert parse_number(bad, strict=False) is None


def test_parse_number_error_names_the_key():
    with pytest.raises(ConfigError, match="attack_params.pgd.eps"):
        parse_number("eight", name="attack_params.pgd.eps")


@pytest.mark.parametrize("text, expected", [
    ("[none, fgsm, pgd]", ["none", "fgsm", "pgd"]),
    ("[]", []),
    ("8/255", 8 / 255),
    ("1e-3", 1e-3),          # PyYAML reads 1e-3 as a string; parse_value must still give a float
    ("20", 20),
    ("true", True),
    ("null", None),
    ("resnet20", "resnet20"),
    ("{a: 1}", {"a": 1}),
])
def test_parse_value_yaml_rules(text, expected):
    value = parse_value(text)
    assert value == expected
    assert type(value) is type(expected)


def test_parse_value_bad_yaml():
    with pytest.raises(ConfigError, match="cannot parse"):
        parse_value("[unclosed")


# ----------------------------------------------------------------------------- overrides

def test_overrides_to_dict_nests_dotted_keys():
    out = overrides_to_dict(["data.n_examples=10", "attacks=[none, pgd]", "eps.Linf=4/255", "model.name=a:b"])
    assert out == {"data": {"n_examples": 10}, "attacks": ["none", "pgd"], "eps": {"Linf": 4 / 255},
                   "model": {"name": "a:b"}}


def test_override_value_may_contain_equals_sign():
    assert overrides_to_dict(["model.name=x=y"]) == {"model": {"name": "x=y"}}


@pytest.mark.parametrize("bad", ["foo", "data.n_examples", "=5", "data.=5", ".seed=1", "a..b=1"])
def test_malformed_override_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="override"):
        overrides_to_dict([bad])


def test_override_conflicting_with_earlier_scalar():
    with pytest.raises(ConfigError, match="conflicts"):
        overrides_to_dict(["model=1", "model.name=resnet20"])


def test_load_config_yaml_then_overrides(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("seed: 3\ndata:\n  n_examples: 10\n  root: /somewhere\nattacks: [none, fgsm]\n")
    cfg = load_config(SCHEMA, path, ["data.n_examples=20", "attacks=[none, pgd, cw]", "eps.Linf=8/255"], OPEN)
    assert cfg["seed"] == 3                          # from the file
    assert cfg["data"] == {"root": "/somewhere", "n_examples": 20}   # override beats file; deep merge keeps root
    assert cfg["attacks"] == ["none", "pgd", "cw"]   # lists replace, they do not merge
    assert cfg["eps"] == {"Linf": pytest.approx(8 / 255), "L2": 0.5}
    assert isinstance(cfg["eps"]["Linf"], float)
    assert cfg["model"] == SCHEMA["model"]           # untouched section keeps its defaults


def test_an_empty_mapping_override_clears_an_open_mapping_but_not_a_section(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("defense:\n  attack_modes: {autoattack: [nonadaptive]}\n  eot_draws: 4\n")
    cfg = load_config(EVAL_DEFAULTS, path, ["defense.attack_modes={}"], OPEN_SECTIONS)
    assert cfg["defense"]["attack_modes"] == {} and cfg["defense"]["eot_draws"] == 4
    kept = load_config(EVAL_DEFAULTS, path, ["defense={}", "eval={}"], OPEN_SECTIONS)   # sections keep their keys
    assert kept["defense"]["attack_modes"] == {"autoattack": ["nonadaptive"]} and kept["eval"] == EVAL_DEFAULTS["eval"]


def test_load_config_does_not_mutate_defaults():
    before = copy.deepcopy(SCHEMA)
    cfg = load_config(SCHEMA, None, ["data.n_examples=5", "attack_params.pgd.steps=3", "model.kwargs.width=2"], OPEN)
    cfg["attacks"].append("pgd")
    assert SCHEMA == before


def test_unknown_key_refused_naming_key_and_valid_keys():
    with pytest.raises(ConfigError) as exc:
        load_config(SCHEMA, None, ["data.n_exampels=5"], OPEN)
    msg = str(exc.value)
    assert "data.n_exampels" in msg
    assert "data.n_examples" in msg and "data.root" in msg


def test_unknown_top_level_key_lists_top_level_keys():
    with pytest.raises(ConfigError) as exc:
        load_config(SCHEMA, None, ["sed=1"], OPEN)
    msg = str(exc.value)
    assert "'sed'" in msg
    for key in SCHEMA:
        assert key in msg


def test_unknown_key_in_yaml_file_refused(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("model:\n  nmae: resnet20\n")
    with pytest.raises(ConfigError, match=r"model\.nmae.*model\.name"):
        load_config(SCHEMA, path, [], OPEN)


def test_open_sections_accept_new_keys(tmp_path):
    cfg = load_config(SCHEMA, None, ["attack_params.pgd.steps=20", "attack_params.pgd.eps=4/255",
                                     "attack_params.autoattack.version=rand", "model.kwargs.width=4"], OPEN)
    assert cfg["attack_params"] == {"pgd": {"steps": 20, "eps": pytest.approx(4 / 255)},
                                    "autoattack": {"version": "rand"}}
    assert cfg["model"]["kwargs"] == {"width": 4}
    path = tmp_path / "cfg.yaml"
    path.write_text("attack_params:\n  cw:\n    c: 0.1\n")
    assert load_config(SCHEMA, path, [], OPEN)["attack_params"] == {"cw": {"c": 0.1}}


def test_closed_section_without_open_sections():
    # the same keys are refused when the section is not declared open (the schema's {} has no keys)
    with pytest.raises(ConfigError, match="attack_params.pgd"):
        load_config({"attack_params": {"fgsm": {}}}, None, ["attack_params.pgd.steps=20"], ())


def test_section_given_a_scalar_is_refused():
    with pytest.raises(ConfigError, match="mapping"):
        load_config(SCHEMA, None, ["eps=8/255"], OPEN)


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(SCHEMA, tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(SCHEMA, bad)
    top_list = tmp_path / "list.yaml"
    top_list.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(SCHEMA, top_list)
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing\n")
    assert load_config(SCHEMA, empty) == SCHEMA


# ----------------------------------------------------------------------------- the shipped configs

def test_default_yaml_equals_eval_defaults():
    path = REPO / "configs" / "default.yaml"
    raw = yaml.safe_load(path.read_text())
    # the file mirrors every key of the defaults, with the same values
    assert normalize_eps(raw) == normalize_eps(EVAL_DEFAULTS)
    loaded = load_config(EVAL_DEFAULTS, path, [], OPEN_SECTIONS)
    assert normalize_eps(loaded) == normalize_eps(EVAL_DEFAULTS)


def _is_ray_cluster_config(path) -> bool:
    """configs/ may also hold a `ray up` cluster file, which is not an eval config."""
    data = yaml.safe_load(path.read_text()) or {}
    return "cluster_name" in data and "provider" in data


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    if _is_ray_cluster_config(path):
        data = yaml.safe_load(path.read_text())
        assert data["provider"]["type"] and data["cluster_name"]
        return
    cfg = load_config(EVAL_DEFAULTS, path, [], OPEN_SECTIONS)
    assert set(cfg) == set(EVAL_DEFAULTS)
    for norm, eps in cfg["eps"].items():
        assert 0 < parse_number(eps, name=f"eps.{norm}") < 1
    from attacks import attack_names
    assert set(cfg["attacks"]) <= set(attack_names())


def test_shipped_configs_exist():
    assert (REPO / "configs" / "default.yaml").is_file()
