"""The report's sanity checks each fire on a planted violation, and stay quiet on a sound run."""
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
    assert "Sanity checks" in text and "pgd+bpda" in text
    assert (run / "robust_accuracy_vs_budget.png").stat().st_size > 1000
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
