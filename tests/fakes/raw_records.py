"""Small raw impression logs for the preprocessing tests: good rows plus known bad rows.

``good_rows(n)`` are valid synthetic impressions with the columns of the generate stage;
``BAD_ROWS`` holds one CSV line per failure kind with the reason validation must give.
"""
from __future__ import annotations

import csv
import io
import random

from core.config import load_config

COLUMNS = ["impression_id", "user_id", "item_id", "item_category", "device", "hour", "price", "user_activity",
           "user_tenure_days", "item_popularity", "item_rating", "click", "conversion", "p_click", "p_conversion"]


def good_rows(n: int, seed: int = 0, prefix: str = "imp") -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        click = int(rng.random() < 0.25)
        conversion = int(click and rng.random() < 0.4)
        rows.append({
            "impression_id": f"{prefix}{i}",
            "user_id": f"u{rng.randint(0, 40)}",
            "item_id": f"i{rng.randint(0, 25)}",
            "item_category": f"c{rng.randint(0, 4)}",
            "device": rng.choice(["ios", "android", "web"]),
            "hour": str(rng.randint(0, 23)),
            "price": str(round(rng.uniform(1, 100), 2)),
            "user_activity": str(round(rng.random(), 3)),
            "user_tenure_days": str(rng.randint(1, 900)),
            "item_popularity": str(round(rng.random() * 10, 3)),
            "item_rating": str(round(rng.uniform(1, 5), 2)),
            "click": str(click),
            "conversion": str(conversion),
            "p_click": "0.25",
            "p_conversion": "0.1",
        })
    return rows


def _line(values: list[str]) -> str:
    return ",".join(values)


def _bad(base: dict, **changes) -> str:
    row = dict(base, **changes)
    return _line([row[c] for c in COLUMNS])


def bad_lines() -> list[tuple[str, str]]:
    """(CSV line, expected dead-letter reason), one or more per kind of failure."""
    base = good_rows(1, seed=99, prefix="bad")[0]
    base.update(click="0", conversion="0")
    full = [base[c] for c in COLUMNS]
    return [
        (_line(full[:-1]), "wrong_column_count"),
        (_line(full + ["extra"]), "wrong_column_count"),
        (_bad(base, impression_id="bad2", price=""), "missing_value"),
        (_bad(base, impression_id="bad3", click=""), "missing_value"),
        (_bad(base, impression_id="bad4", price="abc"), "unparsable_value"),
        (_bad(base, impression_id="bad5", user_activity="nan"), "non_finite_value"),
        (_bad(base, impression_id="bad6", item_rating="inf"), "non_finite_value"),
        (_bad(base, impression_id="bad7", click="2"), "invalid_label"),
        (_bad(base, impression_id="bad8", click="0", conversion="1"), "funnel_violation"),
    ]


def expected_reason_counts() -> dict[str, int]:
    counts: dict[str, int] = {}
    for _, reason in bad_lines():
        counts[reason] = counts.get(reason, 0) + 1
    return counts


def write_csv(path, rows: list[dict], extra_lines: list[str] = ()) -> str:
    """Writes ``rows`` (+ raw ``extra_lines``, interleaved every 7th row) with a header."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    extra = list(extra_lines)
    for i, row in enumerate(rows):
        writer.writerow(row)
        if extra and i % 7 == 3:
            buf.write(extra.pop(0) + "\n")
    for line in extra:
        buf.write(line + "\n")
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(buf.getvalue())
    return str(path)


def files_config(path: str, fmt: str = "csv", *overrides: str):
    """The default config reading ``path``, in-memory DirectRunner, a tiny schema's defaults."""
    from tests.conftest import REPO

    return load_config(f"{REPO}/configs/default.yaml", [
        "data.source=files", f"data.path={path}", f"data.format={fmt}",
        "preprocess.beam.direct_running_mode=in_memory", "preprocess.num_shards=1", *overrides])


def run_and_collect(p, pcolls: dict, out_dir) -> tuple[dict, object]:
    """Runs ``p`` and returns ({name: [elements]}, result); each PCollection is written as JSON lines."""
    import glob
    import json
    import os

    import apache_beam as beam

    for name, pcoll in pcolls.items():
        _ = (pcoll | f"Json[{name}]" >> beam.Map(json.dumps)
             | f"Write[{name}]" >> beam.io.WriteToText(os.path.join(str(out_dir), name), file_name_suffix=".jsonl"))
    result = p.run()
    result.wait_until_finish()
    out = {}
    for name in pcolls:
        out[name] = [json.loads(line) for f in sorted(glob.glob(os.path.join(str(out_dir), f"{name}-*.jsonl")))
                     for line in open(f, encoding="utf-8") if line.strip()]
    return out, result
