"""Raw records of one split, read in-process, and their serialized ``tf.Example`` form.

Export needs a few hundred or thousand raw rows outside Beam: validation rows for the warmup
file, test rows for the gate's metrics and skew checks. ``read_split`` reuses the
preprocessing engineer's decoders (``core.raw_formats``), record checks
(``core.records.RecordSchema``) and split assignment (``core.splits``), so it
yields exactly the records preprocessing put into that split, in file order.
``core.feature_specs.encode_raw_example`` turns a typed record into the raw ``tf.Example``
a serving client sends (features only, parsed by ``core.feature_specs.serving_feature_spec``).

``to_columns`` / ``to_instances`` give the ``predict_raw`` inputs of typed records in the
padded representation (``serving.signatures``): a list column is one list per record padded
with ``LIST_PAD`` (``""``), its weight column padded with 0.0 to the same width (TF
Serving's JSON and ``TensorProto`` tensors are rectangular). The width is, by default, the
list's ``max_length``, each list first truncated as the TF Transform graph truncates it (its
first ``max_length`` values; a ``recent_last`` sequence its last): every request then has
the same width, which TF Serving's server-side batching (``--enable_batching``) needs to
concatenate concurrent requests (it refuses tensors of different widths unless
``pad_variable_length_inputs``, which pads with the tensor's first value, a real list
value, so it must stay off). ``width="batch"`` pads to the batch's longest list instead,
untruncated (this project's server accepts any width). ``to_tensors`` gives what parsing
the raw ``tf.Example`` gives (lists as ``SparseTensor``s), the TF Transform layer's input in
the gate's skew check.
"""
from __future__ import annotations

import logging
from typing import Iterator

from core import features
from core import raw_formats
from core.config import weight_columns
from core.records import InvalidRecord, RecordSchema
from core.splits import SPLITS, assign_split, split_columns, split_key

log = logging.getLogger("serving.raw_examples")

LIST_PAD = ""  # pads a list column in predict_raw inputs; every "" is dropped (a real value is never "")
WEIGHT_PAD = 0.0  # pads a weight column (its entries at the padded positions are ignored)


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


def pad_lists(lists: list, pad, width: int | None = None) -> list[list]:
    """Lists padded with ``pad`` to ``width`` (default: the longest), as new lists."""
    width = max((len(v) for v in lists), default=0) if width is None else width
    return [list(v) + [pad] * (width - len(v)) for v in lists]


def _kinds(cfg) -> tuple[dict, dict]:
    """(list column -> its ``ListFeatureConfig``, weight column -> its list)."""
    return {f.name: f for f in cfg.data.lists}, {w: name for name, w in weight_columns(cfg.data).items()}


def truncated(values: list, f) -> list:
    """A list as the TF Transform graph keeps it: its first ``f.max_length`` values, or its
    last for a ``recent_last`` sequence (``pipeline.preprocess.transform``)."""
    if f.kind == "sequence" and f.order == "recent_last":
        return list(values[-f.max_length:]) if f.max_length else []
    return list(values[:f.max_length])


def to_columns(cfg, records: list[dict], columns=None, width: str = "max_length") -> dict:
    """``predict_raw`` inputs of typed records, column -> one value per record (columnar).

    Args:
      cfg: the config.
      records: items with ``"features"`` (``RecordSchema.typed``), as ``read_split`` gives.
      columns: the raw columns to give (default ``core.features.raw_feature_columns``; an
        export of a model that reads a subset takes fewer: its ``predict_raw`` input keys).
      width: ``"max_length"`` (default): every list truncated as the transform truncates it
        and padded to its ``max_length``, the same width in every request (module
        docstring); ``"batch"``: padded to the batch's longest list, untruncated.

    Returns:
      dict column -> list: scalars as they are; a list column as lists of strings padded
      with ``LIST_PAD``; a weight column as lists of floats padded with ``WEIGHT_PAD`` to its
      list's width.
    """
    if width not in ("max_length", "batch"):
        raise ValueError(f"width must be 'max_length' or 'batch'. Received: width={width!r}")
    columns = features.raw_feature_columns(cfg) if columns is None else list(columns)
    lists, weights = _kinds(cfg)

    def kept(name: str, values: list) -> list:
        return truncated(values, lists[name]) if width == "max_length" else list(values)

    def padded_width(name: str) -> int:
        if width == "max_length":
            return lists[name].max_length
        return max([len(r["features"][name]) for r in records] + [0])

    out = {}
    for c in columns:
        values = [r["features"][c] for r in records]
        if c in lists:
            out[c] = pad_lists([[str(v) for v in kept(c, x)] for x in values], LIST_PAD, padded_width(c))
        elif c in weights:
            out[c] = pad_lists([[float(v) for v in kept(weights[c], x)] for x in values], WEIGHT_PAD,
                               padded_width(weights[c]))
        else:
            out[c] = values
    return out


def to_instances(cfg, records: list[dict], columns=None, width: str = "max_length") -> list[dict]:
    """``to_columns`` as TF Serving's row format (``"instances"``): one object per record."""
    cols = to_columns(cfg, records, columns, width)
    return [{c: v[i] for c, v in cols.items()} for i in range(len(records))]


def to_tensors(cfg, records: list[dict], columns=None) -> dict:
    """The raw columns of typed records as parsing their ``tf.Example``s gives them: string
    ``[n]`` categoricals, float32 ``[n]`` numerics, ``SparseTensor`` lists (string) and weight
    columns (float32), ``[n, longest]``."""
    import numpy as np
    import tensorflow as tf

    columns = features.raw_feature_columns(cfg) if columns is None else list(columns)
    lists, weights = _kinds(cfg)
    numeric = set(cfg.data.numeric)
    out = {}
    for c in columns:
        values = [r["features"][c] for r in records]
        if c in lists or c in weights:
            dtype = tf.string if c in lists else tf.float32
            indices = [[i, j] for i, v in enumerate(values) for j in range(len(v))]
            flat = [str(x) if c in lists else float(x) for v in values for x in v]
            out[c] = tf.sparse.SparseTensor(tf.constant(indices, tf.int64, shape=[len(indices), 2]),
                                            tf.constant(flat, dtype, shape=[len(flat)]),
                                            [len(values), max((len(v) for v in values), default=0)])
        elif c in numeric:
            out[c] = tf.constant(np.asarray(values, np.float32))
        else:
            out[c] = tf.constant([str(v) for v in values], tf.string)
    return out
