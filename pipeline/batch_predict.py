"""The ``predict`` stage: score raw input files with the published model on Beam.

``ScoreRawRecords`` reads raw records with the preprocessing IO (``ReadRawRecords``), checks
them with ``ValidateRecords(require_labels=False)`` (bad rows go to the dead letters with
their reason and field) and runs ``apache_beam.ml.inference.RunInference`` with a model
handler that loads the exported SavedModel once per worker (TF1 session loader, as
serving does) and scores batches through its ``predict_raw`` signature. Each prediction row
is a JSON line: the record's source file and position, its split-key columns (e.g.
``impression_id``) and one value per served output. The output directory is replaced
atomically; the stage checks input rows = predicted + dead-lettered.

The raw columns are those the export's ``predict_raw`` takes (read from its
``saved_model.pb``): an export of a model that reads a subset of the features
(``model.features``) needs, validates and sends only its columns, so inputs may lack the
skipped ones. List features (``data.lists``; a ``|``-joined CSV field, a JSONL/Parquet list,
a ``tf.Example`` feature with several values) are sent in the padded representation
(``serving.raw_examples.to_columns``: padded with "" to the batch's longest list).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time

import apache_beam as beam
from apache_beam.ml.inference.base import ModelHandler, PredictionResult, RunInference

from pipeline.beam_options import pipeline_options
from core.errors import PipelineError
from pipeline.preprocess.raw_io import ReadRawRecords, check_inputs, pipeline_errors
from core import fs
from pipeline.progress import StageProgress
from core.fs import publish_dir, write_json_atomic
from pipeline.preprocess.validation import ValidateRecords, WriteDeadLetters

log = logging.getLogger("pipeline.batch_predict")

NAMESPACE = "predict"
SIGNATURE = "predict_raw"


def served_columns(export_dir: str) -> list[str]:
    """The raw columns the export's ``predict_raw`` signature takes."""
    from serving.signatures import raw_input_columns

    return list(raw_input_columns(export_dir, SIGNATURE))


def scoring_config(cfg, columns: list[str]):
    """``cfg`` with its feature columns restricted to ``columns`` (what validation checks and
    types): a model that skips features needs no valid value for them."""
    keep = set(columns)
    d = cfg.data
    data = dataclasses.replace(d, categorical=[c for c in d.categorical if c in keep],
                               numeric=[c for c in d.numeric if c in keep],
                               lists=[f for f in d.lists if f.name in keep], crosses=[])
    return dataclasses.replace(cfg, data=data)


class _SavedModelHandler(ModelHandler):
    """Loads one SavedModel version per worker and scores typed records in batches."""

    def __init__(self, export_dir: str, columns: list[str], max_batch_size: int, cfg=None):
        super().__init__()
        self._export_dir = export_dir
        self._columns = list(columns)
        self._max_batch_size = max_batch_size
        self._cfg = cfg

    def load_model(self):
        import atexit

        from serving.session_model import SessionModel

        model = SessionModel(self._export_dir)
        atexit.register(model.close)  # before TF's own teardown in this worker process
        return model

    def run_inference(self, batch, model, inference_args=None):
        from serving.raw_examples import to_columns

        if self._cfg is not None:  # lists padded with "" to the batch's longest
            inputs = to_columns(self._cfg, batch, self._columns)
        else:
            inputs = {c: [r["features"][c] for r in batch] for c in self._columns}
        outputs = model.run(SIGNATURE, inputs)
        return [PredictionResult(r, {k: float(v[i]) for k, v in outputs.items()}) for i, r in enumerate(batch)]

    def batch_elements_kwargs(self):
        return {"min_batch_size": min(128, self._max_batch_size), "max_batch_size": self._max_batch_size}

    def get_metrics_namespace(self) -> str:
        return NAMESPACE


class _FormatPredictionDoFn(beam.DoFn):
    def __init__(self, key_columns: list[str]):
        self._key_columns = list(key_columns)
        self._written = beam.metrics.Metrics.counter(NAMESPACE, "predictions_written")

    def process(self, result: PredictionResult):
        rec = result.example
        row = {"source": rec["source"], "position": rec["position"]}
        row.update({c: rec["values"].get(c) for c in self._key_columns})
        row.update(result.inference)
        self._written.inc()
        yield json.dumps(row)


class ScoreRawRecords(beam.PTransform):
    """Raw input files -> (prediction JSON lines, dead letters).

    Args:
      pattern, fmt: input files and their format ('csv', 'jsonl', 'parquet', 'tfrecord').
      cfg: the ``PipelineConfig`` (schema, CSV options, split keys carried to the output).
      export_dir: the SavedModel version to score with.
      max_batch_size: largest batch handed to the model.

    Returns:
      ``{"predictions": pcoll of JSON strings, "dead_letters": pcoll, "read": pcoll}``.
    """

    def __init__(self, pattern: str, fmt: str, cfg, export_dir: str, max_batch_size: int = 1024,
                 columns: list[str] | None = None):
        super().__init__()
        columns = served_columns(export_dir) if columns is None else list(columns)
        self._pattern, self._fmt, self._cfg = pattern, fmt, cfg
        self._scoring_cfg = scoring_config(cfg, columns)
        self._handler = _SavedModelHandler(export_dir, columns, max_batch_size, self._scoring_cfg)
        self._keys = list(cfg.preprocess.split.keys)

    def expand(self, pbegin):
        records = pbegin | "ReadRawRecords" >> ReadRawRecords(self._pattern, self._fmt, self._cfg, namespace=NAMESPACE)
        checked = records | "ValidateRecords" >> ValidateRecords(self._scoring_cfg, require_labels=False,
                                                                 namespace=NAMESPACE)
        predictions = (checked.valid
                       | "RunInference" >> RunInference(self._handler)
                       | "FormatPredictions" >> beam.ParDo(_FormatPredictionDoFn(self._keys)))
        return {"predictions": predictions, "dead_letters": checked.dead_letters, "read": records}


def _count_lines(pattern: str) -> int:
    return sum(sum(1 for line in fs.read_text(path).splitlines() if line.strip()) for path in fs.glob(pattern))


def predict_files(cfg, pattern: str, fmt: str, output: str, export_dir: str) -> dict:
    """Runs the Beam job; returns the counts (raises if they do not add up)."""
    columns = served_columns(export_dir)
    check_inputs(pattern, fmt, cfg, columns)
    start = time.monotonic()
    with publish_dir(output) as tmp:
        # A truncated or corrupt input file surfaces as one InputError naming it, not a runner traceback.
        with pipeline_errors(), StageProgress("predict"), \
                beam.Pipeline(options=pipeline_options(cfg.preprocess.beam, job_name=None)) as p:
            out = p | "ScoreRawRecords" >> ScoreRawRecords(pattern, fmt, cfg, export_dir, columns=columns)
            _ = out["predictions"] | "WritePredictions" >> beam.io.WriteToText(
                fs.join(tmp, "predictions"), file_name_suffix=".jsonl")
            _ = out["dead_letters"] | "WriteDeadLetters" >> WriteDeadLetters(fs.join(tmp, "dead_letters", "dead_letters"))
            _ = (out["read"] | "CountRead" >> beam.combiners.Count.Globally()
                 | "WriteCount" >> beam.io.WriteToText(fs.join(tmp, "rows_read"), num_shards=1,
                                                       shard_name_template="", file_name_suffix=".txt"))
        read = int(fs.read_text(fs.join(tmp, "rows_read.txt")).strip() or 0)
        fs.remove(fs.join(tmp, "rows_read.txt"))
        predicted = _count_lines(fs.join(tmp, "predictions*.jsonl"))
        dead = _count_lines(fs.join(tmp, "dead_letters", "dead_letters*.jsonl"))
        wall = time.monotonic() - start
        counts = {"rows_read": read, "predicted": predicted, "dead_lettered": dead, "model": export_dir,
                  "input": pattern, "format": fmt, "wall_seconds": round(wall, 3),
                  "rows_per_second": round(read / wall, 1) if wall > 0 else None}
        if read != predicted + dead:
            raise PipelineError(f"predict: counts do not add up: read={read}, predicted={predicted}, dead_lettered={dead}")
        write_json_atomic(fs.join(tmp, "counts.json"), counts)
    return counts
