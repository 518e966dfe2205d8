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
            line, = ax2.plot(gk["abudget"], gk["accuracy"], "o-", ms=3, label=f"K={k}")
            ax2.fill_between(gk["abudget"], gk["ci_low"], gk["ci_high"], color=line.get_color(), alpha=0.15)
        ax2.set_xscale("log")
        ticks = sorted(g["abudget"].unique())
        ax2.set_xticks(ticks, [str(t) for t in ticks])
        ax2.minorticks_off()
        ax2.set_ylim(0, 1)
        ax2.set_xlabel(label)
        ax2.set_ylabel("accuracy")
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
    several = df["run"].nunique() > 1
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
                label = f"{defense} ({'learned Z' if landscape == 'z' else 'plain X'}): {what}" + (f" [{run}]" if several else "")
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
    checks = sanity_checks(df, load_per_image(dirs), load_probes(dirs))
    plot_budget(df, out / "robust_accuracy_vs_budget.png")
    headline = plot_headline(df, out / "headline.png")
    compute = plot_headline(df, out / "headline_vs_compute.png", x="passes")
    budget_axis = plot_attacker_budget(df, out / "attacker_budget.png", out / "attacker_convergence.png")
    lines = ["# Robustness report", "", f"Runs: {', '.join(sorted(df['run'].unique()))}.", ""]
    lines += ["## Red flags (Carlini et al. 2019; AutoAttack's own checks)", ""]
    summ = checks[checks.get("summary", pd.Series(False, index=checks.index)).fillna(False).astype(bool)]
    lines += [summ[["check", "status", "detail"]].to_markdown(index=False), ""]
    fails = checks[(checks["status"] == "FAIL") & ~checks.get("summary", pd.Series(False, index=checks.index)).fillna(False).astype(bool)]
    if not fails.empty:
        lines += ["### Failures", "", fails[["check", "run", "defense", "landscape", "budget", "detail"]].to_markdown(index=False), ""]
    if headline:
        lines += ["Worst-case robust accuracy (an image counts only if it survives every attack of its run) and clean "
                  "accuracy after purification, against the budget K and against the defender's compute:", "",
                  "![headline](headline.png)", ""]
        if compute:
            lines += ["![headline vs compute](headline_vs_compute.png)", ""]
    sources = sorted(df["data"].dropna().unique()) if "data" in df else []
    if any("jpeg" in s.lower() for s in sources):
        lines += ["Measured on the JPEG copy of CIFAR-10 (quality 75), not the original test set.", ""]
    lines += ["Accuracy in % with 95% Wilson intervals; clean accuracy after purification is the `none` column. "
              "Where a cell was repeated (`runs=N`), its accuracy counts an image only if it was correct in every "
              "run, followed by the runs' own mean ± std and the worst run.", ""]
    for run, g in df.groupby("run", sort=True):
        lines += [f"## {run}", ""]
        g = g.copy()
        g["cell"] = [_pct(a, lo, hi) for a, lo, hi in zip(g["accuracy"], g["ci_low"], g["ci_high"])]
        if "runs" in g and (g["runs"] > 1).any():   # repeats: the per-image worst case, then the runs themselves
            g["cell"] = [c if r <= 1 else f"{c}; runs {100 * m:.1f} ± {100 * sd:.1f}, worst {100 * w:.1f} (n={r})"
                         for c, r, m, sd, w in zip(g["cell"], g["runs"], g["acc_mean"], g["acc_std"], g["acc_worst_run"])]
        table = g.pivot_table(index=["model", "defense", "landscape", "budget"], columns="attack", values="cell",
                              aggfunc="first", sort=True)
        cols = ["none"] + [c for c in table.columns if c != "none"]
        table = table[[c for c in cols if c in table.columns]]
        lines += [table.reset_index().to_markdown(index=False), ""]
    if budget_axis:
        lines += ["## The attacker's budget", "",
                  "Robust accuracy over the defense's K and the attacker's budget, and the attack's convergence "
                  "per K (a curve still falling at its right end: the attack had not converged):", "",
                  "![attacker budget](attacker_budget.png)", "", "![attacker convergence](attacker_convergence.png)", ""]
    lines += ["![robust accuracy vs budget](robust_accuracy_vs_budget.png)", ""]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path, checks
