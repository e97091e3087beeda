"""Reading raw impression records with Beam IO: CSV, JSON lines, Parquet, TFRecord of tf.Example.

``ReadRawRecords(pattern, fmt, cfg)`` matches one path or a glob (any Beam filesystem: local,
``gs://``, ...), reads each file with ``fileio.ReadMatches`` (compression detected from the
extension, so ``census-income.test.gz`` works) and emits *raw records* (see
``core.raw_formats``) that keep their source file and line number or record index for
the dead-letter output. Files are spread over the workers; ``reshuffle=True`` also spreads
the records (``preprocess.beam.reshuffle_records``), for a distributed runner reading a few
large unsplittable files. It is off by default: a reshuffle moves every record through a
shuffle, which the DirectRunner keeps in memory.

``check_inputs(pattern, fmt, cfg, columns)`` is the cheap pre-flight check the driver runs
before building a pipeline: files exist, CSV headers carry every configured column.

A bad record is a raw record with an ``error`` (a dead letter after validation); a bad *file*
(truncated or corrupt compressed stream, corrupt TFRecord) makes ``core.raw_formats.read_file``
raise ``InputError`` naming it. ``ReadRawRecords`` either lets it fail the pipeline
(``file_errors="raise"``, the default: fail fast) or, with ``file_errors="output"``, stops
reading that file and returns ``{"records": ..., "file_errors": ...}``: the driver fails the
stage after the run (``write_file_errors`` / ``raise_file_errors``), so no worker ever raises, and no runner prints a
traceback (the multi-processing DirectRunner's workers print one to stderr for any exception).
Runners wrap what a DoFn raises (the in-memory DirectRunner appends
`` [while running '<step>']``, the multi-processing one and portable runners send a
``RuntimeError`` carrying the worker's traceback text), so a driver runs a pipeline inside
``pipeline_errors()``: a ``PipelineError`` comes out again as the one error the CLI prints,
and Beam's logged copy of its traceback is not shown.

Example (the predict stage reuses both transforms)::

    records = p | "ReadRawRecords" >> ReadRawRecords(pattern, "csv", cfg)
    checked = records | "ValidateRecords" >> ValidateRecords(cfg, require_labels=False)
    checked.valid, checked.dead_letters
"""
from __future__ import annotations

import contextlib
import json
import logging
import re
from typing import Optional

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes

from core import errors, fs, raw_formats
from core.errors import ConfigError, InputError, PipelineError
from core.raw_formats import list_input_files
from core.registries import INPUT_FORMATS
from pipeline import progress
from pipeline.progress import RowCounter

log = logging.getLogger("pipeline.preprocess.raw_io")

_PROGRESS_EVERY = 100_000

FILE_ERRORS = "file_errors"


def check_inputs(pattern: str, fmt: str, cfg, columns: list[str]) -> list[str]:
    """Pre-flight checks before a pipeline is built; returns the matched files.

    Raises ``ConfigError`` for an unknown format or CSV column names that lack a configured
    column, ``InputError`` when nothing matches or a CSV header lacks a column (naming file
    and columns). Per-record problems are left to validation (dead letters).
    """
    INPUT_FORMATS.check(fmt)
    files = list_input_files(pattern)
    if fmt != "csv":
        return files
    csv_cfg = cfg.data.csv
    if not csv_cfg.header:
        lacking = [c for c in columns if c not in csv_cfg.column_names]
        if lacking:
            raise ConfigError(f"data.csv.column_names: lacks configured column(s) {lacking}")
        return files
    for path in files:
        header = raw_formats.read_csv_header(path, csv_cfg)
        lacking = [c for c in columns if c not in header]
        if header and lacking:
            raise InputError(f"{path}: CSV header lacks configured column(s) {lacking} (header: {header})")
    return files


_STEP_ANNOTATION = re.compile(r"( \[while running '[^']*'\])+")
_ERROR_LINE = re.compile(r"^core\.errors\.(\w+): (.*)$", re.MULTILINE)
_ERROR_MENTION = re.compile(r"core\.errors\.\w+: ")  # also inside a worker log's escaped text
# Beam loggers that log a failed bundle's exception (with its traceback) before re-raising it.
_BEAM_ERROR_LOGGERS = ("apache_beam.runners.common", "apache_beam.runners.portability.local_job_service",
                       "apache_beam.runners.worker.sdk_worker", "apache_beam.runners.portability.fn_api_runner.fn_runner")


def pipeline_error_of(error: BaseException) -> Optional[PipelineError]:
    """The ``PipelineError`` a failed Beam pipeline run carries, rebuilt without Beam's step
    annotation, or None (a genuine Beam or program error).

    Found as ``error`` itself or in its cause/context chain (in-memory DirectRunner), else as
    the last ``core.errors.<Class>: <message>`` line of the worker traceback text the
    multi-processing DirectRunner and portable runners put in a ``RuntimeError``.
    """
    seen, e = set(), error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, PipelineError):
            return type(e)(_STEP_ANNOTATION.sub("", str(e)).strip())
        e = e.__cause__ or e.__context__
    matches = _ERROR_LINE.findall(str(error))
    if not matches:
        return None
    name, message = matches[-1]
    cls = getattr(errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, PipelineError)):
        cls = PipelineError
    return cls(_STEP_ANNOTATION.sub("", message).strip())


def write_file_errors(file_errors, output_file: str):
    """Writes the ``file_errors`` PCollection of ``ReadRawRecords`` as JSON lines (one shard,
    exactly ``output_file``; written empty when no file failed)."""
    return (file_errors
            | "FileErrorsToJson" >> beam.Map(json.dumps, sort_keys=True)
            | "WriteFileErrors" >> beam.io.WriteToText(output_file, num_shards=1, shard_name_template=""))


def raise_file_errors(output_file: str) -> None:
    """Raises the first file error ``write_file_errors`` wrote (its ``PipelineError`` class,
    naming the file; more failed files are counted in the message); nothing when none."""
    if not fs.exists(output_file):
        return
    failures = sorted((json.loads(line) for line in fs.read_text(output_file).splitlines() if line.strip()),
                      key=lambda d: d["source"])
    if not failures:
        return
    first = failures[0]
    cls = getattr(errors, first["type"], None)
    if not (isinstance(cls, type) and issubclass(cls, PipelineError)):
        cls = InputError
    more = ""
    if len(failures) > 1:
        others = ", ".join(d["source"] for d in failures[1:4]) + (", ..." if len(failures) > 4 else "")
        more = f" (and {len(failures) - 1} more damaged input file(s): {others})"
    raise cls(first["message"] + more)


def _is_pipeline_error_log(record: logging.LogRecord) -> bool:
    exc = record.exc_info[1] if record.exc_info else None
    if exc is not None and pipeline_error_of(exc) is not None:
        return True
    try:
        return _ERROR_MENTION.search(record.getMessage()) is not None
    except Exception:  # noqa: BLE001  (a malformed log record: keep it)
        return False


@contextlib.contextmanager
def pipeline_errors():
    """Runs a Beam pipeline so that a ``PipelineError`` raised in a DoFn (``InputError`` for a
    truncated file) surfaces as itself: one line for the CLI, not a runner's traceback.

    Beam's own log of that failure (the traceback) is dropped unless ``apache_beam`` logs at
    DEBUG (``--debug``). Any other exception passes through unchanged.
    """
    def drop(record: logging.LogRecord) -> bool:
        return not _is_pipeline_error_log(record)

    quiet = logging.getLogger("apache_beam").getEffectiveLevel() > logging.DEBUG
    targets = ([logging.getLogger(name) for name in _BEAM_ERROR_LOGGERS] + list(logging.getLogger().handlers)
               if quiet else [])
    for t in targets:
        t.addFilter(drop)
    try:
        yield
    except PipelineError as e:
        raise pipeline_error_of(e) from e
    except Exception as e:  # noqa: BLE001  (only a carried PipelineError is translated)
        translated = pipeline_error_of(e)
        if translated is None:
            raise
        raise translated from e
    finally:
        for t in targets:
            t.removeFilter(drop)


def check_has_records(files: list[str], fmt: str, cfg) -> None:
    """``InputError`` naming the input when none of ``files`` holds a single record (empty
    files, a CSV header only): caught before a pipeline is built. Reads up to the first
    record (a dead letter counts: validation reports it), so it is cheap on real data."""
    for path in files:
        records = raw_formats.read_file(path, fmt, cfg.data.csv)
        try:
            if next(records, None) is not None:
                return
        finally:
            records.close()
    where = files[0] if len(files) == 1 else f"{len(files)} files ({files[0]}, ...)"
    raise InputError(f"no records in the input {where}: "
                     f"{'it is empty or holds' if len(files) == 1 else 'they are empty or hold'} only a CSV header; "
                     "there is nothing to train on")


class _ReadFileDoFn(beam.DoFn):
    """Reads one matched file into raw records (private: use ``ReadRawRecords``)."""

    def __init__(self, fmt: str, csv_cfg, namespace: str, errors_as_output: bool = False,
                 progress_dir: str | None = None):
        self._fmt = fmt
        self._progress = RowCounter(progress_dir)
        self._csv_cfg = csv_cfg
        self._errors_as_output = errors_as_output
        self._files = beam.metrics.Metrics.counter(namespace, "files_read")
        self._records = beam.metrics.Metrics.counter(namespace, "records_read")
        self._failed = beam.metrics.Metrics.counter(namespace, "files_failed")

    def process(self, readable: fileio.ReadableFile):
        path = readable.metadata.path
        self._files.inc()
        records = raw_formats.read_file(
            path, self._fmt, self._csv_cfg,
            lambda compression: readable.open(mime_type="application/octet-stream", compression_type=compression))
        try:
            yield from self._counted(records, path)
        except PipelineError as e:
            if not self._errors_as_output:
                raise
            self._failed.inc()
            log.warning("stopped reading %s: %s", path, e)
            yield beam.pvalue.TaggedOutput(FILE_ERRORS, {"source": path, "type": type(e).__name__, "message": str(e)})

    def _counted(self, records, path):
        n = 0
        for n, rec in enumerate(records, 1):
            self._records.inc()
            self._progress.count()
            if n % _PROGRESS_EVERY == 0:
                log.info("read %d records from %s", n, path)
            yield rec
        self._progress.flush()
        log.info("read %d records from %s (done)", n, path)


class ReadRawRecords(beam.PTransform):
    """Reads raw records (dicts, see ``core.raw_formats``) from files matching ``pattern``.

    Args:
      pattern: a file path or glob on any Beam filesystem.
      fmt: 'csv', 'jsonl', 'parquet' or 'tfrecord' (gzip/bzip2 detected by extension for
        CSV/JSONL; '.gz' TFRecords are read as GZIP).
      cfg: the ``PipelineConfig`` (``cfg.data.csv`` holds header, column names, delimiter,
        quoting and missing-value strings).
      reshuffle: redistribute the records after reading (a shuffle of every record; see above);
        None: ``cfg.preprocess.beam.reshuffle_records``.
      namespace: Beam metrics namespace for the ``files_read``, ``records_read`` and
        ``files_failed`` counters.
      file_errors: "raise": a truncated or corrupt file fails the pipeline (``InputError``);
        "output": reading that file stops and its error is returned (see below).
      progress_dir: where the readers count the rows they read (``pipeline.progress``);
        default: the active ``StageProgress`` of this process, if any.

    Returns:
      A PCollection of raw records, in no particular order; with ``file_errors="output"``
      ``{"records": records, "file_errors": one {"source", "type", "message"} per failed file}``.
    """

    def __init__(self, pattern: str, fmt: str, cfg, reshuffle: Optional[bool] = None, namespace: str = "preprocess",
                 file_errors: str = "raise", progress_dir: Optional[str] = None):
        super().__init__()
        self._progress_dir = progress_dir or progress.active_dir()
        INPUT_FORMATS.check(fmt)
        if file_errors not in ("raise", "output"):
            raise ValueError(f"file_errors: expected 'raise' or 'output', got {file_errors!r}")
        self._file_errors = file_errors
        self._pattern = pattern
        self._fmt = fmt
        self._csv_cfg = cfg.data.csv
        self._reshuffle = cfg.preprocess.beam.reshuffle_records if reshuffle is None else reshuffle
        self._namespace = namespace

    def expand(self, pbegin):
        as_output = self._file_errors == "output"
        read = beam.ParDo(_ReadFileDoFn(self._fmt, self._csv_cfg, self._namespace, errors_as_output=as_output,
                                        progress_dir=self._progress_dir))
        if as_output:
            read = read.with_outputs(FILE_ERRORS, main="records")
        records = (
            pbegin
            | "MatchFiles" >> fileio.MatchFiles(self._pattern)
            | "ReadMatches" >> fileio.ReadMatches(compression=CompressionTypes.UNCOMPRESSED)
            | "ReshuffleFiles" >> beam.Reshuffle()
            | "ReadFiles" >> read
        )
        failed = None
        if as_output:
            records, failed = records.records, records[FILE_ERRORS]
        if self._reshuffle:
            records = records | "ReshuffleRecords" >> beam.Reshuffle()
        return {"records": records, FILE_ERRORS: failed} if failed is not None else records
