"""``python -m pipeline <command>``: run one stage, or all of them in order with ``run``.

Global options (before or after the command): ``--config FILE``, ``--run-dir DIR``,
repeatable ``--set dotted.key=value``, ``--force``, ``--debug``. Stage-specific options follow
the command. Every ``PipelineError`` (and an ``OSError`` such as a full disk) ends as one line
``error: <message>`` with the error's exit code (``core/errors.py``: 2 for usage, config and
missing or stale inputs, 7 for disk/IO errors); ``--debug`` shows the traceback.

The config (``resolve_config``): a run directory records the config its outputs were made
with in ``config.yaml``. On a run directory that has one, a command without ``--config``
uses it, with ``--set`` applied on top (and recorded); an explicit ``--config`` must agree
with it (after the same ``--set``), else a ``ConfigError`` says how to proceed (drop
``--config``, a new ``--run-dir``, or ``--force`` to replace the recorded config). A new run
directory records ``--config`` (default ``configs/default.yaml``) plus ``--set``.
This module imports neither TensorFlow nor Beam, so ``--help`` answers at once.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from core import fs
from core.errors import ConfigError, PipelineError, storage_error
from pipeline.stages import STAGES, stages_for_run
from pipeline.stages.base import run_order

DEFAULT_CONFIG = os.path.join("configs", "default.yaml")

log = logging.getLogger("pipeline.cli")

DESCRIPTION = """\
Multi-task ranking pipeline: synthetic or your own impression logs -> Beam + TF Transform
preprocessing -> multi-task teacher with self-auxiliary towers -> distilled student ->
SavedModel for TF Serving (validated, published) -> batch predictions / serving.

Each stage reads what the previous one wrote in the run directory, so any stage can be
re-run alone. `run` executes: generate (synthetic data only), preprocess, train, distill
(if enabled), evaluate, export, predict."""

EPILOG = """\
examples:
  python -m pipeline run                                 # everything, default synthetic data
  python -m pipeline run --config configs/census_income.yaml --run-dir runs/census
  python -m pipeline train --run-dir runs/census --set model.backbone=mmoe   # the run's recorded config + --set
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
    parser.add_argument("--config", metavar="FILE", default=d,
                        help="YAML config (default: the run directory's recorded config.yaml, "
                             f"or {DEFAULT_CONFIG} for a new run directory)")
    parser.add_argument("--run-dir", metavar="DIR", default=d,
                        help="run directory every stage reads from and writes to (default: runs/<config name>)")
    parser.add_argument("--set", metavar="KEY=VALUE", action="append", dest="overrides",
                        default=d if suppress else [],
                        help="override a config value, e.g. --set training.epochs=3 (repeatable; value read as YAML)")
    parser.add_argument("--force", action="store_true", default=d if suppress else False,
                        help="with --config on a run directory recorded with a different config: "
                             "replace the recorded config (outputs already there were made with the old one)")
    parser.add_argument("--debug", action="store_true", default=d if suppress else False,
                        help="show tracebacks and debug logs")
    parser.add_argument("--verbose", action="store_true", default=d if suppress else False,
                        help="also show TensorFlow's and Beam's own info logs and their start-up lines")
    parser.add_argument("--quiet", action="store_true", default=d if suppress else False,
                        help="only warnings, errors and each stage's summary line")


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


def _setup_logging(debug: bool, verbose: bool = False, quiet: bool = False) -> None:
    """The project's loggers at INFO (DEBUG with ``--debug``, WARNING with ``--quiet``); the
    libraries' at WARNING unless ``--verbose`` or ``--debug``."""
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr)
    logging.getLogger().setLevel(level)
    libraries = logging.DEBUG if debug else logging.INFO if verbose and not quiet else logging.WARNING
    for noisy in ("absl", "tensorflow", "apache_beam", "h5py", "matplotlib"):
        logging.getLogger(noisy).setLevel(libraries)
    if not (debug or verbose):
        logging.getLogger("tensorflow").addFilter(_not_retracing)


def _not_retracing(record: logging.LogRecord) -> bool:
    """Drops TensorFlow's "N out of the last M calls ... triggered tf.function retracing": distill
    trains and scores several models one after the other, and the notice names a different
    function object (one per model) each time it appears in a run; ``--verbose`` shows it."""
    return "triggered tf.function retracing" not in record.getMessage()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
        _setup_logging(args.debug, getattr(args, "verbose", False), getattr(args, "quiet", False))
        return _dispatch(args)
    except PipelineError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:  # outside a stage (run_stage converts those), e.g. writing config.yaml
        if debug:
            raise
        error = storage_error(e)
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001  (a bug, not a user error: one line, the traceback with --debug)
        if debug:
            raise
        first = next((line.strip() for line in str(e).splitlines() if line.strip()), "")
        print(f"error: internal error ({type(e).__name__}{': ' + first if first else ''}); "
              f"re-run with --debug for the traceback and report it", file=sys.stderr)
        return 1


def _config_name(path: str, overrides: list[str]) -> str:
    """``name`` of the config at ``path`` after ``overrides`` (it names the default run directory)."""
    from core.config import load_config, parse_override

    name = load_config(path).name
    for text in overrides:
        key, value = parse_override(text)
        if key == ["name"]:
            name = str(value)
    return name


def _with_beam_args(cfg, args: argparse.Namespace):
    """``--beam-arg`` values appended to ``preprocess.beam.extra_args`` (once each)."""
    extra = list(cfg.preprocess.beam.extra_args)
    cfg.preprocess.beam.extra_args = extra + [a for a in (getattr(args, "beam_arg", None) or []) if a not in extra]
    return cfg


def _flatten(d, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _differences(recorded: dict, new: dict, limit: int = 5) -> list[str]:
    a, b = _flatten(recorded), _flatten(new)
    keys = [k for k in list(a) + [k for k in b if k not in a] if a.get(k, "<unset>") != b.get(k, "<unset>")]
    def short(v) -> str:
        text = repr(v)
        return text if len(text) <= 60 else text[:57] + "..."

    shown = [f"{k}: recorded {short(a.get(k, '<unset>'))}, now {short(b.get(k, '<unset>'))}" for k in keys[:limit]]
    return shown + ([f"... {len(keys) - limit} more"] if len(keys) > limit else [])


def resolve_config(args: argparse.Namespace):
    """(config, RunDir) of a command: the run directory's recorded ``config.yaml`` when it has
    one and ``--config`` is not given; ``--config`` (default ``configs/default.yaml``) for a new
    run directory; ``--set`` on top of either. An explicit ``--config`` that differs from the
    recorded config (both after ``--set``) is a ``ConfigError`` unless ``--force``."""
    from core.config import config_to_dict, load_config
    from core.run_dir import RunDir

    from models import backbones, distillation_losses  # noqa: F401  (register model.backbone and distill.mode)

    overrides = _apply_cli_overrides(args)
    path = args.config or DEFAULT_CONFIG
    run_dir = RunDir(args.run_dir or os.path.join("runs", _config_name(path, overrides)))
    recorded_file = run_dir.config_file
    if not fs.exists(recorded_file):
        return _with_beam_args(load_config(path, overrides), args), run_dir
    try:
        load_config(recorded_file)
        recorded_error = None
    except ConfigError as e:
        recorded_error = e
    if args.config is None:
        if recorded_error is not None:
            raise ConfigError(f"{recorded_file} (this run directory's recorded config): {recorded_error}; fix it, "
                              "or pass --config FILE --force to replace it") from None
        log.info("config: %s (recorded by this run directory)%s", recorded_file,
                 f" with {len(overrides)} override(s)" if overrides else "")
        return _with_beam_args(load_config(recorded_file, overrides), args), run_dir
    cfg = _with_beam_args(load_config(path, overrides), args)
    if recorded_error is not None:
        diffs = [f"the recorded config is invalid ({recorded_error})"]
    else:
        diffs = _differences(config_to_dict(_with_beam_args(load_config(recorded_file, overrides), args)),
                             config_to_dict(cfg))
    if diffs and not getattr(args, "force", False):
        raise ConfigError(
            f"--config {path} differs from the config this run directory was made with ({recorded_file}): "
            f"{'; '.join(diffs)}. To continue this run, drop --config (the recorded config is the default; "
            "change a value with --set KEY=VALUE, which is recorded); to start a new run, pass a new --run-dir; "
            "to replace the recorded config anyway, add --force")
    if diffs:
        log.warning("config: --force: replacing %s with %s (%s)", recorded_file, path, "; ".join(diffs))
    return cfg, run_dir


def record_config(cfg, run_dir) -> bool:
    """Writes ``config.yaml`` and summary.json's ``config`` when they differ from ``cfg``;
    True when something was written."""
    import yaml

    from core.config import config_to_dict
    from core.run_dir import Summary, write_text_atomic

    data = config_to_dict(cfg)
    fs.makedirs(run_dir.root)
    changed = False
    recorded = None
    if fs.exists(run_dir.config_file):
        try:
            recorded = yaml.safe_load(fs.read_text(run_dir.config_file))
        except yaml.YAMLError:  # an invalid recorded config replaced with --force
            recorded = None
    if recorded != data:
        write_text_atomic(run_dir.config_file, yaml.safe_dump(data, sort_keys=False))
        changed = True
    summary = Summary(run_dir)
    if summary.load().get("config") != data:
        summary.update(lambda d: d.__setitem__("config", data))
        changed = True
    return changed


def _dispatch(args: argparse.Namespace) -> int:
    from pipeline.stages import run_stage

    cfg, run_dir = resolve_config(args)
    record_config(cfg, run_dir)

    names = stages_for_run(cfg) if args.command == "run" else [args.command]
    next_steps = [] if len(names) > 1 else None
    for i, name in enumerate(names, 1):
        if len(names) > 1:
            print(f"[{i}/{len(names)}] {name}: {STAGES.help(name)}", flush=True)
        if next_steps is None:
            run_stage(name, cfg, run_dir, args)
        else:
            run_stage(name, cfg, run_dir, args, next_steps=next_steps)
    if len(names) > 1:
        print(stage_table(run_dir, names), flush=True)
        if next_steps:
            print("\n".join(next_steps), flush=True)
    print(f"summary: {run_dir.summary_file}\nreport:  {run_dir.report_file}", flush=True)
    return 0


def stage_table(run_dir, names: list[str]) -> str:
    """The stages of a ``run`` as a plain-text table: status, wall time and rows of each."""
    from core.run_dir import Summary

    stages = Summary(run_dir).load()["stages"]
    rows = [("stage", "status", "wall", "rows")]
    for name in names:
        e = stages.get(name) or {}
        wall = e.get("wall_seconds")
        rows.append((name, str(e.get("status", "-")), f"{wall:.1f} s" if isinstance(wall, (int, float)) else "-",
                     f"{e['rows']:,}" if isinstance(e.get("rows"), int) else "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     for r in rows)
