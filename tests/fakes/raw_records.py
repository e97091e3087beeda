"""Small raw impression logs for the preprocessing tests: good rows plus known bad rows.

``good_rows(n)`` are valid synthetic impressions with the columns of the generate stage;
``BAD_ROWS`` holds one CSV line per failure kind with the reason validation must give;
``fuzz_csv`` / ``fuzz_jsonl`` write seeded mixes of good rows and malformed records of every
kind, with the counts validation must report.
"""
from __future__ import annotations

import csv
import io
import json
import random

from core.config import load_config

COLUMNS = ["impression_id", "user_id", "item_id", "item_category", "device", "hour", "price", "user_activity",
           "user_tenure_days", "item_popularity", "item_rating", "hist_items", "item_tags", "click", "conversion", "p_click", "p_conversion"]


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
            "hist_items": "",  # the generator's list columns (configs/default.yaml), empty lists
            "item_tags": "",
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
    """The default config reading ``path`` (one value per column: its list features dropped;
    an override may declare some), in-memory DirectRunner, a tiny schema's defaults."""
    from tests.conftest import REPO

    return load_config(f"{REPO}/configs/default.yaml", [
        "data.source=files", f"data.path={path}", f"data.format={fmt}", "data.lists=[]",
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


# ----------------------------------------------------------------------------- fuzzing
#
# ``fuzz_csv`` / ``fuzz_jsonl`` mix good rows with malformed records of every kind (seeded):
# each fault is applied to an otherwise good row, so the reason validation must give is known.
# The config they go with (``fuzz_overrides``) adds an example-weight column and a conversion
# task derived from declared values, so every dead-letter reason can occur.

FUZZ_COLUMNS = COLUMNS + ["weight"]
_NUMERIC = ["price", "user_activity", "user_tenure_days", "item_popularity", "item_rating", "p_click"]


def fuzz_overrides() -> list[str]:
    return ["data.weight_column=weight",
            'data.tasks=[{name: click, label: click}, '
            '{name: conversion, label: conversion, positive_values: ["1"], negative_values: ["0"]}]']


def _fuzz_good_rows(rng: random.Random, n: int) -> list[dict]:
    rows = good_rows(n, seed=rng.randint(0, 10 ** 6), prefix="fz")
    for r in rows:
        r["weight"] = str(round(rng.uniform(0.0, 3.0), 3))
        if rng.random() < 0.05:
            r[rng.choice(["device", "item_category"])] = ""  # a missing categorical is valid
    return rows


def _clean(row: dict) -> dict:
    """A good row whose labels any single fault can break without a second reason."""
    return dict(row, click="1", conversion="0")


# kind -> (reason, fault(rng, row) -> row dict to write, or None for the raw-bytes kinds)
_CSV_FAULTS = {
    "too_few_columns": "wrong_column_count",
    "too_many_columns": "wrong_column_count",
    "invalid_utf8": "invalid_encoding",
    "nul_byte": "invalid_encoding",
    "huge_field": "unparsable_record",
    "bare_cr": "unparsable_record",
    "non_number": "unparsable_value",
    "missing_numeric": "missing_value",
    "missing_label": "missing_value",
    "nan": "non_finite_value",
    "infinity": "non_finite_value",
    "float32_overflow": "non_finite_value",
    "label_not_0_1": "invalid_label",
    "label_not_allowed": "label_not_allowed",
    "negative_weight": "invalid_weight",
    "funnel_violation": "funnel_violation",
}

_JSONL_FAULTS = {
    "truncated_json": "unparsable_record",
    "trailing_garbage": "unparsable_record",
    "not_an_object": "unparsable_record",
    "list_value": "unparsable_record",
    "invalid_utf8": "invalid_encoding",
    "nul_byte": "invalid_encoding",
    "bare_cr": "unparsable_record",
    "non_number": "unparsable_value",
    "missing_numeric": "missing_value",
    "null_label": "missing_value",
    "nan": "non_finite_value",
    "infinity": "non_finite_value",
    "float32_overflow": "non_finite_value",
    "label_not_0_1": "invalid_label",
    "label_not_allowed": "label_not_allowed",
    "negative_weight": "invalid_weight",
    "funnel_violation": "funnel_violation",
}


def _value_fault(kind: str, rng: random.Random, row: dict) -> dict:
    """The row with a field-value fault shared by CSV and JSONL (values still strings)."""
    r = _clean(row)
    if kind == "non_number":
        r[rng.choice(_NUMERIC + ["weight"])] = rng.choice(["abc", "1.2.3", "five", "0x1p3", "1e", "--1"])
    elif kind == "missing_numeric":
        r[rng.choice(_NUMERIC + ["weight"])] = None
    elif kind in ("missing_label", "null_label"):
        r[rng.choice(["click", "conversion"])] = None
    elif kind == "nan":
        r[rng.choice(_NUMERIC)] = rng.choice(["nan", "NaN", "-nan"])
    elif kind == "infinity":
        r[rng.choice(_NUMERIC)] = rng.choice(["inf", "-inf", "Infinity"])
    elif kind == "float32_overflow":
        r[rng.choice(_NUMERIC + ["weight"])] = rng.choice(["1e308", "3.5e38", "1e39"])
    elif kind == "label_not_0_1":
        r["click"] = rng.choice(["2", "-1", "0.5"])
    elif kind == "label_not_allowed":
        r["conversion"] = rng.choice(["2", "yes", "1.0", "purchase"])
    elif kind == "negative_weight":
        r["weight"] = rng.choice(["-0.5", "-1", "-1e-9"])
    elif kind == "funnel_violation":
        r.update(click="0", conversion="1")
    else:
        raise KeyError(kind)
    return r


def _csv_line(values: list[str]) -> bytes:
    return ",".join(values).encode("utf-8")


def _csv_fault(kind: str, rng: random.Random, row: dict) -> bytes:
    r = _clean(row)
    fields = [r[c] for c in FUZZ_COLUMNS]
    if kind == "too_few_columns":
        return _csv_line(fields[:-rng.randint(1, 3)])
    if kind == "too_many_columns":
        return _csv_line(fields + ["x"] * rng.randint(1, 3))
    if kind == "invalid_utf8":
        return _csv_line(fields).replace(r["item_id"].encode(), r["item_id"].encode() + b"\xff\xfe", 1)
    if kind == "nul_byte":
        return _csv_line(fields).replace(r["user_id"].encode(), r["user_id"].encode() + b"\x00", 1)
    if kind == "huge_field":
        r["item_category"] = "c" + "x" * (131_072 + rng.randint(1, 500))
        return _csv_line([r[c] for c in FUZZ_COLUMNS])
    if kind == "bare_cr":
        r["device"] = r["device"][:1] + "\r" + r["device"][1:]
        return _csv_line([r[c] for c in FUZZ_COLUMNS])
    r = _value_fault(kind, rng, row)
    return _csv_line(["" if r[c] is None else r[c] for c in FUZZ_COLUMNS])


def _typed_value(column: str, value):
    if value is None or column in ("user_id", "item_id", "item_category", "device", "impression_id"):
        return value
    try:
        return int(value) if column in ("hour", "click", "conversion", "user_tenure_days") else float(value)
    except ValueError:
        return value  # a fault: kept as the string


def _json_line(row: dict, drop_none: bool = False) -> bytes:
    obj = {c: _typed_value(c, v) for c, v in row.items() if not (drop_none and v is None)}
    return json.dumps(obj).encode("utf-8")


def _jsonl_fault(kind: str, rng: random.Random, row: dict) -> bytes:
    r = _clean(row)
    if kind == "truncated_json":
        text = _json_line(r)
        return text[:rng.randint(1, len(text) - 2)]
    if kind == "trailing_garbage":
        return _json_line(r) + rng.choice([b" x", b"}", b",", b" {}"])
    if kind == "not_an_object":
        return rng.choice([b"[1, 2]", b"3", b'"a string"', b"null", b"true"])
    if kind == "list_value":
        obj = json.loads(_json_line(r))
        obj[rng.choice(["item_id", "price"])] = [1, 2]
        return json.dumps(obj).encode("utf-8")
    if kind == "invalid_utf8":
        return _json_line(r).replace(r["item_id"].encode(), r["item_id"].encode() + b"\xff", 1)
    if kind == "nul_byte":
        return _json_line(r).replace(r["user_id"].encode(), r["user_id"].encode() + b"\x00", 1)
    if kind == "bare_cr":
        return _json_line(r).replace(b'"' + r["item_id"].encode() + b'"', b'"' + r["item_id"].encode() + b'\r"', 1)
    if kind in ("nan", "infinity", "float32_overflow"):
        r = _value_fault(kind, rng, row)
        bad = next(c for c in FUZZ_COLUMNS if r[c] != _clean(row)[c])
        # as JSON numbers (NaN / Infinity literals, 1e308), not strings
        return _json_line(dict(r, **{bad: None}), drop_none=True)[:-1] + f', "{bad}": {_json_number(r[bad])}}}'.encode()
    r = _value_fault(kind, rng, row)
    return _json_line(r, drop_none=rng.random() < 0.5)


def _json_number(text: str) -> str:
    x = float(text)
    return json.dumps(x)  # NaN, Infinity, -Infinity, 1e+308


def _fuzz(kinds: dict, fault, encode_good, header: bytes | None, path, n_good: int, n_bad: int, seed: int):
    rng = random.Random(seed)
    good = _fuzz_good_rows(rng, n_good)
    names = list(kinds)
    chosen = names + [rng.choice(names) for _ in range(max(0, n_bad - len(names)))]
    items = [(encode_good(rng, r), None) for r in good]
    items += [(fault(k, rng, rng.choice(good)), kinds[k]) for k in chosen]
    rng.shuffle(items)
    out = [header + b"\n"] if header is not None else []
    for line, _ in items:
        out.append(line + (b"\r\n" if rng.random() < 0.1 else b"\n"))
        if rng.random() < 0.03:
            out.append(b"\n")  # a blank line is not a record
    with open(path, "wb") as f:
        f.write(b"".join(out))
    expected: dict[str, int] = {}
    for k in chosen:
        expected[kinds[k]] = expected.get(kinds[k], 0) + 1
    return str(path), {"read": n_good + len(chosen), "valid": n_good, "by_reason": expected,
                       "kinds": sorted(set(chosen))}


def _csv_good(rng: random.Random, row: dict) -> bytes:
    values = [row[c] for c in FUZZ_COLUMNS]
    if rng.random() < 0.05:  # a quoted field holding the delimiter is still one field
        values[FUZZ_COLUMNS.index("item_category")] = f'"{row["item_category"]},x"'
    return _csv_line(values)


def fuzz_csv(path, n_good: int = 250, n_bad: int = 120, seed: int = 0) -> tuple[str, dict]:
    """A CSV file of good rows and malformed records of every kind in ``_CSV_FAULTS``.

    Returns (path, expected): ``expected`` holds ``read`` (records, not lines), ``valid``,
    ``by_reason`` (dead letters per reason) and the fault ``kinds`` injected."""
    return _fuzz(_CSV_FAULTS, _csv_fault, _csv_good, ",".join(FUZZ_COLUMNS).encode(), path, n_good, n_bad, seed)


def fuzz_jsonl(path, n_good: int = 250, n_bad: int = 120, seed: int = 0) -> tuple[str, dict]:
    """The JSON-lines counterpart of ``fuzz_csv`` (faults of ``_JSONL_FAULTS``)."""
    return _fuzz(_JSONL_FAULTS, _jsonl_fault, lambda rng, r: _json_line(r), None, path, n_good, n_bad, seed)
