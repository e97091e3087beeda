"""Beam ``PipelineOptions`` from ``cfg.preprocess.beam``: one place every Beam job of the project uses.

The config (or ``--runner``, ``--num-workers``, ``--beam-arg`` on the command line) chooses the
runner. The default is the DirectRunner in ``multi_processing`` mode with one worker process
per core (``direct_num_workers: 0`` -> ``os.cpu_count()``). Any other runner gets its flags
from ``extra_args`` unchanged, e.g. for Dataflow::

    --runner DataflowRunner --beam-arg=--project=my-proj --beam-arg=--region=europe-west1 \\
        --beam-arg=--temp_location=gs://bucket/tmp --beam-arg=--setup_file=./setup.py

Example::

    from pipeline.beam_options import pipeline_options
    with beam.Pipeline(options=pipeline_options(cfg.preprocess.beam)) as p:
        ...
"""
from __future__ import annotations

import os

from apache_beam.options.pipeline_options import PipelineOptions

from core.errors import ConfigError

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def num_direct_workers(beam_cfg) -> int:
    """Worker processes (or threads) the DirectRunner uses: ``direct_num_workers`` or one per core."""
    return beam_cfg.direct_num_workers or (os.cpu_count() or 1)


def is_direct(beam_cfg) -> bool:
    return beam_cfg.runner in ("DirectRunner", "direct", "BundleBasedDirectRunner", "SwitchingDirectRunner")


def beam_flags(beam_cfg, job_name: str | None = None) -> list[str]:
    """The command-line style flags handed to ``PipelineOptions`` (extra_args last, so they win)."""
    if not beam_cfg.runner:
        raise ConfigError("preprocess.beam.runner: expected a Beam runner name, got an empty string")
    flags = [f"--runner={beam_cfg.runner}"]
    if is_direct(beam_cfg):
        # in_memory runs every bundle in this process: more workers would only warn.
        workers = 1 if beam_cfg.direct_running_mode == "in_memory" else num_direct_workers(beam_cfg)
        flags += [f"--direct_running_mode={beam_cfg.direct_running_mode}", f"--direct_num_workers={workers}"]
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
