"""The model server under 16 concurrent clients and hostile input, on loopback only (issue 7:
faults): every valid request is answered correctly, oversized batches get a clear 4xx, and
malformed input of every kind is rejected without taking the server down."""
import base64
import json
import math
import random
import socket
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
