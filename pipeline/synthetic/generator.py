"""The ``generate`` stage: synthetic click/conversion impression logs (the embedded default data).

Rows come from ``pipeline.synthetic.click_model.World`` (latent user x item factors, non-linear
context effects, a task-correlation knob, a behaviour history and item tags) and carry the
true probabilities ``p_click`` and ``p_conversion`` so evaluation can report each task's
oracle (Bayes-optimal) AUC.

Two columns are lists (``click_model.LIST_COLUMNS``): ``hist_items``, the user's item ids
before this impression, most recent last, 0..``HISTORY_MAX`` of them (``"i12|i40|i7"``: i7 is
the most recent), and ``item_tags``, the target item's 1..4 ``tag:weight`` tokens
(``"t3:0.8|t17:0.35"``, relevance weights in [0.01, 1] with 2 decimals: the tags are the
item's, their weights vary per impression). In CSV each is one field joined by
``"|"`` (an empty history is an empty field), and so they are in the DataFrames of
``iter_chunks``; in Parquet a ``list<string>`` column (an empty history: an empty list).

Output: ``run_dir.raw_data_dir/part-NNNNN.<csv|parquet>``, ``synthetic.chunk_rows`` rows per
file, each with a header; memory stays constant in ``synthetic.rows``. The whole directory
is published through ``core.fs.publish_dir`` and ends with a ``_SUCCESS`` marker holding the synthetic
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
import time
from typing import Iterator

import numpy as np
import pandas as pd

from core import fs

from pipeline.synthetic.click_model import BLOCK_ROWS, COLUMNS, LIST_COLUMNS, LIST_SEPARATOR, World

log = logging.getLogger("pipeline.synthetic.generator")

SUCCESS_FILE = "_SUCCESS"
GENERATOR_VERSION = 2  # bump when the generated rows change for the same config
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
    """Writes one chunk as ``part-NNNNN.<fmt>`` and returns its file name.

    List columns (held as their CSV field) are written as is in CSV and as ``list<string>`` in Parquet.
    """
    name = f"part-{index:05d}.{fmt}"
    path = fs.join(directory, name)
    if fmt == "csv":
        fs.write_bytes(path, frame.to_csv(index=False, float_format=_CSV_FLOAT_FORMAT).encode("utf-8"))
    else:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        lists = [c for c in LIST_COLUMNS if c in frame.columns]
        plain = pa.Table.from_pandas(frame.drop(columns=lists), preserve_index=False)
        arrays = {f.name: plain.column(f.name) for f in plain.schema}
        for c in lists:
            arrays[c] = _string_lists(pa.array(frame[c].to_numpy(dtype=object), type=pa.string()), pa, pc)
        table = pa.table({c: arrays[c] for c in frame.columns}).replace_schema_metadata(plain.schema.metadata)
        buf = pa.BufferOutputStream()
        pq.write_table(table, buf)
        fs.write_bytes(path, buf.getvalue().to_pybytes())
    return name


def _string_lists(fields, pa, pc):
    """CSV list fields (``LIST_SEPARATOR``-joined, "" for an empty list) as a ``list<string>``
    array: one vectorized split, then the lone "" of each empty field dropped."""
    split = pc.split_pattern(fields, LIST_SEPARATOR)
    values = split.flatten()
    lengths = np.diff(np.asarray(split.offsets)) - np.asarray(pc.equal(fields, "")).astype(np.int64)
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
    return pa.ListArray.from_arrays(offsets, values.filter(pc.not_equal(values, "")), type=pa.list_(pa.string()))


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
