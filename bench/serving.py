"""Serving latency and throughput: in-process vs REST vs gRPC, batch 1 and 64, teacher vs student.

For every trained role of a run (teacher, student when present) the script exports the model
into a scratch base directory (through the same gate as ``python -m pipeline export``, with
no AUC minimum), starts ``serving.server.ModelServer`` on loopback ephemeral ports, and
measures, on real raw test rows:

* latency p50 / p99 (ms) of ``serving_default`` at batch 1 and 64: in-process
  (``SessionModel.run``), REST (``:predict`` with b64 examples) and gRPC (official stub);
* sustained requests/s at batch 1 with a bounded number of concurrent clients for a fixed
  duration (REST and gRPC).

Usage::

    python bench/serving.py --run-dir runs/default [--requests 200] [--duration 5] [--concurrency 4]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from core.run_dir import write_json_atomic  # noqa: E402

import numpy as np  # noqa: E402


def _percentiles(samples: list[float]) -> dict:
    a = np.asarray(samples) * 1000.0
    return {"p50_ms": round(float(np.percentile(a, 50)), 3), "p99_ms": round(float(np.percentile(a, 99)), 3), "n": len(a)}


def _latency(call, batches: list, n: int) -> dict:
    call(batches[0])  # first call outside the timing
    samples = []
    for i in range(n):
        t = time.perf_counter()
        call(batches[i % len(batches)])
        samples.append(time.perf_counter() - t)
    return _percentiles(samples)


def _throughput(make_call, batches: list, duration: float, concurrency: int) -> dict:
    counts, errors, stop = [0] * concurrency, [0] * concurrency, threading.Event()

    def worker(k):
        call = make_call()
        i = k
        while not stop.is_set():
            try:
                call(batches[i % len(batches)])
                counts[k] += 1
            except Exception:  # noqa: BLE001  (count, keep going)
                errors[k] += 1
            i += concurrency

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(duration)
    stop.set()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return {"requests_per_second": round(sum(counts) / wall, 1), "requests": sum(counts), "errors": sum(errors),
            "concurrency": concurrency, "seconds": round(wall, 2)}


def _export_roles(cfg, run_dir, base: str) -> list[str]:
    from serving.export import export_model

    roles = []
    for role in ("teacher", "student"):
        if not os.path.exists(os.path.join(run_dir.model_dir(role), "serving_model")):
            continue
        cfg.export.base_dir, cfg.export.model_name, cfg.export.min_auc = base, role, {}
        export_model(cfg, run_dir, role)
        roles.append(role)
    return roles


def bench(run_dir_path: str, n: int, duration: float, concurrency: int) -> dict:
    import yaml

    from core.config import config_from_dict
    from core.run_dir import RunDir
    from serving.client import GrpcClient, RestClient
    from core.feature_specs import encode_raw_example
    from serving.raw_examples import read_split
    from serving.server import ModelServer

    run_dir = RunDir(run_dir_path)
    with open(run_dir.require(run_dir.config_file, "run"), encoding="utf-8") as f:
        cfg = config_from_dict(yaml.safe_load(f))
    rows = read_split(cfg, *run_dir.raw_input(cfg), "test", 640)
    examples = [encode_raw_example(cfg, r["features"]) for r in rows]
    base = tempfile.mkdtemp(prefix="bench-serving-")
    roles = _export_roles(cfg, run_dir, base)
    if not roles:
        raise SystemExit(f"no trained model under {run_dir.root} (run train first)")
    server = ModelServer(base, rest_port=0, grpc_port=0, poll_seconds=1.0, max_batch_size=1024).start()
    results = {}
    try:
        for role in roles:
            assert server.store.wait_for_version(role, 1, 120), f"{role} did not load"
            rest = RestClient(f"http://127.0.0.1:{server.rest_port}", role)
            grpc_client = GrpcClient(f"127.0.0.1:{server.grpc_port}", role)
            results[role] = {}
            for batch in (1, 64):
                batches = [examples[i:i + batch] for i in range(0, len(examples) - batch + 1, batch)]
                with server.store.acquire(role) as (_, model):
                    inproc = _latency(lambda b: model.run("serving_default", {"examples": b}), batches, n)
                results[role][f"batch_{batch}"] = {
                    "in_process": inproc,
                    "rest": _latency(lambda b: rest.predict_examples(b), batches, n),
                    "grpc": _latency(lambda b: grpc_client.predict_examples(b), batches, n),
                }
            singles = [[e] for e in examples]
            results[role]["throughput_batch_1"] = {
                "rest": _throughput(lambda: RestClient(f"http://127.0.0.1:{server.rest_port}", role).predict_examples,
                                    singles, duration, concurrency),
                "grpc": _throughput(lambda: GrpcClient(f"127.0.0.1:{server.grpc_port}", role).predict_examples,
                                    singles, duration, concurrency),
            }
    finally:
        server.stop()
    return {"run_dir": run_dir.root, "cpus": os.cpu_count(), "requests_per_point": n, "results": results}


def _print(report: dict) -> None:
    print(f"serving benchmark: {report['run_dir']} ({report['cpus']} CPUs, {report['requests_per_point']} requests per point)")
    print(f"{'model':8} {'batch':>5} {'path':10} {'p50 ms':>8} {'p99 ms':>8}")
    for role, r in report["results"].items():
        for batch in (1, 64):
            for path, m in r[f"batch_{batch}"].items():
                print(f"{role:8} {batch:>5} {path:10} {m['p50_ms']:>8.2f} {m['p99_ms']:>8.2f}")
        for path, t in r["throughput_batch_1"].items():
            print(f"{role:8} sustained {path}: {t['requests_per_second']:.0f} req/s at batch 1 "
                  f"({t['concurrency']} clients, {t['seconds']} s, {t['errors']} errors)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", required=True, help="a run directory with a trained teacher (and student)")
    p.add_argument("--requests", type=int, default=200, help="timed requests per (model, batch, path) point")
    p.add_argument("--duration", type=float, default=5.0, help="seconds of sustained load per front end")
    p.add_argument("--concurrency", type=int, default=4, help="concurrent clients during sustained load")
    p.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    args = p.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING)
    report = bench(os.path.abspath(args.run_dir), args.requests, args.duration, args.concurrency)
    _print(report)
    if args.json:
        write_json_atomic(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
