"""The ``generate`` stage: synthetic click/conversion impression logs (the embedded default data).

Rows come from ``pipeline.synthetic_model.World`` (latent user x item factors, non-linear
context effects, a task-correlation knob) and carry the true probabilities ``p_click`` and
``p_conversion`` so evaluation can report each task's oracle (Bayes-optimal) AUC.

Output: ``run_dir.raw_data_dir/part-NNNNN.<csv|parquet>``, ``synthetic.chunk_rows`` rows per
file, each with a header; memory stays constant in ``synthetic.rows``. The whole directory
is written through ``atomic_dir`` and ends with a ``_SUCCESS`` marker holding the synthetic
config, so a killed run leaves nothing half-written and a re-run with the same config is
skipped. Rows depend only on (seed, row index): the files of two chunk sizes concatenate to
the same table.

Example::

    python -m pipeline generate --run-dir runs/demo --set synthetic.rows=50000
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from typing import Iterator

import numpy as np
import pandas as pd

from pipeline.errors import ConfigError
from pipeline.report import pyplot, save_figure
from pipeline.run_dir import RunDir, atomic_dir, read_json, write_json_atomic
from pipeline.synthetic_model import BLOCK_ROWS, COLUMNS, World

log = logging.getLogger("pipeline.synthetic")

SUCCESS_FILE = "_SUCCESS"
GENERATOR_VERSION = 1  # bump when the generated rows change for the same config
_PLOT_SAMPLE_ROWS = 200_000
_CSV_FLOAT_FORMAT = "%.6g"


def iter_chunks(s) -> Iterator[pd.DataFrame]:
    """Yields the ``s.rows`` rows of a ``SyntheticConfig`` as DataFrames of ``s.chunk_rows`` rows.

    Blocks of ``BLOCK_ROWS`` rows are drawn one at a time and re-cut into chunks, so at most
    one chunk and one block are held in memory.
    """
    world = World.create(s)
    pending: list[pd.DataFrame] = []
    buffered = 0
    for block in range(math.ceil(s.rows / BLOCK_ROWS)):
        frame = pd.DataFrame(world.impressions(block), columns=COLUMNS)
        frame = frame.iloc[: s.rows - block * BLOCK_ROWS]
        pending.append(frame)
        buffered += len(frame)
        while buffered >= s.chunk_rows:
            table = pd.concat(pending, ignore_index=True)
            yield table.iloc[: s.chunk_rows].reset_index(drop=True)
            rest = table.iloc[s.chunk_rows:]
            pending, buffered = ([rest], len(rest)) if len(rest) else ([], 0)
    if buffered:
        yield pd.concat(pending, ignore_index=True)


def write_part(frame: pd.DataFrame, directory: str, index: int, fmt: str) -> str:
    """Writes one chunk as ``part-NNNNN.<fmt>`` and returns its file name."""
    name = f"part-{index:05d}.{fmt}"
    path = os.path.join(directory, name)
    if fmt == "csv":
        frame.to_csv(path, index=False, float_format=_CSV_FLOAT_FORMAT)
    else:
        frame.to_parquet(path, index=False, engine="pyarrow")
    return name


def synthetic_signature(s) -> dict:
    """What must match for an existing output to be reused."""
    return {"generator_version": GENERATOR_VERSION, **dataclasses.asdict(s)}


def generate(s, directory: str) -> dict:
    """Writes every chunk of ``SyntheticConfig`` ``s`` into ``directory`` (which must exist).

    Returns counts, file names and a sample of the oracle probabilities for plotting.
    """
    n_chunks = math.ceil(s.rows / s.chunk_rows)
    files, rows, clicks, conversions = [], 0, 0, 0
    users, items = set(), set()
    sample = {"p_click": [], "p_conversion": [], "click": [], "conversion": []}
    start = time.monotonic()
    for index, frame in enumerate(iter_chunks(s)):
        files.append(write_part(frame, directory, index, s.format))
        rows += len(frame)
        clicks += int(frame["click"].sum())
        conversions += int(frame["conversion"].sum())
        users.update(frame["user_id"].unique())
        items.update(frame["item_id"].unique())
        if rows - len(frame) < _PLOT_SAMPLE_ROWS:
            for k in sample:
                sample[k].append(frame[k].to_numpy())
        elapsed = time.monotonic() - start
        log.info("generate: chunk %d/%d written (%d/%d rows, %.0f rows/s)",
                 index + 1, n_chunks, rows, s.rows, rows / max(elapsed, 1e-9))
    return {
        "rows": rows, "files": files, "clicks": clicks, "conversions": conversions,
        "distinct_users": len(users), "distinct_items": len(items),
        "sample": {k: np.concatenate(v)[:_PLOT_SAMPLE_ROWS] for k, v in sample.items()},
    }


def _metrics(counts: dict) -> dict:
    rows, clicks, conversions = counts["rows"], counts["clicks"], counts["conversions"]
    return {
        "click_rate": clicks / rows,
        "conversion_rate": conversions / rows,
        "conversion_given_click": conversions / clicks if clicks else 0.0,
        "clicks": clicks,
        "conversions": conversions,
        "distinct_users": counts["distinct_users"],
        "distinct_items": counts["distinct_items"],
    }


def _plot(sample: dict, run_dir: RunDir) -> str:
    """Histogram of the true probabilities; returns its path relative to the run directory."""
    fig, axes = pyplot().subplots(1, 2, figsize=(10, 3.5))
    for ax, key in zip(axes, ("p_click", "p_conversion")):
        values = sample[key]
        ax.hist(values, bins=60, color="#4477aa")
        ax.set_yscale("log")
        ax.set_title(f"{key} (mean {values.mean():.4f}, n={len(values):,})")
        ax.set_xlabel("true probability")
    axes[0].set_ylabel("impressions")
    fig.tight_layout()
    path = save_figure(fig, os.path.join(run_dir.plots_dir, "synthetic_probabilities.png"), dpi=80)
    return os.path.relpath(path, run_dir.root)


def _oracle_auc(sample: dict) -> dict:
    """AUC of the true probability against the drawn label (the Bayes-optimal ranking)."""
    from sklearn.metrics import roc_auc_score

    out = {}
    for task, key in (("click", "p_click"), ("conversion", "p_conversion")):
        y = sample[task]
        out[task] = float(roc_auc_score(y, sample[key])) if 0 < y.sum() < len(y) else float("nan")
    return out


def _report(s, marker: dict, skipped: bool) -> str:
    m = marker["metrics"]
    lines = [
        ("Reused the existing output (same synthetic config). " if skipped else "")
        + f"{marker['rows']:,} impressions in {len(marker['files'])} {s.format} file(s), seed {s.seed}.",
        "",
        "| quantity | value |",
        "|---|---|",
        f"| users / items / categories (configured) | {s.num_users:,} / {s.num_items:,} / {s.num_categories} |",
        f"| distinct users / items seen | {m['distinct_users']:,} / {m['distinct_items']:,} |",
        f"| click rate (target) | {m['click_rate']:.4f} ({s.click_rate}) |",
        f"| conversion rate per impression (target) | {m['conversion_rate']:.4f} ({s.conversion_rate}) |",
        f"| conversion given click | {m['conversion_given_click']:.4f} |",
        f"| task correlation / interaction scale / latent dim | {s.task_correlation} / {s.interaction_scale} / {s.latent_dim} |",
    ]
    for task, auc in marker.get("oracle_auc_sample", {}).items():
        lines.append(f"| oracle AUC {task} (first {marker['oracle_sample_rows']:,} rows) | {auc:.4f} |")
    return "\n".join(lines)


def run_stage(cfg, run_dir: RunDir, opts) -> dict:
    """Writes ``cfg.synthetic.rows`` rows into ``run_dir.raw_data_dir`` (or reuses them)."""
    if cfg.data.source != "synthetic":
        raise ConfigError(
            f"generate: data.source is {cfg.data.source!r}; the generate stage only writes synthetic data "
            "(set data.source=synthetic, or skip this stage and run preprocess on data.path)"
        )
    s = cfg.synthetic
    out_dir = run_dir.raw_data_dir
    marker_path = os.path.join(out_dir, SUCCESS_FILE)
    signature = synthetic_signature(s)
    skipped = False
    marker = read_json(marker_path, "generate marker") if os.path.exists(marker_path) else None
    if marker and marker.get("synthetic") == signature and all(
        os.path.exists(os.path.join(out_dir, f)) for f in marker.get("files", [])
    ):
        skipped = True
        log.info("generate: %s already holds %d rows for this synthetic config; skipping", out_dir, marker["rows"])
        plots = marker.get("plots", [])
    else:
        log.info("generate: writing %d rows in chunks of %d into %s", s.rows, s.chunk_rows, out_dir)
        with atomic_dir(out_dir) as tmp:
            counts = generate(s, tmp)
            sample = counts.pop("sample")
            n = len(sample["p_click"])
            oracle = _oracle_auc(sample)
            plots = [_plot(sample, run_dir)]
            marker = {
                "synthetic": signature, "rows": counts["rows"], "files": counts["files"],
                "metrics": _metrics(counts), "oracle_auc_sample": oracle, "oracle_sample_rows": n,
                "plots": plots,
            }
            write_json_atomic(os.path.join(tmp, SUCCESS_FILE), marker)
    m = marker["metrics"]
    verb = "reused" if skipped else "wrote"
    return {
        "rows": marker["rows"],
        "skipped": skipped,
        "metrics": {k: m[k] for k in ("click_rate", "conversion_rate", "conversion_given_click")},
        "artifacts": {"raw_data": out_dir, "files": len(marker["files"])},
        "report": _report(s, marker, skipped),
        "plots": plots,
        "message": (f"generate: {verb} {marker['rows']:,} rows in {len(marker['files'])} file(s) under {out_dir} "
                    f"(click rate {m['click_rate']:.4f}, conversion rate {m['conversion_rate']:.4f})"),
    }
