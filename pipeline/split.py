"""Deterministic train / validation / test split by a fingerprint of key columns.

A record's split depends only on its key string: the raw values of
``cfg.preprocess.split.keys`` (or, with no keys, of every column preprocessing reads)
joined by the unit separator. The key is hashed with SHA-256 (never Python's salted
``hash()``), so the assignment is the same across runs, runners, processes and worker counts.

Example::

    >>> assign_split("imp-42", (0.8, 0.1, 0.1)) in (0, 1, 2)
    True
"""
from __future__ import annotations

import hashlib

import apache_beam as beam

SPLITS = ("train", "validation", "test")
_SEPARATOR = "\x1f"


def split_key(values: dict, columns: list[str]) -> str:
    """The string a record is split by: its raw values of ``columns`` (missing as empty)."""
    return _SEPARATOR.join("" if values.get(c) is None else str(values[c]) for c in columns)


def fingerprint_fraction(key: str) -> float:
    """A stable number in [0, 1) from ``key`` (first 8 bytes of its SHA-256)."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign_split(key: str, fractions: tuple[float, ...]) -> int:
    """Index into ``SPLITS`` of the record with this key, for ``fractions`` summing to 1."""
    u = fingerprint_fraction(key)
    cumulative = 0.0
    for i, f in enumerate(fractions):
        cumulative += f
        if u < cumulative:
            return i
    return max(i for i, f in enumerate(fractions) if f > 0)


def split_columns(cfg, columns: list[str]) -> list[str]:
    """The key columns of ``cfg.preprocess.split``, or ``columns`` (every raw column) when none."""
    return list(cfg.preprocess.split.keys) or list(columns)


class _SplitFn:
    """Picklable partition function (private: use ``SplitRecords``)."""

    def __init__(self, key_columns: list[str], fractions: tuple[float, ...]):
        self._key_columns = key_columns
        self._fractions = fractions

    def __call__(self, record: dict, num_partitions: int) -> int:
        return assign_split(split_key(record["values"], self._key_columns), self._fractions)


class SplitRecords(beam.PTransform):
    """Partitions typed records (with raw ``values``) into train, validation and test.

    Args:
      key_columns: columns whose raw values form the split key.
      fractions: (train, validation, test), summing to 1.

    Returns:
      A dict ``{"train": pcoll, "validation": pcoll, "test": pcoll}``.
    """

    def __init__(self, key_columns: list[str], fractions: tuple[float, float, float]):
        super().__init__()
        if not key_columns:
            raise ValueError("SplitRecords: expected at least one key column, got none")
        if len(fractions) != len(SPLITS) or abs(sum(fractions) - 1.0) > 1e-6:
            raise ValueError(f"SplitRecords: expected {len(SPLITS)} fractions summing to 1. Received: fractions={fractions}")
        self._fn = _SplitFn(list(key_columns), tuple(float(f) for f in fractions))

    def expand(self, records):
        parts = records | "Partition" >> beam.Partition(self._fn, len(SPLITS))
        return dict(zip(SPLITS, parts))
