"""Version polling, warmup-before-serving, latest-version swap under load, failed loads."""
import math
import os
import shutil
import threading
import time

import pytest

from serving.client import GrpcClient, RestClient
from serving.model_store import ModelStore
from serving.server import ModelServer
from serving.session_model import SessionModel
from serving.status import RequestError
from tests.fakes.serving_models import publish_tiny
from tests.fakes.serving_models import tiny_example


def poll_until_settled(store):
    """Two polls: the first notes a new version (START), the second loads it (files unchanged)."""
    store.poll_once()
    store.poll_once()


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
    poll_until_settled(store)
    bad = os.path.join(own_base, "tiny", "2")
    os.makedirs(bad)
    with open(os.path.join(bad, "saved_model.pb"), "wb") as f:
        f.write(b"not a saved model")
    poll_until_settled(store)
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
    poll_until_settled(store)
    v2 = os.path.join(own_base, "tiny", "2")
    shutil.copytree(os.path.join(own_base, "tiny", "1"), v2)
    write_warmup(v2, [b"not an example"], "tiny")
    poll_until_settled(store)
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
    poll_until_settled(store)
    assert [s["version"] for s in store.status("tiny")] == [1]
    store.stop()


def test_invalid_poll_seconds():
    with pytest.raises(ValueError, match="poll_seconds"):
        ModelStore("/nonexistent", poll_seconds=0)


# ----------------------------------------------------------------------------- versions that arrive slowly
def slow_copy(src: str, dst: str, step) -> None:
    """Copies a version directory the way rsync / ``gsutil cp`` / a slow ``cp -r`` do: one file
    at a time (``saved_model.pb`` first, so it is visible early), each file in two writes;
    ``step()`` runs after every directory made and every write."""
    os.makedirs(dst)
    step()
    files = sorted((os.path.relpath(os.path.join(r, f), src) for r, _, fs in os.walk(src) for f in fs),
                   key=lambda p: (p != "saved_model.pb", p))
    for rel in files:
        target = os.path.join(dst, rel)
        if not os.path.isdir(os.path.dirname(target)):
            os.makedirs(os.path.dirname(target))
            step()
        with open(os.path.join(src, rel), "rb") as f:
            data = f.read()
        with open(target, "wb") as f:
            f.write(data[: len(data) // 2])
            f.flush()
            step()
            f.write(data[len(data) // 2:])
        step()


def served(store) -> tuple[int, float]:
    """(served version, its click probability at x = 1)."""
    with store.acquire("tiny") as (version, model):
        return version, float(model.run("", {"examples": [tiny_example(1.0)]})["click_probability"][0])


def state_of(store, version):
    st = {s["version"]: s for s in store.status("tiny")}
    return st[version]["state"] if version in st else None


def staged(tmp_path, version: int, scale: float) -> str:
    """A complete SavedModel outside the served base, to copy in."""
    return publish_tiny(str(tmp_path / f"staging{version}"), version, scale)


def test_a_version_copied_file_by_file_is_loaded_once_complete_and_never_fails(own_base, tmp_path):
    # Before: loaded as soon as saved_model.pb appeared, failed, and stayed END after the copy completed.
    store = ModelStore(own_base, poll_seconds=60)
    poll_until_settled(store)
    seen = []

    def poll():
        store.poll_once()
        seen.append(state_of(store, 2))
        assert served(store)[0] == 1  # the old version serves throughout the copy

    slow_copy(staged(tmp_path, 2, 3.0), os.path.join(own_base, "tiny", "2"), poll)
    assert "END" not in seen and set(seen) <= {None, "START"}
    poll_until_settled(store)
    assert served(store) == (2, pytest.approx(1 / (1 + math.exp(-3.0)), rel=1e-5))
    assert [s["state"] for s in store.status("tiny")] == ["AVAILABLE", "END"]
    store.stop()


def test_a_copy_that_stalls_mid_way_fails_then_is_retried_when_its_files_change(own_base, tmp_path):
    store = ModelStore(own_base, poll_seconds=60)
    poll_until_settled(store)
    steps = []

    def stall_once():  # at the first step after saved_model.pb is complete, nothing changes for two polls
        steps.append(1)
        if os.path.exists(os.path.join(own_base, "tiny", "2", "saved_model.pb")) and len(steps) == 3:
            poll_until_settled(store)
            assert state_of(store, 2) == "END" and "tiny/2" in store.status("tiny", 2)[0]["error"]
        store.poll_once()

    slow_copy(staged(tmp_path, 2, 3.0), os.path.join(own_base, "tiny", "2"), stall_once)
    poll_until_settled(store)
    assert served(store)[0] == 2 and store.status("tiny", 2)[0] == {"version": 2, "state": "AVAILABLE", "error": ""}
    store.stop()


def test_a_corrupt_version_replaced_by_a_good_one_under_the_same_number_is_loaded(own_base, tmp_path):
    # Before: the corrupt version stayed END forever, whatever replaced it.
    calls = []

    def loader(path):
        calls.append(path)
        return SessionModel(path)

    store = ModelStore(own_base, poll_seconds=60, loader=loader)
    poll_until_settled(store)
    v2 = os.path.join(own_base, "tiny", "2")
    os.makedirs(v2)
    with open(os.path.join(v2, "saved_model.pb"), "wb") as f:
        f.write(b"corrupt")
    poll_until_settled(store)
    assert state_of(store, 2) == "END" and len(calls) == 2
    poll_until_settled(store)
    assert len(calls) == 2  # unchanged: not retried
    shutil.rmtree(v2)
    os.rename(staged(tmp_path, 2, 3.0), v2)  # an atomic replacement
    poll_until_settled(store)
    assert served(store)[0] == 2 and state_of(store, 2) == "AVAILABLE" and len(calls) == 3
    store.stop()


def test_a_version_whose_files_change_while_it_loads_waits_and_loads_again(own_base, tmp_path):
    v2 = os.path.join(own_base, "tiny", "2")
    calls = []

    def loader(path):
        calls.append(path)
        model = SessionModel(path)
        if len(calls) == 2:  # the first load of version 2: a late file arrives meanwhile
            with open(os.path.join(v2, "late.txt"), "w") as f:
                f.write("x")
        return model

    store = ModelStore(own_base, poll_seconds=60, loader=loader)
    poll_until_settled(store)
    shutil.copytree(os.path.join(own_base, "tiny", "1"), v2)
    poll_until_settled(store)
    assert state_of(store, 2) == "START" and served(store)[0] == 1
    poll_until_settled(store)
    assert state_of(store, 2) == "AVAILABLE" and served(store)[0] == 2 and len(calls) == 3
    store.stop()


def test_a_new_version_is_reported_start_until_it_loads_and_dropped_if_superseded(own_base, tmp_path):
    from tensorflow_serving.apis import get_model_status_pb2

    from serving.api import ServingApi
    from serving.grpc_service import ModelServicer

    store = ModelStore(own_base, poll_seconds=60)
    store.poll_once()
    assert store.status("tiny") == [{"version": 1, "state": "START", "error": ""}]
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "tiny"
    response = ModelServicer(ServingApi(store)).GetModelStatus(request, None)
    assert response.model_version_status[0].state == get_model_status_pb2.ModelVersionStatus.START
    shutil.copytree(os.path.join(own_base, "tiny", "1"), os.path.join(own_base, "tiny", "2"))
    store.poll_once()
    assert [s["version"] for s in store.status("tiny")] == [2]
    store.poll_once()
    assert served(store)[0] == 2
    store.stop()


def test_failed_version_status_names_files_relative_to_the_base_directory(own_base):
    store = ModelStore(own_base, poll_seconds=60)
    bad = os.path.join(own_base, "tiny", "2")
    os.makedirs(bad)
    with open(os.path.join(bad, "saved_model.pb"), "wb") as f:
        f.write(b"not a saved model")
    poll_until_settled(store)
    error = store.status("tiny", 2)[0]["error"]
    assert "tiny/2/saved_model.pb" in error
    assert own_base not in error and os.path.realpath(own_base) not in error and "/tmp" not in error
    store.stop()


def test_a_slow_copy_under_the_polling_thread_is_served_once_complete(own_base, tmp_path):
    server = ModelServer(own_base, rest_port=0, grpc_port=None, poll_seconds=0.05).start()
    try:
        assert server.store.wait_for_version("tiny", 1, 30)
        rest = RestClient(f"http://127.0.0.1:{server.rest_port}", "tiny")
        errors, stop = [], threading.Event()

        def hammer():
            while not stop.is_set():
                try:
                    rest.predict_examples([tiny_example(1.0)])
                except Exception as e:  # noqa: BLE001  (collect every failure)
                    errors.append(repr(e))

        t = threading.Thread(target=hammer)
        t.start()
        slow_copy(staged(tmp_path, 2, 3.0), os.path.join(own_base, "tiny", "2"), lambda: time.sleep(0.04))
        assert server.store.wait_for_version("tiny", 2, 30)
        stop.set()
        t.join()
        assert errors == []
        p = rest.predict_examples([tiny_example(1.0)])["predictions"][0]["click_probability"]
        assert p == pytest.approx(1 / (1 + math.exp(-3.0)), rel=1e-5)
    finally:
        server.stop()


# ----------------------------------------------------------------------------- TF Serving's version policy
def test_deleting_the_served_version_serves_the_previous_one_again(own_base, tmp_path):
    # Latest-version policy over what is on disk, as TF Serving's file-system source: the
    # highest remaining version is aspired again, loaded, and only then is the deleted one unloaded.
    store = ModelStore(own_base, poll_seconds=60)
    poll_until_settled(store)
    os.rename(staged(tmp_path, 2, 3.0), os.path.join(own_base, "tiny", "2"))
    poll_until_settled(store)
    assert served(store)[0] == 2
    shutil.rmtree(os.path.join(own_base, "tiny", "2"))
    store.poll_once()
    assert served(store)[0] == 2 and state_of(store, 1) == "START"  # still serving while 1 comes back
    store.poll_once()
    assert served(store) == (1, pytest.approx(1 / (1 + math.exp(-1.0)), rel=1e-5))
    deadline = time.monotonic() + 10
    while state_of(store, 2) != "END" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert state_of(store, 2) == "END"
    store.stop()


def test_a_version_being_unloaded_takes_no_new_requests_but_finishes_its_own(own_base, tmp_path):
    store = ModelStore(own_base, poll_seconds=60)
    poll_until_settled(store)
    with store.acquire("tiny", 1) as (_, model):  # an in-flight request on version 1
        os.rename(staged(tmp_path, 2, 3.0), os.path.join(own_base, "tiny", "2"))
        poll_until_settled(store)
        assert state_of(store, 1) == "UNLOADING"
        with pytest.raises(RequestError) as e:
            with store.acquire("tiny", 1):
                pass
        assert e.value.message == "Servable not found for request: Specific(tiny, 1)"
        assert model.run("", {"examples": [tiny_example(0.0)]})["click_probability"][0] == pytest.approx(0.5)
    deadline = time.monotonic() + 10
    while state_of(store, 1) != "END" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert state_of(store, 1) == "END"
    store.stop()
