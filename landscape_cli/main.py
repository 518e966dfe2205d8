"""``landscape``: one entry point, a subcommand per job.

    landscape eval [--config FILE] [--out DIR] [key=value ...]
    landscape submit --address http://HEAD:8265 [--config FILE] [--out DIR] [--wait] [key=value ...]
    landscape jobs {status,logs,stop} JOB --address http://HEAD:8265
    landscape report DIR [DIR ...] [--out DIR]
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

from landscape.config import ConfigError, dump_config, load_config
from landscape.io import atomic_write, atomic_write_text

from .defaults import EVAL_DEFAULTS, OPEN_SECTIONS


def _eval(args) -> int:
    from defense.evaluate import evaluate
    from defense.results import format_table, write_results

    from defense.shards import ShardStore

    from defense.evaluate import build_units

    cfg = load_config(EVAL_DEFAULTS, args.config, args.overrides, OPEN_SECTIONS)
    build_units(cfg)  # every check that needs no data, before anything is written or started
    out = Path(args.out or Path("results") / time.strftime("%Y%m%d-%H%M%S"))
    check_same_config(out, cfg)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", dump_config(cfg))
    progress = bool(cfg["eval"]["progress"]) and not args.quiet
    runner = None
    if cfg["ray"]["num_workers"] != 0:
        from ray_jobs.runner import RayRunner

        runner = RayRunner(cfg["ray"])
    try:
        results, per_image = evaluate(cfg, progress=progress, store=ShardStore(out), runner=runner)
    finally:
        if runner is not None:
            runner.close()
    path = write_results(out, results, per_image, cfg)
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
    import json

    from defense.data import load_cifar10, select_subset
    from defense.evaluate import pick_device
    from defense.generator import train_gan

    from .defaults import GENERATOR_DEFAULTS

    cfg = _load(GENERATOR_DEFAULTS, args)
    d = cfg["data"]
    data = select_subset(load_cifar10(d["root"], d["split"], bool(d["download"])), d["n_examples"], cfg["seed"],
                         d["selection"])
    out = Path(args.out or "results/generator")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", dump_config(cfg))
    t = cfg["train"]
    summary = train_gan(data.images, out, epochs=int(t["epochs"]), batch_size=int(t["batch_size"]),
                        latent_dim=int(cfg["generator"]["latent_dim"]), width=int(cfg["generator"]["width"]),
                        lr=float(t["lr"]), seed=int(cfg["seed"]), device=str(pick_device(cfg["device"])),
                        progress=bool(t["progress"]) and not args.quiet)
    summary["data"] = data.source
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    print(f"generator: {out / 'generator.pt'} ({summary['epochs']} epochs, {summary['elapsed_s'] / 60:.1f} min)")
    return 0


def _train_ssl_head(args) -> int:
    import json

    import torch
    import torchattacks

    from defense.classifiers import build_classifier
    from defense.data import load_cifar10, select_subset
    from defense.ssl_head import SelfSupervised, save_head, train_head

    from .defaults import SSL_DEFAULTS

    cfg = _load(SSL_DEFAULTS, args, ("model.kwargs",))
    d, t = cfg["data"], cfg["train"]
    model = build_classifier(cfg["model"], download=bool(d["download"]))
    train = select_subset(load_cifar10(d["root"], "train", bool(d["download"])), d["n_examples"], cfg["seed"])
    start = time.perf_counter()
    head, history = train_head(model, train.images, int(t["epochs"]), int(t["batch_size"]), float(t["lr"]),
                               float(t["temperature"]), int(t["hidden"]), int(t["out_dim"]), int(cfg["seed"]),
                               progress=bool(t["progress"]) and not args.quiet, bank_size=int(t["bank_size"]))
    seconds = time.perf_counter() - start
    # The figure that matters: attacks raise the self-supervised loss of held-out images.
    test = select_subset(load_cifar10(d["root"], "test", bool(d["download"])), d["n_heldout"], cfg["seed"])
    ssl = SelfSupervised(model, head, float(t["temperature"]))
    adv = torchattacks.PGD(model, eps=8 / 255, alpha=2 / 255, steps=10)(test.images, test.labels)
    torch.manual_seed(0)
    with torch.no_grad():
        clean_loss, adv_loss = float(ssl(test.images).mean()), float(ssl(adv).mean())
    summary = {"train_seconds": seconds, "history": history, "heldout_clean_ssl_loss": clean_loss,
               "heldout_pgd_ssl_loss": adv_loss, "n_heldout": len(test), "data": train.source,
               "classifier": cfg["model"]["name"]}
    out = Path(args.out or "results/ssl-head/ssl-head.pt")
    save_head(out, head, {"temperature": float(t["temperature"]), "classifier": str(cfg["model"]["name"])})
    atomic_write_text(out.with_suffix(".json"), json.dumps(summary, indent=2) + "\n")
    atomic_write_text(out.with_suffix(".yaml"), dump_config(cfg))
    print(f"ssl head: {out} ({seconds / 60:.1f} min); held-out SSL loss clean {clean_loss:.3f}, PGD-10 {adv_loss:.3f}")
    return 0


def _train_classifier(args) -> int:
    import json

    import torch

    from defense.classifiers import build_classifier
    from defense.data import load_cifar10, select_subset
    from defense.defenses import DefenseFactory
    from defense.finetune import accuracy, finetune, purify_all

    from .defaults import CLASSIFIER_DEFAULTS

    if not args.on_purified:
        raise ConfigError("train-classifier only fine-tunes on purified images for now: pass --on-purified")
    cfg = _load(CLASSIFIER_DEFAULTS, args, ("model.kwargs", "defense.generator.kwargs"))
    d, p, t = cfg["data"], cfg["purifier"], cfg["train"]
    show = bool(t["progress"]) and not args.quiet
    model = build_classifier(cfg["model"], download=bool(d["download"]))
    dcfg = dict(cfg["defense"], restarts=int(p["restarts"]))
    purifier = DefenseFactory(dcfg, torch.device("cpu"), model).purifier(p["defense"], int(p["budget"]))
    train = select_subset(load_cifar10(d["root"], "train", bool(d["download"])), d["n_train"], cfg["seed"])
    test = select_subset(load_cifar10(d["root"], "test", bool(d["download"])), d["n_heldout"], cfg["seed"])
    t0 = time.perf_counter()
    purified_train = purify_all(purifier, train.images, seed=cfg["seed"], progress=show)
    purify_seconds = time.perf_counter() - t0
    purified_test = purify_all(purifier, test.images, seed=cfg["seed"] + 1, progress=show)
    before = {"clean": accuracy(model, test.images, test.labels), "purified": accuracy(model, purified_test, test.labels)}
    fit = finetune(model, purified_train, train.labels, int(t["epochs"]), float(t["lr"]), int(t["batch_size"]),
                   int(cfg["seed"]), progress=show)
    after = {"clean": accuracy(model, test.images, test.labels), "purified": accuracy(model, purified_test, test.labels)}
    out = Path(args.out or f"results/classifier-{p['defense']}/classifier.pt")
    inner = getattr(model, "model", model)
    atomic_write(out, lambda f: torch.save({"state_dict": inner.state_dict(), "config": cfg}, f))
    summary = {"before": before, "after": after, "purify_train_seconds": purify_seconds, **fit,
               "n_train": len(train), "n_heldout": len(test), "data": train.source}
    atomic_write_text(out.with_suffix(".json"), json.dumps(summary, indent=2) + "\n")
    print(f"classifier: {out}; accuracy on purified held-out images {100 * before['purified']:.1f}% -> "
          f"{100 * after['purified']:.1f}% (clean {100 * before['clean']:.1f}% -> {100 * after['clean']:.1f}%)")
    return 0


def _task_config(args, section_defaults: dict) -> dict:
    from tasks.registry import TASK_DEFAULTS, TaskError

    if args.task not in TASK_DEFAULTS:
        raise TaskError(f"unknown task {args.task!r}; valid: {', '.join(TASK_DEFAULTS)}")
    if args.task not in section_defaults:
        raise TaskError(f"`landscape {args.command}` has no settings for task {args.task!r}; it supports: "
                        f"{', '.join(section_defaults)}")
    from landscape.config import merge

    defaults = merge({"seed": 0, "device": "cpu", "threads": 0, "progress": True}, TASK_DEFAULTS[args.task])
    defaults = merge(defaults, section_defaults.get(args.task, {}))
    cfg = _load(defaults, args)
    return cfg


def _train_theta(args) -> int:
    from landscape.trainer import ThetaTrainer, TrainConfig
    from tasks.registry import build_task

    from .defaults import THETA_DEFAULTS

    cfg = _task_config(args, THETA_DEFAULTS)
    out = Path(args.out or f"results/theta-{args.task}")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", dump_config(cfg))
    problem = build_task(args.task, cfg)
    tcfg = TrainConfig.from_dict({**cfg["theta"], "seed": cfg["seed"], "extra": {"task": args.task}})
    trainer = ThetaTrainer(problem, tcfg, device=cfg["device"])
    state = out / "state.pt"
    if state.is_file():
        trainer.resume(state)
        print(f"resuming from {state} at iteration {trainer.iteration}")
    trainer.train(state, progress=bool(cfg["progress"]) and not args.quiet)
    trainer.save(out / "theta.pt", with_buffer=False)
    print(f"theta: {out / 'theta.pt'} ({trainer.iteration} iterations, {trainer.elapsed / 60:.1f} min)")
    return 0


def _invert(args) -> int:
    from tasks.invert import run_invert

    from .defaults import INVERT_DEFAULTS

    cfg = _task_config(args, INVERT_DEFAULTS)
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
    from tasks.pose_io import reconstruct_file

    src = Path(args.keypoints)
    out = Path(args.out or Path("results") / f"pose-keypoints-{src.stem}")
    result = reconstruct_file(src, cfg, out, progress=not args.quiet)
    print(f"{result['frames']} frame(s), {result['space']} space: final 2D error {result['err2d_mean']:.2f} px "
          f"(mean over frames; max {result['err2d_max']:.2f} px)")
    print(f"wrote {result['path']}")
    return 0


def _train_pose_generator(args) -> int:
    from tasks.pose_generator import train_from_config

    from .defaults import POSE_GENERATOR_DEFAULTS

    cfg = _load(POSE_GENERATOR_DEFAULTS, args)
    out = Path(args.out or "results/pose-generator")
    s = train_from_config(cfg, out, progress=bool(cfg["train"]["progress"]) and not args.quiet)
    rec = s["test_reconstruction_mpjpe_mm"]
    print(f"pose generator: {out / 'pose-generator.pt'} ({s['iterations']} iterations, {s['train_seconds'] / 60:.1f} min); "
          f"held-out test-subject reconstruction MPJPE {rec['mean']:.1f} mm [{rec['ci_low']:.1f}, {rec['ci_high']:.1f}]")
    return 0


def _report(args) -> int:
    from defense.report import write_report

    out = Path(args.out or (args.dirs[0] if len(args.dirs) == 1 else "results/report"))
    path, checks = write_report(args.dirs, out)
    summary = checks[checks.get("summary", False) == True]  # noqa: E712
    for _, r in summary.iterrows():
        print(f"[{r['status']:>7}] {r['check']}: {r['detail']}")
    print(f"wrote {path} and {out / 'robust_accuracy_vs_budget.png'}")
    return 0


def _submit(args) -> int:
    from ray_jobs.submit import submit

    cfg = load_config(EVAL_DEFAULTS, args.config, args.overrides, OPEN_SECTIONS)
    if cfg["ray"]["address"] in (None, ""):
        cfg["ray"]["address"] = "auto"  # the job's driver runs on the cluster: join it
    out = args.out or str(Path("results").resolve() / time.strftime("%Y%m%d-%H%M%S"))
    _, status = submit(cfg, args.address, out, wait=args.wait, pip=args.pip, token_file=args.token_file,
                       log=lambda *a, **k: print(*a, **k, flush=True))
    if status is not None:
        print(f"job finished: {status}; results in {out}")
        return 0 if status == "SUCCEEDED" else 1
    return 0


def _jobs(args) -> int:
    from ray_jobs.submit import job_command

    job_command(args.action, args.job_id, args.address, args.token_file,
                log=lambda *a, **k: print(*a, **k, flush=True))
    return 0


def _add_common(p) -> None:
    p.add_argument("--config", help="YAML config")
    p.add_argument("--out", help="output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def check_same_config(out: Path, cfg: dict) -> None:
    """A folder holds one experiment: resuming with a different config is refused."""
    import yaml

    from .defaults import EXECUTION_KEYS

    saved_path = out / "config.yaml"
    if not saved_path.is_file():
        return
    saved = yaml.safe_load(saved_path.read_text()) or {}

    def flat(d, prefix=""):
        items = {}
        for k, v in d.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict) and v:
                items.update(flat(v, key + "."))
            else:
                items[key] = v
        return items

    a, b = flat(saved), flat(cfg)
    ignore = lambda k: any(k == e or k.startswith(e + ".") for e in EXECUTION_KEYS)  # noqa: E731
    differ = sorted(k for k in set(a) | set(b) if not ignore(k) and a.get(k) != b.get(k))
    if differ:
        shown = ", ".join(f"{k} ({a.get(k)!r} there, {b.get(k)!r} now)" for k in differ[:5])
        raise ConfigError(f"{out} holds a run with a different config: {shown}; use another --out to start a new run")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="landscape", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ev = sub.add_parser("eval", help="clean and robust accuracy of a classifier (and defenses) under attacks",
                        usage="landscape eval [--config FILE] [--out DIR] [--quiet] [key=value ...]")
    ev.add_argument("--config", help="YAML config (see configs/default.yaml)")
    ev.add_argument("--out", help="output folder (default results/<timestamp>)")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    ev.set_defaults(func=_eval)
    tg = sub.add_parser("train-generator", help="train the CIFAR-10 DCGAN used by the generator purifier",
                        usage="landscape train-generator [--config FILE] [--out DIR] [key=value ...]")
    _add_common(tg)
    tg.set_defaults(func=_train_generator)
    rp = sub.add_parser("report", help="tables, robust accuracy vs budget plot and sanity checks of eval runs",
                        usage="landscape report DIR [DIR ...] [--out DIR]")
    rp.add_argument("dirs", nargs="+", help="folders written by landscape eval")
    rp.add_argument("--out", help="where report.md goes (default: the single DIR, else results/report)")
    rp.set_defaults(func=_report, overrides=[])
    sb = sub.add_parser("submit", help="submit landscape eval to a Ray cluster (Ray Jobs API)",
                        usage="landscape submit --address http://HEAD:8265 [--config FILE] [--out DIR] [--wait] "
                              "[key=value ...]")
    sb.add_argument("--address", required=True, help="the cluster's dashboard, e.g. http://HEAD:8265")
    sb.add_argument("--config", help="YAML config")
    sb.add_argument("--out", help="results folder the cluster can write (a shared filesystem); default ./results/<time>")
    sb.add_argument("--wait", action="store_true", help="stream the job's logs and exit with its status")
    sb.add_argument("--pip", action="store_true", help="install the package's requirements in the job's runtime_env")
    sb.add_argument("--token-file", help="file holding the cluster's auth token (else RAY_AUTH_TOKEN or ~/.ray/auth_token)")
    sb.set_defaults(func=_submit)
    jb = sub.add_parser("jobs", help="status, logs or stop of a submitted job",
                        usage="landscape jobs {status,logs,stop} JOB --address http://HEAD:8265")
    jb.add_argument("action", choices=["status", "logs", "stop"])
    jb.add_argument("job_id")
    jb.add_argument("--address", required=True)
    jb.add_argument("--token-file")
    jb.set_defaults(func=_jobs, overrides=[])
    ts = sub.add_parser("train-ssl-head", help="train the self-supervised head of the reverse-attack purifier",
                        usage="landscape train-ssl-head [--config FILE] [--out FILE] [key=value ...]")
    _add_common(ts)
    ts.set_defaults(func=_train_ssl_head)
    tc = sub.add_parser("train-classifier", help="fine-tune a classifier on a purifier's outputs (purifier-aware)",
                        usage="landscape train-classifier --on-purified [--config FILE] [--out FILE] [key=value ...]")
    tc.add_argument("--on-purified", action="store_true", help="fine-tune on purified training images")
    _add_common(tc)
    tc.set_defaults(func=_train_classifier)
    tt = sub.add_parser("train-theta", help="learn a landscape theta: Z -> X for an inversion task",
                        usage="landscape train-theta --task TASK [--config FILE] [--out DIR] [key=value ...]")
    tt.add_argument("--task", required=True)
    _add_common(tt)
    tt.set_defaults(func=_train_theta)
    iv = sub.add_parser("invert", help="invert held-out targets in X and in the learned Z at every budget K",
                        usage="landscape invert --task TASK [--config FILE] [--out DIR] [key=value ...]")
    iv.add_argument("--task", required=True)
    iv.add_argument("--keypoints", metavar="FILE",
                    help="pose-cmu only: reconstruct 3D joints from a .npz/.json of 2D keypoints (see README)")
    _add_common(iv)
    iv.set_defaults(func=_invert)
    tp = sub.add_parser("train-pose-generator", help="train the pose VAE (rotations + forward kinematics) on CMU mocap",
                        usage="landscape train-pose-generator [--config FILE] [--out DIR] [key=value ...]")
    _add_common(tp)
    tp.set_defaults(func=_train_pose_generator)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    # key=value overrides may come before or after options; anything else is an error.
    bad = [r for r in rest if r.startswith("-") or "=" not in r]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)} (config overrides are written key=value)")
    args.overrides = rest
    from attacks.base import AttackError
    from defense.classifiers import ModelError
    from defense.data import DataError
    from defense.evaluate import EvalError
    from landscape.descent import DescentError
    from landscape.problem import ProblemError
    from landscape.trainer import CheckpointError
    from tasks.registry import TaskError
    from defense.report import ReportError
    from defense.defenses import DefenseError
    from defense.purifiers import PurifierError
    from ray_jobs.submit import SubmitError
    from tasks.mocap import MocapError
    from tasks.pose_generator import GeneratorError
    from tasks.pose_io import KeypointError

    try:
        return args.func(args)
    except (ConfigError, AttackError, ModelError, DataError, EvalError, TaskError, CheckpointError, ProblemError,
            DescentError, FileNotFoundError, ReportError, DefenseError, PurifierError,
            SubmitError, MocapError, GeneratorError, KeypointError) as exc:
        print(f"landscape {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
