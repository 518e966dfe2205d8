"""The paper's analyses for pose inversion, run by ``landscape invert --task pose-cmu`` after the X/Z table.

* ``figure``: skeletons a person can look at (2D input, 3D truth, X and Z reconstructions at several K).
* ``hypotheses``: M starts per pose; single, best-of-M (oracle) and lowest-loss MPJPE, and how far the
  hypotheses spread in depth (single-view lifting's ambiguity).
* ``action``: a held-out clip frame by frame, cold starts against warm starts from the previous frame,
  in X and Z; MPJPE per frame, the steps each needs to reach a 2D error, and a GIF.
* ``baseline``: a Martinez et al. (2017) lifting network against inversion, in distribution and out
  (camera elevations and distances never seen in training, noisy keypoints, more missing joints).

Step sizes are the ones ``compare_spaces`` tuned for the invert table (read from its summary).
"""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import torch

from landscape.io import atomic_write
from landscape.problem import target_index, target_repeat
from landscape.space import Space
from landscape.stats import mean_interval
from tasks.pose.camera import sample_cameras, to_camera
from tasks.pose.metrics import mpjpe, pa_mpjpe
from tasks.pose.problem import PoseInversion, make_targets, random_visibility
from tasks.registry import TaskError


def tuned_step(summary: pd.DataFrame, space: str, k: int) -> tuple[str, float]:
    """The (rule, lr) ``compare_spaces`` chose for ``space`` at the budget nearest ``k``."""
    g = summary[summary["space"] == space]
    row = g.iloc[(g["budget"] - k).abs().argsort().iloc[0]]
    return str(row["rule"]), float(row["lr"])


def solve(problem: PoseInversion, theta, target: dict, space: str, steps: int, step: tuple, start=None, seed: int = 0,
          trajectory: bool = False):
    """Descend ``steps`` in X or Z from ``start`` (default: seeded fresh starts); returns the DescentResult."""
    sp = Space(problem, theta if space == "Z" else None)
    if start is None:
        start = sp.init(len(target["keypoints"]), torch.Generator().manual_seed(seed))
    return sp.descend(target, start, steps, step[1], step[0], keep_trajectory=trajectory)


def to_x(problem, theta, space: str, var: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return Space(problem, theta if space == "Z" else None).to_x(var)


def _ci(prefix: str, values) -> dict:
    m, lo, hi = mean_interval([float(v) for v in values])
    return {prefix: m, f"{prefix}_ci_low": lo, f"{prefix}_ci_high": hi}


# -- the skeleton figure ----------------------------------------------------------------------------------
def skeleton_figure(problem, theta, summary, out: Path, n: int = 4, budgets=(10, 50, 200), seed: int = 0) -> None:
    from tasks.pose.plot import reconstruction_grid

    target = problem.heldout(n)
    rows = [{"keypoints": target["keypoints"][i], "visibility": target["visibility"][i],
             "truth": to_camera(target["pose3d"][i:i + 1], target["rotation"][i:i + 1])[0]} for i in range(n)]
    cols = []
    for space in ("X", "Z"):
        for k in budgets:
            res = solve(problem, theta, target, space, k, tuned_step(summary, space, k), seed=seed)
            with torch.no_grad():
                pose = problem.forward(to_x(problem, theta, space, res.var))
            cam = to_camera(pose, target["rotation"])
            name = f"{space} K={k}"
            cols.append(name)
            for i in range(n):
                rows[i][name] = cam[i]
    reconstruction_grid(rows, cols, out / "skeletons.png",
                        "held-out test subjects: 2D input (dotted: missing joint), truth, X and Z at K steps "
                        "(grey: truth; title: MPJPE)")


# -- several hypotheses -----------------------------------------------------------------------------------
def hypotheses_analysis(problem, theta, summary, target: dict, m: int = 8, budgets=(10, 200), seed: int = 0):
    """Per space and K: MPJPE of one start, of the best of M (oracle), of the lowest-objective start, and the
    depth spread (std over hypotheses of each joint's depth relative to the pelvis, mean over joints, mm)."""
    n = len(target["keypoints"])
    big = target_repeat(target, m)
    rows = []
    for space in ("X", "Z"):
        for k in budgets:
            res = solve(problem, theta, big, space, k, tuned_step(summary, space, k), seed=seed)
            x = to_x(problem, theta, space, res.var)
            with torch.no_grad():
                pose = problem.forward(x)
                loss = problem.objective(x, big).view(n, m)
            err = mpjpe(pose, big["pose3d"]).view(n, m)
            pa = pa_mpjpe(pose, big["pose3d"]).view(n, m)
            depth = to_camera(pose, big["rotation"])[..., 2].view(n, m, 17)
            spread = (depth - depth[..., :1]).std(1).mean(-1)
            pick = loss.argmin(1)
            row = {"space": space, "budget": k, "hypotheses": m, "n": n}
            row.update(_ci("mpjpe_single", err[:, 0]))
            row.update(_ci("mpjpe_best_of_m", err.min(1).values))
            row.update(_ci("mpjpe_lowest_loss", err.gather(1, pick[:, None])[:, 0]))
            row.update(_ci("pa_mpjpe_best_of_m", pa.min(1).values))
            row.update(_ci("depth_spread_mm", spread))
            rows.append(row)
    return pd.DataFrame(rows)


# -- action reconstruction --------------------------------------------------------------------------------
def load_clip(problem, name: str, every: int, frames: int) -> torch.Tensor:
    """(F, 17, 3) root-centred world joints of a held-out clip (e.g. "13_11"), every ``every``-th frame."""
    from tasks.pose.mocap import joints17, read_amc, read_asf
    from tasks.pose.mocap.asf import MocapError

    subject = name.split("_")[0]
    if subject not in problem.test_set.skeletons:
        raise MocapError(f"clip {name!r}: subject {subject} is not a test subject "
                         f"({sorted(problem.test_set.skeletons)}); the action analysis uses held-out people")
    sk = read_asf(problem.data_root / subject / f"{subject}.asf")
    motion = read_amc(problem.data_root / subject / f"{name}.amc", sk)
    from tasks.pose.mocap import forward_kinematics

    rows = torch.from_numpy(motion.channels[::every][:frames])
    with torch.no_grad():
        return joints17(forward_kinematics(sk, rows), sk).float()


def action_analysis(problem, theta, summary, poses: torch.Tensor, kmax: int = 200, report_k=(1, 5, 10, 20, 200),
                    seed: int = 0):
    """Frame by frame, one fixed camera following the pelvis (seeded, training range), random missing joints.

    A tracker descends on each frame until its 2D error reaches a threshold tau (the mean 2D error that
    cold descent in X reaches in ``kmax`` steps), or ``kmax`` steps, and moves on. Cold: every frame from
    fresh starts. Warm: each frame from the state where the tracker stopped on the previous frame. The
    steps it needs per frame, the MPJPE where it stops, and the MPJPE after fixed K from each start are
    returned (a long per-frame table and a summary), with the stopped states for the animation.
    """
    g = torch.Generator().manual_seed(seed + 31)
    F = len(poses)
    cam = sample_cameras(1, g, **problem.camera)
    cams = {k: v.expand(F, *v.shape[1:]).clone() for k, v in cam.items()}
    target = make_targets(poses, cams, random_visibility(F, problem.drop_prob, g), problem.noise_px, g)
    steps = {space: tuned_step(summary, space, kmax if space == "X" else 10) for space in ("X", "Z")}
    curves, stops, times = {}, {}, {}
    for space in ("X", "Z"):                                     # cold starts: all frames at once
        t0 = time.perf_counter()
        res = solve(problem, theta, target, space, kmax, steps[space], seed=seed, trajectory=True)
        times[(space, "cold")] = time.perf_counter() - t0
        curves[(space, "cold")] = _per_step(problem, theta, space, torch.stack(res.trajectory), target)
        stops[(space, "cold")] = torch.stack(res.trajectory)
    tau = float(curves[("X", "cold")]["err2d"][kmax].mean())
    for space in ("X", "Z"):                                     # warm starts: one frame after the other
        per, var, t0 = [], None, time.perf_counter()
        for f in range(F):
            tf = target_index(target, slice(f, f + 1))
            r = solve(problem, theta, tf, space, kmax, steps[space], start=var, seed=seed + f, trajectory=True)
            traj = torch.stack(r.trajectory)                      # (kmax + 1, 1, d)
            c = _per_step(problem, theta, space, traj, tf)
            per.append((traj, c))
            var = traj[_first_reach(c["err2d"], tau, kmax)[0].clamp_max(kmax)]
        times[(space, "warm")] = time.perf_counter() - t0
        stops[(space, "warm")] = torch.cat([t for t, _ in per], 1)
        curves[(space, "warm")] = {k: torch.cat([c[k] for _, c in per], 1) for k in ("mpjpe", "err2d")}
    rows, summary_rows, stopped = [], [], {}
    for (space, start), c in curves.items():
        first = _first_reach(c["err2d"], tau, kmax)               # (F,), kmax + 1 = never
        at = first.clamp_max(kmax)
        stop_mpjpe = c["mpjpe"].gather(0, at[None])[0]
        stopped[(space, start)] = stops[(space, start)][at, torch.arange(F)]
        for f in range(F):
            rows.append({"space": space, "start": start, "frame": f, "budget": "stop", "steps": int(first[f]),
                         "mpjpe": float(stop_mpjpe[f]), "err2d": float(c["err2d"][at[f], f])})
            for k in report_k:
                rows.append({"space": space, "start": start, "frame": f, "budget": k, "steps": k,
                             "mpjpe": float(c["mpjpe"][k, f]), "err2d": float(c["err2d"][k, f])})
        s = {"space": space, "start": start, "frames": F, "step": f"{steps[space][0]} {steps[space][1]:g}",
             "err2d_threshold_px": tau, "steps_to_threshold_mean": float(first.float().mean()),
             "steps_to_threshold_median": float(first.float().median()),
             "frames_reaching_threshold": int((first <= kmax).sum()), "seconds": times[(space, start)]}
        s.update(_ci("mpjpe_at_stop", stop_mpjpe))
        for k in report_k:
            s.update(_ci(f"mpjpe_k{k}", c["mpjpe"][k]))
        summary_rows.append(s)
    return pd.DataFrame(rows), pd.DataFrame(summary_rows), stopped, target


def _first_reach(err2d: torch.Tensor, tau: float, kmax: int) -> torch.Tensor:
    """(F,) first step whose 2D error is <= tau along (K + 1, F) curves; kmax + 1 where none is."""
    reached = err2d <= tau
    return torch.where(reached.any(0), reached.float().argmax(0), torch.full(reached.shape[1:], kmax + 1))


def _per_step(problem, theta, space, trajectory: torch.Tensor, target) -> dict:
    """MPJPE and 2D error (K + 1, F) along a trajectory (K + 1, F, d), in one batch."""
    steps, n = trajectory.shape[:2]
    big = {k: v.repeat(steps, *([1] * (v.dim() - 1))) for k, v in target.items()}
    m = problem.metrics(to_x(problem, theta, space, trajectory.reshape(steps * n, -1)), big)
    return {k: m[k].view(steps, n) for k in ("mpjpe", "err2d")}


def plot_action(per_frame: pd.DataFrame, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    for (space, start), style in {("X", "cold"): ("tab:gray", "-"), ("X", "warm"): ("tab:gray", "--"),
                                  ("Z", "cold"): ("tab:red", "-"), ("Z", "warm"): ("tab:red", "--")}.items():
        g = per_frame[(per_frame.space == space) & (per_frame.start == start) & (per_frame.budget.astype(str) == "stop")]
        if not g.empty:
            ax.plot(g["frame"], g["mpjpe"], style[1], color=style[0],
                    label=f"{space}, {start} start ({g['steps'].mean():.0f} steps/frame)")
    ax.set_xlabel("frame")
    ax.set_ylabel("MPJPE (mm)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)


# -- the lifting baseline, in and out of distribution -----------------------------------------------------
def conditions(problem) -> dict:
    """Name -> keyword arguments of ``problem.targets_for``; the first is the training distribution."""
    return {
        "in-distribution": {},
        "camera elevation 50-70 deg (train -5..25)": {"camera": {"elevation": (50.0, 70.0)}},
        "camera distance 2-3 m (train 4-6)": {"camera": {"distance": (2000.0, 3000.0)}},
        "camera distance 9-12 m (train 4-6)": {"camera": {"distance": (9000.0, 12000.0)}},
        "keypoint noise 10 px": {"noise_px": 10.0},
        "6 of 17 joints missing (train 10%)": {"n_missing": 6},
    }


def baseline_analysis(problem, theta, summary, poses: torch.Tensor, iterations: int = 6000, seed: int = 0,
                      log=print, width: int = 1024):
    from tasks.pose.baseline import timed_predict, train_lifting

    net, info = train_lifting(problem, iterations, width=width, seed=seed, log=log)
    rows = []
    runs = [(space, k, tuned_step(summary, space, k)) for space in ("X", "Z") for k in (10, 200)]
    for i, (name, kw) in enumerate(conditions(problem).items()):
        target = problem.targets_for(poses, torch.Generator().manual_seed(seed + 1000 + i), **kw)
        pred, sec = timed_predict(net, target)
        rows.append(_row(name, "lifting baseline (1 pass)", 0, pred, target, sec))
        for space, k, step in runs:
            t0 = time.perf_counter()
            res = solve(problem, theta, target, space, k, step, seed=seed)
            sec = time.perf_counter() - t0
            with torch.no_grad():
                pose = problem.forward(to_x(problem, theta, space, res.var))
            rows.append(_row(name, f"inversion in {space}", k, pose, target, sec))
    df = pd.DataFrame(rows)
    df.attrs.update(info)
    return df, net


def _row(condition, method, k, pose, target, seconds) -> dict:
    row = {"condition": condition, "method": method, "budget": k, "n": len(pose), "seconds": seconds}
    row.update(_ci("mpjpe", mpjpe(pose, target["pose3d"])))
    row.update(_ci("pa_mpjpe", pa_mpjpe(pose, target["pose3d"])))
    return row


# -- entry point ------------------------------------------------------------------------------------------
def run_all(problem: PoseInversion, theta, summary: pd.DataFrame, cfg: dict, out: Path, log=print) -> dict:
    """Run the analyses named in ``analyses.run``; write their tables and figures into ``out``."""
    a = cfg["analyses"]
    names = list(a["run"])
    unknown = set(names) - {"figure", "hypotheses", "action", "baseline"}
    if unknown:
        raise TaskError(f"unknown analyses {sorted(unknown)}; valid: figure, hypotheses, action, baseline")
    seed = int(cfg["seed"])
    written = {}
    if "figure" in names:
        log("analysis: skeleton figure")
        skeleton_figure(problem, theta, summary, out, budgets=tuple(int(k) for k in a["figure_budgets"]), seed=seed)
    if "hypotheses" in names:
        log(f"analysis: {a['hypotheses']} hypotheses per pose")
        df = hypotheses_analysis(problem, theta, summary, problem.heldout(int(a["n_images"])), int(a["hypotheses"]),
                                 seed=seed)
        atomic_write(out / "hypotheses.csv", lambda p: df.to_csv(p, index=False))
        written["hypotheses"] = df
    if "action" in names:
        log(f"analysis: action reconstruction of held-out clip {a['clip']} with warm starts")
        poses = load_clip(problem, str(a["clip"]), int(a["clip_every"]), int(a["clip_frames"]))
        kmax = int(a["action_steps"])
        report = tuple(sorted({k for k in (1, 5, 10, 20, 200) if k <= kmax} | {kmax}))
        per_frame, summ, recon, target = action_analysis(problem, theta, summary, poses, kmax, report, seed=seed)
        atomic_write(out / "action_per_frame.csv", lambda p: per_frame.to_csv(p, index=False))
        atomic_write(out / "action.csv", lambda p: summ.to_csv(p, index=False))
        plot_action(per_frame, out / "action_mpjpe.png",
                    f"clip {a['clip']} (held-out subject), one camera: MPJPE per frame where the tracker\n"
                    f"stops (2D error <= {summ['err2d_threshold_px'].iloc[0]:.1f} px, or {kmax} steps)")
        from tasks.pose.plot import clip_gif

        with torch.no_grad():
            pose = problem.forward(theta(recon[("Z", "warm")]))
        errs = mpjpe(pose, target["pose3d"])
        steps = summ[(summ.space == "Z") & (summ.start == "warm")]["steps_to_threshold_mean"].iloc[0]
        clip_gif(to_camera(target["pose3d"], target["rotation"]), to_camera(pose, target["rotation"]), errs,
                 out / "action.gif", f"{a['clip']}: truth | Z, warm starts ({steps:.1f} steps/frame)")
        written["action"] = summ
    if "baseline" in names:
        log("analysis: lifting baseline (Martinez et al. 2017) in and out of distribution")
        poses = problem.heldout(int(a["n_images"]))["pose3d"]
        df, _ = baseline_analysis(problem, theta, summary, poses, int(a["baseline_iterations"]), seed, log,
                                  int(a["baseline_width"]))
        atomic_write(out / "baseline.csv", lambda p: df.to_csv(p, index=False))
        written["baseline"] = df
    return written
