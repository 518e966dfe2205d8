"""What makes two cells of ``landscape worst-case`` one defense or two: the purifier's setting, read from each
run's config (files by content, the step the purifier takes at K, a user defense's kwargs)."""
import json

import pandas as pd
import pytest

from defense.defenses import DefenseError, load_step_table
from evaluator.across_runs import _drop_unambiguous_hashes, _one_series_per_defense, defense_setting, settings_differ

REVERSE = {"restarts": 1, "eps_rev": "16/255", "ssl_head": "checkpoints/ssl-head-resnet4b.pt",
           "reverse_theta": "checkpoints/theta-reverse-resnet4b-bounded05.pt"}


def test_two_files_with_one_name_are_two_settings_and_one_file_by_two_paths_is_one(tmp_path, monkeypatch):
    for name, content in (("a", b"one theta"), ("b", b"another theta")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "theta.pt").write_bytes(content)
    monkeypatch.chdir(tmp_path)
    a, b = ({**REVERSE, "reverse_theta": f"{d}/theta.pt"} for d in ("a", "b"))
    same = {**REVERSE, "reverse_theta": str(tmp_path / "a" / "theta.pt")}   # a's file, by its absolute path
    sa, sb, ss = (defense_setting(c, "reverse-z", 1) for c in (a, b, same))
    assert sa != sb and sa == ss
    named = _drop_unambiguous_hashes({sa, sb})
    assert named[sa] != named[sb] and "theta.pt@" in named[sa]              # the hash stays: two files, one name
    alone = _drop_unambiguous_hashes({sa})[sa]
    assert "theta=theta.pt;" in alone and "@" not in alone                  # one file per name: names only


def test_one_step_at_k_is_one_defense_whatever_the_rule_gives_at_other_k():
    eps = 16 / 255
    listed = {**REVERSE, "reverse_steps": {40: ["sign", eps / 40]}}
    more = {**REVERSE, "reverse_steps": {1: ["adam", 0.5], 40: ["sign", eps / 40]}}
    default = {**REVERSE}                                                   # sign steps of eps_rev / K
    at = {k: {defense_setting(c, "reverse-x", k) for c in (listed, more, default)} for k in (0, 1, 40)}
    assert len(at[40]) == 1 and len(at[0]) == 1                             # the same step at 40; no step at 0
    assert len(at[1]) == 3                                                  # nearest listed K, adam, eps_rev / 1
    assert "step at K=1: sign" in defense_setting(listed, "reverse-x", 1)   # K not listed: the nearest listed one's
    assert len({defense_setting(c, "reverse-x") for c in (listed, more, default)}) == 3   # three rules (series)
    scaled = {**REVERSE, "reverse_step_scale": 0.5}
    assert defense_setting(scaled, "reverse-x", 5) == defense_setting(
        {**REVERSE, "reverse_steps": {5: ["sign", 0.5 * eps / 5]}}, "reverse-x", 5)


def test_a_user_defense_is_keyed_by_all_its_kwargs_in_any_order():
    one = {"restarts": 1, "kwargs": {"sigma": 0.1, "steps": 3}}
    other = {"restarts": 1, "kwargs": {"steps": 3, "sigma": 0.1}}
    assert defense_setting(one, "no/such/file.py:Blur", 2) == defense_setting(other, "no/such/file.py:Blur", 2)
    assert json.dumps({"sigma": 0.1, "steps": 3}, sort_keys=True) in defense_setting(one, "no/such/file.py:Blur", 2)
    assert defense_setting(one, "x.py:Blur", 2) != defense_setting({**one, "kwargs": {"sigma": 0.2, "steps": 3}}, "x.py:Blur", 2)


def test_series_join_across_runs_unless_two_cells_share_a_k_and_settings_differ_per_model():
    base = "R=1; eps_rev=16/255"
    rows = [("m", 1, f"{base}; step at K=1: adam 0.5", "rule A"), ("m", 5, f"{base}; step at K=5: adam 0.25", "rule B"),
            ("m2", 5, f"{base}; step at K=5: sign 0.1", "rule C"), ("m2", 5, f"{base}; step at K=5: adam 1", "rule D")]
    t = pd.DataFrame(rows, columns=["model", "budget", "setting", "series"]).assign(defense="reverse-x", landscape="x")
    s = _one_series_per_defense(t)
    assert s["series"].iloc[0] == s["series"].iloc[1] == base              # one line through K = 1 and 5
    assert list(s["series"].iloc[2:]) == ["rule C", "rule D"]             # two defenses at K = 5: two lines
    assert settings_differ(t) and not settings_differ(t.iloc[:3])          # m at 1 and 5, m2 once: nothing to name


def test_a_chosen_steps_table_gives_its_chosen_rows_not_its_first_candidates(tmp_path):
    table = pd.DataFrame({"space": ["X", "X", "X", "Z"], "budget": [5, 5, 40, 5], "rule": ["sign", "adam", "sign", "adam"],
                          "lr": [0.1, 0.2, 0.3, 0.4], "chosen": [False, True, True, False]})
    table.to_csv(tmp_path / "steps.csv", index=False)
    assert load_step_table(str(tmp_path / "steps.csv"), "x", None) == {5: ("adam", 0.2), 40: ("sign", 0.3)}
    with pytest.raises(DefenseError, match="no chosen step"):
        load_step_table(str(tmp_path / "steps.csv"), "z", None)
