"""Raw records of one split, read in-process, and their serialized ``tf.Example`` form.

Export needs a few hundred or thousand raw rows outside Beam: validation rows for the warmup
file, test rows for the gate's metrics and skew checks. ``read_split`` reuses the
preprocessing engineer's decoders (``core.raw_formats``), record checks
(``core.records.RecordSchema``) and split assignment (``core.splits``), so it
yields exactly the records preprocessing put into that split, in file order.
``core.feature_specs.encode_raw_example`` turns a typed record into the raw ``tf.Example``
a serving client sends (features only, parsed by ``core.feature_specs.serving_feature_spec``).
"""
from __future__ import annotations

import logging
from typing import Iterator

from core import features

from core import raw_formats
from core.records import InvalidRecord, RecordSchema
from core.splits import SPLITS, assign_split, split_columns, split_key

log = logging.getLogger("serving.raw_examples")


def iter_raw_records(pattern: str, fmt: str, cfg) -> Iterator[dict]:
    """Raw records (``core.raw_formats``) of every file matching ``pattern``, in path order."""
    for path in raw_formats.list_input_files(pattern):
        yield from raw_formats.read_file(path, fmt, cfg.data.csv)


def read_split(cfg, pattern: str, fmt: str, split: str, limit: int) -> list[dict]:
    """Up to ``limit`` valid typed records of ``split`` (labels included), in file order.

    Each item is ``{"source", "position", "features"}``; ``features`` holds the typed values
    of ``RecordSchema(cfg, require_labels=True)`` (str categoricals, float numerics and labels).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}. Received: split={split!r}")
    if limit <= 0:
        return []
    schema = RecordSchema(cfg, require_labels=True)
    key_columns = split_columns(cfg, features.raw_columns(cfg))
    s = cfg.preprocess.split
    fractions, target = (s.train, s.validation, s.test), SPLITS.index(split)
    out, skipped = [], 0
    for rec in iter_raw_records(pattern, fmt, cfg):
        if "error" in rec:
            skipped += 1
            continue
        try:
            typed = schema.typed(rec["values"])
        except InvalidRecord:
            skipped += 1
            continue
        if assign_split(split_key(rec["values"], key_columns), fractions) != target:
            continue
        out.append({"source": rec["source"], "position": rec["position"], "features": typed})
        if len(out) >= limit:
            break
    log.info("read %d %s records from %s (%d invalid skipped)", len(out), split, pattern, skipped)
    return out


def to_columns(cfg, records: list[dict]) -> dict:
    """Column lists of the raw feature columns (``predict_raw`` inputs) of typed records."""
    return {c: [r["features"][c] for r in records] for c in features.raw_feature_columns(cfg)}
