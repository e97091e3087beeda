"""Conformance of the REST API with TF Serving's RESTful API documentation (2.19, ``api_rest.md``).

One test per documented behaviour, over plain HTTP (``http.client``) against a running
``ModelServer`` on an ephemeral port, asserting the status code and the JSON shape. The models
are the documentation's: ``saved_model_half_plus_three`` version 123 (a TF1 SavedModel:
``serving_default`` y = 0.5 x + 3, ``tensorflow/serving/regress`` and
``tensorflow/serving/classify`` over tf.Examples with a float ``x``), served through a
models.config that labels version 123 ``stable``, and ``toy`` (the documentation's request
examples: ``serving_default`` takes ``tag`` / ``signal`` / ``sensor`` and answers ``tag_bytes``
and ``total``; ``pairs`` takes ``[1, 2]`` tensors, ``strings`` strings, ``ratio`` two floats).
"""
import base64
import http.client
import json
import os

import pytest

HALF = "saved_model_half_plus_three"


def _half_plus_three(path: str) -> None:
    import tensorflow as tf

    from core.feature_specs import _fixed

    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        a, b = v1.Variable(0.5, name="a"), v1.Variable(3.0, name="b")
        x = v1.placeholder(tf.float32, [None], name="x")
        y = tf.add(a * x, b, name="y")
        examples = v1.placeholder(tf.string, [None], name="tf_example")
        parsed = tf.io.parse_example(examples, {"x": _fixed("float32", 1)})["x"]
        value = a * parsed + b  # [batch, 1]
        scores = tf.concat([value, value * 2], 1)
        classes = tf.tile(tf.constant([["low", "high"]]), [tf.shape(examples)[0], 1])
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            builder = v1.saved_model.Builder(path)
            builder.add_meta_graph_and_variables(sess, ["serve"], signature_def_map={
                "serving_default": v1.saved_model.predict_signature_def({"x": x}, {"y": y}),
                "tensorflow/serving/regress": v1.saved_model.regression_signature_def(examples, value),
                "tensorflow/serving/classify": v1.saved_model.classification_signature_def(examples, classes, scores),
            })
            builder.save()


def _toy(path: str) -> None:
    import tensorflow as tf

    class Toy(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="tag"),
                                      tf.TensorSpec([None, 5], tf.float32, name="signal"),
                                      tf.TensorSpec([None, 2, 2], tf.float32, name="sensor")])
        def sensors(self, tag, signal, sensor):
            return {"tag_bytes": tag, "total": tf.reduce_sum(signal, 1) + tf.reduce_sum(sensor, [1, 2])}

        @tf.function(input_signature=[tf.TensorSpec([None, 1, 2], tf.float32, name="x")])
        def pairs(self, x):
            return {"doubled": x * 2}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="s")])
        def strings(self, s):
            return {"upper": tf.strings.upper(s)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="a"),
                                      tf.TensorSpec([None], tf.float32, name="b")])
        def ratio(self, a, b):
            return {"q": a / b}

    toy = Toy()
    tf.saved_model.save(toy, path, signatures={"serving_default": toy.sensors, "pairs": toy.pairs,
                                               "strings": toy.strings, "ratio": toy.ratio})


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    from serving.server import ModelServer

    base = str(tmp_path_factory.mktemp("conformance"))
    _half_plus_three(os.path.join(base, HALF, "123"))
    _toy(os.path.join(base, "toy", "1"))
    config = os.path.join(base, "models.config")
    with open(config, "w", encoding="utf-8") as f:
        f.write(f'model_config_list {{\n'
                f'  config {{ name: "{HALF}" base_path: "{base}/{HALF}" model_platform: "tensorflow"\n'
                f'           version_labels {{ key: "stable" value: 123 }} }}\n'
                f'  config {{ name: "toy" base_path: "{base}/toy" model_platform: "tensorflow" }}\n'
                f'}}\n')
    server = ModelServer(None, rest_port=0, grpc_port=None, poll_seconds=0.1, model_config_file=config,
                         allow_version_labels_for_unavailable_models=True).start()
    assert server.store.wait_for_version(HALF, 123, timeout=60) and server.store.wait_for_version("toy", 1, timeout=60)
    yield server
    server.stop()


def call(srv, method: str, path: str, body=None) -> tuple[int, str, bytes]:
    """(status, Content-Type, body bytes) of one plain HTTP request; a dict body is sent as JSON."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.rest_port, timeout=60)
    try:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type"), response.read()
    finally:
        conn.close()


def ok(srv, method: str, path: str, body=None):
    status, content_type, data = call(srv, method, path, body)
    assert (status, content_type) == (200, "application/json"), data[:500]
    return json.loads(data)


def error(srv, method: str, path: str, body=None, code: int = 400) -> str:
    """Asserts the documented error shape ``{"error": <error message string>}`` with ``code``."""
    status, content_type, data = call(srv, method, path, body)
    assert (status, content_type) == (code, "application/json"), data[:500]
    obj = json.loads(data)
    assert list(obj) == ["error"] and isinstance(obj["error"], str) and obj["error"]
    return obj["error"]


def b64(text: str) -> dict:
    return {"b64": base64.b64encode(text.encode()).decode("ascii")}


# ----------------------------------------------------------------------------- errors
def test_an_error_is_a_json_object_with_the_error_message(srv):
    assert error(srv, "GET", "/v1/models/nope", code=404) == "Could not find any versions of model nope"


def test_the_documented_incorrect_url_is_404_servable_not_found(srv):
    # api_rest.md "Example": POST .../v1/models/half:predict -> 404 { "error": "Servable not found ..." }
    message = error(srv, "POST", "/v1/models/half:predict", {"instances": [1.0, 5.0]}, code=404)
    assert message == "Servable not found for request: Latest(half)"


def test_an_incorrect_request_body_is_an_http_error(srv):
    assert error(srv, "POST", f"/v1/models/{HALF}:predict", b"{not json").startswith("JSON Parse error")


# ----------------------------------------------------------------------------- model status API
DOC_STATUS = {"model_version_status": [{"version": "123", "state": "AVAILABLE",
                                        "status": {"error_code": "OK", "error_message": ""}}]}


def test_model_status_is_the_documented_get_model_status_response(srv):
    assert ok(srv, "GET", f"/v1/models/{HALF}") == DOC_STATUS


@pytest.mark.parametrize("suffix", ["/versions/123", "/labels/stable"])
def test_model_status_of_a_version_or_label(srv, suffix):
    assert ok(srv, "GET", f"/v1/models/{HALF}{suffix}") == DOC_STATUS


def test_model_status_of_a_version_that_is_not_there_is_404(srv):
    assert error(srv, "GET", f"/v1/models/{HALF}/versions/7", code=404) == f"Could not find version 7 of model {HALF}"


# ----------------------------------------------------------------------------- model metadata API
@pytest.mark.parametrize("suffix", ["", "/versions/123", "/labels/stable"])
def test_model_metadata_is_a_get_model_metadata_response(srv, suffix):
    meta = ok(srv, "GET", f"/v1/models/{HALF}{suffix}/metadata")
    assert meta["model_spec"] == {"name": HALF, "signature_name": "", "version": "123"}
    defs = meta["metadata"]["signature_def"]["signature_def"]
    assert {"serving_default", "tensorflow/serving/regress", "tensorflow/serving/classify"} <= set(defs)
    assert defs["serving_default"]["method_name"] == "tensorflow/serving/predict"
    assert defs["serving_default"]["inputs"]["x"] == {
        "dtype": "DT_FLOAT", "tensor_shape": {"dim": [{"size": "-1", "name": ""}], "unknown_rank": False},
        "name": "x:0"}
    assert defs["tensorflow/serving/regress"]["method_name"] == "tensorflow/serving/regress"


def test_model_metadata_of_a_tf2_saved_model_lists_its_init_op(srv):
    defs = ok(srv, "GET", "/v1/models/toy/metadata")["metadata"]["signature_def"]["signature_def"]
    assert {"serving_default", "pairs", "strings", "ratio", "__saved_model_init_op"} == set(defs)


# ----------------------------------------------------------------------------- classify and regress API
def test_the_documented_regress_call(srv):
    body = {"signature_name": "tensorflow/serving/regress", "examples": [{"x": 1.0}, {"x": 2.0}]}
    assert ok(srv, "POST", f"/v1/models/{HALF}:regress", body) == {"results": [3.5, 4.0]}


@pytest.mark.parametrize("suffix", ["/versions/123", "/labels/stable"])
def test_regress_on_a_version_or_label(srv, suffix):
    body = {"signature_name": "tensorflow/serving/regress", "examples": [{"x": 3.0}]}
    assert ok(srv, "POST", f"/v1/models/{HALF}{suffix}:regress", body) == {"results": [4.5]}


def test_classify_returns_label_score_pairs_per_example(srv):
    body = {"signature_name": "tensorflow/serving/classify", "examples": [{"x": 1.0}, {"x": 3.0}]}
    assert ok(srv, "POST", f"/v1/models/{HALF}:classify", body) == {
        "results": [[["low", 3.5], ["high", 7.0]], [["low", 4.5], ["high", 9.0]]]}


def test_context_features_are_shared_by_all_examples(srv):
    body = {"signature_name": "tensorflow/serving/regress", "context": {"x": 2.0},
            "examples": [{"caption": "a"}, {"caption": "b"}]}
    assert ok(srv, "POST", f"/v1/models/{HALF}:regress", body) == {"results": [4.0, 4.0]}


def test_the_documented_classification_request_with_binary_values(srv):
    body = {"signature_name": "tensorflow/serving/classify", "examples": [
        {"image": {"b64": "aW1hZ2UgYnl0ZXM="}, "caption": "seaside", "x": 1.0},
        {"image": {"b64": "YXdlc29tZSBpbWFnZSBieXRlcw=="}, "caption": "mountains", "x": 2.0}]}
    assert [r[0] for r in ok(srv, "POST", f"/v1/models/{HALF}:classify", body)["results"]] == [["low", 3.5],
                                                                                             ["low", 4.0]]


def test_examples_must_not_be_empty(srv):
    body = {"signature_name": "tensorflow/serving/regress", "examples": []}
    assert error(srv, "POST", f"/v1/models/{HALF}:regress", body).endswith("'examples' value is an empty array")


# ----------------------------------------------------------------------------- predict API
def test_the_documented_predict_call(srv):
    status, _, data = call(srv, "POST", f"/v1/models/{HALF}:predict", {"instances": [1.0, 2.0, 5.0]})
    assert status == 200 and json.loads(data) == {"predictions": [3.5, 4.0, 5.5]}
    assert b"4.0" in data  # whole numbers keep their decimal point (json_tensor.cc WriteDecimal)


@pytest.mark.parametrize("suffix", ["/versions/123", "/labels/stable"])
def test_predict_on_a_version_or_label(srv, suffix):
    assert ok(srv, "POST", f"/v1/models/{HALF}{suffix}:predict", {"instances": [0.0]}) == {"predictions": [3.0]}


def test_row_format_list_of_scalar_tensors(srv):
    body = {"signature_name": "strings", "instances": ["foo", "bar", "baz"]}
    assert ok(srv, "POST", "/v1/models/toy:predict", body) == {"predictions": ["FOO", "BAR", "BAZ"]}


def test_row_format_list_of_tensors_of_shape_1_2(srv):
    body = {"signature_name": "pairs", "instances": [[[1, 2]], [[3, 4]]]}
    assert ok(srv, "POST", "/v1/models/toy:predict", body) == {"predictions": [[[2.0, 4.0]], [[6.0, 8.0]]]}


DOC_INSTANCES = [{"tag": "foo", "signal": [1, 2, 3, 4, 5], "sensor": [[1, 2], [3, 4]]},
                 {"tag": "bar", "signal": [3, 4, 1, 2, 5], "sensor": [[4, 5], [6, 8]]}]


def test_row_format_objects_name_every_input_and_predictions_are_objects(srv):
    assert ok(srv, "POST", "/v1/models/toy:predict", {"instances": DOC_INSTANCES}) == {"predictions": [
        {"tag_bytes": b64("foo"), "total": 25.0}, {"tag_bytes": b64("bar"), "total": 38.0}]}


def test_row_format_instances_must_all_have_the_same_shape(srv):
    instances = [dict(DOC_INSTANCES[0]), dict(DOC_INSTANCES[1], signal=[3, 4, 1])]
    message = error(srv, "POST", "/v1/models/toy:predict", {"instances": instances})
    assert message.startswith("Failed to process element: 1 key: signal of 'instances' list. Error: INVALID_ARGUMENT: "
                              "Expecting tensor size: 5 but got: 3")


def test_columnar_format_inputs_object_and_outputs_object(srv):
    body = {"inputs": {"tag": ["foo", "bar"], "signal": [[1, 2, 3, 4, 5], [3, 4, 1, 2, 5]],
                       "sensor": [[[1, 2], [3, 4]], [[4, 5], [6, 8]]]}}
    assert ok(srv, "POST", "/v1/models/toy:predict", body) == {
        "outputs": {"tag_bytes": [b64("foo"), b64("bar")], "total": [25.0, 38.0]}}


def test_columnar_format_single_input_and_single_output_are_plain_values(srv):
    assert ok(srv, "POST", "/v1/models/toy:predict", {"signature_name": "strings", "inputs": ["a", "b"]}) == {
        "outputs": ["A", "B"]}


def test_a_request_has_instances_or_inputs_but_not_both(srv):
    body = {"signature_name": "strings", "instances": ["a"], "inputs": ["a"]}
    assert "expecting only one of 'inputs' or 'instances'" in error(srv, "POST", "/v1/models/toy:predict", body)


def test_a_request_without_instances_or_inputs_is_an_error(srv):
    assert error(srv, "POST", "/v1/models/toy:predict", {"signature_name": "strings"}) == (
        "Missing 'inputs' or 'instances' key")


def test_empty_instances_are_an_error(srv):
    message = error(srv, "POST", f"/v1/models/{HALF}:predict", {"instances": []})
    assert message.endswith("No values in 'instances' array")


def test_signature_name_is_optional_and_selects_the_signature(srv):
    assert ok(srv, "POST", f"/v1/models/{HALF}:predict", {"signature_name": "serving_default",
                                                          "instances": [1.0]}) == {"predictions": [3.5]}
    message = error(srv, "POST", f"/v1/models/{HALF}:predict", {"signature_name": "nope", "instances": [1.0]})
    assert "nope" in message


# ----------------------------------------------------------------------------- JSON mapping and binary values
def test_binary_input_values_are_b64_objects(srv):
    body = {"signature_name": "strings", "instances": [b64("foo"), b64("bar")]}
    assert ok(srv, "POST", "/v1/models/toy:predict", body) == {"predictions": ["FOO", "BAR"]}


def test_outputs_named_bytes_are_b64_encoded(srv):
    body = {"instances": [DOC_INSTANCES[0]]}
    assert ok(srv, "POST", "/v1/models/toy:predict", body)["predictions"][0]["tag_bytes"] == {"b64": "Zm9v"}


def test_numbers_in_exponent_notation_are_accepted(srv):
    assert ok(srv, "POST", f"/v1/models/{HALF}:predict", {"instances": [1e0, 2.5e-1, 4E1]}) == {
        "predictions": [3.5, 3.125, 23.0]}


def test_a_string_where_a_float_is_expected_is_an_error(srv):
    message = error(srv, "POST", f"/v1/models/{HALF}:predict", {"instances": ["one"]})
    assert message.endswith('JSON Value: "one" Type: String is not of expected type: float')


def test_non_finite_outputs_are_the_nan_and_infinity_tokens(srv):
    # api_rest.md "JSON conformance": responses may carry NaN, Infinity and -Infinity
    status, _, data = call(srv, "POST", "/v1/models/toy:predict",
                           {"signature_name": "ratio", "inputs": {"a": [1.0, -1.0, 0.0], "b": [0.0, 0.0, 0.0]}})
    assert status == 200 and data == b'{"outputs":[Infinity,-Infinity,NaN]}'
    values = json.loads(data)["outputs"]  # Python's json reads the tokens, as the documentation says
    assert values[:2] == [float("inf"), -float("inf")] and values[2] != values[2]
