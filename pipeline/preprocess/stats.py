"""Record counts of a preprocessing run: counted in the pipeline, checked, reported, plotted.

``CountRecords`` writes one JSON line per count (``["read", n]``, ``["valid", n]``,
``["dead:<reason>", n]``, ``["split:<name>", n]``; with list features also
``["truncated:<list>", n]``, the valid records whose list is longer than its ``max_length``
(``RecordSchema.truncated``), and ``["list_length_sum:<list>", n]`` /
``["list_length_max:<list>", n]``) as part of the pipeline, so the counts do not depend on a
runner's metrics support (the Beam counters report the same numbers for monitoring:
``truncated_<list>`` and the ``list_length_<list>`` distribution of the validation step).
``build_stats`` turns them into ``stats.json`` and checks the invariant
read = valid + dead-lettered; ``check_dead_letter_fraction`` enforces the configured maximum
and ``check_training_records`` that training has something to train on.
"""
from __future__ import annotations

import json

import apache_beam as beam

from core import fs
from core.errors import DataValidationError, InputError, PipelineError
from core.figures import pyplot, save_figure
from core.splits import SPLITS


class _SumMax(beam.CombineFn):
    """(sum, max) of non-negative integers."""

    def create_accumulator(self):
        return 0, 0

    def add_input(self, acc, n):
        return acc[0] + n, max(acc[1], n)

    def merge_accumulators(self, accs):
        accs = list(accs)
        return sum(a[0] for a in accs), max((a[1] for a in accs), default=0)

    def extract_output(self, acc):
        return acc


class CountRecords(beam.PTransform):
    """Counts raw records, valid records, dead letters per reason, records per split and, with
    list features, the valid records whose lists get truncated and the list lengths.

    Args:
      output_file: the JSON-lines file to write (one shard, exactly this name).
      schema: the ``core.records.RecordSchema`` of the valid records (its ``lists`` and
        ``truncated``); None: no list counts.

    Input: a dict ``{"read": pcoll, "valid": pcoll, "dead_letters": pcoll, "<split>": pcoll, ...}``.
    """

    def __init__(self, output_file: str, schema=None):
        super().__init__()
        self._output_file = output_file
        self._schema = schema if schema is not None and schema.lists else None

    def expand(self, pcolls: dict):
        counts = []
        for name in ("read", "valid") + SPLITS:
            label = name if name in ("read", "valid") else f"split:{name}"
            counts.append(pcolls[name]
                          | f"Count[{name}]" >> beam.combiners.Count.Globally()
                          | f"Key[{name}]" >> beam.Map(lambda n, label=label: [label, n]))
        counts.append(pcolls["dead_letters"]
                      | "Reason" >> beam.Map(lambda d: "dead:" + d["reason"])
                      | "CountReasons" >> beam.combiners.Count.PerElement()
                      | "KeyReasons" >> beam.Map(list))
        if self._schema is not None:
            schema = self._schema
            names = [name for name, *_ in schema.lists]
            counts.append(pcolls["valid"]
                          | "Truncated" >> beam.FlatMap(lambda r: ["truncated:" + n for n in schema.truncated(r["features"])])
                          | "CountTruncated" >> beam.combiners.Count.PerElement()
                          | "KeyTruncated" >> beam.Map(list))
            counts.append(pcolls["valid"]
                          | "ListLengths" >> beam.FlatMap(lambda r: [(n, len(r["features"][n])) for n in names])
                          | "SumMaxLengths" >> beam.CombinePerKey(_SumMax())
                          | "KeyLengths" >> beam.FlatMap(lambda kv: [["list_length_sum:" + kv[0], kv[1][0]],
                                                                     ["list_length_max:" + kv[0], kv[1][1]]]))
        return (counts
                | "Flatten" >> beam.Flatten()
                | "ToJson" >> beam.Map(json.dumps)
                | "Write" >> beam.io.WriteToText(self._output_file, num_shards=1, shard_name_template=""))


def read_counts(path: str) -> dict:
    counts = {}
    for line in fs.read_text(path).splitlines():
        if line.strip():
            key, n = json.loads(line)
            if key.startswith("list_length_max:"):
                counts[key] = max(counts.get(key, 0), int(n))
            else:
                counts[key] = counts.get(key, 0) + int(n)
    return counts


def build_stats(counts: dict, wall_seconds: float, inputs: dict, lists: list | None = None) -> dict:
    """``stats.json`` content; raises ``PipelineError`` if read != valid + dead-lettered.

    With list features (``lists``: their names) also ``truncated`` (list -> valid records
    longer than its ``max_length``, cut by the transform) and ``list_lengths`` (list ->
    ``{"mean", "max"}`` values per valid record, before truncation)."""
    by_reason = {k.split(":", 1)[1]: v for k, v in sorted(counts.items()) if k.startswith("dead:")}
    read, valid = counts.get("read", 0), counts.get("valid", 0)
    dead = sum(by_reason.values())
    per_split = {s: counts.get(f"split:{s}", 0) for s in SPLITS}
    if read != valid + dead or valid != sum(per_split.values()):
        raise PipelineError(f"preprocess: record counts do not add up: read={read}, valid={valid}, "
                            f"dead_lettered={dead}, per split={per_split}")
    stats = {
        "rows_read": read,
        "valid": valid,
        "dead_lettered": dead,
        "dead_letter_fraction": dead / read if read else 0.0,
        "by_reason": by_reason,
        "rows_per_split": per_split,
        "wall_seconds": round(wall_seconds, 3),
        "rows_per_second": round(read / wall_seconds, 1) if wall_seconds > 0 else None,
        "input": inputs,
    }
    if lists:
        stats["truncated"] = {n: counts.get(f"truncated:{n}", 0) for n in lists}
        stats["list_lengths"] = {n: {"mean": round(counts.get(f"list_length_sum:{n}", 0) / valid, 3) if valid else 0.0,
                                     "max": counts.get(f"list_length_max:{n}", 0)} for n in lists}
    return stats


def check_dead_letter_fraction(stats: dict, max_fraction: float, dead_letter_dir: str) -> None:
    """Raises ``DataValidationError`` naming the top reasons when too many records were rejected."""
    if stats["dead_letter_fraction"] <= max_fraction:
        return
    top = sorted(stats["by_reason"].items(), key=lambda kv: -kv[1])[:3]
    reasons = ", ".join(f"{r}: {n}" for r, n in top)
    raise DataValidationError(
        f"{stats['dead_lettered']} of {stats['rows_read']} records "
        f"({100 * stats['dead_letter_fraction']:.2f}%) failed validation, above "
        f"preprocess.max_dead_letter_fraction={max_fraction:g}; top reasons: {reasons}; "
        f"see the dead letters in {dead_letter_dir}")


def check_training_records(stats: dict, pattern: str) -> None:
    """``InputError`` when the input held no record at all (empty files, a CSV header only),
    ``DataValidationError`` when no valid record landed in the training split."""
    files = stats.get("input", {}).get("files")
    where = f"{pattern!r}" + (f" ({files} file{'s' if files != 1 else ''})" if files is not None else "")
    if stats["rows_read"] == 0:
        raise InputError(f"no records in the input {where}: the files are empty or hold only a CSV header; "
                         "there is nothing to train on")
    if stats["rows_per_split"].get("train", 0) == 0:
        raise DataValidationError(
            f"no valid training records in the input {where}: read {stats['rows_read']}, valid {stats['valid']}, "
            f"dead-lettered {stats['dead_lettered']} ({stats['by_reason'] or 'none'}), per split "
            f"{stats['rows_per_split']}")


def report_markdown(stats: dict, feature_info: dict | None = None) -> str:
    lines = ["| count | records |", "|---|---|",
             f"| read | {stats['rows_read']} |", f"| valid | {stats['valid']} |",
             f"| dead-lettered | {stats['dead_lettered']} ({100 * stats['dead_letter_fraction']:.3f}%) |"]
    lines += [f"| dead: {r} | {n} |" for r, n in stats["by_reason"].items()]
    lines += [f"| split: {s} | {n} |" for s, n in stats["rows_per_split"].items()]
    lines += [f"| truncated: {name} | {n} |" for name, n in stats.get("truncated", {}).items()]
    if stats.get("rows_per_second"):
        lines.append(f"\nThroughput: {stats['rows_per_second']:,.0f} records/s "
                     f"({stats['wall_seconds']:.1f} s for the Beam + TFT pipeline).")
    if feature_info:
        sizes = ", ".join(f"{c}: {n}" for c, n in feature_info["categorical"].items())
        lines.append(f"\nCategorical cardinalities (incl. OOV buckets): {sizes}.")
        if feature_info.get("lists"):
            lengths = stats.get("list_lengths", {})
            described = []
            for name, info in feature_info["lists"].items():
                shared = f", {info['table']}'s table" if info.get("table") and info["table"] != name else ""
                seen = f", length mean {lengths[name]['mean']:g} max {lengths[name]['max']}" if name in lengths else ""
                described.append(f"{name} ({info['kind']}, {info['cardinality']} ids{shared}, padded to "
                                 f"{info['length']}, {info['pooling']}{seen})")
            lines.append(f"\nList features: {'; '.join(described)}.")
    return "\n".join(lines)


def plot_counts(stats: dict, path: str) -> str:
    """A PNG bar chart of records per split and dead letters per reason; returns ``path``."""
    fig, axes = pyplot().subplots(1, 2, figsize=(10, 3.5))
    splits = stats["rows_per_split"]
    axes[0].bar(list(splits), list(splits.values()), color="tab:blue")
    axes[0].set_title(f"valid records per split ({stats['valid']:,} of {stats['rows_read']:,})")
    reasons = stats["by_reason"] or {"none": 0}
    axes[1].barh(list(reasons), list(reasons.values()), color="tab:red")
    axes[1].set_title(f"dead letters by reason ({stats['dead_lettered']:,})")
    fig.tight_layout()
    return save_figure(fig, path, dpi=90)
