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

SPLITS = ("train", "validation", "test")
_SEPARATOR = "\x1f"


def _key_text(value) -> str:
    """A raw value as key text: missing is empty; a list (JSONL, Parquet, tf.Example) is its
    elements joined by ``|``, as the same list is written in a CSV field with the default
    separator, so a record keys alike in every format."""
    if value is None:
        return ""
    if isinstance(value, list):
        return "|".join(str(v) for v in value)
    return str(value)


def split_key(values: dict, columns: list[str]) -> str:
    """The string a record is split by: its raw values of ``columns`` (see ``_key_text``)."""
    return _SEPARATOR.join(_key_text(values.get(c)) for c in columns)


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


