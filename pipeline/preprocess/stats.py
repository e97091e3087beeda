"""Record counts of a preprocessing run: counted in the pipeline, checked, reported, plotted.

``CountRecords`` writes one JSON line per count (``["read", n]``, ``["valid", n]``,
``["dead:<reason>", n]``, ``["split:<name>", n]``) as part of the pipeline, so the counts do
not depend on a runner's metrics support (the Beam counters report the same numbers for
monitoring). ``build_stats`` turns them into ``stats.json`` and checks the invariant
read = valid + dead-lettered; ``check_dead_letter_fraction`` enforces the configured maximum
and ``check_training_records`` that training has something to train on.
"""
from __future__ import annotations

import json

import apache_beam as beam

from core.errors import DataValidationError, InputError, PipelineError
from core.figures import pyplot, save_figure
from core.splits import SPLITS


class CountRecords(beam.PTransform):
    """Counts raw records, valid records, dead letters per reason and records per split.

    Args:
      output_file: the JSON-lines file to write (one shard, exactly this name).

    Input: a dict ``{"read": pcoll, "valid": pcoll, "dead_letters": pcoll, "<split>": pcoll, ...}``.
    """

    def __init__(self, output_file: str):
        super().__init__()
        self._output_file = output_file

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
        return (counts
                | "Flatten" >> beam.Flatten()
                | "ToJson" >> beam.Map(json.dumps)
                | "Write" >> beam.io.WriteToText(self._output_file, num_shards=1, shard_name_template=""))


def read_counts(path: str) -> dict:
    counts = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                key, n = json.loads(line)
                counts[key] = counts.get(key, 0) + int(n)
    return counts


def build_stats(counts: dict, wall_seconds: float, inputs: dict) -> dict:
    """``stats.json`` content; raises ``PipelineError`` if read != valid + dead-lettered."""
    by_reason = {k.split(":", 1)[1]: v for k, v in sorted(counts.items()) if k.startswith("dead:")}
    read, valid = counts.get("read", 0), counts.get("valid", 0)
    dead = sum(by_reason.values())
    per_split = {s: counts.get(f"split:{s}", 0) for s in SPLITS}
    if read != valid + dead or valid != sum(per_split.values()):
        raise PipelineError(f"preprocess: record counts do not add up: read={read}, valid={valid}, "
                            f"dead_lettered={dead}, per split={per_split}")
    return {
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
    if stats.get("rows_per_second"):
        lines.append(f"\nThroughput: {stats['rows_per_second']:,.0f} records/s "
                     f"({stats['wall_seconds']:.1f} s for the Beam + TFT pipeline).")
    if feature_info:
        sizes = ", ".join(f"{c}: {n}" for c, n in feature_info["categorical"].items())
        lines.append(f"\nCategorical cardinalities (incl. OOV buckets): {sizes}.")
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
