"""Beam ``PipelineOptions`` from ``cfg.preprocess.beam``: one place every Beam job of the project uses.

The config (or ``--runner``, ``--num-workers``, ``--beam-arg`` on the command line) chooses the
runner. The default is the DirectRunner in ``multi_processing`` mode with one worker process
per core (``direct_num_workers: 0`` -> ``os.cpu_count()``).

One runner on every machine: Beam's ``DirectRunner`` (``SwitchingDirectRunner``) first tries
to download the Prism binary and, where it can, runs the pipeline there, so the same command
would run on Prism on a laptop with internet and on the FnApiRunner on a machine without. The
names ``DirectRunner``/``direct`` therefore run ``InProcessDirectRunner``: the FnApiRunner the
DirectRunner falls back to, with the same options handed to its workers, and no Prism
attempt. Which runner runs is logged once per process. ``PrismRunner`` (or
``BundleBasedDirectRunner``) can still be named explicitly.

Any other runner gets its flags from ``extra_args`` unchanged, e.g. for Dataflow::

    --runner DataflowRunner --beam-arg=--project=my-proj --beam-arg=--region=europe-west1 \\
        --beam-arg=--temp_location=gs://bucket/tmp --beam-arg=--setup_file=./setup.py

Example::

    from pipeline.beam_options import pipeline_options
    with beam.Pipeline(options=pipeline_options(cfg.preprocess.beam)) as p:
        ...
"""
from __future__ import annotations

import logging
import os

from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import fn_runner

from core.errors import ConfigError

log = logging.getLogger("pipeline.beam_options")

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_DIRECT_NAMES = ("DirectRunner", "direct", "SwitchingDirectRunner")
_logged: set = set()


class InProcessDirectRunner(fn_runner.FnApiRunner):
    """The DirectRunner's batch path without its Prism attempt: Beam's ``FnApiRunner``, with
    the pipeline options handed to its SDK workers (in ``multi_processing`` mode, worker
    processes; ``in_memory``, this process) exactly as ``SwitchingDirectRunner`` hands them."""

    def run_pipeline(self, pipeline, options):
        from apache_beam.portability.api import beam_provision_api_pb2
        from apache_beam.runners.portability.portable_runner import JobServiceHandle

        encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
        self._provision_info = fn_runner.ExtendedProvisionInfo(
            beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
        return super().run_pipeline(pipeline, options)


RUNNER_PATH = f"{__name__}.{InProcessDirectRunner.__name__}"


def num_direct_workers(beam_cfg) -> int:
    """Worker processes (or threads) the DirectRunner uses: ``direct_num_workers`` or one per core."""
    return beam_cfg.direct_num_workers or (os.cpu_count() or 1)


def is_direct(beam_cfg) -> bool:
    return beam_cfg.runner in _DIRECT_NAMES + ("BundleBasedDirectRunner",)


def beam_flags(beam_cfg, job_name: str | None = None) -> list[str]:
    """The command-line style flags handed to ``PipelineOptions`` (extra_args last, so they win)."""
    if not beam_cfg.runner:
        raise ConfigError("preprocess.beam.runner: expected a Beam runner name, got an empty string")
    runner = RUNNER_PATH if beam_cfg.runner in _DIRECT_NAMES else beam_cfg.runner
    flags = [f"--runner={runner}"]
    workers = None
    if is_direct(beam_cfg):
        # in_memory runs every bundle in this process: more workers would only warn.
        workers = 1 if beam_cfg.direct_running_mode == "in_memory" else num_direct_workers(beam_cfg)
        flags += [f"--direct_running_mode={beam_cfg.direct_running_mode}", f"--direct_num_workers={workers}"]
    _log_runner_once(beam_cfg, runner, workers)
    if job_name:
        flags.append(f"--job_name={job_name}")
    for arg in beam_cfg.extra_args:
        if not arg.startswith("--"):
            raise ConfigError(f"preprocess.beam.extra_args: expected flags like '--project=p', got {arg!r}")
        flags.append(arg)
    return flags


def pipeline_options(beam_cfg, job_name: str | None = None) -> PipelineOptions:
    """``PipelineOptions`` for ``beam_cfg`` (a ``BeamConfig``).

    For the DirectRunner in ``multi_processing`` mode the repository root is added to
    ``PYTHONPATH`` so the worker processes it spawns can import this package's DoFns.
    """
    if is_direct(beam_cfg) and beam_cfg.direct_running_mode == "multi_processing":
        _ensure_importable_by_workers()
    return PipelineOptions(beam_flags(beam_cfg, job_name))


def _ensure_importable_by_workers() -> None:
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if _REPO_ROOT not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([_REPO_ROOT] + paths)


def _log_runner_once(beam_cfg, runner: str, workers: int | None) -> None:
    key = (beam_cfg.runner, runner, workers, beam_cfg.direct_running_mode if workers else None)
    if key in _logged:
        return
    _logged.add(key)
    if runner == RUNNER_PATH:
        log.info("beam: runner %s runs on the FnApiRunner (%s, %d worker%s; Prism is not tried)", beam_cfg.runner,
                 beam_cfg.direct_running_mode, workers, "" if workers == 1 else "s")
    else:
        log.info("beam: runner %s%s", runner, f" ({beam_cfg.direct_running_mode}, {workers} workers)" if workers else "")
