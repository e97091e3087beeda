"""The stage registry and the code that runs a stage: timing, summary.json and the report.

Each stage is a function ``run_stage(cfg, run_dir, opts) -> dict`` in its own module,
imported only when the stage runs (so ``--help`` never imports TensorFlow or Beam). The
returned dict may hold ``rows`` (records processed), ``metrics``, ``artifacts``, ``models``
(model name -> task -> metric -> value), ``plots`` (paths relative to the run directory),
``report`` (markdown for the run report), ``message`` (printed to the user) and
``record: False`` (this process must not write the run's summary: e.g. a multi-worker
training worker that is not the chief).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import time
from dataclasses import dataclass

from pipeline.config import PipelineConfig
from pipeline.run_dir import RunDir, Summary

log = logging.getLogger("pipeline")


@dataclass(frozen=True)
class Stage:
    name: str
    entry: str  # "module:function"
    help: str
    in_run: bool = True  # part of `python -m pipeline run`

    def load(self):
        module, func = self.entry.split(":")
        return getattr(importlib.import_module(module), func)


STAGES: dict[str, Stage] = {
    s.name: s
    for s in [
        Stage("generate", "pipeline.synthetic:run_stage", "write the synthetic click/conversion logs (source: synthetic)"),
        Stage("preprocess", "pipeline.preprocess:run_stage", "validate, split and transform raw records with Beam + TF Transform"),
        Stage("train", "pipeline.train:run_stage", "train the multi-task teacher with self-auxiliary towers"),
        Stage("evaluate", "pipeline.evaluate:run_stage", "evaluate trained models on the test split (AUC, logloss, calibration, GAUC, oracle gap)"),
        Stage("distill", "pipeline.distill:run_stage", "score data with the teacher on Beam and distil a compact student"),
        Stage("export", "serving.export:run_stage", "export a SavedModel for TF Serving through the validation gate"),
        Stage("predict", "serving.batch_predict:run_stage", "score raw input files with the exported model on Beam"),
        Stage("serve", "serving.server:run_stage", "serve exported models with TF Serving's REST and gRPC APIs", in_run=False),
        Stage("pareto", "pipeline.pareto:run_stage", "train a grid of task weightings with and without aux towers", in_run=False),
    ]
}

RUN_ORDER = [s.name for s in STAGES.values() if s.in_run]


def stages_for_run(cfg: PipelineConfig) -> list[str]:
    """The stages `run` executes for this config, in order."""
    order = list(RUN_ORDER)
    if cfg.data.source != "synthetic":
        order.remove("generate")
    if not cfg.distill.enabled and "distill" in order:
        order.remove("distill")
    return order


def run_stage(name: str, cfg: PipelineConfig, run_dir: RunDir, opts: argparse.Namespace) -> dict:
    """Runs one stage, records it in summary.json and re-renders the report."""
    from pipeline import report

    stage = STAGES[name]
    summary = Summary(run_dir)
    log.info("stage %s: started", name)
    start = time.monotonic()
    try:
        result = stage.load()(cfg, run_dir, opts) or {}
    except BaseException as e:
        summary.record_stage(name, "failed", time.monotonic() - start, {"error": f"{type(e).__name__}: {e}"})
        report.write_report(run_dir)
        raise
    wall = time.monotonic() - start
    message = result.pop("message", None)
    if result.pop("record", True):
        summary.record_stage(name, "ok", wall, result)
        report.write_report(run_dir)
    log.info("stage %s: done in %.1f s", name, wall)
    if message:
        print(message, flush=True)
    return result
