"""``landscape report DIR [DIR ...]``: tables, the robust-accuracy-versus-budget plot, sanity checks.

The checks follow Carlini et al., "On Evaluating Adversarial Robustness" (2019): accuracy
under attack never above clean accuracy; more attack iterations never raise accuracy;
adaptive attacks never weaker than non-adaptive ones; a very large eps drives accuracy to
chance. A purifier whose clean accuracy falls more than 10 points below the undefended
classifier is flagged too: its robust accuracy says little.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from landscape.errors import LandscapeError
from landscape.io import atomic_write, atomic_write_text

CHANCE = 0.1
LARGE_EPS = {"Linf": 0.5, "L2": 10.0}


class ReportError(LandscapeError, ValueError):
    pass


def load_runs(dirs) -> pd.DataFrame:
    frames = []
    for d in dirs:
        d = Path(d)
        path = d / "results.parquet" if (d / "results.parquet").is_file() else d / "results.csv"
        if not path.is_file():
            raise ReportError(f"{d} holds no results.csv or results.parquet (is it a `landscape eval --out` folder?)")
        df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
        df.insert(0, "run", d.name)
        frames.append(df)
    if not frames:
        raise ReportError("give at least one results folder")
    df = pd.concat(frames, ignore_index=True)
    for col, default in (("steps", 0), ("params", "{}")):
        if col not in df:
            df[col] = default
    return df


def _split_attack(name: str) -> tuple[str, str]:
    base, _, mode = name.partition("+")
    return base, mode or "none"


def sanity_checks(df: pd.DataFrame) -> pd.DataFrame:
    """One row per check and group: ``status`` is ok, FAIL or not run, with what was compared."""
    rows = []
    df = df[~df["attack"].str.startswith("suite[")].copy()
    parts = df["attack"].map(_split_attack)
    df["base"], df["mode"] = [p[0] for p in parts], [p[1] for p in parts]
    cell = ["run", "model", "defense", "landscape", "budget"]

    # 1. attacked accuracy <= clean accuracy of the same defended model
    clean = df[df["attack"] == "none"].set_index(cell)["accuracy"]
    attacked = df[df["attack"] != "none"]
    n1 = 0
    for _, r in attacked.iterrows():
        key = tuple(r[c] for c in cell)
        if key in clean.index:
            n1 += 1
            c = float(clean.loc[key])
            if r["accuracy"] > c + 1e-12:
                rows.append(_fail("attacked accuracy above clean", r, f"{r['attack']} {r['accuracy']:.3f} > clean {c:.3f}"))
    rows.append(_summary("attacked accuracy above clean", n1, rows))

    # 2. more iterations never raise accuracy (same attack, mode, eps; different steps, any run)
    n2, start = 0, len(rows)
    group = ["model", "defense", "landscape", "budget", "base", "mode", "norm", "eps"]
    for _, g in attacked.groupby(group):
        g = g.sort_values("steps")
        if g["steps"].nunique() < 2:
            continue
        n2 += 1
        best = None
        for _, r in g.iterrows():
            if best is not None and r["steps"] > best["steps"] and r["accuracy"] > best["accuracy"] + 1e-12:
                rows.append(_fail("more iterations raised accuracy", r,
                                  f"{r['base']} {int(best['steps'])} steps {best['accuracy']:.3f} -> "
                                  f"{int(r['steps'])} steps {r['accuracy']:.3f}"))
            best = r if best is None or r["accuracy"] < best["accuracy"] else best
    rows.append(_summary("more iterations raised accuracy", n2, rows[start:],
                         hint="run the same attack with more steps in a second run (e.g. attack_params.pgd.steps=50) "
                              "and report both folders together"))

    # 3. adaptive modes never weaker than nonadaptive
    n3, start = 0, len(rows)
    for key, g in attacked.groupby(cell + ["base", "norm", "eps"]):
        na = g[g["mode"] == "nonadaptive"]
        if na.empty:
            continue
        base_acc = float(na["accuracy"].iloc[0])
        for _, r in g[~g["mode"].isin(["nonadaptive", "none"])].iterrows():
            n3 += 1
            if r["accuracy"] > base_acc + 1e-12:
                rows.append(_fail("adaptive weaker than non-adaptive", r,
                                  f"{r['attack']} {r['accuracy']:.3f} > {r['base']}+nonadaptive {base_acc:.3f}"))
    rows.append(_summary("adaptive weaker than non-adaptive", n3, rows[start:],
                         hint="add defense.modes=[nonadaptive,bpda,...] to a run with a purifier"))

    # 4. a very large eps drives accuracy to chance
    n4, start = 0, len(rows)
    for _, r in attacked.iterrows():
        if r["eps"] >= LARGE_EPS.get(r["norm"], float("inf")):
            n4 += 1
            if r["ci_low"] > CHANCE:
                rows.append(_fail("large eps above chance", r, f"{r['attack']} eps {r['eps']:g}: {r['accuracy']:.3f} "
                                                               f"(95% CI low {r['ci_low']:.3f} > chance {CHANCE})"))
    rows.append(_summary("large eps above chance", n4, rows[start:],
                         hint="run an attack with eps >= 0.5 (Linf) or 10 (L2), e.g. attack_params.pgd.eps=1 "
                              "attack_params.pgd.eps_confirmed=true"))

    # 5. a purifier that ruins clean accuracy
    n5, start = 0, len(rows)
    undefended = df[(df["defense"] == "none") & (df["attack"] == "none")].set_index(["run", "model"])["accuracy"]
    for _, r in df[(df["defense"] != "none") & (df["attack"] == "none")].iterrows():
        key = (r["run"], r["model"])
        if key in undefended.index:
            n5 += 1
            u = float(undefended.loc[key])
            if r["accuracy"] < u - 0.10:
                rows.append(_fail("purifier costs > 10 points clean accuracy", r,
                                  f"clean after purification {r['accuracy']:.3f} vs undefended {u:.3f}"))
    rows.append(_summary("purifier costs > 10 points clean accuracy", n5, rows[start:]))
    return pd.DataFrame(rows)


def _fail(check, r, detail):
    return {"check": check, "status": "FAIL", "run": r["run"], "defense": r["defense"], "landscape": r["landscape"],
            "budget": r["budget"], "detail": detail}


def _summary(check, n, rows, hint=""):
    fails = sum(1 for x in rows if x.get("check") == check and x["status"] == "FAIL")
    status = "not run" if n == 0 else ("FAIL" if fails else "ok")
    detail = hint if n == 0 else f"{n} comparisons, {fails} failed"
    return {"check": check, "status": status, "run": "", "defense": "", "landscape": "", "budget": "",
            "detail": detail, "summary": True}


def plot_budget(df: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = df[df["defense"] != "none"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if d.empty:
        ax.text(0.5, 0.5, "no purification defense in these runs", ha="center", transform=ax.transAxes)
    for (run, landscape, attack), g in d.groupby(["run", "landscape", "attack"], sort=True):
        g = g.sort_values("budget")
        x = g["budget"].clip(lower=0.5)  # K = 0 drawn at 0.5 on the log axis
        label = f"{'learned Z' if landscape == 'z' else 'plain X'}: {attack}" + (f" ({run})" if df["run"].nunique() > 1 else "")
        style = "--" if attack == "none" else "-"
        line, = ax.plot(x, g["accuracy"], style, marker="o", ms=3, label=label.replace(": none", ": clean"))
        ax.fill_between(x, g["ci_low"], g["ci_high"], color=line.get_color(), alpha=0.15)
    for run, g in df[(df["defense"] == "none") & (df["attack"] == "none")].groupby("run"):
        ax.axhline(g["accuracy"].iloc[0], color="k", lw=0.8, ls=":", label="undefended clean" if run == df["run"].iloc[0] else None)
    ax.set_xscale("log")
    ax.set_xlabel("defense iteration budget K (K = 0 drawn at 0.5)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=130))
    plt.close(fig)


def _suite_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Per cell, the worst case over the run's attacks (its suite row; the single attack where there is one)."""
    attacked = df[df["attack"] != "none"]
    out = []
    for key, g in attacked.groupby(["run", "model", "defense", "landscape", "budget", "norm", "eps"], sort=True):
        suite = g[g["attack"].str.startswith("suite[")]
        row = (suite if len(suite) else g.sort_values("accuracy")).iloc[0].copy()
        row["attack_set"] = ",".join(sorted(a.split("+")[0] for a in g["attack"] if not a.startswith("suite[")))
        out.append(row)
    return pd.DataFrame(out)


def plot_headline(df: pd.DataFrame, path: Path, x: str = "budget") -> bool:
    """Worst-case robust accuracy (every attack of the run survived) and clean accuracy after
    purification, plain X beside learned Z, against K (``x="budget"``) or against the defender's
    compute (``x="passes"``: purifier forward + backward passes per image, counted). False: nothing to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    worst = _suite_rows(df)
    clean = df[df["attack"] == "none"]
    if worst.empty or (df["defense"] == "none").all():
        return False
    if x == "passes" and ("purifier_forward" not in df
                          or df.loc[df["defense"] != "none", ["purifier_forward", "purifier_backward"]].isna().any().any()):
        return False   # runs written before the pass counter: nothing counted to draw against
    groups = sorted(worst[["norm", "eps"]].drop_duplicates().itertuples(index=False, name=None))
    fig, axes = plt.subplots(1, len(groups), figsize=(5.2 * len(groups), 4.2), squeeze=False)
    colors = {"x": "tab:blue", "z": "tab:orange"}
    several = df["run"].nunique() > 1
    for ax, (norm, eps) in zip(axes[0], groups):
        w = worst[(worst["norm"] == norm) & (worst["eps"] == eps)]
        runs = set(w["run"])
        for (run, defense, landscape), g in w[w["defense"] != "none"].groupby(["run", "defense", "landscape"], sort=True):
            c = clean[(clean["run"] == run) & (clean["defense"] == defense)]
            # a cell skipped at some K (e.g. exact gradients over the memory cap) leaves that K's worst case over fewer attacks
            partial = g["attack_set"].nunique() > 1
            for data, style, what in ((g, "-", "worst-case robust"), (c, "--", "clean after purification")):
                data = data.sort_values("budget")
                xs = (data["purifier_forward"] + data["purifier_backward"]) if x == "passes" else data["budget"]
                xs = xs.clip(lower=0.5)
                label = f"{defense} ({'learned Z' if landscape == 'z' else 'plain X'}): {what}" + (f" [{run}]" if several else "")
                if partial and what == "worst-case robust":
                    label += " (fewer attacks at some K: see skipped.csv)"
                ax.plot(xs, data["accuracy"], style, marker="o", ms=3, color=colors.get(landscape, None), label=label)
                ax.fill_between(xs, data["ci_low"], data["ci_high"], color=colors.get(landscape, "0.5"), alpha=0.12)
        for run in sorted(runs):
            u = w[(w["run"] == run) & (w["defense"] == "none")]
            uc = clean[(clean["run"] == run) & (clean["defense"] == "none")]
            if len(uc):
                ax.axhline(uc["accuracy"].iloc[0], color="k", lw=0.9, ls="--", label="undefended: clean" if run == min(runs) else None)
            if len(u):
                ax.axhline(u["accuracy"].iloc[0], color="k", lw=0.9, ls="-", label="undefended: worst-case robust" if run == min(runs) else None)
                ax.axhspan(u["ci_low"].iloc[0], u["ci_high"].iloc[0], color="k", alpha=0.06)
        ax.set_xscale("log")
        ax.set_xlabel("purifier objective evaluations + gradients per image (theta's own passes not counted; "
                      "0 drawn at 0.5)" if x == "passes"
                      else "defense iteration budget K (K = 0 drawn at 0.5)")
        ax.set_ylabel("accuracy")
        ax.set_ylim(0, 1)
        ax.set_title(f"{norm} eps = {eps * 255:.3g}/255" if norm == "Linf" else f"{norm} eps = {eps:g}", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    handles, labels = axes[0][0].get_legend_handles_labels()
    axes[0][-1].legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=7, frameon=False)
    # the legend sits outside the axes; the saved figure grows to hold it
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=130, bbox_inches="tight"))
    plt.close(fig)
    return True


def _pct(a, lo, hi):
    return f"{100 * a:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def write_report(dirs, out: Path) -> tuple[Path, pd.DataFrame]:
    df = load_runs(dirs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    checks = sanity_checks(df)
    plot_budget(df, out / "robust_accuracy_vs_budget.png")
    headline = plot_headline(df, out / "headline.png")
    compute = plot_headline(df, out / "headline_vs_compute.png", x="passes")
    lines = ["# Robustness report", "", f"Runs: {', '.join(sorted(df['run'].unique()))}.", ""]
    if headline:
        lines += ["Worst-case robust accuracy (an image counts only if it survives every attack of its run) and clean "
                  "accuracy after purification, against the budget K and against the defender's compute:", "",
                  "![headline](headline.png)", ""]
        if compute:
            lines += ["![headline vs compute](headline_vs_compute.png)", ""]
    sources = sorted(df["data"].dropna().unique()) if "data" in df else []
    if any("jpeg" in s.lower() for s in sources):
        lines += ["Measured on the JPEG copy of CIFAR-10 (quality 75), not the original test set.", ""]
    lines += ["Accuracy in % with 95% Wilson intervals; clean accuracy after purification is the `none` column.", ""]
    for run, g in df.groupby("run", sort=True):
        lines += [f"## {run}", ""]
        g = g.copy()
        g["cell"] = [_pct(a, lo, hi) for a, lo, hi in zip(g["accuracy"], g["ci_low"], g["ci_high"])]
        table = g.pivot_table(index=["model", "defense", "landscape", "budget"], columns="attack", values="cell",
                              aggfunc="first", sort=True)
        cols = ["none"] + [c for c in table.columns if c != "none"]
        table = table[[c for c in cols if c in table.columns]]
        lines += [table.reset_index().to_markdown(index=False), ""]
    lines += ["## Sanity checks (Carlini et al. 2019)", ""]
    summ = checks[checks.get("summary", pd.Series(False, index=checks.index)).fillna(False).astype(bool)]
    lines += [summ[["check", "status", "detail"]].to_markdown(index=False), ""]
    fails = checks[(checks["status"] == "FAIL") & ~checks.get("summary", pd.Series(False, index=checks.index)).fillna(False).astype(bool)]
    if not fails.empty:
        lines += ["### Failures", "", fails[["check", "run", "defense", "landscape", "budget", "detail"]].to_markdown(index=False), ""]
    lines += ["![robust accuracy vs budget](robust_accuracy_vs_budget.png)", ""]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path, checks
