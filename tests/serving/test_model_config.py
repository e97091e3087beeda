"""models.config (TF Serving's ``--model_config_file``): parsing, version policies, version
labels, config reloads, and the serve stage's one-line errors.

Expected messages are TF Serving 2.19's (``server_core.cc``: ValidateModelConfigList,
GetPlatform, UpdateModelVersionLabelMap, GetModelVersionForLabel).
"""
import os
import subprocess
import sys
import time

import grpc
import pytest
from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc
from tensorflow_serving.config import model_server_config_pb2

from core.errors import ConfigError
from serving.model_config import ALL, LATEST, SPECIFIC, ModelConfig, ModelConfigError, parse_model_config
from serving.model_store import ModelStore
from serving.status import FAILED_PRECONDITION, RequestError
from tests.conftest import REPO


def config_text(*models: str) -> str:
    return "model_config_list {\n" + "\n".join(f"config {{ {m} }}" for m in models) + "\n}\n"


def multi(base: str, extra: str = "", name: str = "multi") -> str:
    return f'name: "{name}" base_path: "{base}/{name}" model_platform: "tensorflow" {extra}'


SPECIFIC_1_2 = "model_version_policy { specific { versions: 1 versions: 2 } }"
LABELS = 'version_labels { key: "stable" value: 1 } version_labels { key: "canary" value: 2 }'


def settle(store, *versions, name="multi", timeout=30.0):
    """Polls ``store`` until each of ``versions`` is AVAILABLE."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        store.poll_once()
        states = {s["version"]: s["state"] for s in store.status(name)}
        if all(states.get(v) == "AVAILABLE" for v in versions):
            return
    raise AssertionError(f"versions {versions} of {name} did not load: {store.status(name)}")


def served(store, **kw) -> int:
    with store.acquire("multi", **kw) as (version, _):
        return version


# ----------------------------------------------------------------------------- parsing
def test_a_config_parses_to_models_with_policies_and_labels():
    models = parse_model_config(config_text(
        multi("/m", f"{SPECIFIC_1_2} {LABELS}"),
        'name: "a" base_path: "/a/" model_platform: "tensorflow" model_version_policy { latest { num_versions: 3 } }',
        'name: "b" base_path: "/b" model_platform: "tensorflow" model_version_policy { all {} }',
        'name: "c" base_path: "/c" model_platform: "tensorflow"'))
    assert models == [
        ModelConfig("multi", "/m/multi", SPECIFIC, 1, (1, 2), {"stable": 1, "canary": 2}),
        ModelConfig("a", "/a", LATEST, 3), ModelConfig("b", "/b", ALL), ModelConfig("c", "/c", LATEST, 1)]


def test_an_empty_config_is_no_config_and_an_empty_list_is_no_models():
    assert parse_model_config("") is None  # TF Serving: "Taking no action for empty config."
    assert parse_model_config("model_config_list {}") == []


def test_an_empty_config_file_serves_nothing_at_startup(tmp_path):
    from serving.server import ModelServer

    path = tmp_path / "models.config"
    path.write_text("")
    server = ModelServer(str(tmp_path / "unused"), rest_port=0, grpc_port=None, model_config_file=str(path))
    assert server.store.model_names() == []


def test_a_reload_with_an_empty_config_keeps_the_models_and_an_empty_list_unloads_them(multi_base):
    store = ModelStore(None, poll_seconds=60, models=parse_model_config(config_text(multi(multi_base))))
    settle(store, 2)
    store.reload_config(parse_model_config(""))  # e.g. the file read while an editor rewrites it
    store.poll_once()
    assert store.model_names() == ["multi"] and served(store) == 2
    store.reload_config(parse_model_config("model_config_list {}"))
    store.poll_once()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and store.status("multi", 2)[0]["state"] != "END":
        time.sleep(0.05)
    assert store.model_names() == [] and store.status("multi", 2)[0]["state"] == "END"
    store.stop()


@pytest.mark.parametrize("models,message", [
    ((multi("/m"), multi("/m")), "Illegal to list model multi multiple times in config list"),
    (('name: "m" base_path: "rel/m" model_platform: "tensorflow"',),
     "Expected model m to have an absolute path or URI; got base_path()=rel/m"),
    (('name: "m" base_path: "/m"',),
     "Illegal setting neither ModelServerConfig::model_type (deprecated) nor ModelServerConfig::model_platform, "
     "model name is m"),
    (('name: "m" base_path: "/m" model_platform: "tflite"',), "Model m requests unsupported platform tflite"),
])
def test_a_config_tf_serving_refuses_is_a_config_error(models, message):
    with pytest.raises(ModelConfigError) as e:
        parse_model_config(config_text(*models), "models.config")
    assert str(e.value) == f"models.config: {message}"
    assert isinstance(e.value, ConfigError)


def test_a_config_that_is_not_a_text_proto_names_the_file_and_the_position():
    with pytest.raises(ModelConfigError, match=r"^m\.config: not a ModelServerConfig text proto: 1:"):
        parse_model_config("model_config_list { config { nme: 'x' } }", "m.config")


@pytest.mark.parametrize("policy,on_disk,aspired", [
    (ModelConfig("m", "/m"), [3, 1, 2], [3]),
    (ModelConfig("m", "/m", LATEST, 2), [1, 2, 3], [2, 3]),
    (ModelConfig("m", "/m", LATEST, 5), [1, 2], [1, 2]),
    (ModelConfig("m", "/m", ALL), [2, 1], [1, 2]),
    (ModelConfig("m", "/m", SPECIFIC, versions=(1, 4)), [1, 2, 3], [1]),
    (ModelConfig("m", "/m", SPECIFIC), [1, 2], []),
    (ModelConfig("m", "/m"), [], []),
])
def test_version_policies_choose_the_versions_on_disk_as_tf_serving(policy, on_disk, aspired):
    assert policy.aspired(on_disk) == aspired


# ----------------------------------------------------------------------------- policies in the store
def test_a_specific_policy_serves_both_versions_and_latest_is_the_highest(multi_base):
    store = ModelStore(None, poll_seconds=60, models=parse_model_config(config_text(multi(multi_base, SPECIFIC_1_2))))
    settle(store, 1, 2)
    assert [(s["version"], s["state"]) for s in store.status("multi")] == [(2, "AVAILABLE"), (1, "AVAILABLE")]
    assert (served(store), served(store, version=1)) == (2, 1)
    store.stop()


def test_a_specific_policy_pins_an_older_version(multi_base):
    models = parse_model_config(config_text(multi(multi_base, "model_version_policy { specific { versions: 1 } }")))
    store = ModelStore(None, poll_seconds=60, models=models)
    settle(store, 1)
    assert served(store) == 1 and [s["version"] for s in store.status("multi")] == [1]
    store.stop()


def test_the_default_policy_serves_only_the_latest_version(multi_base):
    store = ModelStore(None, poll_seconds=60, models=parse_model_config(config_text(multi(multi_base))))
    settle(store, 2)
    assert [s["version"] for s in store.status("multi")] == [2]
    with pytest.raises(RequestError, match=r"^Servable not found for request: Specific\(multi, 1\)$"):
        served(store, version=1)
    store.stop()


def test_models_not_in_the_config_are_not_served(multi_base):
    store = ModelStore(None, poll_seconds=60, models=parse_model_config(config_text(multi(multi_base))))
    settle(store, 2)
    assert store.model_names() == ["multi"]
    with pytest.raises(RequestError, match=r"Latest\(separate\)"):
        with store.acquire("separate"):
            pass
    store.stop()


def test_a_missing_base_path_serves_nothing_and_keeps_polling(tmp_path):
    store = ModelStore(None, poll_seconds=60, models=parse_model_config(config_text(multi(str(tmp_path)))))
    store.poll_once()
    with pytest.raises(RequestError, match="Could not find any versions of model multi"):
        store.status("multi")
    store.stop()


# ----------------------------------------------------------------------------- version labels
def test_labels_on_versions_not_loaded_are_refused_at_startup_as_tf_serving(multi_base):
    with pytest.raises(ModelConfigError) as e:
        ModelStore(None, models=parse_model_config(config_text(multi(multi_base, f"{SPECIFIC_1_2} {LABELS}"))))
    # labels are checked in name order: canary (-> 2) first
    assert str(e.value) == ("Request to assign label to version 2 of model multi, which is not currently available "
                            "for inference")
    assert e.value.status == FAILED_PRECONDITION


def test_labels_resolve_once_assigned_by_a_reload_after_the_versions_load(multi_base):
    store = ModelStore(None, poll_seconds=60, models=parse_model_config(config_text(multi(multi_base, SPECIFIC_1_2))))
    settle(store, 1, 2)
    store.reload_config(parse_model_config(config_text(multi(multi_base, f"{SPECIFIC_1_2} {LABELS}"))))
    assert (served(store, label="stable"), served(store, label="canary")) == (1, 2)
    assert store.labels("multi") == {"stable": 1, "canary": 2}
    store.stop()


def test_a_refused_reload_changes_nothing(multi_base):
    store = ModelStore(None, poll_seconds=60, models=parse_model_config(config_text(multi(multi_base, SPECIFIC_1_2))))
    settle(store, 1, 2)
    stable = 'version_labels { key: "stable" value: 1 }'
    store.reload_config(parse_model_config(config_text(multi(multi_base, f"{SPECIFIC_1_2} {stable}"))))
    refused = 'model_version_policy { all {} } version_labels { key: "stable" value: 7 }'
    with pytest.raises(ModelConfigError, match="label to version 7 of model multi"):
        store.reload_config(parse_model_config(config_text(multi(multi_base, refused))))
    assert served(store, label="stable") == 1 and store._configs["multi"].policy == SPECIFIC
    store.stop()


def test_allowing_labels_for_unavailable_models_assigns_new_labels_before_the_load(multi_base):
    models = parse_model_config(config_text(multi(multi_base, f"{SPECIFIC_1_2} {LABELS}")))
    store = ModelStore(None, poll_seconds=60, models=models, allow_version_labels_for_unavailable_models=True)
    with pytest.raises(RequestError, match=r"^Servable not found for request: Specific\(multi, 2\)$"):
        served(store, label="canary")  # assigned, not loaded yet
    settle(store, 1, 2)
    assert served(store, label="canary") == 2
    # moving an assigned label onto a version that is not loaded is refused even with the flag
    with pytest.raises(ModelConfigError, match="label to version 3 of model multi"):
        store.reload_config(parse_model_config(config_text(multi(multi_base, 'version_labels { key: "canary" '
                                                                              'value: 3 }'))))
    store.stop()


def test_an_unknown_label_is_invalid_argument(multi_base):
    store = ModelStore(None, poll_seconds=60, models=parse_model_config(config_text(multi(multi_base))))
    settle(store, 2)
    with pytest.raises(RequestError) as e:
        served(store, label="stable")
    assert (e.value.http_code, e.value.message) == (400, "Unrecognized servable version label: stable")
    store.stop()


# ----------------------------------------------------------------------------- reloads
def test_a_reload_without_a_model_unloads_it_and_a_narrower_policy_unloads_a_version(multi_base):
    store = ModelStore(None, poll_seconds=60, models=parse_model_config(config_text(
        multi(multi_base, SPECIFIC_1_2), multi(multi_base, name="separate"))))
    settle(store, 1, 2)
    settle(store, 1, name="separate")
    store.reload_config(parse_model_config(config_text(multi(multi_base, "model_version_policy { specific { "
                                                                         "versions: 2 } }"))))
    store.poll_once()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (store.status("multi", 1)[0]["state"] != "END"
                                           or store.status("separate")[0]["state"] != "END"):
        time.sleep(0.05)
    assert store.status("multi", 1)[0]["state"] == "END" and store.status("separate")[0]["state"] == "END"
    assert served(store) == 2
    with pytest.raises(RequestError, match=r"Latest\(separate\)"):
        with store.acquire("separate"):
            pass
    store.stop()


def test_the_server_rereads_the_config_file_and_applies_new_labels(multi_base, tmp_path):
    from serving.server import ModelServer

    path = tmp_path / "models.config"
    path.write_text(config_text(multi(multi_base, SPECIFIC_1_2)))
    server = ModelServer(None, rest_port=None, grpc_port=0, poll_seconds=0.1, model_config_file=str(path),
                         model_config_file_poll_wait_seconds=0.1).start()
    try:
        assert server.store.wait_for_version("multi", 1, 60) and server.store.wait_for_version("multi", 2, 60)
        path.write_text(config_text(multi(multi_base, f"{SPECIFIC_1_2} {LABELS}")))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not server.store.labels("multi"):
            time.sleep(0.05)
        assert served(server.store, label="stable") == 1
        path.write_text("not a config")  # a bad file: logged, the config in force stays
        time.sleep(0.4)
        assert served(server.store, label="canary") == 2
    finally:
        server.stop()


def test_handle_reload_config_request_assigns_labels_and_reports_refusals_in_its_status(multi_base):
    from serving.server import ModelServer

    server = ModelServer(multi_base, rest_port=None, grpc_port=0, poll_seconds=0.1).start()
    try:
        assert server.store.wait_for_version("multi", 2, 60)
        stub = model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}"))
        config = model_server_config_pb2.ModelServerConfig()
        c = config.model_config_list.config.add(name="multi", base_path=f"{multi_base}/multi",
                                                model_platform="tensorflow")
        c.version_labels["canary"] = 2
        response = stub.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(config=config), timeout=30)
        assert (response.status.error_code, response.status.error_message) == (0, "")
        assert served(server.store, label="canary") == 2 and server.store.model_names() == ["multi"]
        c.version_labels["stable"] = 1  # version 1 is not loaded (latest policy)
        response = stub.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(config=config), timeout=30)
        assert response.status.error_code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
        assert response.status.error_message == ("Request to assign label to version 1 of model multi, which is not "
                                                 "currently available for inference")
        assert server.store.labels("multi") == {"canary": 2}
    finally:
        server.stop()


def test_a_model_server_over_a_config_with_labels_on_unloaded_versions_is_a_config_error(multi_base, tmp_path):
    from serving.server import ModelServer

    path = tmp_path / "models.config"
    path.write_text(config_text(multi(multi_base, f"{SPECIFIC_1_2} {LABELS}")))
    with pytest.raises(ConfigError, match="Request to assign label to version 2 of model multi"):
        ModelServer(None, grpc_port=0, rest_port=None, model_config_file=str(path))


# ----------------------------------------------------------------------------- the serve stage
@pytest.mark.parametrize("text,needle", [
    ("model_config_list { oops }", "not a ModelServerConfig text proto"),
    (None, "cannot read"),
], ids=["not-a-text-proto", "missing-file"])
def test_a_bad_config_file_is_a_config_error_naming_the_file(tmp_path, text, needle):
    from serving.server import ModelServer

    path = tmp_path / "models.config"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError) as e:
        ModelServer(None, grpc_port=0, rest_port=None, model_config_file=str(path))
    assert needle in str(e.value) and str(path) in str(e.value)


def test_the_serve_stage_reports_a_bad_config_file_in_one_error_line(tmp_path):
    path = tmp_path / "models.config"
    path.write_text("model_config_list { config { name: 'x' base_path: 'relative' model_platform: 'tensorflow' } }")
    proc = subprocess.run([sys.executable, "-m", "pipeline", "serve", "--model_config_file", str(path),
                           "--grpc-port", "0"], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": REPO})
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert lines[-1] == (f"error: --model_config_file {path}: Expected model x to have an absolute path or URI; got "
                         "base_path()=relative"), proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_logging_config_is_accepted_with_a_warning_that_requests_are_not_logged(caplog):
    text = config_text(multi("/models", 'logging_config { sampling_config { sampling_rate: 0.1 } }'))
    with caplog.at_level("WARNING", logger="serving.model_config"):
        (model,) = parse_model_config(text)
    assert model.name == "multi"
    assert any("logging_config" in r.getMessage() and "not logged" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level("WARNING", logger="serving.model_config"):
        parse_model_config(config_text(multi("/models")))
    assert not [r for r in caplog.records if "logging_config" in r.getMessage()]
