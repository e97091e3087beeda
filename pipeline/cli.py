"""``python -m pipeline <command>``: run one stage, or all of them in order with ``run``.

Global options (before or after the command): ``--config FILE``, ``--run-dir DIR``,
repeatable ``--set dotted.key=value``, ``--debug``. Stage-specific options follow the
command. Every ``PipelineError`` ends as one line ``error: <message>`` with the error's
exit code (2 for usage, config and missing-file errors); ``--debug`` shows the traceback.
This module imports neither TensorFlow nor Beam, so ``--help`` answers at once.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from core.errors import ConfigError, PipelineError
from pipeline.stages import STAGES, stages_for_run
from pipeline.stages.base import run_order

DEFAULT_CONFIG = os.path.join("configs", "default.yaml")

DESCRIPTION = """\
Multi-task ranking pipeline: synthetic or your own impression logs -> Beam + TF Transform
preprocessing -> multi-task teacher with self-auxiliary towers -> distilled student ->
SavedModel for TF Serving (validated, published) -> batch predictions / serving.

Each stage reads what the previous one wrote in the run directory, so any stage can be
re-run alone. `run` executes: generate (synthetic data only), preprocess, train, evaluate,
distill (if enabled), export, predict."""

EPILOG = """\
examples:
  python -m pipeline run                                 # everything, default synthetic data
  python -m pipeline run --config configs/census_income.yaml --run-dir runs/census
  python -m pipeline train --set training.epochs=3 --set model.backbone=mmoe
  python -m pipeline serve --run-dir runs/default        # REST :8501, gRPC :8500
"""


class _ArgumentParser(argparse.ArgumentParser):
    """argparse, but usage errors are ConfigErrors: one line, exit code 2."""

    def error(self, message):
        raise ConfigError(message)


def _common(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """Options accepted before and after the command. After the command they default to
    SUPPRESS so they do not overwrite a value given before it."""
    d = argparse.SUPPRESS if suppress else None
    parser.add_argument("--config", metavar="FILE", default=d if suppress else DEFAULT_CONFIG,
                        help=f"YAML config (default: {DEFAULT_CONFIG})")
    parser.add_argument("--run-dir", metavar="DIR", default=d,
                        help="run directory every stage reads from and writes to (default: runs/<config name>)")
    parser.add_argument("--set", metavar="KEY=VALUE", action="append", dest="overrides",
                        default=d if suppress else [],
                        help="override a config value, e.g. --set training.epochs=3 (repeatable; value read as YAML)")
    parser.add_argument("--debug", action="store_true", default=d if suppress else False,
                        help="show tracebacks and debug logs")


def build_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(prog="python -m pipeline", description=DESCRIPTION, epilog=EPILOG,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_ArgumentParser)
    sub.required = True

    def add(name, help_text):
        p = sub.add_parser(name, help=help_text, description=help_text)
        _common(p, suppress=True)
        return p

    add("run", "run every stage in order: " + ", ".join(run_order()))
    for name in STAGES.names():
        entry = STAGES.get(name)
        p = add(name, entry.help)
        if entry.add_arguments is not None:
            entry.add_arguments(p)
    return parser


def _apply_cli_overrides(args: argparse.Namespace) -> list[str]:
    overrides = list(args.overrides or [])
    if getattr(args, "runner", None):
        overrides.append(f"preprocess.beam.runner={args.runner}")
    if getattr(args, "num_workers", None) is not None:
        if args.num_workers < 0:
            raise ConfigError(f"--num-workers: expected a value >= 0, got {args.num_workers}")
        overrides.append(f"preprocess.beam.direct_num_workers={args.num_workers}")
    return overrides


def _setup_logging(debug: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    for noisy in ("absl", "tensorflow", "apache_beam", "h5py", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if debug else logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
        _setup_logging(args.debug)
        return _dispatch(args)
    except PipelineError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    import yaml

    from core.config import config_to_dict, load_config
    from core.run_dir import RunDir, Summary
    from pipeline.stages import run_stage

    from models import backbones, distillation_losses  # noqa: F401  (register model.backbone and distill.mode)

    cfg = load_config(args.config, _apply_cli_overrides(args))
    if getattr(args, "beam_arg", None):
        cfg.preprocess.beam.extra_args = list(cfg.preprocess.beam.extra_args) + list(args.beam_arg)
    run_dir = RunDir(args.run_dir or os.path.join("runs", cfg.name))
    os.makedirs(run_dir.root, exist_ok=True)
    tmp = f"{run_dir.config_file}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        yaml.safe_dump(config_to_dict(cfg), f, sort_keys=False)
    os.replace(tmp, run_dir.config_file)
    Summary(run_dir).update(lambda data: data.__setitem__("config", config_to_dict(cfg)))

    names = stages_for_run(cfg) if args.command == "run" else [args.command]
    for i, name in enumerate(names, 1):
        if len(names) > 1:
            print(f"[{i}/{len(names)}] {name}: {STAGES.help(name)}", flush=True)
        run_stage(name, cfg, run_dir, args)
    print(f"summary: {run_dir.summary_file}\nreport:  {run_dir.report_file}", flush=True)
    return 0
