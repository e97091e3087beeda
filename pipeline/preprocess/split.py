"""``SplitRecords``: the Beam transform that partitions typed records by ``core.splits``."""
from __future__ import annotations

import apache_beam as beam

from core.splits import SPLITS, assign_split, split_key


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
