"""Small raw logs with every list-feature kind, for the preprocessing tests of issue 13.

``rows(n)`` are ``tests.fakes.raw_records.good_rows`` plus list columns:

* ``hist_items``: a sequence of item ids, most recent last (``max_length`` 4), sharing
  ``item_id``'s vocabulary; some ids (``i9xx``) never occur as an ``item_id``;
* ``pages``: a sequence of numeric page ids, most recent FIRST (``max_length`` 3), its own
  vocabulary (JSON integers in JSONL);
* ``item_tags``: ``tag:weight`` tokens (``max_length`` 3, ``weights: tokens``);
* ``basket`` with the parallel weight column ``basket_w`` (``max_length`` 2), hashed into 32
  buckets;

plus ``user_id`` hashed into 101 buckets (salt ``s4lt``), the cross ``device_x_hour``, and a
4-bin piecewise-linear encoding of every numeric (``item_popularity`` is 0 in most rows, so
several quantile boundaries coincide). ``p_click`` is unique per row (``i / 1000``): the key
that matches a transformed row to its raw row. ``bad_lines()`` are CSV lines with the list
dead-letter reasons.
"""
from __future__ import annotations

import csv
import io
import json
import random

from tests.fakes import raw_records as fx

LIST_COLUMNS = ["hist_items", "pages", "item_tags", "basket", "basket_w"]
COLUMNS = fx.COLUMNS + LIST_COLUMNS
SALT = "s4lt"
USER_BUCKETS, BASKET_BUCKETS, CROSS_BUCKETS = 101, 32, 64
MAX_LIST_LENGTH = 12
LENGTHS = {"hist_items": 4, "pages": 3, "item_tags": 3, "basket": 2}
PLE_BINS = 4

LISTS_YAML = (
    "data.lists=["
    "{name: hist_items, kind: sequence, max_length: 4, shares: item_id, pooling: attention, target: item_id, "
    "order: recent_last}, "
    "{name: pages, kind: sequence, max_length: 3, order: recent_first, pooling: mean}, "
    "{name: item_tags, kind: multi_valued, max_length: 3, weights: tokens, pooling: mean}, "
    "{name: basket, kind: multi_valued, max_length: 2, weights: basket_w, pooling: sum}]")
OVERRIDES = [
    LISTS_YAML,
    f"data.hash_buckets={{user_id: {USER_BUCKETS}, basket: {BASKET_BUCKETS}}}",
    f"data.hash_salt={SALT}",
    f"data.crosses=[{{columns: [device, hour], hash_buckets: {CROSS_BUCKETS}}}]",
    f"data.max_list_length={MAX_LIST_LENGTH}",
    f"preprocess.numeric.piecewise_linear_bins={PLE_BINS}",
]


def config(path: str, fmt: str = "csv", *overrides: str):
    return fx.files_config(path, fmt, *OVERRIDES, *overrides)


def rows(n: int, seed: int = 0) -> list[dict]:
    """Good rows with list columns as their CSV strings ('|'-joined; '' = empty)."""
    rng = random.Random(seed + 1000)
    out = []
    for i, r in enumerate(fx.good_rows(n, seed=seed)):
        hist = [f"i{rng.randint(0, 25)}" if rng.random() < 0.8 else f"i9{rng.randint(0, 20)}"
                for _ in range(rng.choice([0, 0, 1, 2, 3, 4, 5, 6, 8, 11]))]
        pages = [str(rng.randint(1, 30)) for _ in range(rng.choice([0, 1, 2, 3, 4, 5]))]
        tags = rng.sample(range(12), rng.choice([0, 1, 2, 3, 4]))
        tokens = [f"t{t}:{round(rng.uniform(0.05, 2.0), 2)}" for t in tags]
        if tokens and rng.random() < 0.1:
            tokens[0] = "a:b:" + tokens[0].split(":")[1]  # a ':' inside the value: split at the last one
        basket = [f"b{rng.randint(0, 60)}" for _ in range(rng.choice([0, 1, 2, 3]))]
        weights = [str(round(rng.uniform(0.1, 3.0), 2)) for _ in basket]
        r.update(hist_items="|".join(hist), pages="|".join(pages), item_tags="|".join(tokens),
                 basket="|".join(basket), basket_w="|".join(weights),
                 item_popularity="0" if rng.random() < 0.6 else r["item_popularity"],
                 p_click=str(i / 1000))
        out.append(r)
    return out


def split_list(text: str) -> list[str]:
    return text.split("|") if text else []


def bad_lines() -> list[tuple[str, str]]:
    """(CSV line, the dead-letter reason validation must give)."""
    base = rows(1, seed=99)[0]
    base.update(click="0", conversion="0")

    def line(**changes):
        r = dict(base, **changes)
        buf = io.StringIO()
        csv.writer(buf, lineterminator="").writerow([r[c] for c in COLUMNS])
        return buf.getvalue()

    return [
        (line(impression_id="bl1", hist_items="i1||i2"), "invalid_list_value"),
        (line(impression_id="bl2", pages="|"), "invalid_list_value"),
        (line(impression_id="bl3", hist_items="|".join(f"i{k}" for k in range(MAX_LIST_LENGTH + 1))), "list_too_long"),
        (line(impression_id="bl4", item_tags="t1:0.5|t2:abc"), "invalid_list_weight"),
        (line(impression_id="bl5", item_tags="t1"), "invalid_list_weight"),
        (line(impression_id="bl6", item_tags="t1:1_0"), "invalid_list_weight"),
        (line(impression_id="bl7", item_tags="t1:nan"), "invalid_list_weight"),
        (line(impression_id="bl8", basket="b1|b2", basket_w="0.5"), "list_weight_mismatch"),
        (line(impression_id="bl9", basket="b1", basket_w="inf"), "invalid_list_weight"),
        (line(impression_id="bl10", basket="", basket_w="1.0"), "list_weight_mismatch"),
    ]


def expected_reason_counts() -> dict[str, int]:
    counts: dict[str, int] = {}
    for _, reason in bad_lines():
        counts[reason] = counts.get(reason, 0) + 1
    return counts


def write_csv(path, good: list[dict], extra_lines=()) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    extra = list(extra_lines)
    for i, row in enumerate(good):
        writer.writerow(row)
        if extra and i % 7 == 3:
            buf.write(extra.pop(0) + "\n")
    for line in extra:
        buf.write(line + "\n")
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(buf.getvalue())
    return str(path)


_INTS = ("hour", "click", "conversion", "user_tenure_days")
_FLOATS = ("price", "user_activity", "item_popularity", "item_rating", "p_click", "p_conversion")


def typed_row(row: dict) -> dict:
    """A CSV-string row as JSONL / Parquet would carry it: numbers, lists (pages as ints)."""
    out = {}
    for k, v in row.items():
        if k in _INTS:
            out[k] = int(v)
        elif k in _FLOATS:
            out[k] = float(v)
        elif k == "pages":
            out[k] = [int(p) for p in split_list(v)]
        elif k == "basket_w":
            out[k] = [float(w) for w in split_list(v)]
        elif k in LIST_COLUMNS:
            out[k] = split_list(v)
        else:
            out[k] = v
    return out


def write_jsonl(path, good: list[dict], extra_lines=()) -> str:
    with open(path, "w", encoding="utf-8") as f:
        for r in good:
            f.write(json.dumps(typed_row(r)) + "\n")
        for line in extra_lines:
            f.write(line + "\n")
    return str(path)


def write_parquet(path, good: list[dict]) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist([typed_row(r) for r in good])
    pq.write_table(table, str(path))
    return str(path)


def example(row: dict) -> bytes:
    """A raw ``tf.Example`` of a row: lists as ``bytes_list`` / ``int64_list`` (pages) /
    ``float_list`` (basket_w), every value its own element."""
    import tensorflow as tf

    feats = {}
    for k, v in typed_row(row).items():
        if isinstance(v, list):
            if k == "pages":
                feats[k] = tf.train.Feature(int64_list=tf.train.Int64List(value=v))
            elif k == "basket_w":
                feats[k] = tf.train.Feature(float_list=tf.train.FloatList(value=v))
            else:
                feats[k] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[e.encode() for e in v]))
        elif isinstance(v, int):
            feats[k] = tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))
        elif isinstance(v, float):
            feats[k] = tf.train.Feature(float_list=tf.train.FloatList(value=[v]))
        else:
            feats[k] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode()]))
    return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()


def write_tfrecord(path, good: list[dict]) -> str:
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(path), options="GZIP") as w:
        for r in good:
            w.write(example(r))
    return str(path)
