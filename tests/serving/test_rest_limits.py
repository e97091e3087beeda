"""The REST server's socket side (``serving.rest.RestServer``) on loopback: body limit (413),
header and body read timeouts (408), bounded threads and connections (503), malformed
framing (400) and chunked request bodies. A fake API stands in for the models (no
TensorFlow on the request path), so every test is quick; raw sockets send what a
well-behaved client never would.

Before these limits the server (``ThreadingHTTPServer``) read a 77 MB body in full before
the batch check, blocked a thread on ``Content-Length: -1`` and on every half-open socket (a
thread each), sent nothing back for a malformed ``Content-Length`` and parsed a chunked
body as the next request.
"""
import json
import socket
import threading
import time
import weakref

import numpy as np
import pytest
import requests

from serving.rest import RestServer
from serving.session_model import Signature


class FakeApi:
    """Predict doubles input ``x``; ``delay`` makes every predict take that long (counts concurrency)."""

    def __init__(self, delay: float = 0.0):
        self.delay, self.active, self.most, self.lock = delay, 0, 0, threading.Lock()
        self.calls = 0

    def status(self, name, version=None):
        return [{"version": 1, "state": "AVAILABLE", "error": ""}]

    def predict(self, name, version, signature, inputs):
        with self.lock:
            self.calls += 1
            self.active += 1
            self.most = max(self.most, self.active)
        try:
            time.sleep(self.delay)
            feed = inputs(Signature("tensorflow/serving/predict", {"x": None}, {"y": None}))
            return 1, signature, {"y": np.asarray(feed["x"], np.float32) * 2}
        finally:
            with self.lock:
                self.active -= 1


@pytest.fixture
def make_server():
    servers = []

    def make(api=None, **limits):
        srv = RestServer(api or FakeApi(), "127.0.0.1", 0, **limits).start()
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        srv.stop()


BODY = b'{"instances": [1.5, 2.0]}'
PREDICT = b"POST /v1/models/m:predict HTTP/1.1\r\nHost: t\r\n"


def connect(srv, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", srv.port), timeout=timeout)


_LEFTOVER: "weakref.WeakKeyDictionary[socket.socket, bytes]" = weakref.WeakKeyDictionary()


def read_response(sock: socket.socket) -> tuple[int, dict, bytes]:
    """(status, lower-case headers, body) of one response; (0, {}, b"") if closed before any.
    Bytes past the response (a pipelined next one) are kept for the next call on ``sock``."""
    buf = _LEFTOVER.pop(sock, b"")
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            return 0, {}, b""
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    n = int(headers.get("content-length", 0))
    while len(rest) < n:
        data = sock.recv(65536)
        if not data:
            break
        rest += data
    if len(rest) > n:
        _LEFTOVER[sock] = rest[n:]
    return int(lines[0].split()[1]), headers, rest[:n]


def exchange(srv, data: bytes, timeout: float = 5.0) -> tuple[int, dict, bytes]:
    with connect(srv, timeout) as s:
        s.sendall(data)
        return read_response(s)


def error_of(response, code) -> str:
    status, headers, body = response
    assert status == code, (status, body[:300])
    assert headers["content-type"] == "application/json"
    obj = json.loads(body)
    assert list(obj) == ["error"] and obj["error"]
    return obj["error"]


def closed_by_server(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        while sock.recv(65536):
            pass
        return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def predict_request(body: bytes = BODY, extra: bytes = b"") -> bytes:
    return PREDICT + b"Content-Length: %d\r\n" % len(body) + extra + b"\r\n" + body


# ----------------------------------------------------------------------------- body limit
def test_a_body_over_the_limit_is_413_before_it_is_read(make_server):
    srv = make_server(max_body_bytes=1024)
    with connect(srv) as s:  # claims 77 MB, sends 1 KB: the answer must not wait for the rest
        t0 = time.monotonic()
        s.sendall(PREDICT + b"Content-Length: 77000000\r\n\r\n" + b"[" * 1024)
        message = error_of(read_response(s), 413)
        assert time.monotonic() - t0 < 2.0
    assert "77000000 bytes is larger than the limit of 1024 bytes (serving.max_body_bytes)" in message


def test_a_whole_oversized_body_sent_anyway_still_gets_the_413(make_server):
    srv = make_server(max_body_bytes=1024)
    r = requests.post(f"http://127.0.0.1:{srv.port}/v1/models/m:predict", data=b"[" * 300_000, timeout=10)
    assert r.status_code == 413 and "serving.max_body_bytes" in r.json()["error"]
    assert r.headers["Connection"] == "close"


def test_a_body_at_the_limit_is_served(make_server):
    body = b'{"instances": [1.0]' + b" " * 100 + b"}"
    srv = make_server(max_body_bytes=len(body))
    status, _, data = exchange(srv, predict_request(body))
    assert status == 200 and json.loads(data) == {"predictions": [2.0]}


def test_a_chunked_body_over_the_limit_is_413(make_server):
    srv = make_server(max_body_bytes=1024)
    chunk = b"400\r\n" + b" " * 1024 + b"\r\n"
    message = error_of(exchange(srv, PREDICT + b"Transfer-Encoding: chunked\r\n\r\n" + chunk * 3), 413)
    assert "chunked" in message and "serving.max_body_bytes" in message


def test_an_oversized_body_leaves_server_memory_flat(make_server):
    import resource

    srv = make_server(max_body_bytes=1 << 20)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    junk = b"0.5," * (2 << 20)  # 8 MB, sent 5 times (40 MB) on connections claiming 77 MB each
    for _ in range(5):
        with connect(srv, timeout=10) as s:
            s.sendall(PREDICT + b"Content-Length: 77000000\r\n\r\n")
            try:
                s.sendall(junk)
            except OSError:
                pass
            assert read_response(s)[0] == 413
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 64 * 1024  # KB: < 64 MB


# ----------------------------------------------------------------------------- framing
@pytest.mark.parametrize("value", [b"abc", b"-1", b"+5", b"", b"1 2", b"0x10", b"99999999999999999999999"])
def test_a_malformed_content_length_is_400(make_server, value):
    srv = make_server()
    message = error_of(exchange(srv, PREDICT + b"Content-Length: " + value + b"\r\n\r\n" + BODY), 400)
    assert "Malformed Content-Length" in message


def test_conflicting_content_lengths_are_400_and_identical_ones_are_accepted(make_server):
    srv = make_server()
    n = len(BODY)
    assert error_of(exchange(srv, PREDICT + b"Content-Length: %d\r\nContent-Length: %d\r\n\r\n" % (n, n + 1)
                             + BODY), 400).startswith("Malformed Content-Length")
    assert exchange(srv, PREDICT + b"Content-Length: %d, %d\r\n\r\n" % (n, n) + BODY)[0] == 200


def test_content_length_with_transfer_encoding_is_400(make_server):
    srv = make_server()
    message = error_of(exchange(srv, PREDICT + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
                       400)
    assert "both Transfer-Encoding and Content-Length" in message


def test_a_transfer_coding_other_than_chunked_is_501(make_server):
    srv = make_server()
    assert "only chunked" in error_of(exchange(srv, PREDICT + b"Transfer-Encoding: gzip, chunked\r\n\r\n"), 501)


@pytest.mark.parametrize("chunks,fragment", [
    (b"zz\r\nabc\r\n0\r\n\r\n", "bad chunk size"),
    (b"3\r\nabcdef\r\n0\r\n\r\n", "not followed by CRLF"),
    (b"-3\r\nabc\r\n0\r\n\r\n", "bad chunk size"),
])
def test_a_malformed_chunked_body_is_400(make_server, chunks, fragment):
    srv = make_server()
    assert fragment in error_of(exchange(srv, PREDICT + b"Transfer-Encoding: chunked\r\n\r\n" + chunks), 400)


@pytest.mark.parametrize("request_bytes,code,fragment", [
    (b"GARBAGE\r\n\r\n", 400, "Malformed request line"),
    (b"POST /v1/models/m:predict\r\n\r\n", 400, "Malformed request line"),
    (b"POST /v1/models/m:predict HTTP/2.0\r\n\r\n", 505, "HTTP/2.0 is not supported"),
    (b"POST /v1/models/m:predict HTTP/1.1\r\nNo colon here\r\n\r\n", 400, "Malformed header line"),
    (b"POST /v1/models/m:predict HTTP/1.1\r\nBad Name: x\r\n\r\n", 400, "Malformed header line"),
    (b"POST /v1/models/m:predict HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", 400, "line folding"),
    (b"POST /v1/models/m:predict HTTP/1.1\r\n" + b"X: y\r\n" * 101 + b"\r\n", 431, "more than 100 header"),
    (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 431, "larger than 65536 bytes"),
    (b"POST /v1/models/m:predict HTTP/1.1\r\nExpect: teapot\r\n\r\n", 417, "not supported"),
])
def test_malformed_framing_gets_a_json_error(make_server, request_bytes, code, fragment):
    srv = make_server()
    assert fragment in error_of(exchange(srv, request_bytes), code)


def test_binary_garbage_gets_400_and_the_server_keeps_serving(make_server):
    srv = make_server()
    assert exchange(srv, bytes(range(256)) * 4 + b"\r\n\r\n")[0] == 400
    assert exchange(srv, predict_request())[0] == 200


# ----------------------------------------------------------------------------- chunked and keep-alive
def test_a_chunked_body_is_read_and_the_connection_stays_in_step(make_server):
    srv = make_server()
    chunked = (PREDICT + b"Transfer-Encoding: chunked\r\n\r\n"
               + b"5;ext=1\r\n" + BODY[:5] + b"\r\n" + b"%x\r\n" % (len(BODY) - 5) + BODY[5:] + b"\r\n"
               + b"0\r\nX-Trailer: t\r\n\r\n")
    with connect(srv) as s:
        s.sendall(chunked)
        status, headers, data = read_response(s)
        assert status == 200 and json.loads(data) == {"predictions": [3.0, 4.0]}
        assert headers["connection"] == "keep-alive"
        s.sendall(predict_request(b'{"instances": [5.0]}'))  # the same connection: in step
        status, _, data = read_response(s)
        assert status == 200 and json.loads(data) == {"predictions": [10.0]}


def test_requests_sends_a_generator_body_chunked_and_it_is_served(make_server):
    srv = make_server()
    r = requests.post(f"http://127.0.0.1:{srv.port}/v1/models/m:predict", data=iter([BODY[:7], BODY[7:]]),
                      timeout=10)
    assert r.status_code == 200 and r.json() == {"predictions": [3.0, 4.0]}


def test_pipelined_requests_are_answered_in_order(make_server):
    srv = make_server()
    with connect(srv) as s:
        s.sendall(predict_request(b'{"instances": [1.0]}') + predict_request(b'{"instances": [2.0]}'))
        assert json.loads(read_response(s)[2]) == {"predictions": [2.0]}
        assert json.loads(read_response(s)[2]) == {"predictions": [4.0]}


def test_connection_close_and_http_1_0_close_after_the_response(make_server):
    srv = make_server()
    for data in (predict_request(extra=b"Connection: close\r\n"),
                 predict_request().replace(b"HTTP/1.1", b"HTTP/1.0")):
        with connect(srv) as s:
            s.sendall(data)
            status, headers, _ = read_response(s)
            assert status == 200 and headers["connection"] == "close"
            assert closed_by_server(s, 2.0)


def test_expect_100_continue_gets_an_interim_response_unless_the_body_is_too_large(make_server):
    srv = make_server(max_body_bytes=1024)
    with connect(srv) as s:
        s.sendall(PREDICT + b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(BODY))
        assert s.recv(1024) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(BODY)
        assert read_response(s)[0] == 200
    with connect(srv) as s:
        s.sendall(PREDICT + b"Expect: 100-continue\r\nContent-Length: 5000\r\n\r\n")
        assert read_response(s)[0] == 413


# ----------------------------------------------------------------------------- timeouts
def test_an_incomplete_request_head_is_408_after_the_header_timeout(make_server):
    srv = make_server(header_timeout_seconds=0.5)
    with connect(srv) as s:
        s.sendall(b"POST /v1/models/m:predict HTTP/1.1\r\nHost: t\r\n")
        t0 = time.monotonic()
        message = error_of(read_response(s), 408)
        assert 0.4 < time.monotonic() - t0 < 3.0
        assert "serving.header_timeout_seconds" in message and closed_by_server(s, 2.0)


def test_an_idle_keep_alive_connection_is_closed_after_the_header_timeout(make_server):
    srv = make_server(header_timeout_seconds=0.5)
    with connect(srv) as s:
        s.sendall(predict_request())
        assert read_response(s)[0] == 200
        t0 = time.monotonic()
        assert closed_by_server(s, 3.0) and time.monotonic() - t0 >= 0.4
    deadline = time.monotonic() + 2
    while srv.open_connections and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.open_connections == 0


def test_a_body_that_stops_arriving_is_408_after_the_body_timeout(make_server):
    srv = make_server(body_timeout_seconds=0.5)
    with connect(srv) as s:  # Content-Length: -1 used to block a thread for good
        s.sendall(PREDICT + b"Content-Length: 100\r\n\r\n" + b"{" * 10)
        t0 = time.monotonic()
        assert "serving.body_timeout_seconds" in error_of(read_response(s), 408)
        assert time.monotonic() - t0 < 3.0


def test_a_slow_body_does_not_hold_up_other_clients(make_server):
    srv = make_server(worker_threads=2, body_timeout_seconds=5)
    with connect(srv) as slow:
        slow.sendall(PREDICT + b"Content-Length: 100\r\n\r\n{")
        time.sleep(0.2)
        t0 = time.monotonic()
        assert exchange(srv, predict_request())[0] == 200
        assert time.monotonic() - t0 < 2.0


# ----------------------------------------------------------------------------- threads and connections
def _threads() -> int:
    return threading.active_count()


def test_half_open_connections_take_no_threads_and_do_not_block_requests(make_server):
    srv = make_server(worker_threads=4, max_connections=400)
    before = _threads()
    socks = [connect(srv) for _ in range(300)]  # 308 of these made 330 threads before
    try:
        for i, s in enumerate(socks):
            s.sendall(b"POST /v1/models/m:predict HTTP/1.1\r\n" if i % 2 else b"")
        time.sleep(0.5)
        assert _threads() - before <= 4  # the pool's workers at most (the selector thread already runs)
        t0 = time.monotonic()
        assert exchange(srv, predict_request())[0] == 200
        assert time.monotonic() - t0 < 2.0
        assert srv.open_connections >= 300  # all still open (the exchange's own may not be reaped yet)
    finally:
        for s in socks:
            s.close()


def test_worker_threads_bound_the_requests_in_progress(make_server):
    api = FakeApi(delay=0.2)
    srv = make_server(api, worker_threads=2)
    url = f"http://127.0.0.1:{srv.port}/v1/models/m:predict"
    results = []
    threads = [threading.Thread(target=lambda: results.append(requests.post(url, data=BODY, timeout=30).status_code))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 8 and api.most == 2


def test_a_connection_beyond_max_connections_is_503_when_none_is_idle(make_server):
    srv = make_server(max_connections=3, header_timeout_seconds=5)
    socks = [connect(srv) for _ in range(3)]
    try:
        for s in socks:  # a request begun on each: not idle, not evicted
            s.sendall(b"POST /v1/models/m:predict HTTP/1.1\r\n")
        time.sleep(0.3)
        with connect(srv) as extra:
            message = error_of(read_response(extra), 503)
        assert "serving.max_connections=3" in message and srv.refused == 1
    finally:
        for s in socks:
            s.close()


def test_an_idle_keep_alive_connection_makes_room_for_a_new_one(make_server):
    srv = make_server(max_connections=2)
    idle = [connect(srv) for _ in range(2)]
    try:
        for s in idle:
            s.sendall(predict_request())
            assert read_response(s)[0] == 200
        assert exchange(srv, predict_request())[0] == 200 and srv.refused == 0
        assert closed_by_server(idle[0], 2.0)  # the longest idle one was closed
    finally:
        for s in idle:
            s.close()


def test_stop_is_prompt_with_a_client_stuck_mid_body(make_server):
    srv = RestServer(FakeApi(), "127.0.0.1", 0).start()
    with connect(srv) as s:
        s.sendall(PREDICT + b"Content-Length: 100\r\n\r\n{")
        time.sleep(0.2)
        t0 = time.monotonic()
        srv.stop(grace=0.5)
        assert time.monotonic() - t0 < 3.0


@pytest.mark.parametrize("limit,value", [("max_body_bytes", 0), ("worker_threads", 0), ("max_connections", 0),
                                         ("header_timeout_seconds", 0), ("body_timeout_seconds", -1)])
def test_limits_out_of_range_are_rejected(limit, value):
    from serving.server import ModelServer

    with pytest.raises(ValueError, match=f"{limit} must be"):
        ModelServer("/nonexistent", rest_port=0, grpc_port=None, **{limit: value})


# ----------------------------------------------------------------------------- config and wiring
def test_model_server_limit_defaults_are_the_serving_config_defaults():
    import inspect

    from core.config import ServingConfig
    from serving.server import ModelServer

    params = inspect.signature(ModelServer).parameters
    cfg = ServingConfig()
    for key in ("max_body_bytes", "header_timeout_seconds", "body_timeout_seconds", "worker_threads",
                "max_connections", "poll_seconds", "max_batch_size"):
        assert params[key].default == getattr(cfg, key), key


@pytest.mark.parametrize("override,fragment", [
    ("serving.max_body_bytes=100", r"serving\.max_body_bytes: expected a value >= 1024"),
    ("serving.header_timeout_seconds=0", r"serving\.header_timeout_seconds: expected a value > 0"),
    ("serving.body_timeout_seconds=7200", r"serving\.body_timeout_seconds: expected a value <= 3600"),
    ("serving.worker_threads=0", r"serving\.worker_threads: expected a value >= 1"),
    ("serving.max_connections=0", r"serving\.max_connections: expected a value >= 1"),
])
def test_serving_limits_are_range_checked_in_the_config(override, fragment):
    from core.errors import ConfigError
    from tests.fakes.serving_models import serving_config

    with pytest.raises(ConfigError, match=fragment):
        serving_config(override)


def test_the_serve_stage_passes_the_configured_limits_to_the_server(tmp_path, monkeypatch):
    import argparse

    import pipeline.stages.serve as serve
    import serving.server
    from core.run_dir import RunDir
    from tests.fakes.serving_models import serving_config

    seen = {}

    class FakeServer:
        rest_port, grpc_port = 1, 2

        def __init__(self, *args, **kwargs):
            seen["args"], seen["kwargs"] = args, kwargs
            self.store = type("S", (), {"model_names": lambda s: [], "all_status": lambda s: {}})()

        def start(self):
            return self

        def stop(self):
            seen["stopped"] = True

    class SetEvent(threading.Event):  # the serve loop ends at once
        def __init__(self):
            super().__init__()
            self.set()

    monkeypatch.setattr(serving.server, "ModelServer", FakeServer)
    monkeypatch.setattr(serve.threading, "Event", SetEvent)
    cfg = serving_config("serving.max_body_bytes=2048", "serving.header_timeout_seconds=3",
                         "serving.body_timeout_seconds=4", "serving.worker_threads=5", "serving.max_connections=6")
    opts = argparse.Namespace(model_base=str(tmp_path), rest_port=None, grpc_port=None)
    serve.run(cfg, RunDir(str(tmp_path)), opts)
    assert seen["kwargs"] == {"max_body_bytes": 2048, "header_timeout_seconds": 3.0, "body_timeout_seconds": 4.0,
                              "worker_threads": 5, "max_connections": 6}
    assert seen["stopped"]


def test_a_grpc_message_over_max_body_bytes_is_resource_exhausted():
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from serving.grpc_service import GrpcServer

    srv = GrpcServer(FakeApi(), "127.0.0.1", 0, max_message_bytes=4096).start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "m"
            request.inputs["x"].string_val.append(b"a" * 8192)
            with pytest.raises(grpc.RpcError) as e:
                stub.Predict(request, timeout=10)
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        srv.stop()
