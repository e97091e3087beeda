"""The model server under 16 concurrent clients and hostile input, on loopback only (issue 7:
faults): every valid request is answered correctly, oversized batches get a clear 4xx, and
malformed input of every kind is rejected without taking the server down. The slow test
below runs a bounded load (16 threads, ~12 s) against a server process while versions are
hot-swapped (atomic publish, slow file-by-file copy, corrupt version, its replacement) and
oversized bodies are refused with 413: no request fails and the server's RSS stays bounded."""
import base64
import json
import math
import random
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import requests

from serving.client import GrpcClient, ServingClientError
from serving.server import ModelServer
from tests.fakes.serving_models import publish_tiny
from tests.fakes.serving_models import tiny_example

THREADS = 16
REQUESTS_PER_THREAD = 12
MAX_BATCH = 8


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = str(tmp_path_factory.mktemp("base"))
    publish_tiny(base, 1, 1.0)
    srv = ModelServer(base, host="127.0.0.1", rest_port=0, grpc_port=0, poll_seconds=0.2,
                      max_batch_size=MAX_BATCH).start()
    assert srv.store.wait_for_version("tiny", 1, timeout=60)
    yield srv
    srv.stop()


def _rest(server, path="/v1/models/tiny:predict"):
    return f"http://127.0.0.1:{server.rest_port}{path}"


def _sigmoid(x):
    return 1 / (1 + math.exp(-x))


def _valid_request(server, grpc_client, i: int):
    """One valid request (REST or gRPC by turn) with a batch of 1..MAX_BATCH; returns (expected, got)."""
    rng = random.Random(i)
    xs = [round(rng.uniform(-3, 3), 3) for _ in range(rng.randint(1, MAX_BATCH))]
    expected = [_sigmoid(x) for x in xs]
    if i % 2:
        r = requests.post(_rest(server), json={"instances": [{"b64": base64.b64encode(tiny_example(x)).decode()}
                                                             for x in xs]}, timeout=30)
        assert r.status_code == 200, r.text
        return expected, [p["click_probability"] for p in r.json()["predictions"]]
    out = grpc_client.predict_examples([tiny_example(x) for x in xs])
    return expected, list(out["click_probability"])


def test_sixteen_concurrent_clients_get_every_answer_right(server):
    grpc_client = GrpcClient(f"127.0.0.1:{server.grpc_port}", "tiny")
    try:
        with ThreadPoolExecutor(THREADS) as pool:
            results = list(pool.map(lambda i: _valid_request(server, grpc_client, i),
                                    range(THREADS * REQUESTS_PER_THREAD), timeout=120))
    finally:
        grpc_client.close()
    assert len(results) == THREADS * REQUESTS_PER_THREAD
    for expected, got in results:
        np.testing.assert_allclose(got, expected, rtol=1e-5)


def _deeply_nested(depth: int) -> bytes:
    return b'{"instances": ' + b"[" * depth + b"1.0" + b"]" * depth + b"}"


BAD_REST = [
    ("bad JSON", b"{not json", 400),
    ("empty body", b"", 400),
    ("binary garbage", bytes(range(256)) * 8, 400),
    ("not an object", b"[1, 2, 3]", 400),
    ("instances of wrong type", b'{"instances": "abc"}', 400),
    ("b64 not base64", b'{"instances": [{"b64": "***"}]}', 400),
    ("example not a tf.Example", json.dumps({"instances": [{"b64": base64.b64encode(b"\x01\x02junk").decode()}]}).encode(), 400),
    ("wrong signature", b'{"signature_name": "nope", "instances": [1.0]}', 400),
    ("wrong input name", b'{"signature_name": "predict_raw", "inputs": {"y": [1.0]}}', 400),
    ("string for a float input", b'{"signature_name": "predict_raw", "instances": ["a"]}', 400),
    ("deeply nested", _deeply_nested(100_000), 400),
    ("oversized batch", json.dumps({"signature_name": "predict_raw", "instances": [1.0] * (MAX_BATCH + 1)}).encode(), 400),
    ("huge batch", json.dumps({"signature_name": "predict_raw", "instances": [0.5] * 200_000}).encode(), 400),
]


@pytest.mark.parametrize("what,body,code", BAD_REST, ids=[b[0] for b in BAD_REST])
def test_malformed_rest_requests_get_a_clear_4xx(server, what, body, code):
    r = requests.post(_rest(server), data=body, headers={"Content-Type": "application/json"}, timeout=60)
    assert r.status_code == code, f"{what}: {r.status_code} {r.text[:300]}"
    assert set(r.json()) == {"error"} and r.json()["error"], r.text[:300]
    if "batch" in what:
        assert f"maximum input batch size {MAX_BATCH}" in r.json()["error"]


def test_oversized_grpc_batch_is_invalid_argument(server):
    client = GrpcClient(f"127.0.0.1:{server.grpc_port}", "tiny")
    try:
        with pytest.raises(ServingClientError) as e:
            client.predict_examples([tiny_example(1.0)] * (MAX_BATCH + 1))
        assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT and str(MAX_BATCH) in e.value.message
    finally:
        client.close()


def test_binary_garbage_on_grpc_and_raw_tcp_is_survived(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        for method in ("/tensorflow.serving.PredictionService/Predict",
                       "/tensorflow.serving.PredictionService/GetModelMetadata",
                       "/tensorflow.serving.ModelService/GetModelStatus",
                       "/tensorflow.serving.PredictionService/NoSuchMethod"):
            call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
            with pytest.raises(grpc.RpcError) as e:
                call(b"\xff\xfe garbage \x00" * 64, timeout=10)
            assert e.value.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.INVALID_ARGUMENT,
                                      grpc.StatusCode.UNIMPLEMENTED), (method, e.value.code())
    for port in (server.rest_port, server.grpc_port):  # not HTTP, not HTTP/2: the listener must survive
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(bytes(random.Random(port).getrandbits(8) for _ in range(4096)))
            s.settimeout(5)
            try:
                s.recv(1024)
            except (socket.timeout, ConnectionResetError):
                pass


def test_hostile_and_valid_traffic_interleaved_leaves_the_server_serving(server):
    grpc_client = GrpcClient(f"127.0.0.1:{server.grpc_port}", "tiny")

    def one(i):
        if i % 3 == 0:
            what, body, code = BAD_REST[i % len(BAD_REST)]
            r = requests.post(_rest(server), data=body, timeout=60)
            return r.status_code == code
        expected, got = _valid_request(server, grpc_client, i)
        return np.allclose(got, expected, rtol=1e-5)

    try:
        with ThreadPoolExecutor(THREADS) as pool:
            ok = list(pool.map(one, range(THREADS * 6), timeout=180))
        assert all(ok), [i for i, v in enumerate(ok) if not v]
        assert requests.get(_rest(server, "/v1/models/tiny"), timeout=10).json()["model_version_status"][0]["state"] == "AVAILABLE"
        assert grpc_client.predict_examples([tiny_example(0.0)])["click_probability"][0] == pytest.approx(0.5)
    finally:
        grpc_client.close()


# ----------------------------------------------------------------------------- hot swaps under load
# The server runs in its own process so its RSS and threads are measured alone; 16 client
# threads hit it on loopback for a fixed time while version 2 is published atomically,
# version 3 trickles in file by file, a corrupt version 4 appears and is then replaced by a
# good one under the same number. Oversized bodies (413) are in the mix throughout.
SWAP_LIMITS = {"poll_seconds": 0.2, "max_batch_size": MAX_BATCH, "max_body_bytes": 1 << 20,
               "worker_threads": 8, "max_connections": 64, "header_timeout_seconds": 10.0,
               "body_timeout_seconds": 10.0}
SWAP_SECONDS = 12.0  # the load runs at least this long, and until every swap is done
SWAP_MAX_SECONDS = 60.0
SWAP_MAX_REQUESTS = 50_000
RSS_GROWTH_LIMIT_MB = 400  # one 77 MB body used to add ~1.1 GB
SCALES = {1: 1.0, 2: 2.0, 3: 3.0, 4: 4.0}  # version -> click = sigmoid(scale * x)

_SERVER = r"""
import json, sys
from serving.server import ModelServer
srv = ModelServer(sys.argv[1], host="127.0.0.1", rest_port=0, grpc_port=0, **json.loads(sys.argv[2])).start()
print(json.dumps({"rest": srv.rest_port, "grpc": srv.grpc_port}), flush=True)
sys.stdin.read()  # until the test closes stdin
srv.stop()
"""


def _proc_status(pid: int) -> dict:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "Threads"):
                out[key] = int(value.split()[0])
    return out  # VmRSS in kB


class _Monitor(threading.Thread):
    """Samples the server's RSS (MB) and thread count every 50 ms."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.stop, self.rss, self.threads = pid, threading.Event(), [], []

    def run(self):
        while not self.stop.wait(0.05):
            try:
                st = _proc_status(self.pid)
            except OSError:
                return
            self.rss.append(st["VmRSS"] / 1024)
            self.threads.append(st["Threads"])


def _trickle_copy(src: str, dst: str, pause: float) -> None:
    """Copies a version directory file by file (saved_model.pb first), each file in two writes."""
    import os

    os.makedirs(dst)
    files = sorted((os.path.relpath(os.path.join(r, f), src) for r, _, fs in os.walk(src) for f in fs),
                   key=lambda p: (p != "saved_model.pb", p))
    for rel in files:
        target = os.path.join(dst, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(os.path.join(src, rel), "rb") as f:
            data = f.read()
        with open(target, "wb") as f:
            f.write(data[: len(data) // 2])
            f.flush()
            time.sleep(pause)
            f.write(data[len(data) // 2:])
        time.sleep(pause)


def _versions_of(p: float, x: float) -> set[int]:
    """The versions that answer ``p`` for ``x`` (all of them for x = 0)."""
    return {v for v, s in SCALES.items() if abs(p - _sigmoid(s * x)) < 1e-5}


def _oversized(port: int, kind: int) -> int:
    """One oversized request (1 MiB limit); returns the status code the server answered."""
    if kind == 0:  # a whole 2 MiB body, sent regardless
        return requests.post(f"http://127.0.0.1:{port}/v1/models/tiny:predict", data=b" " * (2 << 20),
                             timeout=30).status_code
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        head = b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: t\r\n"
        if kind == 1:  # claims 77 MB, sends 64 KB of it
            s.sendall(head + b"Content-Length: 77000000\r\n\r\n" + b"0.5," * 16384)
        else:  # chunked, 2 x 600 KB
            s.sendall(head + b"Transfer-Encoding: chunked\r\n\r\n")
            try:
                for _ in range(2):
                    s.sendall(b"%x\r\n" % 600_000 + b" " * 600_000 + b"\r\n")
            except OSError:
                pass
        buf = b""
        while b"\r\n" not in buf:
            data = s.recv(4096)
            if not data:
                return 0
            buf += data
        return int(buf.split()[1])


@pytest.mark.slow
def test_hot_swaps_under_load_fail_no_request_and_keep_memory_bounded(tmp_path):
    import os
    import shutil
    import subprocess
    import sys
    import threading

    from tests.conftest import REPO

    base = str(tmp_path / "base")
    publish_tiny(base, 1, SCALES[1])
    staged = {v: publish_tiny(str(tmp_path / f"staging{v}"), v, SCALES[v]) for v in (2, 3, 4)}
    model_dir = os.path.join(base, "tiny")
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen([sys.executable, "-c", _SERVER, base, json.dumps(SWAP_LIMITS)], cwd=REPO, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
    monitor = None
    try:
        ports = json.loads(proc.stdout.readline())
        rest_url = f"http://127.0.0.1:{ports['rest']}/v1/models/tiny"

        def status() -> dict:
            return {int(s["version"]): s for s in requests.get(rest_url, timeout=10).json()["model_version_status"]}

        def wait_state(version: int, state: str, timeout: float = 30.0) -> float:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if status().get(version, {}).get("state") == state:
                    return time.monotonic()
                time.sleep(0.05)
            raise AssertionError(f"version {version} not {state} in {timeout} s: {status()}")

        wait_state(1, "AVAILABLE", 120)
        grpc_client = GrpcClient(f"127.0.0.1:{ports['grpc']}", "tiny")
        for i in range(40):  # warm up both front ends before the baseline
            _valid_request_on(ports, requests, grpc_client, i)
        baseline = _proc_status(proc.pid)
        monitor = _Monitor(proc.pid)
        monitor.start()

        records, errors, oversized = [], [], []  # (start, end, version); failures; 413 codes
        counter, lock, stop = iter(range(SWAP_MAX_REQUESTS)), threading.Lock(), threading.Event()

        def client(t: int):
            session = requests.Session()
            while not stop.is_set():
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                start = time.monotonic()
                try:
                    if i % 25 == 24:
                        code = _oversized(ports["rest"], (i // 25) % 3)
                        (oversized if code == 413 else errors).append(code)
                        continue
                    x, got = _valid_request_on(ports, session, grpc_client, i)
                    versions = set(SCALES)
                    for p, xi in zip(got, x):
                        versions &= _versions_of(p, xi)
                    if len(versions) != 1 or len(got) != len(x):  # x[0] = 1.0 tells versions apart
                        errors.append(f"request {i}: {got} for {x}")
                    else:
                        records.append((start, time.monotonic(), versions.pop()))
                except Exception as e:  # noqa: BLE001  (every failure counts)
                    errors.append(f"request {i}: {e!r}")

        t0 = time.monotonic()
        threads = [threading.Thread(target=client, args=(t,)) for t in range(THREADS)]
        for t in threads:
            t.start()
        times = {}
        time.sleep(1.5)
        times["a_publish"] = time.monotonic()
        os.rename(staged[2], os.path.join(model_dir, "2"))  # (a) atomic publish
        times["a_served"] = wait_state(2, "AVAILABLE")
        times["b_start"] = time.monotonic()
        _trickle_copy(staged[3], os.path.join(model_dir, "3"), pause=0.15)  # (b) files trickle in
        times["b_done"] = time.monotonic()
        times["b_served"] = wait_state(3, "AVAILABLE")
        corrupt = os.path.join(tmp_path, ".tmp-4")  # (c) a corrupt version, published atomically
        os.makedirs(os.path.join(corrupt, "variables"))
        with open(os.path.join(corrupt, "saved_model.pb"), "wb") as f:
            f.write(os.urandom(4096))
        os.rename(corrupt, os.path.join(model_dir, "4"))
        times["c_end"] = wait_state(4, "END")
        corrupt_status = status()[4]["status"]
        time.sleep(1.0)  # version 3 keeps serving meanwhile
        times["d_replace"] = time.monotonic()
        shutil.rmtree(os.path.join(model_dir, "4"))  # (d) replaced by a good one, same number
        os.rename(staged[4], os.path.join(model_dir, "4"))
        times["d_served"] = wait_state(4, "AVAILABLE")
        while time.monotonic() - t0 < SWAP_SECONDS:
            time.sleep(0.1)
        stop.set()
        for t in threads:
            t.join(timeout=60)
        elapsed = time.monotonic() - t0
        monitor.stop.set()
        final = status()
        grpc_client.close()
    finally:
        if monitor is not None:
            monitor.stop.set()
        proc.stdin.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()

    peak_rss, peak_threads = max(monitor.rss), max(monitor.threads)
    growth = peak_rss - baseline["VmRSS"] / 1024
    per_version = {v: sum(1 for r in records if r[2] == v) for v in SCALES}
    print(f"\nhot-swap load: {len(records) + len(oversized) + len(errors)} requests in {elapsed:.1f} s "
          f"({len(records)} valid, {len(oversized)} oversized -> 413, {len(errors)} errors); per version "
          f"{per_version}; server RSS {baseline['VmRSS'] / 1024:.0f} MB -> peak {peak_rss:.0f} MB "
          f"(+{growth:.0f} MB); threads {baseline['Threads']} -> peak {peak_threads}; "
          f"swaps: v2 served {times['a_served'] - times['a_publish']:.2f} s after publish, v3 copy "
          f"{times['b_done'] - times['b_start']:.2f} s, served {times['b_served'] - times['b_done']:.2f} s after it, "
          f"corrupt v4 END in {times['c_end'] - times['b_served']:.2f} s, good v4 served "
          f"{times['d_served'] - times['d_replace']:.2f} s after replacement")
    assert errors == [], errors[:10]
    assert len(records) >= 300 and len(oversized) >= 10 and elapsed < SWAP_MAX_SECONDS
    # Each version answers only once it is complete, and only until the next one is served.
    assert all(end >= times["a_publish"] for _, end, v in records if v == 2)
    assert all(end >= times["b_done"] for _, end, v in records if v == 3)
    assert all(end >= times["d_replace"] for _, end, v in records if v == 4)
    assert all(v >= 2 for start, _, v in records if start > times["a_served"])
    assert all(v >= 3 for start, _, v in records if start > times["b_served"])
    assert all(v == 3 for start, end, v in records if times["b_served"] < start and end < times["d_replace"])
    assert all(v == 4 for start, _, v in records if start > times["d_served"])
    assert min(per_version.values()) > 0, per_version
    assert corrupt_status["error_code"] == "UNKNOWN" and "tiny/4/saved_model.pb" in corrupt_status["error_message"]
    assert str(tmp_path) not in corrupt_status["error_message"]
    assert [final[v]["state"] for v in (4, 3, 2, 1)] == ["AVAILABLE", "END", "END", "END"]
    assert growth < RSS_GROWTH_LIMIT_MB, f"server RSS grew {growth:.0f} MB"
    assert peak_threads - baseline["Threads"] <= SWAP_LIMITS["worker_threads"] + 16, (baseline, peak_threads)


def _valid_request_on(ports, session, grpc_client, i: int):
    """One valid predict (REST rows, REST columns or gRPC by turn) with x[0] = 1.0; (x, probabilities)."""
    rng = random.Random(i)
    x = [1.0] + [round(rng.uniform(-3, 3), 3) for _ in range(rng.randint(0, MAX_BATCH - 1))]
    url = f"http://127.0.0.1:{ports['rest']}/v1/models/tiny:predict"
    kind = i % 5
    if kind in (0, 1, 2):
        r = session.post(url, json={"instances": [{"b64": base64.b64encode(tiny_example(v)).decode()} for v in x]},
                         timeout=30)
        assert r.status_code == 200, r.text
        return x, [p["click_probability"] for p in r.json()["predictions"]]
    if kind == 3:
        r = session.post(url, json={"signature_name": "predict_raw", "inputs": {"x": x}}, timeout=30)
        assert r.status_code == 200, r.text
        return x, r.json()["outputs"]
    return x, [float(p) for p in grpc_client.predict_examples([tiny_example(v) for v in x])["click_probability"]]
