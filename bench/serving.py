"""Serving latency and throughput: in-process vs REST vs gRPC, batch 1 and 64, teacher vs student.
Data: --run-dir, a run with a trained teacher and student (the default run, or any); its
validation rows are the requests.

For every trained role of a run (teacher, student when present) the script exports the model
into a scratch base directory (through the same gate as ``python -m pipeline export``, with
no AUC minimum), starts ``serving.server.ModelServer`` on loopback ephemeral ports, and
measures, on real raw test rows:

* latency p50 / p99 (ms) of ``serving_default`` at batch 1 and 64: in-process
  (``SessionModel.run``), REST (``:predict`` with b64 examples) and gRPC (official stub);
* sustained requests/s at batch 1 with a bounded number of concurrent clients for a fixed
  duration (REST and gRPC).

``--sequence`` measures instead what a behaviour-sequence feature (a ``data.lists`` entry of
kind ``sequence``, e.g. ``hist_items``) costs at serving: two exports of the run's model
architecture (``cfg.model``, untrained: latency does not depend on the weights) over the
run's TF Transform graph, one reading every feature ("with") and one reading all but the
sequence ("without": its export neither parses nor transforms the sequence). Both are
served by one ``ModelServer``; for batch 1, 64 and 512 the same raw test rows (with the
sequence in the ``tf.Example``) are sent to both, alternating request by request (the
order flipping every request) so drift hits both alike; p50 / p90 / p99 per path:
in-process ``serving_default``, REST (b64 examples), gRPC ``serving_default`` and gRPC
``predict_raw`` (padded 2-D string tensors). Without ``--run-dir`` it builds a fake run with
lists (``tests/fakes/serving_models``: the pipeline's TF Transform over ``--fake-rows`` rows).

Usage::

    python bench/serving.py --run-dir runs/default [--requests 200] [--duration 5] [--concurrency 4]
    python bench/serving.py --sequence [--run-dir RUN_WITH_LISTS | --fake-rows 2000] [--requests 200]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from core import fs  # noqa: E402
from core.run_dir import write_json_atomic  # noqa: E402
from serving import versions  # noqa: E402

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
    cfg = config_from_dict(yaml.safe_load(fs.read_text(run_dir.require(run_dir.config_file, "run"))))
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


def _percentiles90(samples: list[float]) -> dict:
    a = np.asarray(samples) * 1000.0
    return {q: round(float(np.percentile(a, int(q[1:3]))), 3) for q in ("p50_ms", "p90_ms", "p99_ms")} | {"n": len(a)}


def _alternating(calls: dict, batches: list, n: int) -> dict:
    """Latency samples of each variant's call, alternating variant by variant each request
    (the order reversed every other request); variant -> percentiles."""
    names = list(calls)
    for name in names:  # first calls outside the timing
        calls[name](batches[0])
    samples = {name: [] for name in names}
    for i in range(n):
        order = names if i % 2 == 0 else names[::-1]
        for name in order:
            t = time.perf_counter()
            calls[name](batches[i % len(batches)])
            samples[name].append(time.perf_counter() - t)
    return {name: _percentiles90(v) for name, v in samples.items()}


def _sequence_variant_export(cfg, run_dir, info, features: list, base: str, name: str, warm_rows: list) -> str:
    """Saves an untrained ``cfg.model`` ranker reading ``features`` behind the run's TF
    Transform layer as ``base/name/1`` (with its warmup requests); returns the version dir."""
    import dataclasses

    import tensorflow_transform as tft

    from core.config import weight_columns
    from core.feature_specs import encode_raw_example, serving_feature_spec
    from core.features import raw_columns_for
    from models.builder import build_ranker
    from serving.raw_examples import to_columns
    from serving.signatures import ServingModule, save_serving_module
    from serving.warmup import write_warmup

    model_cfg = dataclasses.replace(cfg.model, features=list(features))
    model = build_ranker(model_cfg, info, cfg.data.tasks, cfg.data.funnel, seed=0).serving_model()
    columns = raw_columns_for(cfg, features)
    spec = serving_feature_spec(cfg, columns)
    layer = tft.TFTransformOutput(run_dir.transform_output_dir).transform_features_layer()
    module = ServingModule(layer, model, spec, info.select(features).model_inputs,
                           cfg.export.classification_task or cfg.task_names[0], list_weights=weight_columns(cfg.data))
    tmp = os.path.join(base, name, ".tmp-1")
    save_serving_module(module, tmp)
    write_warmup(tmp, [encode_raw_example(cfg, r["features"]) for r in warm_rows], name,
                 raw_inputs=to_columns(cfg, warm_rows, columns) if module.list_columns else None,
                 raw_dtypes={k: v.dtype for k, v in spec.items()})
    return versions.publish(tmp, fs.join(base, name), 1)


def _fake_list_run(rows: int, history: int, pooling: str):
    """A fake run directory with list features (the pipeline's TF Transform, no trained
    model): ``hist_items`` of 0..``history`` items (``max_length: history``) pooled by
    ``pooling`` (attention: queried by ``item_id``), weighted tags, the default model."""
    from tests.fakes.serving_models import build_fake_run, serving_config

    attention = ", target: item_id" if pooling == "attention" else ""
    lists = (f"data.lists=[{{name: hist_items, kind: sequence, shares: item_id, max_length: {history}, "
             f"pooling: {pooling}{attention}}}, {{name: item_tags, kind: multi_valued, max_length: 4, pooling: sum, "
             f"weights: item_tag_weights}}]")
    cfg = serving_config(lists)
    root = tempfile.mkdtemp(prefix="bench-serving-lists-")
    return cfg, build_fake_run(cfg, root, rows=rows, roles=(), lists=True, max_history=history)


def bench_sequence(run_dir_path: str | None, n: int, fake_rows: int, sequence: str | None,
                   fake_history: int = 50, fake_pooling: str = "attention") -> dict:
    import yaml

    from core.config import config_from_dict
    from core.feature_specs import encode_raw_example
    from core.run_dir import RunDir
    from models.model_io import load_feature_info
    from serving.client import GrpcClient, RestClient
    from serving.raw_examples import read_split, to_columns
    from serving.server import ModelServer
    from serving.warmup import tensor_proto

    if run_dir_path:
        run_dir = RunDir(run_dir_path)
        cfg = config_from_dict(yaml.safe_load(fs.read_text(run_dir.require(run_dir.config_file, "run"))))
    else:
        cfg, run_dir = _fake_list_run(fake_rows, fake_history, fake_pooling)
    seqs = [f.name for f in cfg.data.lists if f.kind == "sequence"]
    sequence = sequence or (seqs[0] if seqs else None)
    if sequence is None or sequence not in [f.name for f in cfg.data.lists]:
        raise SystemExit(f"no sequence feature to measure (data.lists: {[f.name for f in cfg.data.lists]})")
    info = load_feature_info(run_dir.feature_info_file)
    with_seq = list(cfg.model.features or info.features)
    # an attention-pooled sequence needs nothing else; other lists stay in both variants
    without = [f for f in with_seq if f != sequence]
    rows = []
    for split in ("test", "validation", "train"):
        rows += read_split(cfg, *run_dir.raw_input(cfg), split, 1024 - len(rows))
        if len(rows) >= 1024:
            break
    examples = [encode_raw_example(cfg, r["features"]) for r in rows]
    base = tempfile.mkdtemp(prefix="bench-serving-seq-")
    names = {"with": "with_sequence", "without": "without_sequence"}
    for v, features in (("with", with_seq), ("without", without)):
        _sequence_variant_export(cfg, run_dir, info, features, base, names[v], rows[:16])
    server = ModelServer(base, rest_port=0, grpc_port=0, poll_seconds=1.0, max_batch_size=1024).start()
    results = {}
    try:
        rest, grpc_clients, dtypes = {}, {}, {}
        for v, name in names.items():
            assert server.store.wait_for_version(name, 1, 180), f"{name} did not load"
            rest[v] = RestClient(f"http://127.0.0.1:{server.rest_port}", name, timeout=120)
            grpc_clients[v] = GrpcClient(f"127.0.0.1:{server.grpc_port}", name, timeout=120)
            dtypes[v] = grpc_clients[v].raw_inputs()
        for batch in (1, 64, 512):
            count = max(1, len(rows) // batch)
            idx = [list(range(i * batch, (i + 1) * batch)) for i in range(count)]
            ex_batches = [[examples[j] for j in b] for b in idx]
            raw_batches = {v: [{k: tensor_proto(c, dtypes[v][k]) for k, c in
                                to_columns(cfg, [rows[j] for j in b], list(dtypes[v])).items()} for b in idx]
                           for v in names}
            points = max(20, n // (4 if batch >= 512 else 1))
            point = {}
            models = {}
            for v, name in names.items():
                models[v] = server.store.acquire(name)
            try:
                held = {v: m.__enter__()[1] for v, m in models.items()}
                point["in_process"] = _alternating(
                    {v: (lambda b, m=held[v]: m.run("serving_default", {"examples": b})) for v in names}, ex_batches, points)
            finally:
                for m in models.values():
                    m.__exit__(None, None, None)
            point["rest"] = _alternating({v: rest[v].predict_examples for v in names}, ex_batches, points)
            point["grpc"] = _alternating({v: grpc_clients[v].predict_examples for v in names}, ex_batches, points)
            idx_batches = list(range(count))
            point["grpc_predict_raw"] = _alternating(
                {v: (lambda i, v=v: grpc_clients[v].predict(raw_batches[v][i], "predict_raw")) for v in names},
                idx_batches, points)
            results[f"batch_{batch}"] = point
    finally:
        server.stop()
    lengths = [len(r["features"][sequence]) for r in rows]
    return {"mode": "sequence", "run_dir": run_dir.root, "cpus": os.cpu_count(), "requests_per_point": n,
            "sequence": sequence, "max_length": next(f.max_length for f in cfg.data.lists if f.name == sequence),
            "pooling": next(f.pooling for f in cfg.data.lists if f.name == sequence),
            "mean_sequence_length": round(float(np.mean(lengths)), 2), "model": {
                "embedding_dim": cfg.model.embedding_dim, "bottom_units": cfg.model.bottom_units,
                "cross_layers": cfg.model.cross_layers},
            "features": {"with": with_seq, "without": without}, "results": results}


def _print_sequence(report: dict) -> None:
    print(f"serving cost of the sequence feature '{report['sequence']}' (pooling {report['pooling']}, max_length "
          f"{report['max_length']}, mean length {report['mean_sequence_length']}): {report['run_dir']} "
          f"({report['cpus']} CPUs)")
    print(f"{'batch':>5} {'path':17} {'with p50':>9} {'p90':>8} {'without p50':>12} {'p90':>8} {'p50 ratio':>9}")
    for key, point in report["results"].items():
        batch = key.split("_")[1]
        for path, m in point.items():
            w, wo = m["with"], m["without"]
            print(f"{batch:>5} {path:17} {w['p50_ms']:>9.2f} {w['p90_ms']:>8.2f} {wo['p50_ms']:>12.2f} "
                  f"{wo['p90_ms']:>8.2f} {w['p50_ms'] / wo['p50_ms']:>9.2f}")


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
    p.add_argument("--run-dir", help="a run directory with a trained teacher (and student); with --sequence, one "
                                      "whose config has a sequence list (its trained models are not used)")
    p.add_argument("--requests", type=int, default=200, help="timed requests per (model, batch, path) point")
    p.add_argument("--duration", type=float, default=5.0, help="seconds of sustained load per front end")
    p.add_argument("--concurrency", type=int, default=4, help="concurrent clients during sustained load")
    p.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    p.add_argument("--sequence", action="store_true",
                   help="measure the serving cost of a sequence feature (with vs without, batch 1/64/512)")
    p.add_argument("--sequence-feature", metavar="NAME", help="with --sequence: the list (default: the first "
                                                                 "data.lists entry of kind sequence)")
    p.add_argument("--fake-rows", type=int, default=2000,
                   help="with --sequence and no --run-dir: rows of the fake run with lists (default 2000)")
    p.add_argument("--fake-history", type=int, default=50,
                   help="with --sequence and no --run-dir: the longest hist_items (its max_length; default 50)")
    p.add_argument("--fake-pooling", choices=["mean", "attention"], default="attention",
                   help="with --sequence and no --run-dir: how hist_items is pooled (default attention)")
    args = p.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING)
    if args.sequence:
        report = bench_sequence(os.path.abspath(args.run_dir) if args.run_dir else None, args.requests,
                                args.fake_rows, args.sequence_feature, args.fake_history, args.fake_pooling)
        _print_sequence(report)
    else:
        if not args.run_dir:
            p.error("--run-dir is required (except with --sequence)")
        report = bench(os.path.abspath(args.run_dir), args.requests, args.duration, args.concurrency)
        _print(report)
    if args.json:
        write_json_atomic(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
