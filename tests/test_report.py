"""The report's sanity checks each fire on a planted violation, and stay quiet on a sound run."""
import re

import pandas as pd
import pytest

from evaluator.report import ReportError, load_runs, sanity_checks, write_report
from landscape.stats import wilson_interval


def row(attack="none", acc=0.5, defense="purify-x", landscape="x", budget=10, eps=8 / 255, steps=10, norm="Linf", n=100,
        run="r"):
    lo, hi = wilson_interval(int(acc * n), n)
    return dict(run=run, model="m", defense=defense, landscape=landscape, budget=budget, attack=attack,
                norm="none" if attack == "none" else norm, eps=0.0 if attack == "none" else eps, n=n,
                correct=int(acc * n), accuracy=acc, ci_low=lo, ci_high=hi, seconds=1.0, data="x", steps=steps,
                params="{}")


def sound():
    return [row("none", 0.8, "none", "none", 0), row("pgd", 0.0, "none", "none", 0),
            row("none", 0.75), row("pgd+nonadaptive", 0.6), row("pgd+bpda", 0.3)]


def status(df, check):
    c = sanity_checks(df)
    return c[(c["check"] == check) & (c["summary"] == True)]["status"].item()  # noqa: E712


def test_sound_run_passes():
    c = sanity_checks(pd.DataFrame(sound()))
    summary = c[c["summary"] == True]  # noqa: E712
    assert set(summary["status"]) <= {"ok", "not run"}


@pytest.mark.parametrize("planted,check", [
    ([row("pgd+bpda", 0.9)], "attacked accuracy above clean"),
    ([row("pgd+nonadaptive", 0.2, steps=50), row("pgd+nonadaptive", 0.4, steps=100, run="r2"),
      row("none", 0.75, run="r2")], "more iterations raised accuracy"),
    ([row("pgd+eot", 0.7)], "adaptive weaker than non-adaptive"),
    ([row("pgd+bpda", 0.5, eps=1.0)], "large eps above chance"),
    ([row("none", 0.4, budget=20)], "purifier costs > 10 points clean accuracy"),
    ([row("autoattack+bpda", 0.20), row("autoattack-original+bpda", 0.22)], "autoattack disagrees with the original"),
])
def test_each_check_fires_on_a_planted_violation(planted, check):
    assert status(pd.DataFrame(sound()), check) in ("ok", "not run")
    assert status(pd.DataFrame(sound() + planted), check) == "FAIL"


def test_report_files(tmp_path):
    run = tmp_path / "run1"
    run.mkdir()
    df = pd.DataFrame(sound()).drop(columns="run")
    df.to_csv(run / "results.csv", index=False)
    path, _ = write_report([run], run)
    text = path.read_text()
    assert "Red flags" in text and "pgd+bpda" in text
    assert (run / "robust_accuracy_vs_budget.png").stat().st_size > 1000
    html = (run / "report.html").read_text()
    # one self-contained page: the same tables, red flags first, every figure embedded
    assert html.index("Red flags") < html.index("pgd+bpda")
    assert html.count("<img") == text.count("![") and "data:image/png;base64," in html and 'src="' + "robust" not in html
    separators = [line for line in text.splitlines() if re.fullmatch(r"\|[:\-| ]+\|", line)]
    assert html.count("<table") == len(separators) >= 2
    assert len(load_runs([run, run])) == 2 * len(df)
    with pytest.raises(ReportError, match="no results"):
        load_runs([tmp_path / "empty"])


def test_headline_figures_draw_worst_case_and_clean_against_k_and_compute(tmp_path):
    from evaluator.report import _suite_rows

    rows = sound() + [row("suite[pgd+nonadaptive,pgd+bpda]", 0.25), row("none", 0.7, defense="reverse-z", landscape="z"),
                      row("pgd+bpda", 0.35, defense="reverse-z", landscape="z")]
    df = pd.DataFrame(rows).drop(columns="run")
    for col, k in (("purifier_forward", 11), ("purifier_backward", 10)):
        df[col] = [0 if d == "none" else k for d in df["defense"]]
    worst = _suite_rows(df.assign(run="r")).set_index(["defense", "landscape"])["accuracy"]
    # the suite row where a cell has one, else its single (or weakest) attack
    assert worst[("purify-x", "x")] == 0.25 and worst[("reverse-z", "z")] == 0.35 and worst[("none", "none")] == 0.0
    run = tmp_path / "run1"
    run.mkdir()
    df.to_csv(run / "results.csv", index=False)
    path, _ = write_report([run], run)
    assert "headline.png" in path.read_text() and "headline_vs_compute.png" in path.read_text()
    assert (run / "headline.png").stat().st_size > 1000 and (run / "headline_vs_compute.png").stat().st_size > 1000
    # an undefended-only run has no headline to draw (and says nothing about one)
    only = tmp_path / "run2"
    only.mkdir()
    df[df["defense"] == "none"].to_csv(only / "results.csv", index=False)
    path, _ = write_report([only], only)
    assert "headline" not in path.read_text()


def test_compute_table_shows_counted_passes_and_seconds_per_image(tmp_path):
    df = pd.DataFrame(sound()).drop(columns="run").assign(runs=1)
    for col, k in (("purifier_forward", 11), ("purifier_backward", 10), ("attack_forward", 21), ("attack_backward", 20)):
        df[col] = [0 if d == "none" and col.startswith("purifier") else k for d in df["defense"]]
    df.loc[df["defense"] == "purify-x", "purifier_backward"] = float("nan")       # a defense that counts nothing
    run = tmp_path / "run1"
    run.mkdir()
    df.to_csv(run / "results.csv", index=False)               # written before the column: derived from seconds / n
    text = write_report([run], run)[0].read_text()
    section = text[text.index("## Compute per image"):]
    assert "not counted" in section and re.search(r"\| +0\.01 +\|", section)   # 1 s over 100 images, one run
    assert section.count("purify-x") == 3 and "seconds / image" in section
    assert "Compute per image" in (run / "report.html").read_text()


def test_autoattack_and_the_original_within_a_point_are_ok():
    df = pd.DataFrame(sound() + [row("autoattack+bpda", 0.20), row("autoattack-original+bpda", 0.21)])
    assert status(df, "autoattack disagrees with the original") == "ok"


def per_image(square_only: int, n: int = 400):
    """PGD and Square on n images of one cell; ``square_only`` images are broken by Square alone."""
    rows = []
    for i in range(n):
        pgd_ok = i >= n // 2                     # PGD breaks the first half
        sq_ok = pgd_ok and i >= n // 2 + square_only
        for attack, ok in (("none", True), ("pgd+bpda", pgd_ok), ("square+bpda", sq_ok), ("autoattack+bpda", False)):
            rows.append(dict(run="r", model="m", defense="purify-x", landscape="x", budget=10, attack=attack, index=i,
                             correct=ok))
    return pd.DataFrame(rows)


@pytest.mark.parametrize("square_only, expected", [(0, "ok"), (2, "ok"), (3, "FAIL")])
def test_square_beating_the_gradient_attacks_is_flagged_above_half_a_point(square_only, expected):
    c = sanity_checks(pd.DataFrame(sound()), per_image(square_only))   # 2 of 400 is 0.5 points: not above
    got = c[(c["check"] == "Square beats the gradient attacks") & (c["summary"] == True)]  # noqa: E712
    assert got["status"].item() == expected
    if expected == "FAIL":
        detail = c[(c["check"] == "Square beats the gradient attacks") & (c["status"] == "FAIL") & c["summary"].isna()]
        assert "3 of 400" in detail["detail"].item() and "autoattack" not in detail["detail"].item().split("none of")[1]


def test_square_check_is_not_run_without_per_image_tables():
    assert status(pd.DataFrame(sound()), "Square beats the gradient attacks") == "not run"


def test_robustbench_entry_round_trips_and_holds_the_tables_figures(tmp_path):
    import json

    from landscape_cli.main import main

    run = tmp_path / "run1"
    run.mkdir()
    rows = sound() + [row("autoattack+nonadaptive", 0.55), row("autoattack+bpda", 0.25), row("suite[a,b]", 0.2),
                      row("autoattack", 0.05, "none", "none", 0)]
    df = pd.DataFrame(rows).drop(columns="run").assign(purifier_forward=11.0, purifier_backward=10.0)
    df.loc[df["defense"] == "none", ["purifier_forward", "purifier_backward"]] = 0.0
    df.to_csv(run / "results.csv", index=False)
    (run / "config.yaml").write_text("defense:\n  restarts: 1\n")
    assert main(["report", str(run), "--entry", str(tmp_path / "entry.json")]) == 0
    entries = json.loads((tmp_path / "entry.json").read_text())
    by = {(e["landscape"]["defense"], e["landscape"]["budget_K"]): e for e in entries}
    assert set(by) == {("none", 0), ("purify-x", 10)}
    e = by[("purify-x", 10)]
    assert (e["clean_acc"], e["autoattack_acc"], e["eps"], e["threat_model"]) == ("75.00", "25.00", "8/255", "Linf")
    assert e["number_forward_passes"] == 12 and e["landscape"]["restarts_R"] == 1
    assert e["landscape"]["worst_case_acc"] == "20.00" and "non-adaptively" not in e["footnote"]
    assert by[("none", 0)]["autoattack_acc"] == "5.00" and by[("none", 0)]["number_forward_passes"] == 1


def test_autoattack_budget_lists_and_versions_are_compared_pairwise_not_crossed():
    rows = sound() + [row("autoattack[steps=10]+bpda", 0.30, steps=10), row("autoattack[steps=100]+bpda", 0.20, steps=100)]
    assert status(pd.DataFrame(rows), "autoattack disagrees with the original") == "not run"   # no original: no crash
    rows += [row("autoattack-original[steps=10]+bpda", 0.30, steps=10), row("autoattack-original[steps=100]+bpda", 0.20,
                                                                          steps=100)]
    assert status(pd.DataFrame(rows), "autoattack disagrees with the original") == "ok"   # 10 with 10, 100 with 100


def test_square_transferred_from_the_bare_classifier_is_not_a_masked_gradient():
    pi = per_image(3)
    pi["attack"] = pi["attack"].replace({"square+bpda": "square+nonadaptive"})
    c = sanity_checks(pd.DataFrame(sound()), pi)
    got = c[(c["check"] == "Square beats the gradient attacks") & (c["summary"] == True)]  # noqa: E712
    assert got["status"].item() == "not run"
