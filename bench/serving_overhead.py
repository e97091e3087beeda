"""What the REST and gRPC front ends add over the in-process call, and what server-side batching buys.
Data: --export-dir, an exported version with its warmup file (the requests); without it, a
fake run with a tiny model is built in a temporary directory.

One export (``--export-dir VERSION_DIR``, or a fake run built with the pipeline's TF
Transform and ranker: ``tests/fakes/serving_models``, list features included) is served by
``serving.server.ModelServer`` on loopback, in a child process of its own (a server sharing
the client's interpreter would charge the client's GIL time and thread switches to the
server). Its warmup file's serialized raw tf.Examples are the requests (cycled to the batch
size).

Latency (default): for batch 1, 64 and 512, per round of ``--requests`` calls, the paths are
called in turn, the order rotating every call so drift hits each alike:

* ``in_process``: ``SessionModel.run("serving_default", {"examples": batch})`` on the same
  export loaded in the benchmark's process (the baseline); ``in_process_classify``: the
  ``classification`` signature;
* ``rest_predict``: ``POST :predict`` with ``{"instances": [{"b64": ...}, ...]}``;
* ``rest_classify``: ``POST :classify`` with ``"examples"`` as JSON features;
* ``grpc_predict``: ``PredictionService.Predict`` with a ``DT_STRING`` examples tensor.

The clients are lean (the request bytes are built before the timing; REST is a keep-alive
socket client that sends the request and reads the response; both decode the reply: JSON
for REST, ``tf.make_ndarray`` for gRPC), so the numbers are what the server adds. Printed: p50
/ p90 per path (the median over rounds) and the overhead of each path's p50 over its
in-process baseline (``rest_classify`` over ``in_process_classify``) with its spread (min /
max over the rounds).

``--concurrency N``: sustained throughput with N concurrent batch-1 REST clients (threads of
a separate client process), against a server without batching and one whose models are
``serving.batching.BatchingModel``
(``--batching-parameters FILE``, default ``serving/tfserving/batching_parameters.txt``),
alternating the two for ``--duration`` s each, ``--rounds`` times; printed: requests/s and
client p50 latency of each, and the ratio batched / plain with its spread.

Usage::

    python bench/serving_overhead.py [--export-dir DIR] [--requests 100] [--rounds 5] [--batches 1,64,512]
    python bench/serving_overhead.py --concurrency 16 [--duration 5] [--rounds 3] [--batching-parameters FILE]
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import queue
import shutil
import socket
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = "bench"


# ----------------------------------------------------------------------------- the export and its requests
def build_export(root: str) -> str:
    """A fake run with list features (pipeline TF Transform + an untrained ranker), exported
    through the gate; returns the version directory."""
    import types

    import yaml

    from core.config import config_to_dict
    from core.run_dir import write_text_atomic
    from pipeline.stages.export import run as run_export
    from tests.fakes.serving_models import build_fake_run, list_config

    cfg = list_config()
    run_dir = build_fake_run(cfg, root, rows=240, roles=("teacher",), lists=True)
    write_text_atomic(run_dir.config_file, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    return run_export(cfg, run_dir, types.SimpleNamespace(model="teacher")).artifacts["version_dir"]


def warmup_examples(version_dir: str) -> list[bytes]:
    """The serialized tf.Examples of the version's ``serving_default`` warmup requests."""
    import tensorflow as tf

    from serving.warmup import read_warmup

    out = []
    for log in read_warmup(version_dir):
        request = log.predict_log.request
        if request.model_spec.signature_name in ("", "serving_default") and "examples" in request.inputs:
            out.extend(tf.make_ndarray(request.inputs["examples"]).reshape(-1).tolist())
    if not out:
        raise SystemExit(f"{version_dir}: no serving_default warmup examples to send")
    return out


def example_json(serialized: bytes) -> dict:
    """A tf.Example as the JSON features of a Classify request."""
    from tensorflow.core.example import example_pb2

    out = {}
    for name, feature in example_pb2.Example.FromString(serialized).features.feature.items():
        kind = feature.WhichOneof("kind")
        values = list(getattr(feature, kind).value) if kind else []
        if kind == "bytes_list":
            values = [v.decode("utf-8") for v in values]
        out[name] = values
    return out


def http_request(path: str, body: dict) -> bytes:
    data = json.dumps(body).encode("utf-8")
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode("latin-1") + data


class RawHttp:
    """A keep-alive HTTP/1.1 client over one socket: sends prepared request bytes, reads one
    ``Content-Length`` response; returns (status, body)."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def call(self, request: bytes) -> tuple[int, bytes]:
        self.sock.sendall(request)
        buf = self.buf
        while (end := buf.find(b"\r\n\r\n")) < 0:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("server closed the connection")
            buf += chunk
        head = buf[:end].decode("latin-1")
        i = head.lower().find("content-length:")
        n = int(head[i + 15:].split("\r\n", 1)[0])
        body_end = end + 4 + n
        while len(buf) < body_end:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("server closed the connection")
            buf += chunk
        self.buf = buf[body_end:]
        return int(head[9:12]), buf[end + 4:body_end]

    def close(self) -> None:
        self.sock.close()


def _base_with(version_dir: str) -> str:
    base = tempfile.mkdtemp(prefix="bench-overhead-")
    shutil.copytree(version_dir, os.path.join(base, MODEL, "1"))
    return base


def _server_process(base: str, grpc: bool, params_path: str | None, ports, stop) -> None:
    """Runs a ModelServer over ``base`` (its models wrapped in ``BatchingModel`` when
    ``params_path``) until ``stop`` is set; puts (rest port, grpc port) on ``ports``."""
    import core  # noqa: F401  (TF_USE_LEGACY_KERAS before tensorflow)
    from serving.server import ModelServer
    from serving.session_model import SessionModel

    loader = SessionModel
    if params_path:
        from serving.batching import BatchingModel, read_batching_parameters

        params = read_batching_parameters(params_path)
        loader = lambda path: BatchingModel(SessionModel(path), params)  # noqa: E731
    server = ModelServer(base, rest_port=0, grpc_port=0 if grpc else None, poll_seconds=60, max_batch_size=1024,
                         loader=loader).start()
    try:
        if not server.store.wait_for_version(MODEL, 1, 300):
            ports.put(None)
            return
        ports.put((server.rest_port, server.grpc_port))
        stop.wait()
    finally:
        server.stop()


class ServerProcess:
    """A ``_server_process`` child: ``rest_port``, ``grpc_port``; ``close()`` stops it."""

    def __init__(self, base: str, grpc: bool = True, params_path: str | None = None):
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        ports, self._stop = ctx.Queue(), ctx.Event()
        self._proc = ctx.Process(target=_server_process, args=(base, grpc, params_path, ports, self._stop))
        self._proc.start()
        deadline = time.monotonic() + 600
        while True:
            try:
                got = ports.get(timeout=1.0)
                break
            except queue.Empty:
                if not self._proc.is_alive() or time.monotonic() > deadline:
                    raise SystemExit("the server process ended before serving (see its log above)") from None
        if got is None:
            raise SystemExit("the export did not load")
        self.rest_port, self.grpc_port = got

    def close(self) -> None:
        self._stop.set()
        self._proc.join(timeout=60)


# ----------------------------------------------------------------------------- latency
def _stats(samples: list[float]) -> tuple[float, float]:
    a = np.asarray(samples) * 1000.0
    return float(np.percentile(a, 50)), float(np.percentile(a, 90))


def latency(version_dir: str, batches: list[int], n: int, rounds: int) -> dict:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    import grpc

    from serving.session_model import SessionModel

    examples = warmup_examples(version_dir)
    base = _base_with(version_dir)
    server = ServerProcess(base)
    model = SessionModel(os.path.join(base, MODEL, "1"))
    report = {}
    try:
        rest = RawHttp(server.rest_port)
        channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for batch in batches:
            batch_examples = [examples[i % len(examples)] for i in range(batch)]
            predict_body = http_request(f"/v1/models/{MODEL}:predict", {"instances": [
                {"b64": base64.b64encode(e).decode("ascii")} for e in batch_examples]})
            classify_body = http_request(f"/v1/models/{MODEL}:classify", {
                "signature_name": "classification", "examples": [example_json(e) for e in batch_examples]})
            request = predict_pb2.PredictRequest()
            request.model_spec.name = MODEL
            request.inputs["examples"].CopyFrom(tf.make_tensor_proto(batch_examples, dtype=tf.string))

            def rest_call(body):
                def call():
                    status, data = rest.call(body)
                    if status != 200:
                        raise SystemExit(f"REST answered {status}: {data[:300]!r}")
                    return json.loads(data)
                return call

            def grpc_predict():
                response = stub.Predict(request, timeout=60)
                return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}

            calls = {
                "in_process": lambda: model.run("serving_default", {"examples": batch_examples}),
                "in_process_classify": lambda: model.run("classification", {"inputs": batch_examples}),
                "rest_predict": rest_call(predict_body),
                "rest_classify": rest_call(classify_body),
                "grpc_predict": grpc_predict,
            }
            names = list(calls)
            for name in names:  # warm every path outside the timing
                for _ in range(3):
                    calls[name]()
            per_round = {name: [] for name in names}
            points = max(10, n // 4) if batch >= 512 else n
            for _ in range(rounds):
                samples = {name: [] for name in names}
                for i in range(points):
                    k = i % len(names)
                    for name in names[k:] + names[:k]:
                        t = time.perf_counter()
                        calls[name]()
                        samples[name].append(time.perf_counter() - t)
                for name in names:
                    per_round[name].append(_stats(samples[name]))
            report[batch] = {"points": points, "per_round": per_round}
        rest.close()
        channel.close()
    finally:
        model.close()
        server.close()
        shutil.rmtree(base, ignore_errors=True)
    return report


BASELINE = {"rest_predict": "in_process", "rest_classify": "in_process_classify", "grpc_predict": "in_process"}


def print_latency(report: dict, rounds: int) -> None:
    print(f"latency in ms over {rounds} rounds (p50 / p90: median over rounds; overhead: p50 minus the "
          f"in-process p50 of the same round, median [min, max])")
    print(f"{'batch':>5}  {'path':20} {'p50':>8} {'p90':>8}  {'overhead p50':>13} {'spread':>17}")
    for batch, point in report.items():
        per_round = point["per_round"]
        for name, stats in per_round.items():
            p50 = float(np.median([s[0] for s in stats]))
            p90 = float(np.median([s[1] for s in stats]))
            line = f"{batch:>5}  {name:20} {p50:8.3f} {p90:8.3f}"
            if name in BASELINE:
                over = [s[0] - b[0] for s, b in zip(stats, per_round[BASELINE[name]])]
                line += f"  {np.median(over):13.3f} [{min(over):7.3f}, {max(over):7.3f}]"
            print(line)


# ----------------------------------------------------------------------------- concurrency (batching)
def _client_process(port: int, request: bytes, concurrency: int, duration: float, out) -> None:
    """``concurrency`` threads sending ``request`` back to back for ``duration`` s; puts
    (requests done, errors, latencies in s) on ``out``."""
    counts, errors, lat = [0] * concurrency, [0] * concurrency, [[] for _ in range(concurrency)]
    start_at = time.monotonic() + 0.2
    stop_at = start_at + duration

    def worker(k):
        client = RawHttp(port)
        while time.monotonic() < start_at:
            time.sleep(0.001)
        while (t := time.monotonic()) < stop_at:
            try:
                status, _ = client.call(request)
                if status == 200:
                    counts[k] += 1
                    lat[k].append(time.monotonic() - t)
                else:
                    errors[k] += 1
            except OSError:
                errors[k] += 1
                client = RawHttp(port)
        client.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put((sum(counts), sum(errors), [x for v in lat for x in v]))


def _load(port: int, request: bytes, concurrency: int, duration: float) -> dict:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_client_process, args=(port, request, concurrency, duration, out))
    proc.start()
    done, errors, lat = out.get(timeout=duration + 120)
    proc.join(timeout=30)
    return {"rps": done / duration, "errors": errors,
            "p50_ms": float(np.percentile(np.asarray(lat) * 1000, 50)) if lat else float("nan")}


def concurrency_bench(version_dir: str, concurrency: int, duration: float, rounds: int, params_path: str) -> dict:
    from serving.batching import read_batching_parameters

    read_batching_parameters(params_path)  # a bad file fails here, with its message
    examples = warmup_examples(version_dir)
    base = _base_with(version_dir)
    servers = {}
    results = {"plain": [], "batching": []}
    try:
        servers["plain"] = ServerProcess(base, grpc=False)
        servers["batching"] = ServerProcess(base, grpc=False, params_path=params_path)
        request = http_request(f"/v1/models/{MODEL}:predict", {"instances": [
            {"b64": base64.b64encode(examples[0]).decode("ascii")}]})
        for srv in servers.values():  # warm both
            _load(srv.rest_port, request, concurrency, 1.0)
        for r in range(rounds):
            order = list(servers) if r % 2 == 0 else list(servers)[::-1]
            for name in order:
                results[name].append(_load(servers[name].rest_port, request, concurrency, duration))
    finally:
        for srv in servers.values():
            srv.close()
        shutil.rmtree(base, ignore_errors=True)
    return results


def print_concurrency(results: dict, concurrency: int, duration: float, params_path: str) -> None:
    print(f"sustained batch-1 REST :predict, {concurrency} concurrent clients, {duration:g} s per run, "
          f"batching parameters {os.path.relpath(params_path, REPO)}")
    for name, runs in results.items():
        print(f"  {name:9} req/s " + " ".join(f"{r['rps']:8.1f}" for r in runs)
              + "   client p50 ms " + " ".join(f"{r['p50_ms']:6.2f}" for r in runs)
              + f"   errors {sum(r['errors'] for r in runs)}")
    ratios = [b["rps"] / p["rps"] for b, p in zip(results["batching"], results["plain"])]
    print(f"  throughput batching / plain: median {np.median(ratios):.2f} [min {min(ratios):.2f}, "
          f"max {max(ratios):.2f}]")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--export-dir", help="a SavedModel version directory with a warmup file (default: build a fake run)")
    p.add_argument("--requests", type=int, default=100, help="timed calls per path per round (batch 512: a quarter)")
    p.add_argument("--rounds", type=int, default=5, help="rounds (the spread is over rounds)")
    p.add_argument("--batches", default="1,64,512", help="comma-separated batch sizes")
    p.add_argument("--concurrency", type=int, help="measure batching throughput with this many batch-1 clients")
    p.add_argument("--duration", type=float, default=5.0, help="with --concurrency: seconds per run")
    p.add_argument("--batching-parameters", default=os.path.join(REPO, "serving", "tfserving",
                                                                 "batching_parameters.txt"),
                   help="with --concurrency: a BatchingParameters text proto")
    args = p.parse_args(argv)
    import core  # noqa: F401  (TF_USE_LEGACY_KERAS before tensorflow)

    scratch = None
    version_dir = args.export_dir
    if version_dir is None:
        scratch = tempfile.mkdtemp(prefix="bench-overhead-run-")
        print("building a fake run and its export ...", flush=True)
        version_dir = build_export(scratch)
    try:
        if args.concurrency:
            results = concurrency_bench(version_dir, args.concurrency, args.duration, args.rounds,
                                        args.batching_parameters)
            print_concurrency(results, args.concurrency, args.duration, args.batching_parameters)
        else:
            batches = [int(b) for b in args.batches.split(",")]
            print_latency(latency(version_dir, batches, args.requests, args.rounds), args.rounds)
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
