"""The per-image worst case over the attacks of several ``landscape eval`` runs (``landscape worst-case``).

A run's suite row counts an image only if it survives every attack *of that run*. When the attacks of one
experiment are split over runs (a cheap grid on 1,000 images, a costly adaptive attack on some of them), an
image is robust only if it survives every attack of every run at the same (model, defense, landscape, budget,
norm, eps). Which images are counted:

- **a cascade** (what AutoAttack does inside its suite): a run that skipped images (``data.indices=FILE``, the
  survivors of the cheaper runs, written by :func:`write_survivors`) is counted on every image of the others,
  provided each image it skipped was broken by an attack of another run; the worst case is then exact, since
  an image broken once stays broken (column ``images``: ``cascade``); an attack split over several runs (the
  survivors halved between two processes or sessions) counts as one attack on the union of their images;
- otherwise the images every attack ran on (``shared``).

Each defended cell also gets its **paired gain** over the undefended backbone at the same threat model.

A cell is also keyed by its **setting**, what fixed the purifier in that run's ``config.yaml`` (eps_rev, the
head, theta, the rule that gives its steps, restarts; for a user defense its kwargs): two runs of reverse-x at K = 1
with different steps are two defenses, never one worst case.
"""
from __future__ import annotations

import functools
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from evaluator.report import ReportError, _pct, eps_label
from landscape.config import parse_number
from landscape.io import atomic_write, resolve_path
from landscape.stats import wilson_interval


def worst_case(dirs, per_cell: dict | None = None, survivor_runs: dict | None = None) -> pd.DataFrame:
    """One row per cell; ``per_cell``, if given, is filled with cell -> survived or not, per counted image;
    ``survivor_runs`` with cell -> the runs of a cascade cell that evaluated only the survivors of the others."""
    frames = []
    for d in dirs:
        path = Path(d) / "per_image.parquet"
        if not path.is_file():
            raise ReportError(f"{d} holds no per_image.parquet (is it a finished `landscape eval --out` folder?)")
        if not (Path(d) / "results.csv").is_file():
            raise ReportError(f"{d} holds no results.csv (is it a finished `landscape eval --out` folder?)")
        per = pd.read_parquet(path)
        meta = pd.read_csv(Path(d) / "results.csv")
        # the defender's counted compute per image (purifier objective evaluations + gradients); NaN for older runs
        counted = {"purifier_forward", "purifier_backward"} <= set(meta.columns)
        meta = meta.assign(passes=meta["purifier_forward"] + meta["purifier_backward"] if counted else np.nan)
        dcfg = _run_defense_config(Path(d))
        meta["setting"] = [defense_setting(dcfg, name, int(k)) for name, k in zip(meta["defense"], meta["budget"])]
        meta["series"] = [defense_setting(dcfg, name) for name in meta["defense"]]
        meta = meta[["defense", "landscape", "budget", "attack", "norm", "eps", "passes", "setting", "series"]]
        frames.append(per.merge(meta, on=["defense", "landscape", "budget", "attack"]).assign(run=Path(d).name))
    df = pd.concat(frames, ignore_index=True)
    named = _drop_unambiguous_hashes(set(df["setting"]) | set(df["series"]))
    df["setting"], df["series"] = df["setting"].map(named), df["series"].map(named)
    attacked = df[df["attack"] != "none"]
    rows, per_cell = [], {} if per_cell is None else per_cell
    for key, g in attacked.groupby(["model", "defense", "landscape", "budget", "norm", "eps", "setting"], sort=True):
        runs = sorted(g["run"].unique())
        # the images each attack ran on, over all runs: one attack split over runs (halves of the survivors in
        # two processes, or two sessions) counts as one
        seen = [set(ix) for _, ix in g.groupby("attack")["index"]]
        shared, union = set.intersection(*seen), set.union(*seen)
        robust_where_seen = g.groupby("index")["correct"].all()
        # an attack that skipped only images another attack broke (a cascade over survivors) leaves the worst case exact
        cascade = len(union) > len(shared) and not robust_where_seen[sorted(union - shared)].any()
        images = union if cascade else shared
        survived = robust_where_seen[robust_where_seen.index.isin(images)]
        per_cell[key] = survived
        if cascade and survivor_runs is not None:
            survivor_runs[key] = {run for run, ix in g.groupby("run")["index"] if set(ix) < union}
        clean = df[(df["attack"] == "none") & (df["model"] == key[0]) & (df["defense"] == key[1]) & (df["budget"] == key[3])
                   & (df["landscape"] == key[2]) & (df["setting"] == key[6]) & df["index"].isin(images)].drop_duplicates("index")
        lo, hi = wilson_interval(int(survived.sum()), len(survived))
        rows.append({"model": key[0], "defense": key[1], "landscape": key[2], "budget": key[3], "norm": key[4],
                     "eps": key[5], "setting": key[6], "series": SERIES_SEP.join(sorted(g["series"].unique())), "runs": "+".join(runs), "attacks": ",".join(sorted(g["attack"].unique())), "n": len(survived),
                     "images": "cascade" if cascade else "shared",
                     "clean": float(clean["correct"].mean()) if len(clean) else float("nan"),
                     "passes": float(g["passes"].max()),
                     "worst_case": float(survived.mean()), "ci_low": lo, "ci_high": hi, "_key": key})
    if not rows:
        raise ReportError(f"no attacked cell in {', '.join(str(d) for d in dirs)}: nothing to take the worst case of")
    for row in rows:   # each defended cell against the undefended backbone at the same threat model
        key = row.pop("_key")
        row.update(paired_gain(per_cell[key], per_cell.get((key[0], "none", "none", 0, key[4], key[5], ""))))
    return _one_series_per_defense(pd.DataFrame(rows))


def _one_series_per_defense(table: pd.DataFrame) -> pd.DataFrame:
    """A plotted series is one defense with its steps chosen per K however they were (runs with other step
    dicts at other K join into one line), unless two of its cells share a K: then each step rule is its own
    series, so no line zigzags between two defenses at one K."""
    without_step = table["setting"].map(lambda st: "; ".join(p for p in st.split("; ") if not p.startswith(("step", "no step"))))
    table = table.copy()
    for _, g in table.assign(_base=without_step).groupby(["model", "defense", "landscape", "_base"]):
        if g["budget"].is_unique:
            table.loc[g.index, "series"] = g["_base"].iloc[0]
    return table


SERIES_SEP = " | "   # a cell two step rules share (K = 0; the same step at K) belongs to both series


def _run_defense_config(run: Path) -> dict:
    import yaml

    path = run / "config.yaml"
    if not path.is_file():
        return {}
    return (yaml.safe_load(path.read_text()) or {}).get("defense") or {}


def defense_setting(dcfg: dict, defense: str, budget: int | None = None) -> str:
    """What fixed one defense's purifier in a run's config, in words ("" for the bare model): what
    the attack does not change, so cells that differ in it are different defenses. With ``budget`` K,
    the step the purifier takes at K (two rules that agree at K give one defense there; K = 0 takes no
    step); without, the rule that gives the step at every K (a plotted series). Files are named with
    a hash of their content (``name@hash``, see :func:`_drop_unambiguous_hashes`)."""
    if defense == "none" or not dcfg:
        return ""
    parts = [f"R={dcfg.get('restarts', 1)}"]
    if defense in ("reverse-x", "reverse-z"):
        eps_rev = parse_number(dcfg.get("eps_rev", 8 / 255))
        parts += [f"eps_rev={eps_rev * 255:.4g}/255", f"head={_file(dcfg.get('ssl_head'))}"]
        if defense == "reverse-z":
            parts.append(f"theta={_file(dcfg.get('reverse_theta'))}")
        scale = parse_number(dcfg.get("reverse_step_scale", 1.0))
        default = ("sign", scale * eps_rev / max(int(budget or 1), 1)) if defense == "reverse-x" else None
        parts.append(_step_text(dcfg.get("reverse_steps"), defense, scale) if budget is None else
                     _step_at(dcfg.get("reverse_steps"), defense, int(budget), default))
    elif defense in ("purify-x", "purify-z"):
        parts.append(f"generator={_file((dcfg.get('generator') or {}).get('weights'))}")
        if defense == "purify-z":
            parts.append(f"theta={_file(dcfg.get('theta'))}")
        parts.append(f"steps={_file(dcfg.get('step_sizes'))}" if budget is None else
                     _step_at(dcfg.get("step_sizes"), defense, int(budget), ("adam", 0.1) if defense == "purify-x" else None))
    else:   # a user defense: what it was built with (defense.kwargs, one mapping for every user defense)
        parts = [f"R={dcfg.get('restarts', 1)}"] if _takes_restarts(defense, dcfg) else []
        parts.append("kwargs=" + json.dumps(dcfg.get("kwargs") or {}, sort_keys=True, default=str))
    return "; ".join(parts)


def _file(path) -> str:
    """A file named by its name and a hash of its content (of its resolved path where it is not here), so two
    files both called theta.pt are two settings and one file reached by two paths is one."""
    if path is None:
        return "None"
    return f"{Path(str(path)).name}@{_digest(str(resolve_path(path).resolve()))}"


@functools.lru_cache(maxsize=None)
def _digest(absolute: str) -> str:
    """Cached by absolute path (a relative one would name other files from another working directory)."""
    p = Path(absolute)
    return hashlib.sha256(p.read_bytes() if p.is_file() else absolute.encode()).hexdigest()[:8]


_HASHED = re.compile(r"([^\s=;{}]+)@([0-9a-f]{8})")


def _drop_unambiguous_hashes(texts) -> dict:
    """text -> text without the ``@hash`` of every file name that has one content across ``texts``: the
    hash stays only where two different files share a name, so tables and legends read as names."""
    hashes: dict = {}
    for t in texts:
        for name, digest in _HASHED.findall(t):
            hashes.setdefault(name, set()).add(digest)
    return {t: _HASHED.sub(lambda m: m.group(0) if len(hashes[m.group(1)]) > 1 else m.group(1), t) for t in texts}


def fewer_attacks(series: pd.DataFrame) -> pd.Series:
    """Per cell of one plotted series: True where fewer attacks ran than at the series' most-attacked K (its
    worst case is an upper figure). Attacks, not runs, are counted: one run may carry several attacks."""
    n_attacks = series["attacks"].map(lambda a: len(set(str(a).split(","))))
    return n_attacks < n_attacks.max()


def _takes_restarts(defense: str, dcfg: dict) -> bool:
    return _user_takes_restarts(defense, json.dumps(dcfg.get("kwargs") or {}, sort_keys=True, default=str))


@functools.lru_cache(maxsize=None)
def _user_takes_restarts(defense: str, kwargs_json: str) -> bool:
    """Loaded once per (defense, kwargs), not once per results row."""
    try:
        from defense.user import UserDefense

        return UserDefense.load(defense, json.loads(kwargs_json)).takes_restarts
    except Exception:   # not importable here: count its restarts, to be safe
        return True


def _step_text(spec, defense: str, scale: float) -> str:
    """The rule that gives the step at every K (a series of cells), not the step at one K."""
    if spec is None:
        return f"step=sign {scale:g} eps_rev/K" if defense == "reverse-x" else "step=theta's own"
    if isinstance(spec, dict):
        return "steps={" + ", ".join(f"{int(k)}: {v[0]} {float(v[1]):.4g}" for k, v in sorted(spec.items(), key=lambda kv: int(kv[0]))) + "}"
    if isinstance(spec, (list, tuple)):
        return f"step={spec[0]} {float(spec[1]):.4g}"
    return f"steps={_file(spec)}"   # a step-size table: its file names the steps


def _step_at(spec, defense: str, budget: int, default) -> str:
    """The step the purifier takes at K, resolved as the purifier resolves it (a K not listed takes the nearest
    listed one); K = 0 takes none."""
    from defense.defenses import load_step_table
    from defense.purifiers.base import resolve_step

    if budget == 0:
        return "no step (K = 0)"
    try:
        steps = load_step_table(spec, defense[-1], default)
    except Exception:   # a step table no longer here: its file names the steps
        return f"steps={_file(spec)}"
    if steps is None:
        return "step=theta's own"
    rule, lr = resolve_step(steps, budget)
    return f"step at K={budget}: {rule} {lr:.4g}"


def paired_gain(survived: pd.Series, undefended: pd.Series | None, resamples: int = 2000) -> dict:
    """Worst case minus the undefended backbone's on the images both counted, with a bootstrap 95% interval
    (seed 0): a paired difference, far tighter than two separate intervals."""
    if undefended is None or survived is undefended:
        return {"gain": float("nan"), "gain_low": float("nan"), "gain_high": float("nan")}
    both = survived.index.intersection(undefended.index)
    diff = survived[both].astype(float).to_numpy() - undefended[both].astype(float).to_numpy()
    rng = np.random.default_rng(0)
    means = diff[rng.integers(0, len(diff), (resamples, len(diff)))].mean(1)
    return {"gain": float(diff.mean()), "gain_low": float(np.percentile(means, 2.5)),
            "gain_high": float(np.percentile(means, 97.5))}


def paired_versus(table: pd.DataFrame, per_cell: dict, spec: str) -> pd.DataFrame:
    """Each defended cell's paired difference from a reference cell, ``DEFENSE`` (at the same K) or
    ``DEFENSE@K``, at the same model and threat model, on the images both counted (bootstrap 95%):
    e.g. reverse-z minus reverse-x at each K, or every K minus reverse-x at K = 40."""
    defense, _, k = spec.partition("@")
    try:
        budget = int(k) if k else None
    except ValueError:
        raise ReportError(f"--versus {spec!r}: K after @ must be an integer (e.g. reverse-x@40)") from None
    if not any(key[1] == defense for key in per_cell):
        raise ReportError(f"--versus {spec!r}: no cell of defense {defense!r}; the cells are of "
                          f"{', '.join(sorted({key[1] for key in per_cell}))}")
    gains = []
    for row in table.itertuples():
        key = (row.model, row.defense, row.landscape, row.budget, row.norm, row.eps, row.setting)
        at = row.budget if budget is None else budget
        refs = [r for r in per_cell if r[1] == defense and r[0] == row.model and r[4] == row.norm and r[5] == row.eps
                and int(r[3]) == int(at)]
        if len(refs) > 1:
            raise ReportError(f"--versus {spec!r}: {len(refs)} cells of {defense} at K = {at} (other settings: "
                              f"{'; '.join(r[6] for r in refs)}): run worst-case on the runs of one of them")
        same = not refs or refs[0] == key or row.defense == "none"
        gains.append(paired_gain(per_cell[key], None if same else per_cell[refs[0]]))
    out = table.copy()
    out["versus"] = spec
    out["versus_gain"], out["versus_low"], out["versus_high"] = ([g[c] for g in gains] for c in ("gain", "gain_low", "gain_high"))
    return out


def write_survivors(per_cell: dict, path, defense=None, budget=None, landscape=None, setting=None) -> int:
    """Write the robust images' indices of the one cell the filters leave (for ``data.indices=FILE``);
    ``setting``: text the cell's setting contains."""
    keys = [k for k in per_cell if (defense is None or k[1] == defense) and (budget is None or int(k[3]) == budget)
            and (landscape is None or k[2] == landscape) and (setting is None or setting in k[6])]
    if len(keys) != 1:
        cells = ", ".join(f"{k[1]}/{k[2]}/K={k[3]}/{k[4]} {k[5]:.4g}" + (f" [{k[6]}]" if k[6] else "") for k in keys) or "none"
        raise ReportError(f"--survivors needs exactly one cell; --defense/--budget/--landscape/--setting leave {len(keys)}: {cells}")
    survived = per_cell[keys[0]]
    indices = sorted(int(i) for i in survived[survived].index)
    atomic_write(path, lambda p: pd.DataFrame({"index": indices}).to_csv(p, index=False))
    return len(indices)


def plot_worst_case(table: pd.DataFrame, path) -> None:
    """The worst case and the clean accuracy against K per defended model, with 95% intervals and the
    undefended worst case as a band; a second row against the defender's counted compute (purifier
    objective evaluations + gradients per image) where every defended cell counted it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(table.groupby(["model", "norm", "eps"], sort=True))
    defended = table[table["defense"] != "none"]
    axes_x = ["budget"] + (["passes"] if "passes" in table and defended["passes"].notna().all() else [])
    fig, axes = plt.subplots(len(axes_x), len(panels), figsize=(9.0 * len(panels), 4.4 * len(axes_x)), squeeze=False)
    # one colour per defended series across every panel, so a legend drawn once reads for all of them
    keys = sorted({(d, ls, sr) for d, ls, srs in zip(defended["defense"], defended["landscape"], defended["series"])
                   for sr in str(srs).split(SERIES_SEP)})
    colors = {k: f"C{i}" for i, k in enumerate(keys)}
    # a setting is named in the legend only where one defense ran under several, and only what differs
    several = {}
    for d in {k[0] for k in keys}:
        rules = sorted({k[2] for k in keys if k[0] == d})
        if len(rules) > 1:
            parts = {st: st.split("; ") for st in rules}
            common = set.intersection(*map(set, parts.values()))
            several.update({(d, st): "; ".join(x for x in ps if x not in common) for st, ps in parts.items()})
    for row, x in enumerate(axes_x):
        for ax, ((model, norm, eps), t) in zip(axes[row], panels):
            _worst_case_panel(ax, t, x, colors, several)
            name = str(model).rsplit(":", 1)[-1].rsplit("/", 1)[-1]   # resnet4b of path/models.py:resnet4b
            ax.set_title(f"{name}, {norm} eps = {eps_label(norm, eps)}" + (", against defender compute" if row else ""),
                         fontsize=9)
    legend = {}
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    fig.tight_layout()
    fig.legend(list(legend.values()), list(legend), fontsize=7, loc="upper center", bbox_to_anchor=(0.5, 0.0),
               ncol=2 if len(panels) > 1 else 1)
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=120, bbox_inches="tight"))
    plt.close(fig)


def _worst_case_panel(ax, t: pd.DataFrame, x: str, colors: dict, several: dict) -> None:
    from matplotlib.ticker import FuncFormatter, NullFormatter

    base = t[t["defense"] == "none"]
    for _, b in base.iterrows():
        ax.axhspan(100 * b["ci_low"], 100 * b["ci_high"], color="0.85")
        ax.axhline(100 * b["worst_case"], color="black", lw=1.5, label="undefended: worst case")
        ax.axhline(100 * b["clean"], color="black", lw=1, ls="--", label="undefended: clean")
    defended = t[t["defense"] != "none"]
    for d, landscape, setting in sorted(colors):   # a series: one defense under one step rule, every K it ran
        g = defended[(defended["defense"] == d) & (defended["landscape"] == landscape)
                     & defended["series"].map(lambda srs: setting in str(srs).split(SERIES_SEP))]
        if g.empty:
            continue
        g, color = g.sort_values("budget"), colors[(d, landscape, setting)]
        name = f"{d} [{several[(d, setting)]}]" if (d, setting) in several else d
        ks = g[x].where(g[x] > 0, 0.5)
        lo, hi = 100 * (g["worst_case"] - g["ci_low"]), 100 * (g["ci_high"] - g["worst_case"])
        ax.errorbar(ks, 100 * g["worst_case"], yerr=[lo, hi], fmt="o-", color=color, capsize=3,
                    label=f"{name}: worst case over every attack of every run")
        few = fewer_attacks(g)
        if few.any():
            ax.plot(ks[few], 100 * g["worst_case"][few], "o", color="white", mec=color, ms=6, zorder=5,
                    label=f"{name}: open = fewer attacks at this K than at its most attacked K (an upper figure)")
        ax.plot(ks, 100 * g["clean"], "s--", color=color, label=f"{name}: clean after purification")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))   # 1, 10, 100 rather than 10^0
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("defense budget K (K = 0 drawn at 0.5)" if x == "budget" else
                  "purifier objective evaluations + gradients per image, counted (theta's own passes not; 0 drawn at 0.5)")
    ax.set_ylabel("accuracy (%), 95% Wilson interval")
    ax.set_ylim(0, 100)
    ax.grid(True, which="both", alpha=0.3)


def settings_differ(table: pd.DataFrame) -> bool:
    """Whether some defense ran at one K under more than one setting (then the setting is worth showing)."""
    defended = table[table["defense"] != "none"]
    return bool(len(defended)) and bool(defended.groupby(["model", "defense", "budget"])["setting"].nunique().gt(1).any())


def across_runs_blocks(dirs, out: Path, survivor_runs: dict | None = None) -> list[tuple]:
    """The report's section for several runs that attacked the same cells: their worst case together (with its
    figure), or nothing when no cell was attacked by more than one run or a run kept no per-image table."""
    if len(dirs) < 2 or not all((Path(d) / "per_image.parquet").is_file() for d in dirs):
        return []
    table = worst_case(dirs, survivor_runs=survivor_runs)
    if not table["runs"].str.contains("+", regex=False).any():
        return []
    plot_worst_case(table, out / "worst_case_across_runs.png")
    shown = table.assign(
        clean=[f"{100 * c:.1f}" for c in table["clean"]],
        worst_case=[_pct(a, lo, hi) for a, lo, hi in zip(table["worst_case"], table["ci_low"], table["ci_high"])],
        gain=[("" if np.isnan(g) else f"{100 * g:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]")
              for g, lo, hi in zip(table["gain"], table["gain_low"], table["gain_high"])],
        eps=[eps_label(n, e) for n, e in zip(table["norm"], table["eps"])],
        passes=["" if np.isnan(n) else f"{n:.0f}" for n in table["passes"]])
    cols = (["model"] if table["model"].nunique() > 1 else []) + ["defense", "landscape", "budget"] + \
        (["setting"] if settings_differ(table) else []) + ["passes", "norm", "eps", "runs", "n", "images", "clean",
                                                           "worst_case", "gain"]
    return [("h2", "Worst case across runs"),
            ("p", "The headline: worst-case robust accuracy and clean accuracy after purification against the defense's "
                  "budget K and, where every defended cell counted it, against the defender's compute. "
                  "An image counts as robust only if it survives every attack of every run at the same model, defense, "
                  "K and threat model (`landscape worst-case`); `cascade`: a run on the survivors of others, counted on "
                  "every image; `shared`: the images all runs evaluated. Passes: the purifier's objective evaluations + "
                  "gradients per image, counted. Gain: the paired difference from the undefended "
                  "backbone on the same images, in points, with a bootstrap 95% interval."),
            ("img", "worst_case_across_runs.png", "worst case across runs"), ("table", shown[cols])]

