"""Why the REST front end parses request bodies with orjson: its parse time against the
standard library's ``json`` on the bodies TF Serving clients send.

Bodies (built in memory, no model needed): ``:predict`` with ``{"instances": [{"b64": ...}]}``
of serialized tf.Examples (~300 bytes each, as the warmup records) and ``:predict`` of the
``predict_raw`` row format (10 scalar features and two 20- and 4-wide padded lists per
instance), at 1, 64 and 512 instances. The two parsers alternate call by call for
``--calls`` calls per round, ``--rounds`` rounds; printed: p50 per parser (median over
rounds) and the per-round ratio json / orjson, median [min, max].

Usage::

    python bench/json_parse.py [--calls 200] [--rounds 5]
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import time

import orjson


def _bodies(n: int) -> dict:
    rng = os.urandom
    b64 = {"instances": [{"b64": base64.b64encode(rng(300)).decode()} for _ in range(n)]}
    raw = {"signature_name": "predict_raw", "instances": [
        {"user_id": f"u{i}", "item_id": f"i{i}", "item_category": "c2", "device": "android", "hour": "21",
         "price": 18.25 + i, "user_activity": 5.275, "user_tenure_days": 14.7, "item_popularity": 0.5814,
         "item_rating": 3.27, "hist_items": [f"i{j}" for j in range(8)] + [""] * 12,
         "item_tags": ["t17:0.14", "t19:0.11", "", ""]} for i in range(n)]}
    return {"b64_examples": json.dumps(b64).encode(), "predict_raw_rows": json.dumps(raw).encode()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    parsers = {"json": lambda b: json.loads(b.decode("utf-8")), "orjson": orjson.loads}
    print(f"{'body':<18} {'batch':>5} {'bytes':>9} {'json p50 us':>12} {'orjson p50 us':>14}  json/orjson median [min, max]")
    for n in (1, 64, 512):
        for kind, body in _bodies(n).items():
            assert parsers["json"](body) == parsers["orjson"](body)
            p50s = {k: [] for k in parsers}
            for _ in range(args.rounds):
                times = {k: [] for k in parsers}
                for i in range(args.calls):
                    order = list(parsers) if i % 2 == 0 else list(reversed(parsers))
                    for k in order:
                        t = time.perf_counter()
                        parsers[k](body)
                        times[k].append(time.perf_counter() - t)
                for k in parsers:
                    p50s[k].append(statistics.median(times[k]) * 1e6)
            ratios = [a / b for a, b in zip(p50s["json"], p50s["orjson"])]
            print(f"{kind:<18} {n:>5} {len(body):>9,} {statistics.median(p50s['json']):>12.1f} "
                  f"{statistics.median(p50s['orjson']):>14.1f}  {statistics.median(ratios):.2f}x "
                  f"[{min(ratios):.2f}, {max(ratios):.2f}]")


if __name__ == "__main__":
    main()
