"""What a stage is: a registered name with its help, its own CLI flags and a ``run`` function
that returns a typed ``StageResult``; and ``run_stage``, which times it and records it in
``summary.json`` and the report.

A stage module (``pipeline/stages/<name>.py``) registers itself once::

    @stage("train", "train the multi-task teacher with self-auxiliary towers")
    def run(cfg, run_dir, opts) -> StageResult:
        ...

and imports TensorFlow and Beam only inside ``run``, so ``python -m pipeline --help`` (which
imports every stage module to list its flags) answers at once.

What ``run_stage`` guarantees for every stage:

* inputs: before it starts, each stage it reads from (the ``reads`` of its registration) whose outputs exist
  must have succeeded on its last attempt; else one ``InputError`` naming the stage to re-run
  (nothing is recorded for the refused stage);
* its own outputs are marked in-progress (``"status": "running"`` in summary.json) while it
  runs, and ``"ok"``/``"failed"`` after; a kill leaves ``"running"``, so later stages refuse
  the leftovers too;
* an ``OSError`` (disk full, permissions, ...) ends as a ``StorageError`` (exit code 7) naming
  the stage and the file, not a traceback.
"""
from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from core import fs
from core.config import PipelineConfig
from core.errors import InputError, PipelineError, find_os_error, storage_error
from core.registry import Registry
from core.run_dir import RunDir, Summary

log = logging.getLogger("pipeline")

STAGES = Registry("stage", "command")


@dataclass
class StageResult:
    """What a stage reports: the fields of its ``summary.json`` entry.

    Attributes:
      rows: records the stage processed.
      metrics: flat metrics of the stage (``summary.json`` and the report).
      artifacts: name -> path of what the stage wrote.
      models: model name -> task -> metric -> value (the report's model table).
      plots: PNG paths relative to the run directory.
      report: markdown section of the run report.
      message: its first line is the stage's summary line (what it did: rows, the key metric,
        where the output is); further lines say what to do next (printed after it).
      record: False when this process must not write the run's summary (a multi-worker
        training worker that is not the chief).
      extra: further fields recorded as they are (e.g. ``skipped`` of a reused output).
    """

    rows: Optional[int] = None
    metrics: dict = field(default_factory=dict)
    artifacts: dict = field(default_factory=dict)
    models: dict = field(default_factory=dict)
    plots: list = field(default_factory=list)
    report: str = ""
    message: str = ""
    record: bool = True
    extra: dict = field(default_factory=dict)

    def to_summary(self) -> dict:
        """The ``summary.json`` entry fields (``Summary.record_stage``)."""
        out = {"rows": self.rows, "metrics": self.metrics, "artifacts": self.artifacts, "models": self.models,
               "plots": self.plots, "report": self.report, **self.extra}
        return {k: v for k, v in out.items() if v is not None and v != {} and v != [] and v != ""}


@dataclass(frozen=True)
class Stage:
    """A registered stage.

    Attributes:
      name: the command (``python -m pipeline NAME``).
      help: one line for ``--help``.
      run: ``run(cfg, run_dir, opts) -> StageResult``.
      add_arguments: adds the stage's own flags to its sub-parser (None: none).
      in_run: part of ``python -m pipeline run``.
      reads: the stages whose outputs it reads (the start-time refusal of stale inputs and
        the report's staleness marks follow them).
    """

    name: str
    help: str
    run: Callable[[PipelineConfig, RunDir, argparse.Namespace], StageResult]
    add_arguments: Optional[Callable[[argparse.ArgumentParser], None]] = None
    in_run: bool = True
    reads: tuple = ()


def stage(name: str, help: str, *, arguments: Optional[Callable[[argparse.ArgumentParser], None]] = None,
          in_run: bool = True, reads: tuple = ()):
    """Decorator: registers the decorated ``run`` function as stage ``name`` in ``STAGES``."""

    def register(run):
        STAGES.add(name, Stage(name, help, run, arguments, in_run, tuple(reads)), help)
        return run

    return register


def add_beam_arguments(parser: argparse.ArgumentParser) -> None:
    """The Beam flags of the stages that run a Beam job (preprocess, distill, predict)."""
    g = parser.add_argument_group("Beam (overrides preprocess.beam in the config)")
    g.add_argument("--runner", help="Beam runner, e.g. DirectRunner, DataflowRunner, FlinkRunner, SparkRunner")
    g.add_argument("--num-workers", type=int, metavar="N",
                   help="DirectRunner worker processes (0: one per core)")
    g.add_argument("--beam-arg", action="append", default=[], metavar="ARG",
                   help="extra pipeline option passed to Beam as is, e.g. --beam-arg=--project=my-proj (repeatable)")


def run_order() -> list[str]:
    """The stages of ``python -m pipeline run``, in registration order."""
    return [n for n in STAGES.names() if STAGES.get(n).in_run]


def stages_for_run(cfg: PipelineConfig) -> list[str]:
    """The stages `run` executes for this config, in order."""
    order = run_order()
    if cfg.data.source != "synthetic":
        order.remove("generate")
    if not cfg.distill.enabled and "distill" in order:
        order.remove("distill")
    return order


def stage_inputs(name: str, cfg: PipelineConfig, opts) -> list[str]:
    """The producers of what stage ``name`` reads for this config and these options."""
    # export's published versions are never refused: a failed export publishes nothing and
    # leaves the earlier versions valid.
    inputs = [r for r in STAGES.get(name).reads if r != "export"]
    if "generate" in inputs and (cfg.data.source != "synthetic" or getattr(opts, "input", None)):
        inputs.remove("generate")  # reads data.path / --input, not the generated logs
    if name == "export" and (getattr(opts, "model", None) or cfg.export.serve_model) == "teacher":
        inputs.remove("distill")  # the teacher it exports does not come from distill
    return inputs


def check_inputs(name: str, cfg: PipelineConfig, run_dir: RunDir, opts) -> None:
    """``InputError`` when an output ``name`` reads is left by a producer whose last attempt
    failed or never finished: ``<stage>: cannot use <path>: the last `<producer>` attempt
    failed at ...; re-run `python -m pipeline <producer> --run-dir ...`, then `<stage>```."""
    for producer in stage_inputs(name, cfg, opts):
        present = [p for p in run_dir.stage_outputs(producer) if fs.exists(p)]
        problem = run_dir.stage_problem(producer) if present else None
        if problem:
            raise InputError(f"{name}: cannot use {present[0]}: {problem}, then `{name}`")


def _as_pipeline_error(name: str, run_dir: RunDir, error: BaseException) -> BaseException:
    """An ``OSError`` (or one wrapped by TensorFlow/Beam) as the stage's one-line ``StorageError``."""
    if isinstance(error, PipelineError) or not isinstance(error, Exception):
        return error
    os_error = find_os_error(error)
    return storage_error(os_error, name, run_dir.root) if os_error is not None else error


def _record_failure(summary: Summary, run_dir: RunDir, name: str, wall: float, error: BaseException) -> None:
    """Records the failed attempt; a failure to record it (the disk is full) only logs: the
    entry then stays "running", which later stages refuse as well."""
    from pipeline import report

    try:
        summary.record_stage(name, "failed", wall, {"error": f"{type(error).__name__}: {error}"})
        report.write_report(run_dir)
    except Exception as e:  # noqa: BLE001  (the original error is what the user must see)
        log.warning("stage %s: could not record the failure in %s (%s: %s)", name, summary.file, type(e).__name__, e)


def _is_chief() -> bool:
    from models import multi_worker

    return multi_worker.is_chief()


def run_stage(name: str, cfg: PipelineConfig, run_dir: RunDir, opts: argparse.Namespace,
              next_steps: list | None = None) -> StageResult:
    """Checks the stage's inputs, marks it running, runs it, records it in summary.json and
    re-renders the report (see the module docstring for the guarantees); ends with the stage's
    summary line (``summary_line``). The lines after the first of the stage's message (what to
    do next, e.g. export's serve and query commands) are printed after it, or collected in
    ``next_steps`` for the end of ``run``."""
    from pipeline import report

    entry = STAGES.get(name)
    summary = Summary(run_dir)
    check_inputs(name, cfg, run_dir, opts)
    log.info("stage %s: started", name)
    start = time.monotonic()
    try:
        if _is_chief():  # multi-worker training: only the chief records (a late worker must not mark it running)
            summary.record_start(name)
        result = entry.run(cfg, run_dir, opts)
        if not isinstance(result, StageResult):
            raise TypeError(f"stage {name!r} returned {type(result).__name__}, expected StageResult")
    except BaseException as e:
        error = _as_pipeline_error(name, run_dir, e)
        if _is_chief():  # summary.json has one writer: another worker's failure is on its own console
            _record_failure(summary, run_dir, name, time.monotonic() - start, error)
        if error is not e:
            raise error from e
        raise
    wall = time.monotonic() - start
    if result.record:
        try:
            summary.record_stage(name, "ok", wall, result.to_summary())
            report.write_report(run_dir)
        except Exception as e:
            error = _as_pipeline_error(name, run_dir, e)
            if error is e:
                raise
            raise error from e
    log.info("stage %s: done in %.1f s", name, wall)
    head, *rest = (result.message or "").splitlines() or [""]
    print(summary_line(name, head, wall), flush=True)
    if rest and next_steps is None:
        print("\n".join(rest), flush=True)
    elif rest:
        next_steps.extend(rest)
    return result


def summary_line(name: str, message: str, wall: float) -> str:
    """The one line a stage ends with: ``<stage>: <what it did, rows, key metric> -> <output> (12.3 s)``."""
    text = message if message.startswith(f"{name}:") else f"{name}: {message or 'done'}"
    return f"{text} ({wall:.1f} s)" if wall < 120 else f"{text} ({wall / 60:.1f} min)"
