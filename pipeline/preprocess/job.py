"""The preprocessing Beam job: raw impression logs -> validated, split, TF-Transformed TFRecords.

(``pipeline/stages/preprocess.py`` runs it into the run directory.)

One Beam pipeline (any runner; see ``pipeline.beam_options``) in two passes over the input::

    analysis:  ReadValidSplits -> train -> ToRecordBatches -> AnalyzeDataset -> transform_fn
    transform: ReadValidSplits -+-> dead letters (JSON lines)
                                +-> train/validation/test -> ToRecordBatches
                                      -> TransformDataset(transform_fn) -> gzip TFRecords
               + CountRecords (read, valid, dead letters by reason, per split, lists truncated
                              to max_length and list lengths) -> stats.json

The transform pass reads the input a second time rather than reusing the analysis pass's
records: the transform has to wait for ``transform_fn``, and a runner would otherwise hold
(or spill) every record of every split until the analysis finished. Re-reading keeps each
pass a stream, so the DirectRunner's memory stays flat as the data grows; the analysis pass
only validates and splits (its Beam counters are in the ``preprocess_analysis`` namespace).

Everything is written into a temporary directory beside ``run_dir.preprocess_dir`` and moved
into place only after the pipeline succeeded, the dead-letter fraction is within
``preprocess.max_dead_letter_fraction`` and the training split holds at least one record;
otherwise the stage raises ``DataValidationError`` (``InputError`` for an input without any
record) and keeps the dead letters and stats in ``run_dir.rejected_dir`` for inspection. A
truncated or corrupt input file is read up to the damage and, after the run, fails the stage
with one ``InputError`` naming it (``raw_io.raise_file_errors``): no worker raises, so no
runner prints a traceback.

Example::

    python -m pipeline preprocess --config configs/census_income.yaml --run-dir /tmp/census
"""
from __future__ import annotations

import logging
import time

import apache_beam as beam
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam

from core import features
from core.config import table_owner
from core.records import RecordSchema

from pipeline.preprocess import stats as preprocess_stats
from pipeline.progress import StageProgress
from pipeline.beam_options import InProcessDirectRunner, pipeline_options
from pipeline.preprocess.raw_io import (FILE_ERRORS, ReadRawRecords, check_has_records, check_inputs,
                                        pipeline_errors, raise_file_errors, write_file_errors)
from pipeline.preprocess.record_batches import ToRecordBatches, raw_tensor_adapter_config
from core import fs
from core.run_dir import PREPROCESS_LAYOUT, RunDir, write_json_atomic
from core.splits import SPLITS, split_columns
from pipeline.preprocess.split import SplitRecords
from pipeline.preprocess.transform import (bucket_features, cross_features, make_preprocessing_fn, piecewise_features,
                                           vocabulary_name)
from pipeline.preprocess.validation import ValidateRecords, WriteDeadLetters

log = logging.getLogger("pipeline.preprocess.job")


def _tft_session_config_for_the_direct_runner() -> None:
    """TF Transform gives its TF sessions two threads on Beam's DirectRunner and FnApiRunner
    (keyed by the runner's exact type); ``InProcessDirectRunner`` is that FnApiRunner, so it
    gets the same (without it every worker process's sessions would use every core)."""
    from tensorflow_transform.beam import impl

    table = getattr(impl, "_DEFAULT_TENSORFLOW_CONFIG_BY_BEAM_RUNNER_TYPE", None)
    fixed = getattr(impl, "_FIXED_PARALLELISM_TF_CONFIG", None)
    if isinstance(table, dict) and fixed is not None:
        table.setdefault(InProcessDirectRunner, fixed)


_tft_session_config_for_the_direct_runner()

COUNTS_FILE = "_counts.jsonl"
FILE_ERRORS_FILE = "_file_errors.jsonl"


class PreprocessLayout:
    """Paths inside one (temporary) preprocess directory, mirroring ``RunDir``'s names."""

    def __init__(self, root: str):
        def inside(name: str) -> str:
            return fs.join(root, PREPROCESS_LAYOUT[name])

        self.root = root
        self.transform_output = inside("transform_output")
        self.data_dir = inside("data")
        self.feature_info = inside("feature_info")
        self.raw_feature_spec = inside("raw_feature_spec")
        self.stats = inside("stats")
        self.dead_letters = inside("dead_letters")
        self.counts = fs.join(root, COUNTS_FILE)
        self.file_errors = fs.join(root, FILE_ERRORS_FILE)
        self.tft_temp = fs.join(root, "_tft_tmp")

    def split_prefix(self, split: str) -> str:
        return fs.join(self.data_dir, split)


class ReadValidSplits(beam.PTransform):
    """Reads, validates and splits the raw input: one pass of the preprocess stage.

    Args:
      pattern, fmt: the input files and their format.
      cfg: the ``PipelineConfig``.
      namespace: Beam metrics namespace of the read and validation counters.

    Returns:
      ``{"read": records, "valid": typed records, "dead_letters": dead letters,
      "train" / "validation" / "test": typed records of each split, "file_errors": the
      input files that are truncated or corrupt (read up to the damage; the driver fails
      the stage on them after the run, see ``raw_io.raise_file_errors``)}``.
    """

    def __init__(self, pattern: str, fmt: str, cfg, namespace: str = "preprocess"):
        super().__init__()
        self._pattern, self._fmt, self._cfg, self._namespace = pattern, fmt, cfg, namespace

    def expand(self, pbegin):
        cfg = self._cfg
        split_cfg = cfg.preprocess.split
        read = pbegin | "ReadRawRecords" >> ReadRawRecords(self._pattern, self._fmt, cfg, namespace=self._namespace,
                                                           file_errors="output")
        records = read["records"]
        checked = records | "ValidateRecords" >> ValidateRecords(cfg, require_labels=True, namespace=self._namespace)
        splits = checked.valid | "SplitRecords" >> SplitRecords(
            split_columns(cfg, features.raw_columns(cfg)), (split_cfg.train, split_cfg.validation, split_cfg.test))
        return {"read": records, "valid": checked.valid, "dead_letters": checked.dead_letters,
                FILE_ERRORS: read[FILE_ERRORS], **splits}


def _record_batches(split, cfg, label: str):
    return (split
            | f"Features[{label}]" >> beam.Map(lambda r: r["features"])
            | f"ToRecordBatches[{label}]" >> ToRecordBatches(cfg))


def build_pipeline(p: beam.Pipeline, cfg, pattern: str, fmt: str, layout: PreprocessLayout) -> None:
    """Adds the whole preprocessing graph to ``p`` (construction only; the caller runs it)."""
    adapter = raw_tensor_adapter_config(cfg)

    analysis = p | "AnalysisPass" >> ReadValidSplits(pattern, fmt, cfg, namespace="preprocess_analysis")
    transform_fn = ((_record_batches(analysis["train"], cfg, "analysis"), adapter)
                    | "AnalyzeDataset" >> tft_beam.AnalyzeDataset(make_preprocessing_fn(cfg)))
    _ = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(layout.transform_output)

    data = p | "TransformPass" >> ReadValidSplits(pattern, fmt, cfg)
    _ = data["dead_letters"] | "WriteDeadLetters" >> WriteDeadLetters(fs.join(layout.dead_letters, "dead_letters"))
    _ = data | "CountRecords" >> preprocess_stats.CountRecords(layout.counts, RecordSchema(cfg))
    _ = write_file_errors(data[FILE_ERRORS], layout.file_errors)
    for s in SPLITS:
        transformed = (((_record_batches(data[s], cfg, s), adapter), transform_fn)
                       | f"TransformDataset[{s}]" >> tft_beam.TransformDataset(output_record_batches=True))
        _ = (transformed
             | f"EncodeExamples[{s}]" >> tft_beam.EncodeTransformedDataset()
             | f"WriteTFRecords[{s}]" >> beam.io.WriteToTFRecord(
                 layout.split_prefix(s), file_name_suffix=".tfrecord.gz", num_shards=cfg.preprocess.num_shards))


def feature_info_from_output(cfg, transform_output_dir: str) -> features.FeatureInfo:
    """FeatureInfo of a transform output.

    * ``categorical``: each categorical column's cardinality, its TFT vocabulary's size + OOV
      buckets (``data.hash_buckets``: its N), then ``<numeric>_bucket`` (the quantile buckets)
      and the crosses (their hash buckets);
    * ``lists``: per list a ``ListInfo`` whose cardinality is that of its table
      (``core.config.table_owner``: its own, or the shared feature's vocabulary + OOV or hash
      buckets), ``length = max_length``, its pooling, kind, target, ``weighted`` and ``table``;
    * ``piecewise``: ``<numeric>_ple`` -> bins.
    """
    output = tft.TFTransformOutput(transform_output_dir)
    d = cfg.data
    oov = cfg.preprocess.vocab.oov_buckets

    def cardinality(name: str) -> int:
        if name in d.hash_buckets:
            return int(d.hash_buckets[name])
        return output.vocabulary_size_by_name(vocabulary_name(name)) + oov

    categorical = {c: cardinality(c) for c in d.categorical}
    categorical.update(bucket_features(cfg))
    categorical.update(cross_features(cfg))
    lists = {}
    for f in d.lists:
        table = table_owner(d, f.name)
        lists[f.name] = features.ListInfo(
            cardinality=cardinality(table), length=f.max_length, pooling=f.pooling, weighted=bool(f.weights),
            table=table, target=f.target, kind=f.kind)
    return features.FeatureInfo(
        categorical=categorical,
        numeric=list(d.numeric),
        lists=lists,
        piecewise=piecewise_features(cfg),
        tasks=list(cfg.task_names),
        passthrough=list(d.passthrough),
        has_weight=bool(d.weight_column),
        has_group=bool(d.group_column),
    )


def run_pipeline(cfg, pattern: str, fmt: str, run_dir: RunDir, root: str) -> dict:
    """Runs the pipeline into ``root`` and writes feature info, raw spec and stats there."""
    layout = PreprocessLayout(root)
    files = check_inputs(pattern, fmt, cfg, features.raw_columns(cfg))
    check_has_records(files, fmt, cfg)
    log.info("preprocess: %d input file(s) matching %s (%s), runner %s", len(files), pattern, fmt,
             cfg.preprocess.beam.runner)
    start = time.monotonic()
    # Two passes read the input (analysis, then transform): 2 x the generated rows in all.
    total = 2 * cfg.synthetic.rows if cfg.data.source == "synthetic" else None
    progress = StageProgress("preprocess", total=total, what="rows read over its 2 passes")
    with pipeline_errors(), tft_beam.Context(temp_dir=layout.tft_temp), progress:
        with beam.Pipeline(options=pipeline_options(cfg.preprocess.beam)) as p:
            build_pipeline(p, cfg, pattern, fmt, layout)
    wall = time.monotonic() - start
    fs.rmtree(layout.tft_temp)
    raise_file_errors(layout.file_errors)  # a truncated or corrupt input file fails the stage
    fs.remove(layout.file_errors)
    stats = preprocess_stats.build_stats(preprocess_stats.read_counts(layout.counts), wall,
                                         {"pattern": pattern, "format": fmt, "files": len(files)},
                                         lists=features.list_columns(cfg))
    fs.remove(layout.counts)
    log.info("preprocess: read %d, valid %d, dead-lettered %d (%s) in %.1f s", stats["rows_read"], stats["valid"],
             stats["dead_lettered"], stats["by_reason"], wall)
    if stats.get("truncated"):
        log.info("preprocess: valid records with a list longer than its max_length (truncated): %s",
                 stats["truncated"])
    write_json_atomic(layout.stats, stats)
    return stats
