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

Example (the predict stage reuses both transforms)::

    records = p | "ReadRawRecords" >> ReadRawRecords(pattern, "csv", cfg)
    checked = records | "ValidateRecords" >> ValidateRecords(cfg, require_labels=False)
    checked.valid, checked.dead_letters
"""
from __future__ import annotations

import logging
from typing import Optional

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes

from core import raw_formats
from core.errors import ConfigError, InputError
from core.raw_formats import list_input_files
from core.registries import INPUT_FORMATS

log = logging.getLogger("pipeline.preprocess.raw_io")

_PROGRESS_EVERY = 100_000


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


class _ReadFileDoFn(beam.DoFn):
    """Reads one matched file into raw records (private: use ``ReadRawRecords``)."""

    def __init__(self, fmt: str, csv_cfg, namespace: str):
        self._fmt = fmt
        self._csv_cfg = csv_cfg
        self._files = beam.metrics.Metrics.counter(namespace, "files_read")
        self._records = beam.metrics.Metrics.counter(namespace, "records_read")

    def process(self, readable: fileio.ReadableFile):
        path = readable.metadata.path
        self._files.inc()
        records = raw_formats.read_file(
            path, self._fmt, self._csv_cfg,
            lambda compression: readable.open(mime_type="application/octet-stream", compression_type=compression))
        yield from self._counted(records, path)

    def _counted(self, records, path):
        n = 0
        for n, rec in enumerate(records, 1):
            self._records.inc()
            if n % _PROGRESS_EVERY == 0:
                log.info("read %d records from %s", n, path)
            yield rec
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
      namespace: Beam metrics namespace for the ``files_read`` and ``records_read`` counters.

    Returns:
      A PCollection of raw records, in no particular order.
    """

    def __init__(self, pattern: str, fmt: str, cfg, reshuffle: Optional[bool] = None, namespace: str = "preprocess"):
        super().__init__()
        INPUT_FORMATS.check(fmt)
        self._pattern = pattern
        self._fmt = fmt
        self._csv_cfg = cfg.data.csv
        self._reshuffle = cfg.preprocess.beam.reshuffle_records if reshuffle is None else reshuffle
        self._namespace = namespace

    def expand(self, pbegin):
        records = (
            pbegin
            | "MatchFiles" >> fileio.MatchFiles(self._pattern)
            | "ReadMatches" >> fileio.ReadMatches(compression=CompressionTypes.UNCOMPRESSED)
            | "ReshuffleFiles" >> beam.Reshuffle()
            | "ReadFiles" >> beam.ParDo(_ReadFileDoFn(self._fmt, self._csv_cfg, self._namespace))
        )
        if self._reshuffle:
            records = records | "ReshuffleRecords" >> beam.Reshuffle()
        return records
