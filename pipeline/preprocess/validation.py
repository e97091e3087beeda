"""``ValidateRecords`` and ``WriteDeadLetters``: the Beam side of the record checks in ``core.records``."""
from __future__ import annotations

import json

import apache_beam as beam

from core.records import DEAD_LETTERS, REASONS, InvalidRecord, RecordSchema, dead_letter


class _ValidateDoFn(beam.DoFn):
    def __init__(self, schema: RecordSchema, namespace: str):
        self._schema = schema
        self._namespace = namespace
        self._valid = beam.metrics.Metrics.counter(namespace, "records_valid")
        self._dead = {r: beam.metrics.Metrics.counter(namespace, f"dead_letter_{r}") for r in REASONS}
        names = [name for name, *_ in schema.lists]
        self._truncated = {n: beam.metrics.Metrics.counter(namespace, f"truncated_{n}") for n in names}
        self._lengths = {n: beam.metrics.Metrics.distribution(namespace, f"list_length_{n}") for n in names}

    def process(self, record: dict):
        error = record.get("error")
        if error is None:
            try:
                features = self._schema.typed(record["values"])
            except InvalidRecord as e:
                error = (e.reason, e.detail)
        if error is not None:
            reason, detail = error
            self._dead[reason].inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, dead_letter(record, reason, detail))
            return
        self._valid.inc()
        if self._truncated:
            for n, dist in self._lengths.items():
                dist.update(len(features[n]))
            for n in self._schema.truncated(features):
                self._truncated[n].inc()
        yield {"source": record["source"], "position": record["position"], "values": record["values"],
               "features": features}


class ValidateRecords(beam.PTransform):
    """Splits raw records into typed records and dead letters.

    Args:
      cfg: the ``PipelineConfig`` (schema, task labels and ``positive_values``, funnel).
      require_labels: validate labels, weight, group and passthrough columns too (False when
        scoring unlabelled inputs: only the feature columns are checked and typed).
      namespace: Beam metrics namespace of the ``records_valid``, ``dead_letter_<reason>`` and
        (list features) ``truncated_<list>`` counters and the ``list_length_<list>``
        distributions.

    Returns:
      A tuple-like result with ``.valid`` (typed records) and ``.dead_letters``.
    """

    def __init__(self, cfg, require_labels: bool = True, namespace: str = "preprocess"):
        super().__init__()
        self._schema = RecordSchema(cfg, require_labels)
        self._namespace = namespace

    def expand(self, records):
        return records | "Validate" >> beam.ParDo(_ValidateDoFn(self._schema, self._namespace)).with_outputs(
            DEAD_LETTERS, main="valid")


class WriteDeadLetters(beam.PTransform):
    """Writes dead letters as JSON lines ``<prefix>-SSSSS-of-NNNNN.jsonl``."""

    def __init__(self, file_path_prefix: str):
        super().__init__()
        self._prefix = file_path_prefix

    def expand(self, dead_letters):
        return (dead_letters
                | "ToJson" >> beam.Map(lambda d: json.dumps(d, sort_keys=True))
                | "Write" >> beam.io.WriteToText(self._prefix, file_name_suffix=".jsonl"))
