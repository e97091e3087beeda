"""``python -m pipeline predict``: raw input files scored on Beam with the newest published
model (``pipeline.batch_predict``) into ``<run-dir>/predictions``."""
from __future__ import annotations

import logging

from core import fs
from core.errors import InputError
from core.registries import INPUT_FORMATS
from core.run_dir import RunDir
from pipeline.stages.base import StageResult, add_beam_arguments, stage

log = logging.getLogger("pipeline.stages.predict")


def _arguments(p) -> None:
    add_beam_arguments(p)
    p.add_argument("--input", metavar="GLOB", help="raw input files to score (default: the run's raw input data)")
    p.add_argument("--output", metavar="DIR", help="output directory (default: <run-dir>/predictions)")
    p.add_argument("--format", choices=INPUT_FORMATS.names(), help="input format (default: data.format of the config)")


@stage("predict", "score raw input files with the exported model on Beam",
       arguments=_arguments,
       reads=("generate", "export"))
def run(cfg, run_dir: RunDir, opts) -> StageResult:
    from pipeline.batch_predict import predict_files

    pattern, fmt = run_dir.raw_input(cfg)
    pattern = getattr(opts, "input", None) or pattern
    fmt = getattr(opts, "format", None) or fmt  # the run's own input format (synthetic.format or data.format)
    output = fs.absolute(getattr(opts, "output", None) or run_dir.predictions_dir)
    export_dir = latest_version_dir(cfg, run_dir)
    log.info("predict: scoring %s (%s) with %s into %s", pattern, fmt, export_dir, output)
    counts = predict_files(cfg, pattern, fmt, output, export_dir)
    output = fs.published(output)
    log.info("predict: %d rows read, %d predicted, %d dead-lettered (%.0f rows/s)", counts["rows_read"],
             counts["predicted"], counts["dead_lettered"], counts["rows_per_second"] or 0)
    return StageResult(rows=counts["rows_read"], metrics=counts, artifacts={"predictions": output, "counts": fs.join(output, "counts.json")}, message=f"predict: {counts['rows_read']:,} rows read, {counts['predicted']:,} predicted, {counts['dead_lettered']:,} dead-lettered -> {output}")


def latest_version_dir(cfg, run_dir: RunDir) -> str:
    """The newest published version directory of ``export.model_name``."""
    from serving import versions

    model_dir = fs.join(run_dir.serving_base(cfg.export.base_dir), cfg.export.model_name)
    published = versions.list_versions(model_dir)
    if not published:
        raise InputError(f"no published version under {model_dir}; run `python -m pipeline export` first")
    return versions.version_dir(model_dir, published[-1])
