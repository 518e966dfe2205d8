"""``landscape``: one entry point, a subcommand per job.

    landscape eval [--config FILE] [--out DIR] [key=value ...]
    landscape submit --address http://HEAD:8265 [--command CMD [--task T]] [--config FILE] [--out DIR] [--wait] [key=value ...]
    landscape jobs {status,logs,stop} JOB --address http://HEAD:8265
    landscape report DIR [DIR ...] [--out DIR] [--entry FILE]
    landscape worst-case DIR [DIR ...] [--out CSV] [--plot PNG] [--survivors FILE [--defense D] [--budget K] [--landscape L] [--setting TEXT]] [--versus DEFENSE[@K]]
    landscape train-generator [--config FILE] [--out DIR] [key=value ...]
    landscape train-ssl-head [--config FILE] [--out FILE] [key=value ...]
    landscape train-classifier --on-purified [--config FILE] [--out FILE] [key=value ...]
    landscape train-theta --task TASK [--config FILE] [--out DIR] [key=value ...]
    landscape invert --task TASK [--config FILE] [--out DIR] [key=value ...]
    landscape invert --task pose-cmu --keypoints FILE [--out DIR] [key=value ...]
    landscape train-pose-generator [--config FILE] [--out DIR] [key=value ...]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from landscape.config import ConfigError, load_config


def _eval(args) -> int:
    from evaluator.config import EVAL_DEFAULTS, OPEN_SECTIONS
    from evaluator.results import format_table
    from evaluator.run import run_to_folder, uses_ray

    cfg = load_config(EVAL_DEFAULTS, args.config, args.overrides, OPEN_SECTIONS)
    out = Path(args.out or Path("results") / time.strftime("%Y%m%d-%H%M%S"))
    runner = None
    if uses_ray(cfg["ray"]):
        from ray_jobs.runner import RayRunner

        runner = RayRunner(cfg["ray"])
    try:
        results, path = run_to_folder(cfg, out, progress=bool(cfg["eval"]["progress"]) and not args.quiet,
                                      runner=runner)
    finally:
        if runner is not None:
            runner.close()
    print(format_table(results))
    if str(results["data"].iloc[0]).startswith("imagefolder:") and "jpeg" in str(results["data"].iloc[0]).lower():
        print("note: measured on the JPEG copy of CIFAR-10 (quality 75), not the original test set")
    print(f"wrote {path} and {path.with_suffix('.parquet')}")
    return 0


def _load(defaults: dict, args, open_sections=()) -> dict:
    """The config of a training command, with ``threads`` applied to torch."""
    cfg = load_config(defaults, args.config, args.overrides, open_sections)
    if cfg.get("threads"):
        import torch

        torch.set_num_threads(int(cfg["threads"]))
    return cfg


def _train_generator(args) -> int:
    from cifar10.generator import GENERATOR_DEFAULTS, train_from_config

    cfg = _load(GENERATOR_DEFAULTS, args)
    out = Path(args.out or "results/generator")
    summary = train_from_config(cfg, out, progress=not args.quiet)
    print(f"generator: {out / 'generator.pt'} ({summary['epochs']} epochs, {summary['elapsed_s'] / 60:.1f} min)")
    return 0


def _train_ssl_head(args) -> int:
    from cifar10.ssl_head import SSL_DEFAULTS, train_from_config

    cfg = _load(SSL_DEFAULTS, args, ("model.kwargs",))
    out = Path(args.out or "results/ssl-head/ssl-head.pt")
    s = train_from_config(cfg, out, progress=not args.quiet)
    print(f"ssl head: {out} ({s['train_seconds'] / 60:.1f} min); held-out SSL loss clean "
          f"{s['heldout_clean_ssl_loss']:.3f}, PGD-10 {s['heldout_pgd_ssl_loss']:.3f}")
    return 0


def _train_classifier(args) -> int:
    from defense.finetune import CLASSIFIER_DEFAULTS, train_from_config

    if not args.on_purified:
        raise ConfigError("train-classifier only fine-tunes on purified images for now: pass --on-purified")
    cfg = _load(CLASSIFIER_DEFAULTS, args, ("model.kwargs", "defense.generator.kwargs"))
    out = Path(args.out or f"results/classifier-{cfg['purifier']['defense']}/classifier.pt")
    s = train_from_config(cfg, out, progress=not args.quiet)
    before, after = s["before"], s["after"]
    print(f"classifier: {out}; accuracy on purified held-out images {100 * before['purified']:.1f}% -> "
          f"{100 * after['purified']:.1f}% (clean {100 * before['clean']:.1f}% -> {100 * after['clean']:.1f}%)")
    return 0


def _task_config(args, command: str) -> dict:
    """The config of ``train-theta`` / ``invert`` for ``--task``: the task's own record, then the file and overrides."""
    from dataclasses import asdict

    from landscape.config import merge
    from landscape.trainer import TrainConfig
    from tasks.registry import TASKS, TaskError, get_task

    task = get_task(args.task)
    every_key = {k: v for k, v in asdict(TrainConfig()).items() if k not in ("seed", "extra")}
    # save_dtype: float16 halves a committed theta (it is read back as float32)
    section = {"theta": {"theta": {**every_key, **task.theta}, "save_dtype": "float32"},
               "invert": task.invert}[command]
    if section is None:
        supported = [n for n, t in TASKS.items() if t.invert is not None]
        raise TaskError(f"`landscape {args.command}` has no settings for task {args.task!r}; it supports: "
                        f"{', '.join(supported)}")
    defaults = merge(merge({"seed": 0, "device": "cpu", "threads": 0, "progress": True}, task.defaults), section)
    return _load(defaults, args)


def _train_theta(args) -> int:
    from tasks.train_theta import train_theta

    cfg = _task_config(args, "theta")
    out = Path(args.out or f"results/theta-{args.task}")
    trainer = train_theta(args.task, cfg, out, progress=bool(cfg["progress"]) and not args.quiet)
    print(f"theta: {out / 'theta.pt'} ({trainer.iteration} iterations, {trainer.elapsed / 60:.1f} min)")
    return 0


def _invert(args) -> int:
    from tasks.invert import run_invert

    cfg = _task_config(args, "invert")
    if getattr(args, "keypoints", None):
        return _invert_keypoints(args, cfg)
    out = Path(args.out or Path("results") / f"invert-{args.task}-{time.strftime('%Y%m%d-%H%M%S')}")
    summary = run_invert(args.task, cfg, out, progress=not args.quiet)
    view = summary.pivot_table(index="budget", columns=["metric", "space"], values="mean")
    print(view.to_string(float_format=lambda v: f"{v:.4g}"))
    print(f"wrote {out / 'summary.csv'}")
    return 0


def _invert_keypoints(args, cfg) -> int:
    """``invert --task pose-cmu --keypoints FILE``: a user's 2D keypoints -> 3D joints (.npz) and the 2D error."""
    from tasks.registry import TaskError

    if args.task != "pose-cmu":
        raise TaskError(f"--keypoints is for --task pose-cmu (2D keypoints -> 3D pose), not {args.task!r}")
    from tasks.pose.keypoints import reconstruct_file

    src = Path(args.keypoints)
    out = Path(args.out or Path("results") / f"pose-keypoints-{src.stem}")
    result = reconstruct_file(src, cfg, out, progress=not args.quiet)
    print(f"{result['frames']} frame(s), {result['space']} space: final 2D error {result['err2d_mean']:.2f} px "
          f"(mean over frames; max {result['err2d_max']:.2f} px)")
    print(f"wrote {result['path']}")
    return 0


def _train_pose_generator(args) -> int:
    from tasks.pose.generator import POSE_GENERATOR_DEFAULTS, train_from_config

    cfg = _load(POSE_GENERATOR_DEFAULTS, args)
    out = Path(args.out or "results/pose-generator")
    s = train_from_config(cfg, out, progress=bool(cfg["train"]["progress"]) and not args.quiet)
    rec = s["test_reconstruction_mpjpe_mm"]
    print(f"pose generator: {out / 'pose-generator.pt'} ({s['iterations']} iterations, {s['train_seconds'] / 60:.1f} min); "
          f"held-out test-subject reconstruction MPJPE {rec['mean']:.1f} mm [{rec['ci_low']:.1f}, {rec['ci_high']:.1f}]")
    return 0


def _report(args) -> int:
    from evaluator.report import write_report

    out = Path(args.out or (args.dirs[0] if len(args.dirs) == 1 else "results/report"))
    path, checks = write_report(args.dirs, out)
    summary = checks[checks.get("summary", False) == True]  # noqa: E712
    for _, r in summary.iterrows():
        print(f"[{r['status']:>7}] {r['check']}: {r['detail']}")
    print(f"wrote {path}, {out / 'report.html'} (one file, figures embedded) and the figures beside them")
    if args.entry:
        from evaluator.entry import write_entries
        from evaluator.report import load_runs

        print(f"wrote {write_entries(load_runs(args.dirs), args.dirs, args.entry)} (RobustBench-style entries)")
    return 0


def _worst_case(args) -> int:
    from evaluator.across_runs import paired_versus, plot_worst_case, settings_differ, worst_case, write_survivors
    from landscape.io import atomic_write

    per_cell: dict = {}
    table = worst_case(args.dirs, per_cell)
    if args.survivors:   # checked before anything is written
        n = write_survivors(per_cell, args.survivors, args.defense, args.budget, args.landscape, args.setting)
    if args.versus:
        table = paired_versus(table, per_cell, args.versus)
    hidden = ["attacks"] + (["model"] if table["model"].nunique() == 1 else []) + ([] if settings_differ(table) else ["setting"])
    print(table.drop(columns=hidden).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if args.out:
        atomic_write(args.out, lambda p: table.to_csv(p, index=False))
        print(f"wrote {args.out}")
    if args.plot:
        plot_worst_case(table, args.plot)
        print(f"wrote {args.plot}")
    if args.survivors:
        print(f"wrote {args.survivors}: {n} robust images (run a costlier attack on them with data.indices={args.survivors})")
    return 0


#: commands ``landscape submit --command`` runs on a cluster, each with the loader of its own config
def _submit_loaders() -> dict:
    from cifar10.generator import GENERATOR_DEFAULTS
    from cifar10.ssl_head import SSL_DEFAULTS
    from evaluator.config import EVAL_DEFAULTS, OPEN_SECTIONS
    from tasks.pose.generator import POSE_GENERATOR_DEFAULTS

    return {"eval": lambda a: load_config(EVAL_DEFAULTS, a.config, a.overrides, OPEN_SECTIONS),
            "train-theta": lambda a: _task_config(a, "theta"), "invert": lambda a: _task_config(a, "invert"),
            "train-generator": lambda a: load_config(GENERATOR_DEFAULTS, a.config, a.overrides),
            "train-ssl-head": lambda a: load_config(SSL_DEFAULTS, a.config, a.overrides, ("model.kwargs",)),
            "train-pose-generator": lambda a: load_config(POSE_GENERATOR_DEFAULTS, a.config, a.overrides)}


def _submit(args) -> int:
    from ray_jobs.submit import submit

    loaders = _submit_loaders()
    if args.submit_command not in loaders:
        raise ConfigError(f"--command {args.submit_command!r} cannot be submitted; it can be one of {', '.join(loaders)}")
    if args.submit_command in ("train-theta", "invert") and not args.task:
        raise ConfigError(f"--command {args.submit_command} needs --task TASK")
    cfg = loaders[args.submit_command](args)   # resolved and checked here: a bad setting never reaches the cluster
    if args.submit_command == "eval" and cfg["ray"]["address"] in (None, ""):
        cfg["ray"]["address"] = "auto"  # the job's driver runs on the cluster: join it
    out = args.out or str(Path("results").resolve() / time.strftime("%Y%m%d-%H%M%S"))
    _, status = submit(cfg, args.address, out, wait=args.wait, pip=args.pip, token_file=args.token_file,
                       log=lambda *a, **k: print(*a, **k, flush=True), command=args.submit_command, task=args.task)
    if status is not None:
        print(f"job finished: {status}; results in {out}")
        return 0 if status == "SUCCEEDED" else 1
    return 0


def _jobs(args) -> int:
    from ray_jobs.submit import job_command

    job_command(args.action, args.job_id, args.address, args.token_file,
                log=lambda *a, **k: print(*a, **k, flush=True))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="landscape", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name, func, help, usage, common=True, out="output folder"):
        p = sub.add_parser(name, help=help, usage=f"landscape {name} {usage}")
        if common:
            p.add_argument("--config", help="YAML config")
            p.add_argument("--out", help=out)
            p.add_argument("--quiet", action="store_true", help="no progress bar")
        p.set_defaults(func=func)
        return p

    config = "[--config FILE] [--out DIR] [key=value ...]"
    command("eval", _eval, "clean and robust accuracy of a classifier (and defenses) under attacks",
            "[--config FILE] [--out DIR] [--quiet] [key=value ...]", out="output folder (default results/<timestamp>)")
    command("train-generator", _train_generator, "train the CIFAR-10 DCGAN used by the generator purifier", config)
    rp = command("report", _report, "tables, robust accuracy vs budget plot and sanity checks of eval runs",
                 "DIR [DIR ...] [--out DIR] [--entry FILE]", common=False)
    rp.add_argument("dirs", nargs="+", help="folders written by landscape eval")
    rp.add_argument("--out", help="where report.md goes (default: the single DIR, else results/report)")
    rp.add_argument("--entry", help="also write RobustBench-style entries (one per defended cell) to this JSON file")
    rp.set_defaults(overrides=[])
    wc = command("worst-case", _worst_case, "per-image worst case over the attacks of several eval runs (cascades too)",
                 "DIR [DIR ...] [--out CSV] [--plot PNG] [--survivors FILE [--defense D] [--budget K] [--landscape L] [--setting TEXT]] "
                 "[--versus DEFENSE[@K]]", common=False)
    wc.add_argument("dirs", nargs="+", help="folders written by landscape eval")
    wc.add_argument("--out", help="write the table as CSV")
    wc.add_argument("--plot", help="write worst case and clean accuracy against K as PNG")
    wc.add_argument("--survivors", metavar="FILE", help="write the images robust in one cell, for data.indices=FILE")
    wc.add_argument("--defense", help="--survivors: the cell's defense")
    wc.add_argument("--budget", type=int, help="--survivors: the cell's K")
    wc.add_argument("--landscape", help="--survivors: the cell's landscape (x, z, none)")
    wc.add_argument("--setting", help="--survivors: text in the cell's setting (its step at K, theta, ...: see the table)")
    wc.add_argument("--versus", metavar="DEFENSE[@K]", help="add each cell's paired difference from DEFENSE's cell at the "
                    "same K (or at K), same model and threat model, with a bootstrap 95%% interval")
    wc.set_defaults(overrides=[])
    sb = command("submit", _submit, "submit landscape eval (or a training command) to a Ray cluster (Ray Jobs API)",
                 "--address http://HEAD:8265 [--command CMD [--task TASK]] [--config FILE] [--out DIR] [--wait] "
                 "[key=value ...]", common=False)
    sb.add_argument("--address", required=True, help="the cluster's dashboard, e.g. http://HEAD:8265")
    sb.add_argument("--command", dest="submit_command", default="eval",
                    help="the landscape command the job runs: eval (default), train-theta, invert, train-generator, "
                         "train-ssl-head, train-pose-generator")
    sb.add_argument("--task", help="for --command train-theta / invert")
    sb.add_argument("--config", help="YAML config")
    sb.add_argument("--out", help="results folder the cluster can write (a shared filesystem); default ./results/<time>")
    sb.add_argument("--wait", action="store_true", help="stream the job's logs and exit with its status")
    sb.add_argument("--pip", action="store_true", help="install the package's requirements in the job's runtime_env")
    sb.add_argument("--token-file", help="file holding the cluster's auth token (else RAY_AUTH_TOKEN or ~/.ray/auth_token)")
    jb = command("jobs", _jobs, "status, logs or stop of a submitted job",
                 "{status,logs,stop} JOB --address http://HEAD:8265", common=False)
    jb.add_argument("action", choices=["status", "logs", "stop"])
    jb.add_argument("job_id")
    jb.add_argument("--address", required=True)
    jb.add_argument("--token-file")
    jb.set_defaults(overrides=[])
    command("train-ssl-head", _train_ssl_head, "train the self-supervised head of the reverse-attack purifier",
            "[--config FILE] [--out FILE] [key=value ...]")
    tc = command("train-classifier", _train_classifier, "fine-tune a classifier on a purifier's outputs (purifier-aware)",
                 "--on-purified [--config FILE] [--out FILE] [key=value ...]")
    tc.add_argument("--on-purified", action="store_true", help="fine-tune on purified training images")
    tt = command("train-theta", _train_theta, "learn a landscape theta: Z -> X for an inversion task",
                 f"--task TASK {config}")
    tt.add_argument("--task", required=True)
    iv = command("invert", _invert, "invert held-out targets in X and in the learned Z at every budget K",
                 f"--task TASK {config}")
    iv.add_argument("--task", required=True)
    iv.add_argument("--keypoints", metavar="FILE",
                    help="pose-cmu only: reconstruct 3D joints from a .npz/.json of 2D keypoints (see README)")
    command("train-pose-generator", _train_pose_generator,
            "train the pose VAE (rotations + forward kinematics) on CMU mocap", config)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    # key=value overrides may come before or after options; anything else is an error.
    bad = [r for r in rest if r.startswith("-") or "=" not in r]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)} (config overrides are written key=value)")
    args.overrides = rest
    from landscape.errors import LandscapeError

    try:
        return args.func(args)
    except LandscapeError as exc:
        print(f"landscape {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
