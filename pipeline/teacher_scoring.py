"""Offline distillation data: a Beam job that adds the teacher's logits to transformed examples.

``ScoreWithTeacher`` takes serialized transformed ``tf.Example``s (the preprocess output),
runs the teacher's serving model on them in batches through Beam's ``RunInference`` (the
``TeacherModelHandler`` loads the SavedModel once per worker) and returns each example with
one float feature ``teacher_logit_<task>`` per task added. Records the teacher cannot score
go to the ``dead_letters`` output with the reason; nothing is dropped:
``rows_in == rows_scored + rows_dead_letter`` (Beam counters in namespace ``distill``).

``ScoreSplits`` reads ``preprocess/data/<split>-*.tfrecord.gz`` and writes
``scores/<split>-*.tfrecord.gz`` (plus ``scores/dead_letters/<split>-*.jsonl``) for every
split; ``score_splits`` runs it on any Beam runner (``pipeline.beam_options.pipeline_options``
of ``cfg.preprocess.beam``) into a fresh attempt directory committed by its marker (``core.fs.publish_dir``).
"""
from __future__ import annotations

import base64
import json
import logging
from typing import Any, Iterable, Optional, Sequence

import apache_beam as beam
from apache_beam.ml.inference.base import ModelHandler, PredictionResult, RunInference

from core import feature_specs, fs
from pipeline import progress
from pipeline.progress import RowCounter

log = logging.getLogger("pipeline.stages.distill")

NAMESPACE = "distill"
DEAD_LETTER_TAG = "dead_letters"
_DTYPES = ("int64", "float32")


class _TeacherScorer:
    """The loaded teacher: parses a batch of serialized examples and returns the logits."""

    def __init__(self, model_path: str, feature_dtypes: dict, outputs: dict):
        import tensorflow as tf
        import tf_keras as keras

        self._model = keras.models.load_model(model_path, compile=False)
        spec = feature_specs.model_input_spec(feature_dtypes)
        output_keys = dict(outputs)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def score(serialized):
            features = tf.io.parse_example(serialized, spec)
            out = self._model(features, training=False)
            return {task: tf.reshape(out[key], [-1]) for task, key in output_keys.items()}

        self._score = score

    def __call__(self, serialized: Sequence[bytes]) -> dict:
        return {task: v.numpy() for task, v in self._score(list(serialized)).items()}


class TeacherModelHandler(ModelHandler[bytes, PredictionResult, Any]):
    """Loads the teacher's serving model once per worker and scores batches of examples.

    ``run_inference`` yields ``PredictionResult(example, {task: logit})``; when a batch fails
    (e.g. a record lacking a model input) its records are scored one by one and each failing
    record yields ``PredictionResult(example, None, model_id=<error message>)``.

    Args:
      model_path: the teacher's ``serving_model`` SavedModel directory.
      feature_dtypes: model input name -> ``"int64"`` or ``"float32"`` (a scalar feature), or
        ``(dtype, shape)`` (``core.feature_specs.model_input_types``: a list ``("int64",
        [length])``, its weights or a PLE encoding ``("float32", [width])``).
      outputs: task -> name of the model output holding that task's logit.
      batch_size: the largest batch ``BatchElements`` forms.
    """

    def __init__(self, model_path: str, feature_dtypes: dict, outputs: dict, batch_size: int = 1024):
        if not feature_dtypes:
            raise ValueError("feature_dtypes must name at least one model input. Received: {}")
        bad = {k: v for k, v in feature_dtypes.items() if not _valid_type(v)}
        if bad:
            raise ValueError(f"feature_dtypes values must be one of {_DTYPES} or (dtype, shape) with a shape of "
                             f"positive sizes. Received: {bad}")
        if not outputs:
            raise ValueError("outputs must map at least one task to a logit output. Received: {}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1. Received: batch_size={batch_size}")
        super().__init__(min_batch_size=1, max_batch_size=int(batch_size))
        self.model_path = model_path
        self.feature_dtypes = {k: v if isinstance(v, str) else (v[0], [int(d) for d in v[1]])
                               for k, v in feature_dtypes.items()}
        self.outputs = dict(outputs)

    def load_model(self) -> _TeacherScorer:
        log.info("loading the teacher from %s", self.model_path)
        return _TeacherScorer(self.model_path, self.feature_dtypes, self.outputs)

    def run_inference(self, batch: Sequence[bytes], model: _TeacherScorer,
                      inference_args: Optional[dict] = None) -> Iterable[PredictionResult]:
        try:
            logits = model(batch)
        except Exception:  # noqa: BLE001  (isolate the bad records below)
            yield from self._one_by_one(batch, model)
            return
        for i, example in enumerate(batch):
            yield PredictionResult(example, {task: float(v[i]) for task, v in logits.items()})

    @staticmethod
    def _one_by_one(batch, model):
        for example in batch:
            try:
                logits = model([example])
            except Exception as e:  # noqa: BLE001  (the record goes to the dead letters)
                yield PredictionResult(example, None, model_id=_reason(e))
                continue
            yield PredictionResult(example, {task: float(v[0]) for task, v in logits.items()})

    def get_metrics_namespace(self) -> str:
        return NAMESPACE


def _valid_type(t) -> bool:
    """A dtype name of ``_DTYPES`` or ``(dtype, shape)`` with positive integer sizes."""
    if isinstance(t, str):
        return t in _DTYPES
    try:
        dtype, shape = t
        return dtype in _DTYPES and all(not isinstance(d, bool) and int(d) == d and d > 0 for d in shape)
    except (TypeError, ValueError):
        return False


def _reason(error: Exception) -> str:
    """One line naming what failed: TensorFlow's own message line (e.g. the missing feature)."""
    text = getattr(error, "message", None) or str(error) or type(error).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    useful = [line for line in lines if "Feature" in line or "Received" in line] or lines or [type(error).__name__]
    return f"{type(error).__name__}: {useful[0][:300]}"


class _CountRowsIn(beam.DoFn):
    """Counts the rows into the job (a Beam counter) and into the launcher's progress."""

    def __init__(self, progress_dir: Optional[str]):
        self._rows_in = beam.metrics.Metrics.counter(NAMESPACE, "rows_in")
        self._progress = RowCounter(progress_dir)

    def process(self, element):
        self._rows_in.inc()
        self._progress.count()
        yield element

    def finish_bundle(self):
        self._progress.flush()


class _AddTeacherLogits(beam.DoFn):
    """PredictionResult -> the serialized example with ``teacher_logit_<task>`` features added."""

    def __init__(self):
        self._scored = beam.metrics.Metrics.counter(NAMESPACE, "rows_scored")
        self._dead = beam.metrics.Metrics.counter(NAMESPACE, "rows_dead_letter")

    def process(self, result: PredictionResult):
        if result.inference is None:
            self._dead.inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, {
                "error": result.model_id,
                "record_base64": base64.b64encode(result.example).decode("ascii"),
            })
            return
        scored = feature_specs.add_teacher_logits(result.example, result.inference)
        self._scored.inc()
        yield scored


class ScoreWithTeacher(beam.PTransform):
    """Serialized transformed examples -> the same examples with the teacher's logits.

    Returns a ``DoOutputsTuple`` with the main output (serialized ``tf.Example`` bytes, one per
    scored input) and ``dead_letters`` (dicts ``{"error", "record_base64"}``).
    """

    def __init__(self, model_handler: TeacherModelHandler, label: Optional[str] = None):
        super().__init__(label)
        self._handler = model_handler
        self._progress_dir = progress.active_dir()  # the launcher's StageProgress, if any

    def expand(self, examples):
        return (
            examples
            | "CountRowsIn" >> beam.ParDo(_CountRowsIn(self._progress_dir))
            | "RunTeacher" >> RunInference(self._handler)
            | "AddTeacherLogits" >> beam.ParDo(_AddTeacherLogits()).with_outputs(DEAD_LETTER_TAG, main="scored")
        )


class ScoreSplits(beam.PTransform):
    """Reads each split's transformed TFRecords, scores them and writes them under ``output_dir``.

    Args:
      patterns: split name -> glob of gzip TFRecord shards.
      output_dir: where ``<split>-*.tfrecord.gz`` and ``dead_letters/<split>-*.jsonl`` go.
      model_handler: the ``TeacherModelHandler``.
      num_shards: output shards per split (0: the runner decides).
    """

    def __init__(self, patterns: dict, output_dir: str, model_handler: TeacherModelHandler, num_shards: int = 0):
        super().__init__()
        self._patterns = dict(patterns)
        self._output_dir = output_dir
        self._handler = model_handler
        self._num_shards = int(num_shards)

    def expand(self, pbegin):
        for split, pattern in self._patterns.items():
            scored = (
                pbegin
                | f"Read[{split}]" >> beam.io.ReadFromTFRecord(pattern, compression_type=beam.io.filesystem.CompressionTypes.GZIP)
                | f"Score[{split}]" >> ScoreWithTeacher(self._handler)
            )
            _ = scored.scored | f"Write[{split}]" >> beam.io.WriteToTFRecord(
                fs.join(self._output_dir, split), file_name_suffix=".tfrecord.gz",
                compression_type=beam.io.filesystem.CompressionTypes.GZIP, num_shards=self._num_shards)
            _ = (
                scored[DEAD_LETTER_TAG]
                | f"DeadLetterJson[{split}]" >> beam.Map(lambda d, s=split: json.dumps({"split": s, **d}))
                | f"WriteDeadLetters[{split}]" >> beam.io.WriteToText(
                    fs.join(self._output_dir, "dead_letters", split), file_name_suffix=".jsonl")
            )
        return pbegin


def _split_of(step: str, splits) -> Optional[str]:
    for split in splits:
        if f"[{split}]" in step:
            return split
    return None


def score_splits(patterns: dict, output_dir: str, model_handler: TeacherModelHandler, options=None,
                 num_shards: int = 0) -> dict:
    """Runs ``ScoreSplits`` and waits; returns split -> ``{rows_in, rows_scored, rows_dead_letter}``.

    The output is published as ``output_dir`` (``core.fs.publish_dir``: read it through
    ``core.fs.published``) only when the job succeeded and the counts add up; raises
    ``RuntimeError`` when they do not.
    """
    from apache_beam.metrics.metric import MetricsFilter

    from core.fs import publish_dir

    counts = {split: {"rows_in": 0, "rows_scored": 0, "rows_dead_letter": 0} for split in patterns}
    with publish_dir(output_dir) as tmp:
        p = beam.Pipeline(options=options)
        _ = p | "ScoreSplits" >> ScoreSplits(patterns, tmp, model_handler, num_shards=num_shards)
        result = p.run()
        result.wait_until_finish()
        for c in result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]:
            split = _split_of(c.key.step, patterns)
            if split is not None and c.key.metric.name in counts[split]:
                counts[split][c.key.metric.name] += int(c.committed if c.committed is not None else c.attempted)
        for split, n in counts.items():
            if n["rows_in"] != n["rows_scored"] + n["rows_dead_letter"]:
                raise RuntimeError(f"teacher scoring lost records in split '{split}': {n}")
            log.info("teacher scores [%s]: %d rows in, %d scored, %d dead-lettered",
                     split, n["rows_in"], n["rows_scored"], n["rows_dead_letter"])
    return counts
