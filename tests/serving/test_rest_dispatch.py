"""``serving.rest.RestHandler.dispatch(method, path, body) -> (status, dict)`` without a socket.

Routes and error shaping as TF Serving 2.19's ``http_rest_api_handler.cc`` has them: every
failure is ``{"error": message}`` with the HTTP code of its canonical status (400 invalid
argument, 404 not found, 429 resource exhausted, 503 unavailable, 500 internal, ...);
anything under ``/v1/`` that does not match a route is ``400 "Malformed request: METHOD
PATH"``, anything else libevent's 404 page. Most tests run a real
``ServingApi`` over the tiny SavedModel (``tiny_base``: model ``tiny`` version 1, signatures
``serving_default`` over ``examples`` and ``predict_raw`` over ``x``; batch limit 4 here);
the status table, internal errors and classify/regress response shapes use a fake API.
"""
import base64
import inspect
import json
import sys

import numpy as np
import pytest
from tensorflow.core.example import example_pb2

from serving.api import ServingApi
from serving.model_store import ModelStore
from serving.rest import RestHandler
from serving.session_model import Signature
from serving.status import CODES, INTERNAL, INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED, UNAVAILABLE, RequestError
from tests.fakes.serving_models import tiny_example


@pytest.fixture(scope="module")
def handler(tiny_base):
    store = ModelStore(tiny_base, poll_seconds=60)
    store.poll_once()  # notes version 1 (START); no polling thread
    store.poll_once()  # its files are unchanged since: loads it synchronously
    yield RestHandler(ServingApi(store, max_batch_size=4))
    store.stop()


def call(handler, method, path, body=b""):
    if not isinstance(body, bytes):
        body = json.dumps(body).encode("utf-8")
    return handler.dispatch(method, path, body)


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode("ascii")}


def error_of(response, code) -> str:
    """Asserts ``response`` is ``(code, {"error": <str>})`` and returns the message."""
    status, body = response
    assert status == code, body
    assert list(body) == ["error"] and isinstance(body["error"], str) and body["error"]
    return body["error"]


class FakeApi:
    """Records calls (with the ``label=`` last when given); ``status`` raises ``fail`` when
    set; classify/regress return canned arrays."""

    def __init__(self, fail=None, status=None):
        self.fail, self._status, self.calls = fail, status or [], []

    def _record(self, *call, **kw):
        self.calls.append(call + ((kw["label"],) if "label" in kw else ()))

    def status(self, name, version=None, **kw):
        self._record("status", name, version, **kw)
        if self.fail is not None:
            raise self.fail
        return self._status

    def metadata(self, name, version, **kw):
        self._record("metadata", name, version, **kw)
        return 3, {}

    def classify(self, name, version, signature, examples, **kw):
        self._record("classify", name, version, signature, examples, **kw)
        return 3, signature, np.array([[0.25, 0.75]], np.float32), np.array([[b"0", b"1"]], dtype=object)

    def regress(self, name, version, signature, examples, **kw):
        self._record("regress", name, version, signature, examples, **kw)
        return 3, signature, np.array([0.25, 0.5], np.float32)

    def predict(self, name, version, signature, inputs, **kw):
        self._record("predict", name, version, signature, **kw)
        feed = inputs(Signature("tensorflow/serving/predict", {"x": None}, {"p": None}))
        return 3, signature, {"p": np.asarray(feed["x"], np.float32) * 2}


# ----------------------------------------------------------------------------- status
def test_status_get_returns_model_version_status(handler):
    assert call(handler, "GET", "/v1/models/tiny") == (200, {"model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]})


def test_status_of_a_pinned_version(handler):
    status, body = call(handler, "GET", "/v1/models/tiny/versions/1")
    assert status == 200 and [s["version"] for s in body["model_version_status"]] == ["1"]


def test_status_of_an_unknown_version_is_404(handler):
    assert error_of(call(handler, "GET", "/v1/models/tiny/versions/3"), 404) == "Could not find version 3 of model tiny"


def test_status_of_an_unknown_model_is_404(handler):
    assert error_of(call(handler, "GET", "/v1/models/nope"), 404) == "Could not find any versions of model nope"


def test_status_of_a_failed_version_reports_unknown_error_code():
    api = FakeApi(status=[{"version": 2, "state": "END", "error": "OSError: no saved_model.pb"}])
    _, body = RestHandler(api).dispatch("GET", "/v1/models/m", b"")
    assert body == {"model_version_status": [{"version": "2", "state": "END", "status": {
        "error_code": "UNKNOWN", "error_message": "OSError: no saved_model.pb"}}]}


def test_the_query_string_is_part_of_the_routed_path_as_in_tf_serving(handler):
    # net_http's uri_path() is the path and the query: the model name matches "tiny?verbose=1".
    assert error_of(call(handler, "GET", "/v1/models/tiny?verbose=1"), 404) == (
        "Could not find any versions of model tiny?verbose=1")
    assert error_of(call(handler, "POST", "/v1/models/tiny:predict?x=1", {"instances": [1.0]}), 400) == (
        "Malformed request: POST /v1/models/tiny:predict?x=1")


# ----------------------------------------------------------------------------- metadata
def test_metadata_get_returns_model_spec_and_signature_defs(handler):
    status, body = call(handler, "GET", "/v1/models/tiny/metadata")
    assert status == 200
    assert body["model_spec"] == {"name": "tiny", "signature_name": "", "version": "1"}
    defs = body["metadata"]["signature_def"]["signature_def"]
    assert set(defs) == {"serving_default", "predict_raw", "__saved_model_init_op"}
    assert defs["predict_raw"]["inputs"]["x"]["dtype"] == "DT_FLOAT"
    # TF Serving's printer: default-valued fields too, int64 as strings, oneof fields last
    assert defs["predict_raw"]["inputs"]["x"] == {"dtype": "DT_FLOAT", "tensor_shape": {
        "dim": [{"size": "-1", "name": ""}], "unknown_rank": False}, "name": "predict_raw_x:0"}
    assert list(defs["predict_raw"]) == ["inputs", "outputs", "method_name", "defaults"]


def test_metadata_of_a_pinned_version_names_it(handler):
    assert call(handler, "GET", "/v1/models/tiny/versions/1/metadata")[1]["model_spec"]["version"] == "1"


def test_metadata_of_an_unknown_version_is_404(handler):
    assert "Specific(tiny, 2)" in error_of(call(handler, "GET", "/v1/models/tiny/versions/2/metadata"), 404)


def test_metadata_response_is_json_serialisable(handler):
    _, body = call(handler, "GET", "/v1/models/tiny/metadata")
    assert json.loads(json.dumps(body)) == body


# ----------------------------------------------------------------------------- predict
def test_predict_row_request_returns_predictions_per_instance(handler):
    status, body = call(handler, "POST", "/v1/models/tiny:predict",
                        {"instances": [b64(tiny_example(0.0)), b64(tiny_example(2.0))]})
    assert status == 200 and list(body) == ["predictions"]
    assert [set(p) for p in body["predictions"]] == [{"click_probability", "conversion_probability"}] * 2
    assert body["predictions"][0]["click_probability"] == pytest.approx(0.5)
    assert body["predictions"][1]["conversion_probability"] == pytest.approx(0.5 / (1 + np.exp(-2.0)), rel=1e-6)


def test_predict_columnar_request_returns_outputs(handler):
    status, body = call(handler, "POST", "/v1/models/tiny:predict",
                        {"signature_name": "predict_raw", "inputs": {"x": [0.0, 1.0]}})
    assert status == 200 and body["outputs"] == pytest.approx([0.5, 1 / (1 + np.exp(-1.0))])


def test_predict_on_a_pinned_version_is_served(handler):
    status, body = call(handler, "POST", "/v1/models/tiny/versions/1:predict",
                        {"signature_name": "predict_raw", "instances": [0.0]})
    assert status == 200 and body == {"predictions": [0.5]}


def test_predict_response_is_json_serialisable(handler):
    _, body = call(handler, "POST", "/v1/models/tiny:predict", {"instances": [b64(tiny_example(1.0))]})
    assert json.loads(json.dumps(body)) == body


def test_predict_passes_name_version_and_signature_to_the_api():
    api = FakeApi()
    status, body = RestHandler(api).dispatch(
        "POST", "/v1/models/m/versions/12:predict", json.dumps({"signature_name": "s", "inputs": [1.0]}).encode())
    assert (status, body) == (200, {"outputs": [2.0]})
    assert api.calls == [("predict", "m", 12, "s")]


def test_predict_on_an_unknown_version_is_404(handler):
    message = error_of(call(handler, "POST", "/v1/models/tiny/versions/7:predict", {"instances": [1.0]}), 404)
    assert message == "Servable not found for request: Specific(tiny, 7)"


def test_predict_on_an_unknown_model_is_404(handler):
    message = error_of(call(handler, "POST", "/v1/models/nope:predict", {"instances": [1.0]}), 404)
    assert message == "Servable not found for request: Latest(nope)"


def test_predict_on_an_unknown_signature_is_400(handler):
    body = {"signature_name": "bogus", "instances": [1.0]}
    assert "\"bogus\" not found" in error_of(call(handler, "POST", "/v1/models/tiny:predict", body), 400)


def test_signature_name_that_is_not_a_string_is_400(handler):
    body = {"signature_name": 3, "instances": [1.0]}
    assert error_of(call(handler, "POST", "/v1/models/tiny:predict", body), 400) == (
        'JSON Value: {\n    "signature_name": 3,\n    "instances": [1.0]\n} not formatted correctly. '
        "'signature_name' key must be a string value.")


def test_predict_with_both_instances_and_inputs_is_400(handler):
    body = {"instances": [1.0], "inputs": [1.0]}
    assert error_of(call(handler, "POST", "/v1/models/tiny:predict", body), 400) == (
        'JSON Value: {\n    "instances": [1.0],\n    "inputs": [1.0]\n} Not formatted correctly expecting only one '
        "of 'inputs' or 'instances' keys to exist ")


@pytest.mark.parametrize("body,expected", [
    ({"instances": []}, "JSON Value: {\n    \"instances\": []\n} No values in 'instances' array"),
    ({"instances": {"x": 1.0}}, 'JSON Value: {\n    "instances": {\n        "x": 1.0\n    }\n} Expecting '
                                "'instances' to be an list/array"),
])
def test_empty_or_non_list_instances_are_400_with_tf_servings_message(handler, body, expected):
    assert error_of(call(handler, "POST", "/v1/models/tiny:predict", body), 400) == expected


@pytest.mark.parametrize("verb", ["classify", "regress"])
def test_empty_examples_are_400_with_tf_servings_message(verb):
    message = error_of(RestHandler(FakeApi()).dispatch("POST", f"/v1/models/m:{verb}", b'{"examples": []}'), 400)
    assert message == "JSON Value: {\n    \"examples\": []\n} 'examples' value is an empty array"


def test_predict_batch_over_the_limit_is_400(handler):
    body = {"signature_name": "predict_raw", "instances": [0.0] * 5}
    message = error_of(call(handler, "POST", "/v1/models/tiny:predict", body), 400)
    assert message == "Task size 5 is larger than maximum input batch size 4"


def test_tensorflow_error_inside_the_graph_is_400(handler):
    body = {"instances": [b64(b"not a serialized example")]}
    assert "Graph execution error" not in error_of(call(handler, "POST", "/v1/models/tiny:predict", body), 400)


def test_non_ascii_b64_payload_is_400_not_500(handler):
    assert "Unable to base64 decode" in error_of(
        call(handler, "POST", "/v1/models/tiny:predict", {"instances": [{"b64": "é"}]}), 400)


# ----------------------------------------------------------------------------- classify / regress
def test_classify_response_pairs_each_label_with_its_score():
    status, body = RestHandler(FakeApi()).dispatch("POST", "/v1/models/m:classify", b'{"examples": [{"x": 1.0}]}')
    assert (status, body) == (200, {"results": [[["0", 0.25], ["1", 0.75]]]})


def test_regress_response_is_one_value_per_example():
    status, body = RestHandler(FakeApi()).dispatch("POST", "/v1/models/m:regress", b'{"examples": [{}, {}]}')
    assert (status, body) == (200, {"results": [0.25, 0.5]})


def test_classify_passes_version_signature_and_serialized_examples_to_the_api():
    api = FakeApi()
    body = {"signature_name": "cls", "context": {"u": "a"}, "examples": [{"x": 1.0}]}
    RestHandler(api).dispatch("POST", "/v1/models/m/versions/3:classify", json.dumps(body).encode())
    (verb, name, version, signature, examples), = api.calls
    assert (verb, name, version, signature) == ("classify", "m", 3, "cls")
    feats = example_pb2.Example.FromString(examples[0]).features.feature
    assert feats["x"].float_list.value == [1.0] and feats["u"].bytes_list.value == [b"a"]


def test_classify_on_a_predict_signature_is_400(handler):
    message = error_of(call(handler, "POST", "/v1/models/tiny:classify", {"examples": [{"x": 1.0}]}), 400)
    assert message.startswith("No classification inputs found in SignatureDef:")


def test_regress_without_examples_is_400(handler):
    message = error_of(call(handler, "POST", "/v1/models/tiny:regress", {"instances": [1.0]}), 400)
    # TF Serving's text, "classify" for both verbs (FillClassifyRegressRequestFromJson)
    assert message == ("JSON Value: {\n    \"instances\": [1.0]\n} When method is classify, key 'examples' is "
                       "expected and was not found")


# ----------------------------------------------------------------------------- routing errors
@pytest.mark.parametrize("method,path", [
    ("POST", "/v1/models/tiny:explain"),  # unknown verb
    ("GET", "/v1/models/tiny:predict"),  # verbs are POST only
    ("POST", "/v1/models/tiny"),  # status is GET only
    ("POST", "/v1/models/tiny/metadata"),  # metadata is GET only
    ("PUT", "/v1/models/tiny"),
    ("DELETE", "/v1/models/tiny"),
    ("HEAD", "/v1/models/tiny"),
    ("GET", "/v1/models/tiny/versions/latest"),  # versions are integers
    ("GET", "/v1/models/tiny/"),
    ("POST", "/V1/MODELS/tiny:PREDICT"),  # the regex matches case-insensitively, the verb is compared as written
    ("GET", "/v1/other"),
])
def test_unrouted_requests_under_v1_are_400_malformed_request(handler, method, path):
    assert error_of(call(handler, method, path), 400) == f"Malformed request: {method} {path}"


@pytest.mark.parametrize("path", ["/v2/models/tiny", "/", "/models/tiny:predict"])
def test_paths_outside_v1_are_libevents_404_page(handler, path):
    reply = handler.respond("GET", path, b"")
    assert (reply.code, reply.content_type) == (404, "text/html") and b"<H1>Not Found</H1>" in reply.body


@pytest.mark.parametrize("method,code", [("TRACE", 501), ("CONNECT", 501), ("FETCH", 400), ("get", 400)])
def test_methods_libevent_refuses_get_its_page(handler, method, code):
    reply = handler.respond(method, "/v1/models/tiny", b"")
    assert (reply.code, reply.content_type) == (code, "text/html")


@pytest.mark.parametrize("path,status", [
    ("/V1/MODELS/tiny:predict", 200), ("/v1/Models/tiny/Versions/1:predict", 200),
    ("/v1/models/tiny/VERSIONS/1/metadata", 200), ("/V1/models/tiny", 200)])
def test_routes_match_case_insensitively(handler, path, status):
    method = "POST" if ":" in path else "GET"
    body = {"signature_name": "predict_raw", "instances": [0.0]} if method == "POST" else b""
    assert call(handler, method, path, body)[0] == status


def test_an_uppercase_metadata_suffix_is_the_status_request_as_in_tf_serving(handler):
    status, body = call(handler, "GET", "/v1/models/tiny/METADATA")
    assert status == 200 and list(body) == ["model_version_status"]


def test_a_missing_model_name_is_400(handler):
    assert error_of(call(handler, "GET", "/v1/models"), 400) == "Missing model name in request."


def test_a_version_beyond_int64_is_400(handler):
    message = error_of(call(handler, "GET", "/v1/models/tiny/versions/99999999999999999999"), 400)
    assert message == "Failed to convert version: 99999999999999999999 to numeric."


def test_model_names_and_labels_are_percent_decoded():
    api = FakeApi(status=[{"version": 1, "state": "AVAILABLE", "error": ""}])
    RestHandler(api).dispatch("GET", "/v1/models/my%20model/labels/can%61ry", b"")
    assert api.calls == [("status", "my model", None, "canary")]


@pytest.mark.parametrize("path,call_", [
    ("/v1/models/m/labels/stable:predict", ("predict", "m", None, "s", "stable")),
    ("/v1/models/m/labels/stable:classify", ("classify", "m", None, "s", "stable")),
    ("/v1/models/m/labels/stable:regress", ("regress", "m", None, "s", "stable")),
])
def test_label_routes_pass_the_label_to_the_api(path, call_):
    api = FakeApi()
    body = {"signature_name": "s", "inputs": [1.0]} if path.endswith("predict") else {"signature_name": "s",
                                                                                        "examples": [{"x": 1.0}]}
    assert RestHandler(api).dispatch("POST", path, json.dumps(body).encode())[0] == 200
    assert api.calls[0][:4] + (api.calls[0][-1],) == call_


def test_label_routes_for_status_and_metadata_pass_the_label():
    api = FakeApi(status=[{"version": 3, "state": "AVAILABLE", "error": ""}])
    handler = RestHandler(api)
    assert handler.dispatch("GET", "/v1/models/m/labels/canary", b"")[0] == 200
    assert handler.dispatch("GET", "/v1/models/m/labels/canary/metadata", b"")[1]["model_spec"] == {
        "name": "m", "signature_name": "", "version": "3"}
    assert api.calls == [("status", "m", None, "canary"), ("metadata", "m", None, "canary")]


@pytest.mark.parametrize("origin,code", [("https://app.example", 200), ("http://x", 200), ("app.example", 400),
                                         (None, 400)])
def test_a_cors_preflight_is_answered_with_an_empty_body(handler, origin, code):
    headers = {"origin": [origin]} if origin else {}
    reply = handler.respond("OPTIONS", "/v1/models/tiny:predict", b"", headers)
    assert (reply.code, reply.body, reply.content_type) == (code, b"", None)


@pytest.mark.parametrize("body,expected", [
    (b"", "JSON Parse error: The document is empty"),
    (b"[1.0]", "JSON Value: [1.0] Is not object"),
    (b'"instances"', 'JSON Value: "instances" Is not object'),
    (b"null", "JSON Value: null Is not object"),
])
def test_a_body_that_is_not_a_json_object_is_400_with_tf_servings_message(handler, body, expected):
    assert error_of(call(handler, "POST", "/v1/models/tiny:predict", body), 400) == expected


@pytest.mark.parametrize("body", [b"{not json", b"\xff\xfe", b'{"instances": [1.0]'])
def test_a_body_that_is_not_json_is_400_json_parse_error(handler, body):
    assert error_of(call(handler, "POST", "/v1/models/tiny:predict", body), 400).startswith("JSON Parse error: ")


def test_deeply_nested_instances_are_400(handler):
    # decode_value used to recurse once per level, so nesting json.loads accepts overflowed it (a 500).
    depth = sys.getrecursionlimit() - len(inspect.stack(0)) - 30  # json.loads can parse it
    body = b'{"signature_name": "predict_raw", "instances": ' + b"[" * depth + b"1" + b"]" * depth + b"}"
    assert error_of(call(handler, "POST", "/v1/models/tiny:predict", body), 400) == (
        "input 'x': nested more than 32 levels deep")


# ----------------------------------------------------------------------------- error shaping
@pytest.mark.parametrize("status,http", [
    (INVALID_ARGUMENT, 400), (NOT_FOUND, 404), (RESOURCE_EXHAUSTED, 429), (UNAVAILABLE, 503), (INTERNAL, 500)])
def test_request_errors_get_their_http_code_and_error_body(status, http):
    assert RestHandler(FakeApi(fail=RequestError(status, "why"))).dispatch("GET", "/v1/models/m", b"") == (
        http, {"error": "why"})


def test_http_codes_are_tf_servings_for_the_statuses_rest_meets():
    # http_server.cc ToHTTPStatusCode
    assert {s: CODES[s][0] for s in (INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED, UNAVAILABLE, INTERNAL,
                                      "FAILED_PRECONDITION", "UNIMPLEMENTED", "DEADLINE_EXCEEDED")} == {
        INVALID_ARGUMENT: 400, NOT_FOUND: 404, RESOURCE_EXHAUSTED: 429, UNAVAILABLE: 503, INTERNAL: 500,
        "FAILED_PRECONDITION": 400, "UNIMPLEMENTED": 501, "DEADLINE_EXCEEDED": 504}


def test_unexpected_exception_is_500_with_type_and_message():
    response = RestHandler(FakeApi(fail=RuntimeError("disk gone"))).dispatch("GET", "/v1/models/m", b"")
    assert response == (500, {"error": "RuntimeError: disk gone"})


def test_handler_keeps_answering_after_an_internal_error():
    api = FakeApi(fail=RuntimeError("once"))
    handler = RestHandler(api)
    assert handler.dispatch("GET", "/v1/models/m", b"")[0] == 500
    api.fail = None
    assert handler.dispatch("GET", "/v1/models/m", b"") == (200, {"model_version_status": []})


def test_error_bodies_are_json_serialisable(handler):
    _, body = call(handler, "POST", "/v1/models/tiny:predict", b"{bad")
    assert json.loads(json.dumps(body)) == body


# ----------------------------------------------------------------------------- input values (nested, null, non-finite)
def _raw(**body):
    return {"signature_name": "predict_raw", **body}


@pytest.mark.parametrize("body", [
    _raw(instances=[[1.0], [1.0, 2.0]]),  # ragged rows
    _raw(instances=[{"x": [[1.0], [2.0, 3.0]]}]),  # ragged inside a named instance
    _raw(inputs={"x": [[1.0], [2.0, 3.0]]}),  # ragged columns
    _raw(inputs={"x": [[1.0], 2.0]}),  # a list next to a value
    {"instances": [[b64(b"a")], [b64(b"a"), b64(b"b")]]},  # ragged strings
], ids=["rows", "named", "columns", "list-and-value", "strings"])
def test_ragged_nested_list_values_are_400_not_500(handler, body):
    # Before: np.ndim() in ServingApi raised ValueError on these: a 500.
    message = error_of(call(handler, "POST", "/v1/models/tiny:predict", body), 400)
    assert "ragged nested lists" in message and "same shape" in message


def test_rectangular_nesting_deeper_than_the_signature_is_a_400_rank_error(handler):
    assert "expected rank 1" in error_of(call(handler, "POST", "/v1/models/tiny:predict",
                                              _raw(instances=[[1.0], [2.0]])), 400)


@pytest.mark.parametrize("body,where", [
    (_raw(instances=[None]), "[0]"),
    (_raw(inputs={"x": [1.0, None]}), "[1]"),
    (_raw(instances=[{"x": 1.0}, {"x": None}]), "[1]"),
    ({"instances": [None]}, "[0]"),  # a null serialized example
])
def test_a_null_value_is_400_naming_the_missing_value(handler, body, where):
    # Before: "cannot convert to float32: expected numbers, got strings".
    message = error_of(call(handler, "POST", "/v1/models/tiny:predict", body), 400)
    assert f"null (missing value) at {where}" in message and "strings" not in message


@pytest.mark.parametrize("literal,shown", [
    (b"NaN", "nan"), (b"Infinity", "inf"), (b"-Infinity", "-inf"), (b"1e39", "1e+39"), (b"-3.5e38", "-3.5e+38"),
    (b"1" + b"0" * 40, "1e+40"),
])
def test_a_non_finite_numeric_input_is_400_not_nan_predictions(handler, literal, shown):
    # Before: 200 with {"predictions": [NaN]} (or 1.0 for an overflowing 1e39).
    body = b'{"signature_name": "predict_raw", "instances": [0.5, ' + literal + b"]}"
    message = error_of(call(handler, "POST", "/v1/models/tiny:predict", body), 400)
    assert message.startswith(f"input 'x': {shown} at [1] is not a finite float32 value")


def test_the_largest_finite_float32_is_served(handler):
    status, body = call(handler, "POST", "/v1/models/tiny:predict", _raw(instances=[3.4e38, -3.4e38]))
    assert status == 200 and body["predictions"] == [1.0, 0.0]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 1e39])
def test_a_tf_example_with_a_non_finite_float_feature_is_400(handler, value):
    example = example_pb2.Example()
    example.features.feature["x"].float_list.value.append(value)  # 1e39 is stored as inf
    body = {"instances": [b64(tiny_example(0.0)), b64(example.SerializeToString())]}
    message = error_of(call(handler, "POST", "/v1/models/tiny:predict", body), 400)
    assert message.startswith("input 'examples': example 1: feature 'x' has the value")


def test_failed_version_status_has_no_absolute_paths(own_base):
    import os

    bad = os.path.join(own_base, "tiny", "2")
    os.makedirs(bad)
    with open(os.path.join(bad, "saved_model.pb"), "wb") as f:
        f.write(b"junk")
    store = ModelStore(own_base, poll_seconds=60)
    store.poll_once()
    store.poll_once()
    try:
        _, body = RestHandler(ServingApi(store)).dispatch("GET", "/v1/models/tiny/versions/2", b"")
        status = body["model_version_status"][0]
        assert status["state"] == "END" and status["status"]["error_code"] == "UNKNOWN"
        message = status["status"]["error_message"]
        assert "tiny/2/saved_model.pb" in message and own_base not in message and "/tmp/" not in message
    finally:
        store.stop()


def test_an_internal_error_message_has_no_absolute_paths():
    api = FakeApi(fail=OSError("cannot open '/srv/models/secret/tiny/2/variables.index'"))
    assert RestHandler(api).dispatch("GET", "/v1/models/m", b"") == (
        500, {"error": "OSError: cannot open '.../variables.index'"})
