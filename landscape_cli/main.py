"""``landscape``: one entry point, a subcommand per job.

    landscape eval [--config FILE] [--out DIR] [key=value ...]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from landscape.config import ConfigError, load_config

from .defaults import EVAL_DEFAULTS, OPEN_SECTIONS


def _eval(args) -> int:
    from defense.evaluate import evaluate
    from defense.results import format_table, write_results

    cfg = load_config(EVAL_DEFAULTS, args.config, args.overrides, OPEN_SECTIONS)
    out = Path(args.out or Path("results") / time.strftime("%Y%m%d-%H%M%S"))
    results, per_image = evaluate(cfg, progress=bool(cfg["eval"]["progress"]) and not args.quiet)
    path = write_results(out, results, per_image, cfg)
    print(format_table(results))
    if str(results["data"].iloc[0]).startswith("imagefolder:") and "jpeg" in str(results["data"].iloc[0]).lower():
        print("note: measured on the JPEG copy of CIFAR-10 (quality 75), not the original test set")
    print(f"wrote {path} and {path.with_suffix('.parquet')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="landscape", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ev = sub.add_parser("eval", help="clean and robust accuracy of a classifier (and defenses) under attacks",
                        usage="landscape eval [--config FILE] [--out DIR] [--quiet] [key=value ...]")
    ev.add_argument("--config", help="YAML config (see configs/default.yaml)")
    ev.add_argument("--out", help="output folder (default results/<timestamp>)")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    ev.set_defaults(func=_eval)
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

    try:
        return args.func(args)
    except (ConfigError, AttackError, ModelError, DataError, EvalError) as exc:
        print(f"landscape {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
