"""REST round trips and bad requests against the server (tiny SavedModel, ephemeral ports)."""
import base64
import json

import pytest
import requests

from serving.client import RestClient, ServingClientError
from tests.fakes.serving_models import tiny_example


def _url(server, path):
    return f"http://127.0.0.1:{server.rest_port}{path}"


def test_predict_row_format_with_b64_examples(server):
    client = RestClient(f"http://127.0.0.1:{server.rest_port}", "tiny")
    out = client.predict_examples([tiny_example(0.0), tiny_example(2.0)])
    preds = out["predictions"]
    assert len(preds) == 2 and set(preds[0]) == {"click_probability", "conversion_probability"}
    assert preds[0]["click_probability"] == pytest.approx(0.5)
    assert preds[1]["conversion_probability"] == pytest.approx(0.5 / (1 + 2.718281828 ** -2.0), rel=1e-5)


def test_predict_columnar_and_single_output_plain_values(server):
    client = RestClient(f"http://127.0.0.1:{server.rest_port}", "tiny")
    out = client.predict(inputs={"x": [0.0, 1.0]}, signature="predict_raw")
    assert out["outputs"] == pytest.approx([0.5, 0.7310586])  # one output: a plain list
    rows = client.predict(instances=[0.0, 1.0], signature="predict_raw")
    assert rows["predictions"] == pytest.approx([0.5, 0.7310586])  # one input, one output: plain values
    named = client.predict(instances=[{"x": 0.0}], signature="predict_raw", version=1)
    assert named["predictions"] == pytest.approx([0.5])


def test_status_and_metadata(server):
    status = requests.get(_url(server, "/v1/models/tiny")).json()
    assert status == {"model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    meta = requests.get(_url(server, "/v1/models/tiny/versions/1/metadata")).json()
    assert meta["model_spec"] == {"name": "tiny", "signature_name": "", "version": "1"}
    sig = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["inputs"]["examples"]["dtype"] == "DT_STRING"
    assert sig["method_name"] == "tensorflow/serving/predict"


@pytest.mark.parametrize("method,path,body,code,fragment", [
    ("POST", "/v1/models/tiny:predict", b"{not json", 400, "JSON Parse error"),
    ("POST", "/v1/models/nope:predict", b'{"instances": [1.0]}', 404, "Servable not found"),
    ("POST", "/v1/models/tiny/versions/7:predict", b'{"instances": [1.0]}', 404, "Specific(tiny, 7)"),
    ("GET", "/v1/models/nope", b"", 404, "Could not find any versions of model nope"),
    ("POST", "/v1/models/tiny:predict", b'{"signature_name": "bogus", "instances": [1.0]}', 400, "bogus"),
    ("POST", "/v1/models/tiny:predict", b'{"signature_name": "predict_raw", "instances": ["a"]}', 400,
     # TF Serving's json_tensor.cc text (AddValueToTensor's TypeError, wrapped per instance)
     "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
     "JSON Value: \"a\" Type: String is not of expected type: float"),
    ("POST", "/v1/models/tiny:predict", b'{"signature_name": "predict_raw", "inputs": {"y": [1.0]}}', 400,
     "Missing named input: x in 'inputs' object."),
    ("POST", "/v1/models/tiny:predict", b'{"instances": [{"b64": "AA=="}], "inputs": []}', 400,
     "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist"),
    ("POST", "/v1/models/tiny:predict", b'{"signature_name": "predict_raw", "instances": [1,2,3,4,5,6,7,8,9]}', 400,
     "maximum input batch size 8"),
    ("POST", "/v1/models/tiny:classify", b'{"examples": [{"x": 1.0}]}', 400, "No classification inputs found"),
    ("POST", "/v1/models/tiny:predict", b'{"instances": []}', 400, "No values in 'instances' array"),
    ("POST", "/v1/models/tiny:explain", b"{}", 400, "Malformed request"),
])
def test_bad_requests_get_4xx_and_server_keeps_serving(server, method, path, body, code, fragment):
    r = requests.request(method, _url(server, path), data=body)
    assert r.status_code == code, r.text
    assert set(r.json()) == {"error"} and fragment in r.json()["error"]
    ok = requests.post(_url(server, "/v1/models/tiny:predict"),
                       json={"instances": [{"b64": base64.b64encode(tiny_example(0.0)).decode()}]})
    assert ok.status_code == 200 and ok.json()["predictions"][0]["click_probability"] == pytest.approx(0.5)


def test_tf_error_inside_the_graph_is_a_400(server):
    r = requests.post(_url(server, "/v1/models/tiny:predict"),
                      data=json.dumps({"instances": [{"b64": base64.b64encode(b"garbage").decode()}]}))
    assert r.status_code == 400 and "error" in r.json()


def test_client_raises_with_status_and_message(server):
    client = RestClient(f"http://127.0.0.1:{server.rest_port}", "nope")
    with pytest.raises(ServingClientError) as e:
        client.status()
    assert e.value.code == 404
