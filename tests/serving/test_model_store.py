"""Version polling, warmup-before-serving, latest-version swap under load, failed loads."""
import os
import threading
import time

import pytest

from serving.client import GrpcClient, RestClient
from serving.model_store import ModelStore
from serving.server import ModelServer
from serving.status import RequestError
from tests.fakes.serving_models import publish_tiny
from tests.fakes.serving_models import tiny_example


def test_new_version_under_load_fails_no_request(own_base):
    server = ModelServer(own_base, rest_port=0, grpc_port=0, poll_seconds=0.1).start()
    try:
        assert server.store.wait_for_version("tiny", 1, 30)
        rest = RestClient(f"http://127.0.0.1:{server.rest_port}", "tiny")
        grpc_client = GrpcClient(f"127.0.0.1:{server.grpc_port}", "tiny")
        errors, seen, stop = [], set(), threading.Event()

        def hammer(kind):
            while not stop.is_set():
                try:
                    if kind == "rest":
                        p = rest.predict_examples([tiny_example(1.0)])["predictions"][0]["click_probability"]
                    else:
                        p = float(grpc_client.predict_examples([tiny_example(1.0)])["click_probability"][0])
                    seen.add(round(p, 4))
                except Exception as e:  # noqa: BLE001  (collect every failure)
                    errors.append(repr(e))

        threads = [threading.Thread(target=hammer, args=(k,)) for k in ("rest", "grpc", "rest")]
        for t in threads:
            t.start()
        time.sleep(0.5)
        publish_tiny(own_base, 2, 3.0)
        assert server.store.wait_for_version("tiny", 2, 60)
        deadline = time.monotonic() + 20
        while server.store.status("tiny", 1)[0]["state"] != "END" and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join()
        assert errors == []
        assert {0.7311, 0.9526} <= seen  # sigmoid(1) from v1, sigmoid(3) from v2
        assert [s["state"] for s in server.store.status("tiny")] == ["AVAILABLE", "END"]
    finally:
        server.stop()


def test_failed_version_is_reported_and_old_keeps_serving(own_base):
    store = ModelStore(own_base, poll_seconds=0.1)
    store.poll_once()
    bad = os.path.join(own_base, "tiny", "2")
    os.makedirs(bad)
    with open(os.path.join(bad, "saved_model.pb"), "wb") as f:
        f.write(b"not a saved model")
    store.poll_once()
    st = {s["version"]: s for s in store.status("tiny")}
    assert st[2]["state"] == "END" and st[2]["error"]
    assert st[1]["state"] == "AVAILABLE"
    with store.acquire("tiny") as (version, model):
        assert version == 1
        assert model.run("", {"examples": [tiny_example(0.0)]})["click_probability"][0] == pytest.approx(0.5)
    store.stop()


def test_version_whose_warmup_fails_is_never_served(own_base):
    import shutil

    from serving.warmup import write_warmup

    store = ModelStore(own_base, poll_seconds=0.1)
    store.poll_once()
    v2 = os.path.join(own_base, "tiny", "2")
    shutil.copytree(os.path.join(own_base, "tiny", "1"), v2)
    write_warmup(v2, [b"not an example"], "tiny")
    store.poll_once()
    st = {s["version"]: s for s in store.status("tiny")}
    assert st[2]["state"] == "END" and "WarmupError" in st[2]["error"]
    with store.acquire("tiny") as (version, _):
        assert version == 1
    with pytest.raises(RequestError) as e:
        with store.acquire("tiny", 2):
            pass
    assert e.value.http_code == 404
    store.stop()


def test_hidden_and_non_integer_directories_are_ignored(own_base):
    os.makedirs(os.path.join(own_base, "tiny", ".tmp-5"))
    os.makedirs(os.path.join(own_base, "tiny", "latest"))
    store = ModelStore(own_base, poll_seconds=0.1)
    store.poll_once()
    assert [s["version"] for s in store.status("tiny")] == [1]
    store.stop()


def test_invalid_poll_seconds():
    with pytest.raises(ValueError, match="poll_seconds"):
        ModelStore("/nonexistent", poll_seconds=0)
