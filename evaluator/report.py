"""``landscape report DIR [DIR ...]``: tables, the robust-accuracy-versus-budget plot, sanity checks.

The checks follow Carlini et al., "On Evaluating Adversarial Robustness" (2019): accuracy
under attack never above clean accuracy; more attack iterations never raise accuracy;
adaptive attacks never weaker than non-adaptive ones; a very large eps drives accuracy to
chance. A purifier whose clean accuracy falls more than 10 points below the undefended
classifier is flagged too: its robust accuracy says little. Two more follow AutoAttack's own
warnings (Croce & Hein 2020) and its reproducibility: ``autoattack`` and the original package
(``autoattack-original``) disagree by more than a point on the same images (same mode, steps and
version); Square, which needs no gradients, breaks more than half a point of images that every gradient
attack missed, counting only attacks that query the deployed model (a sign of masked gradients); accuracy
still falls by more than a point when the attack's steps double (the attack had not converged).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from landscape.errors import LandscapeError
from landscape.io import atomic_write, atomic_write_text

CHANCE = 0.1
LARGE_EPS = {"Linf": 0.5, "L2": 10.0}
AUTOATTACK_GAP = 0.01       # autoattack vs autoattack-original on the same images
SQUARE_GAP = 0.005          # share of images only the gradient-free attack breaks
CONVERGED_GAP = 0.01        # accuracy drop when the attacker's budget doubles
GRADIENT_FREE = {"square"}
#: attacks that contain a gradient-free member (not counted among the gradient attacks)
MIXED = {"autoattack", "autoattack-original"}


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
        if "seconds_per_image" not in df and "seconds" in df:   # folders written before the column
            from evaluator.results import seconds_per_image

            df["seconds_per_image"] = seconds_per_image(df)
        frames.append(df)
    if not frames:
        raise ReportError("give at least one results folder")
    df = pd.concat(frames, ignore_index=True)
    for col, default in (("steps", 0), ("params", "{}")):
        if col not in df:
            df[col] = default
    return df


def load_per_image(dirs) -> pd.DataFrame | None:
    """The per-image tables of the runs that have one (None if none has)."""
    frames = []
    for d in dirs:
        path = Path(d) / "per_image.parquet"
        if path.is_file():
            g = pd.read_parquet(path, columns=["model", "defense", "landscape", "budget", "attack", "index", "correct"])
            g.insert(0, "run", Path(d).name)
            frames.append(g)
    return pd.concat(frames, ignore_index=True) if frames else None


def _budget_order(panel: tuple) -> tuple:
    """Panels of one attack in the order of its budget (``pgd[steps=5]`` before ``pgd[steps=10]``), not as text."""
    family, norm, eps = panel
    base, _, label = family.partition("[")
    return base, [int(n) for n in re.findall(r"\d+", label)], norm, eps


def split_attack(name: str) -> tuple[str, str]:
    """``pgd[steps=50]+eot[draws=8]`` -> (``pgd``, ``eot[draws=8]``): the attack without its budget label."""
    base, _, mode = name.partition("+")
    return base.split("[")[0], mode or "none"


def load_probes(dirs) -> pd.DataFrame | None:
    """The model probes (``probes.csv``, written by ``landscape eval``) of the runs that have them."""
    frames = []
    for d in dirs:
        path = Path(d) / "probes.csv"
        if path.is_file():
            frames.append(pd.read_csv(path).assign(run=Path(d).name))
    return pd.concat(frames, ignore_index=True) if frames else None


def sanity_checks(df: pd.DataFrame, per_image: pd.DataFrame | None = None,
                  probes: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per check and group: ``status`` is ok, FAIL or not run, with what was compared."""
    rows = []
    df = df[~df["attack"].str.startswith("suite[")].copy()
    parts = df["attack"].map(split_attack)
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
    for key, g in attacked.groupby(cell + ["base", "steps", "norm", "eps"]):
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

    # 6. our AutoAttack and the original agree on the same images (same run, cell, mode, threat model)
    n6, start = 0, len(rows)
    aa = attacked[attacked["base"].isin(MIXED)].copy()
    aa["version"] = [json.loads(p or "{}").get("version", "standard") if isinstance(p, str) else "standard"
                     for p in aa["params"]]
    for key, g in aa.groupby(cell + ["mode", "norm", "eps", "steps", "version"]):
        by = g.set_index("base")["accuracy"]
        if sorted(by.index) == ["autoattack", "autoattack-original"]:
            n6 += 1
            gap = float(by["autoattack"] - by["autoattack-original"])
            if abs(gap) > AUTOATTACK_GAP:
                rows.append(_fail("autoattack disagrees with the original", g.iloc[0],
                                  f"{key[5]}: autoattack {by['autoattack']:.3f} vs autoattack-original "
                                  f"{by['autoattack-original']:.3f} (gap {100 * gap:+.1f} points)"))
    rows.append(_summary("autoattack disagrees with the original", n6, rows[start:],
                         hint="add autoattack-original beside autoattack to attacks=[...] (same run, same images)"))

    # 7. Square breaks images every gradient attack missed (masked gradients)
    n7, start = 0, len(rows)
    if per_image is not None:
        pi = per_image[per_image["attack"] != "none"].copy()
        pi["base"] = [split_attack(a)[0] for a in pi["attack"]]
        pi["mode"] = [split_attack(a)[1] for a in pi["attack"]]
        for key, g in pi.groupby(cell):
            # only attacks that query the deployed model: a non-adaptive one attacked the bare classifier
            if key[2] != "none":
                g = g[g["mode"] != "nonadaptive"]
            free = g[g["base"].isin(GRADIENT_FREE)]
            grad = g[~g["base"].isin(GRADIENT_FREE | MIXED)]
            if free.empty or grad.empty:
                continue
            n7 += 1
            survives_grad = grad.groupby("index")["correct"].all()
            broken_free = ~free.groupby("index")["correct"].all()
            both = survives_grad.index.intersection(broken_free.index)
            only_free = int((survives_grad[both] & broken_free[both]).sum())
            if only_free > SQUARE_GAP * len(both):
                r = dict(zip(cell, key))
                rows.append(_fail("Square beats the gradient attacks", r,
                                  f"{only_free} of {len(both)} images ({100 * only_free / len(both):.1f}%) broken by "
                                  f"{', '.join(sorted(free['attack'].unique()))} but by none of "
                                  f"{', '.join(sorted(grad['attack'].unique()))}"))
    rows.append(_summary("Square beats the gradient attacks", n7, rows[start:],
                         hint="add square beside a gradient attack to attacks=[...] (needs the run's per_image.parquet)"))

    # 8. the attack had converged: doubling its budget no longer lowers accuracy (by more than a point)
    n8, start = 0, len(rows)
    for _, g in attacked.groupby(cell + ["base", "mode", "norm", "eps"]):
        g = g[g["steps"] > 0].sort_values("steps")
        top = g.iloc[-1] if len(g) else None
        half = g[g["steps"] * 2 <= (top["steps"] if top is not None else 0)]
        if top is None or half.empty:
            continue
        n8 += 1
        ref = half.iloc[-1]
        if ref["accuracy"] - top["accuracy"] > CONVERGED_GAP:
            rows.append(_fail("attack had not converged", top,
                              f"{top['base']}+{top['mode']}: {int(ref['steps'])} steps {ref['accuracy']:.3f} -> "
                              f"{int(top['steps'])} steps {top['accuracy']:.3f}: give it more steps"))
    rows.append(_summary("attack had not converged", n8, rows[start:],
                         hint="give an attack a list of budgets, e.g. attack_params.pgd.steps=[10,20,40]"))

    # 9-11. what the probes of the models found (AutoAttack's checks): randomness, gradients, probabilities
    hint = "written by landscape eval (probes.csv); rerun the run to get it"
    n9 = n10 = n11 = 0
    start = len(rows)
    if probes is not None:
        deployed = probes[probes["mode"] == "none"]
        for _, p in deployed.iterrows():
            key = (p["run"], p["defense"], p["landscape"], p["budget"])
            cell_rows = attacked[(attacked["run"] == key[0]) & (attacked["defense"] == key[1])
                                 & (attacked["landscape"] == key[2]) & (attacked["budget"] == key[3])]
            if cell_rows.empty:
                continue
            n9 += 1
            eot = cell_rows["mode"].str.contains("eot") | cell_rows["attack"].str.startswith("autoattack-rand") | \
                cell_rows["params"].astype(str).str.contains('"version": "rand"')
            if bool(p["randomized"]) and not eot.any():
                rows.append(_fail("randomized model attacked without EOT", p,
                                  f"logits of the same images differ by up to {p['logit_spread']:.3g} across calls, but "
                                  f"no attack on it averages over its randomness ({', '.join(sorted(cell_rows['attack']))})"))
        for _, p in probes[probes["mode"] != "none"].iterrows():
            n10 += 1
            if p["zero_grad_share"] > 0 or p["nonfinite_grad_share"] > 0:
                rows.append(_fail("zero or non-finite gradients", p,
                                  f"mode {p['mode']}: {100 * p['zero_grad_share']:.0f}% of probed images with an all-zero "
                                  f"input gradient, {100 * p['nonfinite_grad_share']:.0f}% not finite"))
        for run, g in probes.groupby("run"):
            n11 += 1
            if g["softmax_output"].astype(bool).any():
                rows.append(_fail("model outputs probabilities", {"run": run, "defense": "", "landscape": "", "budget": ""},
                                  "the classifier's outputs lie in [0, 1] and sum to 1: give the attacks logits"))
    for check, n in (("randomized model attacked without EOT", n9), ("zero or non-finite gradients", n10),
                     ("model outputs probabilities", n11)):
        rows.append(_summary(check, n, rows[start:], hint=hint))
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


def attacker_budget_groups(df: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame]]:
    """(title, axis label, rows with ``abudget``) per attack whose budget varies in a run: the steps
    (``attack_params.<a>.steps`` or ``n_queries`` lists) or the EOT draws (a ``defense.eot_draws`` list)."""
    d = df[~df["attack"].str.startswith("suite[") & (df["attack"] != "none")].copy()
    if d.empty:
        return []
    parts = d["attack"].map(split_attack)
    d["base"] = [p[0] for p in parts]
    d["draws"] = d["attack"].str.extract(r"draws=(\d+)")[0].astype(float)
    d["mode"] = [p[1].split("[")[0] for p in parts]
    out = []
    for axis, other, label in (("steps", "draws", "attack steps (or queries)"), ("draws", "steps", "EOT draws")):
        dd = d.dropna(subset=[axis]) if axis == "draws" else d
        for key, g in dd.groupby(["run", "model", "defense", "landscape", "base", "mode", other], dropna=False, sort=True):
            if g[axis].nunique() < 2:
                continue
            run, model, defense, _, base, mode, o = key
            extra = "" if pd.isna(o) else f", {other} {int(o)}"
            attack = base if mode == "none" else f"{base}+{mode}"
            title = f"{'undefended' if defense == 'none' else defense}: {attack}{extra}" + (
                f" ({run})" if df["run"].nunique() > 1 else "")
            out.append((title, label, g.assign(abudget=g[axis].astype(int))))
    return out


def plot_attacker_budget(df: pd.DataFrame, heatmap: Path, curves: Path) -> bool:
    """Robust accuracy over defense K x attacker budget (a heatmap per attack) and its convergence
    curves (accuracy vs the attacker's budget, one line per K); False when no budget varies."""
    groups = attacker_budget_groups(df)
    if not groups:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(groups)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    fig2, axes2 = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for i, (title, label, g) in enumerate(groups):
        ax, ax2 = axes[i // cols][i % cols], axes2[i // cols][i % cols]
        table = g.pivot_table(index="budget", columns="abudget", values="accuracy", aggfunc="first").sort_index()
        im = ax.imshow(100 * table.values, cmap="viridis", vmin=0, vmax=100, aspect="auto", origin="lower")
        ax.set_xticks(range(len(table.columns)), [str(c) for c in table.columns])
        ax.set_yticks(range(len(table.index)), [str(k) for k in table.index])
        for (r, c), v in pd.DataFrame(table.values).stack().items():
            ax.text(c, r, f"{100 * v:.0f}", ha="center", va="center", fontsize=7, color="w" if v < 0.6 else "k")
        ax.set_xlabel(label)
        ax.set_ylabel("defense budget K")
        ax.set_title(title, fontsize=8)
        fig.colorbar(im, ax=ax, label="robust accuracy (%)")
        for k, gk in g.groupby("budget", sort=True):
            gk = gk.sort_values("abudget")
            line, = ax2.plot(gk["abudget"], 100 * gk["accuracy"], "o-", ms=3, label=f"K={k}")
            ax2.fill_between(gk["abudget"], 100 * gk["ci_low"], 100 * gk["ci_high"], color=line.get_color(), alpha=0.15)
        ax2.set_xscale("log")
        ticks = sorted(g["abudget"].unique())
        ax2.set_xticks(ticks, [str(t) for t in ticks])
        ax2.minorticks_off()
        ax2.set_ylim(0, 100)
        ax2.set_xlabel(label)
        ax2.set_ylabel("robust accuracy (%), 95% CI")
        ax2.set_title(title, fontsize=8)
        ax2.grid(True, which="both", alpha=0.3)
        ax2.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
    for j in range(n, rows * cols):
        axes[j // cols][j % cols].axis("off")
        axes2[j // cols][j % cols].axis("off")
    for f, path in ((fig, heatmap), (fig2, curves)):
        f.tight_layout()
        atomic_write(path, lambda p, f=f: f.savefig(p, format="png", dpi=120))
        plt.close(f)
    return True


#: one colour per adaptive mode in the per-attack panels (clean accuracy in black)
MODE_COLORS = {"none": "black", "nonadaptive": "tab:gray", "bpda": "tab:blue", "eot": "tab:green",
               "bpda+eot": "tab:purple", "unrolled": "tab:red"}
SERIES_STYLES = ["-", "--", ":", "-."]
SERIES_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]


def eps_label(norm: str, eps: float) -> str:
    return f"{eps * 255:.3g}/255" if norm == "Linf" else f"{eps:g}"


def landscape_label(landscape: str) -> str:
    return {"z": "learned Z", "x": "plain X"}.get(landscape, landscape)


def single_budget(df: pd.DataFrame) -> bool:
    """True when every defended model of these runs was run at one budget K (e.g. a defense without
    iterations, such as JPEG): an accuracy-versus-K line would be a single point, so bars are drawn."""
    d = df[df["defense"] != "none"]
    return len(d) > 0 and int(d.groupby(["run", "defense", "landscape"])["budget"].nunique().max()) == 1


def _bar_panel(ax, categories: list[str], bars: list[tuple], baselines: list[tuple]) -> None:
    """Grouped bars with 95% intervals: ``bars`` = [(label, colour, {category: (acc, lo, hi)})];
    ``baselines`` = [(accuracy, line style, label)] drawn across the panel."""
    import numpy as np

    width = 0.8 / max(len(bars), 1)
    x = np.arange(len(categories))
    for i, (label, color, values) in enumerate(bars):
        pos = [x[j] + (i - (len(bars) - 1) / 2) * width for j, c in enumerate(categories) if c in values]
        acc = [values[c][0] for c in categories if c in values]
        err = [[values[c][0] - values[c][1] for c in categories if c in values],
               [values[c][2] - values[c][0] for c in categories if c in values]]
        ax.bar(pos, acc, width * 0.95, color=color, label=label, yerr=err, capsize=2, error_kw={"lw": 0.8})
        for p_, a, top in zip(pos, acc, [values[c][2] for c in categories if c in values]):
            ax.text(p_, top + 0.015, f"{100 * a:.1f}", ha="center", fontsize=6)   # above the interval
    for y, ls, label in baselines:
        ax.axhline(y, color="k", lw=0.9, ls=ls, label=label)
    ax.set_xticks(x, categories, fontsize=7, rotation=15 if len(categories) > 2 else 0)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy", fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)


def _series_name(run, defense, landscape, several: bool) -> str:
    k = f"{defense} ({landscape_label(landscape)})"
    return f"{k}\n[{run}]" if several else k


def without_survivor_runs(df: pd.DataFrame, survivor_runs: dict) -> tuple[pd.DataFrame, list[str]]:
    """``df`` without the rows of runs that evaluated a cascade cell on the survivors of the others (their accuracy
    is the survivors', which a per-attack curve would read as the defense's), and those runs with their cells
    in words. ``survivor_runs``: cell (model, defense, landscape, budget, ...) -> runs, from the worst case."""
    drop = {(run, *key[:4]) for key, runs in survivor_runs.items() for run in runs}
    if not drop:
        return df, []
    cell = list(zip(df["run"], df["model"], df["defense"], df["landscape"], df["budget"]))
    keep = pd.Series([c not in drop for c in cell], index=df.index)
    named: dict = {}
    for run, _, defense, _, budget in sorted(drop, key=str):
        named.setdefault(run, []).append(f"{defense} K = {budget}")
    return df[keep], [f"{run} ({', '.join(cells)})" for run, cells in named.items()]


def plot_budget(df: pd.DataFrame, path: Path) -> None:
    """Accuracy against K, one panel per attack (and norm, eps): a colour per adaptive mode, a line style
    and marker per defended model (run, defense, landscape); clean accuracy after purification in black
    in every panel; the undefended model's as grey bands. One legend beside the panels, sized to its lines."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    d = df[(df["defense"] != "none") & ~df["attack"].str.startswith("suite[")].copy()
    d["family"] = [a.partition("+")[0] for a in d["attack"]]
    d["mode"] = [a.partition("+")[2].split("[")[0] or "none" for a in d["attack"]]
    clean = d[d["attack"] == "none"]
    attacked = d[d["attack"] != "none"]
    panels = sorted(attacked[["family", "norm", "eps"]].drop_duplicates().itertuples(index=False, name=None),
                    key=_budget_order)
    several = df["run"].nunique() > 1
    series = sorted(d[["run", "defense", "landscape"]].drop_duplicates().itertuples(index=False, name=None))
    style = {s: (SERIES_STYLES[i % len(SERIES_STYLES)], SERIES_MARKERS[i % len(SERIES_MARKERS)])
             for i, s in enumerate(series)}
    ncols = min(3, max(1, len(panels)))
    nrows = max(1, math.ceil(len(panels) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.6 * nrows), squeeze=False)
    if not panels:
        axes[0][0].text(0.5, 0.5, "no attacked purification defense in these runs", ha="center",
                        transform=axes[0][0].transAxes)
    modes_seen = {"none"} if len(clean) else set()
    undefended = df[df["defense"] == "none"]
    bars_only = single_budget(df)
    for ax, (family, norm, eps) in zip(axes.flat, panels):
        if bars_only:   # one K per defended model: bars per model, one per mode, clean first
            cats = {key: _series_name(*key, several) for key in series}
            sel_a = attacked[(attacked["family"] == family) & (attacked["norm"] == norm) & (attacked["eps"] == eps)]
            bars = []
            order = list(MODE_COLORS)
            for mode in ["none", *sorted(set(sel_a["mode"]), key=lambda m: order.index(m) if m in order else len(order))]:
                src = clean if mode == "none" else sel_a[sel_a["mode"] == mode]
                values = {cats[k]: (r["accuracy"], r["ci_low"], r["ci_high"]) for k in series
                          for _, r in src[(src["run"] == k[0]) & (src["defense"] == k[1]) & (src["landscape"] == k[2])].iterrows()}
                if values:
                    modes_seen.add(mode)
                    bars.append(("clean after defense" if mode == "none" else f"attack mode: {mode}",
                                 MODE_COLORS.get(mode, "tab:olive"), values))
            u = undefended[(undefended["attack"].str.partition("+")[0] == family) & (undefended["norm"] == norm)
                           & (undefended["eps"] == eps)]
            uc = undefended[undefended["attack"] == "none"]
            base = ([(uc["accuracy"].iloc[0], "--", "undefended: clean")] if len(uc) else []) + \
                   ([(u["accuracy"].iloc[0], "-", "undefended: same attack")] if len(u) else [])
            _bar_panel(ax, list(cats.values()), bars, base)
            ax.set_title(f"{family}, {norm} eps = {eps_label(norm, eps)}", fontsize=9)
            continue
        for key in series:
            ls, mk = style[key]
            sel = (d["run"] == key[0]) & (d["defense"] == key[1]) & (d["landscape"] == key[2])
            c = clean[sel[clean.index]].sort_values("budget")
            if len(c):
                ax.plot(c["budget"].clip(lower=0.5), c["accuracy"], ls, marker=mk, ms=3, lw=1, color="black")
            a = attacked[sel[attacked.index] & (attacked["family"] == family) & (attacked["norm"] == norm)
                         & (attacked["eps"] == eps)]
            for mode, g in a.groupby("mode", sort=True):
                g = g.sort_values("budget")
                x = g["budget"].clip(lower=0.5)
                color = MODE_COLORS.get(mode, "tab:olive")
                modes_seen.add(mode)
                ax.plot(x, g["accuracy"], ls, marker=mk, ms=3, lw=1.2, color=color)
                ax.fill_between(x, g["ci_low"], g["ci_high"], color=color, alpha=0.08)
        u = undefended[(undefended["attack"].str.partition("+")[0] == family) & (undefended["norm"] == norm)
                       & (undefended["eps"] == eps)]
        for _, row in u.iterrows():
            ax.axhspan(row["ci_low"], row["ci_high"], color="0.5", alpha=0.15)
            ax.axhline(row["accuracy"], color="0.4", lw=0.8)
        ax.set_xscale("log")
        ax.set_ylim(0, 1)
        ax.grid(True, which="both", alpha=0.3)
        ax.set_title(f"{family}, {norm} eps = {eps_label(norm, eps)}", fontsize=9)
        ax.set_xlabel("defense budget K (K = 0 at 0.5)", fontsize=8)
        ax.set_ylabel("accuracy", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(panels) or 1:]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=MODE_COLORS.get(m, "tab:olive"), lw=2,
                      label="clean after purification" if m == "none" else f"attack mode: {m}")
               for m in MODE_COLORS if m in modes_seen]
    handles += [Line2D([], [], color="0.3", ls=style[k][0], marker=style[k][1], ms=4,
                       label=f"{k[1]} ({landscape_label(k[2])})" + (f" [{k[0]}]" if several else "")) for k in series]
    if len(undefended):
        handles.append(matplotlib.patches.Patch(color="0.6", alpha=0.5, label="undefended, same attack (95% CI)"))
    if bars_only:
        handles, _ = axes.flat[0].get_legend_handles_labels()
    fig.tight_layout()
    fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 0.98), fontsize=8, frameon=False)
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=130, bbox_inches="tight"))
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

    if x == "passes":
        if "purifier_forward" not in df:
            return False   # runs written before the pass counter: nothing counted to draw against
        # cells whose passes were not counted (older runs, a user defense that keeps no counts) are left out
        uncounted = (df["defense"] != "none") & df[["purifier_forward", "purifier_backward"]].isna().any(axis=1)
        df = df[~uncounted]
    worst = _suite_rows(df)
    clean = df[df["attack"] == "none"]
    if worst.empty or (df["defense"] == "none").all():
        return False
    groups = sorted(worst[["norm", "eps"]].drop_duplicates().itertuples(index=False, name=None))
    fig, axes = plt.subplots(1, len(groups), figsize=(5.2 * len(groups), 4.2), squeeze=False)
    several = df["run"].nunique() > 1
    if single_budget(df) and x == "budget":   # one K per defended model: bars, robust beside clean
        for ax, (norm, eps) in zip(axes[0], groups):
            w = worst[(worst["norm"] == norm) & (worst["eps"] == eps) & (worst["defense"] != "none")]
            keys = sorted(w[["run", "defense", "landscape"]].drop_duplicates().itertuples(index=False, name=None))
            cats = {k: _series_name(*k, several) for k in keys}
            pick = lambda t, k: t[(t["run"] == k[0]) & (t["defense"] == k[1]) & (t["landscape"] == k[2])]  # noqa: E731
            rob = {cats[k]: tuple(pick(w, k).iloc[0][["accuracy", "ci_low", "ci_high"]]) for k in keys}
            cl = {cats[k]: tuple(pick(clean, k).iloc[0][["accuracy", "ci_low", "ci_high"]]) for k in keys if len(pick(clean, k))}
            u = worst[(worst["norm"] == norm) & (worst["eps"] == eps) & (worst["defense"] == "none")]
            uc = clean[clean["defense"] == "none"]
            base = ([(uc["accuracy"].iloc[0], "--", "undefended: clean")] if len(uc) else []) + \
                   ([(u["accuracy"].iloc[0], "-", "undefended: worst-case robust")] if len(u) else [])
            _bar_panel(ax, list(cats.values()), [("clean after the defense", "0.75", cl),
                                                 ("worst-case robust (every attack survived)", "tab:blue", rob)], base)
            k_values = sorted(set(w["budget"]))
            ax.set_title(f"{norm} eps = {eps_label(norm, eps)}  (K = {', '.join(map(str, k_values))})", fontsize=9)
        _save_legend_outside(fig, axes, path)
        return True
    for ax, (norm, eps) in zip(axes[0], groups):
        w = worst[(worst["norm"] == norm) & (worst["eps"] == eps)]
        runs = set(w["run"])
        # X in blues, Z in oranges; a second run of the same landscape gets the next shade, so lines stay apart
        shades = {"x": ["tab:blue", "tab:cyan", "navy"], "z": ["tab:orange", "tab:red", "tab:brown"]}
        drawn: dict = {}   # landscape -> lines drawn so far
        for (run, defense, landscape), g in w[w["defense"] != "none"].groupby(["run", "defense", "landscape"], sort=True):
            palette = shades.get(landscape, ["0.4", "0.6", "0.2"])
            color = palette[drawn.get(landscape, 0) % len(palette)]
            drawn[landscape] = drawn.get(landscape, 0) + 1
            c = clean[(clean["run"] == run) & (clean["defense"] == defense)]
            # a cell skipped at some K (e.g. exact gradients over the memory cap) leaves that K's worst case over fewer attacks
            partial = g["attack_set"].nunique() > 1
            for data, style, what in ((g, "-", "worst-case robust"), (c, "--", "clean after purification")):
                data = data.sort_values("budget")
                xs = (data["purifier_forward"] + data["purifier_backward"]) if x == "passes" else data["budget"]
                xs = xs.clip(lower=0.5)
                label = f"{defense} ({landscape_label(landscape)}): {what}" + (f" [{run}]" if several else "")
                if partial and what == "worst-case robust":
                    label += " (fewer attacks at some K: see skipped.csv)"
                ax.plot(xs, data["accuracy"], style, marker="o", ms=3, color=color, label=label)
                ax.fill_between(xs, data["ci_low"], data["ci_high"], color=color, alpha=0.12)
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
        ax.set_title(f"{norm} eps = {eps_label(norm, eps)}", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
    _save_legend_outside(fig, axes, path)
    return True


def _save_legend_outside(fig, axes, path: Path) -> None:
    """The first panel's legend beside the last panel; the saved figure grows to hold it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    handles, labels = axes[0][0].get_legend_handles_labels()
    axes[0][-1].legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=7, frameon=False)
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=130, bbox_inches="tight"))
    plt.close(fig)


def _pct(a, lo, hi):
    return f"{100 * a:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def write_report(dirs, out: Path) -> tuple[Path, pd.DataFrame]:
    """``report.md`` and ``report.html`` (one file: the same content, plots embedded) with their figures."""
    df = load_runs(dirs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    checks = sanity_checks(df, load_per_image(dirs), load_probes(dirs))
    from evaluator.across_runs import across_runs_blocks

    # several runs that attacked the same cells (a cascade, an attack split over runs): their per-image worst case
    # together is the headline; per-run curves would draw each piece of the cascade as a defense of its own
    survivor_runs: dict = {}
    across = across_runs_blocks(dirs, out, survivor_runs)
    per_attack, left_out = without_survivor_runs(df, survivor_runs)
    plot_budget(per_attack, out / "robust_accuracy_vs_budget.png")
    headline = not across and plot_headline(df, out / "headline.png")
    compute = headline and plot_headline(df, out / "headline_vs_compute.png", x="passes")
    budget_axis = plot_attacker_budget(df, out / "attacker_budget.png", out / "attacker_convergence.png")
    blocks: list[tuple] = [("h1", "Robustness report"), ("p", f"Runs: {', '.join(sorted(df['run'].unique()))}.")]
    blocks += [("h2", "Red flags (Carlini et al. 2019; AutoAttack's own checks)")]
    is_summary = checks.get("summary", pd.Series(False, index=checks.index)).fillna(False).astype(bool)
    blocks += [("table", checks[is_summary][["check", "status", "detail"]])]
    fails = checks[(checks["status"] == "FAIL") & ~is_summary]
    if not fails.empty:
        blocks += [("h3", "Failures"), ("table", fails[["check", "run", "defense", "landscape", "budget", "detail"]])]
    if headline:
        blocks += [("p", "Worst-case robust accuracy (an image counts only if it survives every attack of its run) and "
                         "clean accuracy after purification, against the budget K and against the defender's compute:"),
                   ("img", "headline.png", "headline")]
        if compute:
            blocks += [("img", "headline_vs_compute.png", "headline vs compute")]
    blocks += across
    sources = sorted(df["data"].dropna().unique()) if "data" in df else []
    if any("jpeg" in s.lower() for s in sources):
        blocks += [("p", "Measured on the JPEG copy of CIFAR-10 (quality 75), not the original test set.")]
    if across:
        blocks += [("h2", "Each run")]
    blocks += [("p", "Accuracy in % with 95% Wilson intervals; clean accuracy after purification is the `none` column. "
                     "Where a cell was repeated (`runs=N`), its accuracy counts an image only if it was correct in every "
                     "run, followed by the runs' own mean ± std and the worst run.")]
    for run, g in df.groupby("run", sort=True):
        g = g.copy()
        g["cell"] = [_pct(a, lo, hi) for a, lo, hi in zip(g["accuracy"], g["ci_low"], g["ci_high"])]
        if "runs" in g and (g["runs"] > 1).any():   # repeats: the per-image worst case, then the runs themselves
            g["cell"] = [c if r <= 1 else f"{c}; runs {100 * m:.1f} ± {100 * sd:.1f}, worst {100 * w:.1f} (n={r})"
                         for c, r, m, sd, w in zip(g["cell"], g["runs"], g["acc_mean"], g["acc_std"], g["acc_worst_run"])]
        table = g.pivot_table(index=["model", "defense", "landscape", "budget"], columns="attack", values="cell",
                              aggfunc="first", sort=True)
        cols = ["none"] + [c for c in table.columns if c != "none"]
        table = table[[c for c in cols if c in table.columns]]
        blocks += [("h3" if across else "h2", str(run)), ("table", table.reset_index())]
    if budget_axis:
        blocks += [("h2", "The attacker's budget"),
                   ("p", "Robust accuracy over the defense's K and the attacker's budget, and the attack's convergence "
                         "per K (a curve still falling at its right end: the attack had not converged):"),
                   ("img", "attacker_budget.png", "attacker budget"), ("img", "attacker_convergence.png", "attacker convergence")]
    blocks += [("h2", "Accuracy against K, per attack")]
    if left_out:
        blocks += [("p", "Runs on a cascade's survivors report the survivors' accuracy: they count in the worst case "
                         "above and are left out of this figure at those cells: " + "; ".join(left_out) + ".")]
    blocks += [("img", "robust_accuracy_vs_budget.png", "robust accuracy vs budget")]
    compute_table = compute_per_image(df)
    if compute_table is not None:
        blocks += [("h2", "Compute per image"),
                   ("p", "Counted, not estimated: the deployed purifier's objective evaluations and gradients, the attack's "
                         "forward passes and input gradients of the model it attacks, and the wall time of one image in one "
                         "run (this machine's; a suite sums its members)."),
                   ("table", compute_table)]
    path = out / "report.md"
    atomic_write_text(out / "report.html", render_html(blocks, out))
    atomic_write_text(path, render_markdown(blocks))
    return path, checks


def compute_per_image(df: pd.DataFrame) -> pd.DataFrame | None:
    """One row per cell with its counted passes and seconds per image; None for runs written before them."""
    cols = ["purifier_forward", "purifier_backward", "attack_forward", "attack_backward", "seconds_per_image"]
    if not set(cols) <= set(df.columns):
        return None
    view = df[["run", "defense", "landscape", "budget", "attack", *cols]].copy()
    for c in cols[:-1]:
        view[c] = view[c].map(lambda v: "not counted" if pd.isna(v) else f"{v:.4g}")
    view["seconds_per_image"] = view["seconds_per_image"].map(lambda v: f"{v:.3g}")
    return view.rename(columns={"seconds_per_image": "seconds / image"}).reset_index(drop=True)


def render_markdown(blocks) -> str:
    lines = []
    for kind, *rest in blocks:
        if kind in ("h1", "h2", "h3"):
            lines += ["#" * int(kind[1]) + " " + rest[0], ""]
        elif kind == "p":
            lines += [rest[0], ""]
        elif kind == "table":
            lines += [rest[0].to_markdown(index=False), ""]
        elif kind == "img":
            lines += [f"![{rest[1]}]({rest[0]})", ""]
    return "\n".join(lines)


HTML_STYLE = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px;margin:0.5em 0 1.5em}th,td{border:1px solid #ccc;padding:3px 7px;
text-align:left;vertical-align:top}th{background:#f3f3f3}td.FAIL{background:#fbd5d5;font-weight:bold}
td.ok{background:#ddf3dd}td.not-run{color:#777}img{max-width:100%;display:block;margin:0.5em 0 1.5em}
code{background:#f3f3f3;padding:0 3px}"""


def _inline_html(text: str) -> str:
    import html
    import re

    text = html.escape(text)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", text)


def render_html(blocks, folder: Path) -> str:
    """One self-contained page: the figures embedded as data URIs, FAIL cells marked red."""
    import base64
    import html

    body = []
    for kind, *rest in blocks:
        if kind in ("h1", "h2", "h3"):
            body.append(f"<{kind}>{html.escape(rest[0])}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{_inline_html(rest[0])}</p>")
        elif kind == "table":
            t = rest[0].to_html(index=False, border=0, escape=True, na_rep="")
            for status in ("FAIL", "ok", "not run"):
                t = t.replace(f"<td>{status}</td>", f'<td class="{status.replace(" ", "-")}">{status}</td>')
            body.append(t)
        elif kind == "img":
            data = base64.b64encode((folder / rest[0]).read_bytes()).decode()
            body.append(f'<img alt="{html.escape(rest[1])}" src="data:image/png;base64,{data}">')
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Robustness report</title>"
            f"<style>{HTML_STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
