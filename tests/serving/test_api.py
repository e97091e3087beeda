"""``serving.api.ServingApi`` and the gRPC error mapping, called directly: no HTTP, no socket.

The real ``ModelStore`` over the tiny SavedModel (``tiny_base``: model ``tiny`` version 1,
signatures ``serving_default`` over ``examples`` and ``predict_raw`` over ``x``) covers
predict, metadata and status; a fake store/model with classify and regress signatures
covers the method-name checks and the result shapes (the tiny model has neither).
Expected messages are TF Serving 2.19's where the code mimics them (batching's "Task size
...", predict_util.cc's signature and input checks, classifier.cc/regressor.cc's signature
checks with and without ``--enable_signature_method_name_check``, ServerCore's "Servable not
found ...").
"""
import contextlib

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2

from serving import grpc_service
from serving.api import DEFAULT_SIGNATURE, ServingApi, _tf_message
from serving.model_store import ModelStore
from serving.session_model import Signature, TensorInfo
from serving.signatures import CLASSIFY_METHOD, PREDICT_METHOD, REGRESS_METHOD
from serving.status import (CODES, FAILED_PRECONDITION, INTERNAL, INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED,
                            UNAVAILABLE, UNIMPLEMENTED, RequestError)
from tests.fakes.serving_models import tiny_example


@pytest.fixture(scope="module")
def store(tiny_base):
    s = ModelStore(tiny_base, poll_seconds=60)
    s.poll_once()  # notes version 1 (START); no polling thread
    s.poll_once()  # its files are unchanged since: loads it synchronously
    yield s
    s.stop()


@pytest.fixture
def api(store):
    return ServingApi(store, max_batch_size=4)


def refused(fn, *args, **kwargs) -> RequestError:
    with pytest.raises(RequestError) as e:
        fn(*args, **kwargs)
    return e.value


# ----------------------------------------------------------------------------- fakes
def _info(name, dtype=tf.string):
    return TensorInfo(name, dtype, (-1,))


class FakeModel:
    """Signatures ``cls`` (classify), ``reg`` (regress) and ``pred`` (predict); records ``run``."""

    signature_defs = {}

    def __init__(self, outputs=None):
        self.signatures = {
            "cls": Signature(CLASSIFY_METHOD, {"inputs": _info("in:0")},
                             {"scores": _info("s:0"), "classes": _info("c:0")}),
            "reg": Signature(REGRESS_METHOD, {"inputs": _info("in:0")}, {"outputs": _info("o:0", tf.float32)}),
            "pred": Signature(PREDICT_METHOD, {"a": _info("a:0"), "b": _info("b:0")}, {"p": _info("p:0")}),
        }
        self.outputs = outputs or {}
        self.calls = []

    def signature(self, name):
        if name not in self.signatures:
            raise RequestError(INVALID_ARGUMENT, f"no signature {name}")
        return self.signatures[name]

    def run(self, signature, inputs, output_filter=None):
        self.calls.append((signature, inputs, output_filter))
        if isinstance(self.outputs, Exception):
            raise self.outputs
        return self.outputs


class FakeStore:
    def __init__(self, model, version=7):
        self.model, self.version = model, version

    @contextlib.contextmanager
    def acquire(self, name, version=None):
        yield self.version, self.model


# ----------------------------------------------------------------------------- construction
@pytest.mark.parametrize("n", [0, -1])
def test_max_batch_size_below_one_is_rejected(n):
    with pytest.raises(ValueError, match="max_batch_size must be >= 1"):
        ServingApi(FakeStore(FakeModel()), max_batch_size=n)


# ----------------------------------------------------------------------------- predict (real model)
def test_predict_returns_served_version_signature_and_numpy_outputs(api):
    v, sig, out = api.predict("tiny", None, "predict_raw", {"x": [0.0, 2.0]})
    assert (v, sig) == (1, "predict_raw")
    np.testing.assert_allclose(out["click_probability"], [0.5, 1 / (1 + np.exp(-2.0))], rtol=1e-6)


def test_predict_with_empty_signature_uses_serving_default(api):
    _, sig, out = api.predict("tiny", None, "", {"examples": [tiny_example(0.0)]})
    assert sig == DEFAULT_SIGNATURE == "serving_default"
    assert set(out) == {"click_probability", "conversion_probability"}


def test_predict_on_a_pinned_version_reports_that_version(api):
    assert api.predict("tiny", 1, "predict_raw", {"x": [0.0]})[0] == 1


def test_predict_output_filter_returns_only_the_requested_outputs(api):
    _, _, out = api.predict("tiny", None, "", {"examples": [tiny_example(0.0)]}, ["conversion_probability"])
    assert list(out) == ["conversion_probability"] and out["conversion_probability"][0] == pytest.approx(0.25)


def test_predict_inputs_callable_receives_the_requested_signature(api):
    seen = []

    def inputs(sig):
        seen.append(sorted(sig.inputs))
        return {"x": [0.0]}

    api.predict("tiny", None, "predict_raw", inputs)
    assert seen == [["x"]]


def test_predict_batch_equal_to_the_limit_is_served(api):
    _, _, out = api.predict("tiny", None, "predict_raw", {"x": [0.0] * 4})
    assert out["click_probability"].shape == (4,)


def test_predict_batch_over_the_limit_is_invalid_argument(api):
    e = refused(api.predict, "tiny", None, "predict_raw", {"x": [0.0] * 5})
    assert e.status == INVALID_ARGUMENT
    assert e.message == "Task size 5 is larger than maximum input batch size 4"


def test_predict_batch_limit_applies_to_every_input():
    model = FakeModel({"p": np.zeros(2)})
    e = refused(ServingApi(FakeStore(model), max_batch_size=4).predict, "m", None, "pred",
                {"a": [b"x"] * 2, "b": [b"y"] * 5})
    assert e.message.startswith("Task size 5 ") and model.calls == []


def test_predict_scalar_input_counts_as_a_batch_of_one():
    model = FakeModel({"p": np.zeros(1)})
    ServingApi(FakeStore(model), max_batch_size=1).predict("m", None, "pred", {"a": b"x", "b": b"y"})
    assert len(model.calls) == 1


def test_predict_on_an_unknown_model_is_not_found(api):
    e = refused(api.predict, "nope", None, "", {"examples": [tiny_example(0.0)]})
    assert e.status == NOT_FOUND and e.message == "Servable not found for request: Latest(nope)"


def test_predict_on_an_unknown_version_is_not_found(api):
    e = refused(api.predict, "tiny", 9, "", {"examples": [tiny_example(0.0)]})
    assert e.status == NOT_FOUND and e.message == "Servable not found for request: Specific(tiny, 9)"


def test_predict_on_an_unknown_signature_is_failed_precondition(api):
    e = refused(api.predict, "tiny", None, "bogus", {"x": [0.0]})
    assert (e.status, e.message) == (FAILED_PRECONDITION, 'Serving signature key "bogus" not found.')


def test_predict_with_a_wrongly_named_input_is_invalid_argument_naming_the_alias(api):
    e = refused(api.predict, "tiny", None, "predict_raw", {"y": [0.0]})
    assert e.status == INVALID_ARGUMENT
    assert e.message.startswith("Signature input alias: x(feed name: ")
    assert e.message.endswith(") not found in request and no default value provided. Inputs expected to be in the "
                              "request {y}, or default input alias set: ")


def test_predict_with_an_extra_input_is_an_input_size_mismatch(api):
    e = refused(api.predict, "tiny", None, "predict_raw", {"x": [0.0], "y": [0.0]})
    assert e.message == ("input size does not match signature: 2!=1 len({x,y}) != len({x}). Sent extra: {y}. "
                         "Missing but required: {}.")


def test_predict_with_no_input_is_an_input_size_mismatch(api):
    e = refused(api.predict, "tiny", None, "predict_raw", {})
    assert e.message == ("input size does not match signature: 0!=1 len({}) != len({x}). Sent extra: {}. "
                         "Missing but required: {x}.")


@pytest.mark.parametrize("output_filter,message", [
    (["nope"], "output tensor alias not found in signature: nope Outputs expected to be in the set "
               "{click_probability,conversion_probability}."),
    (["click_probability", "click_probability"], "duplicate output tensor alias: click_probability"),
])
def test_predict_with_a_bad_output_filter_is_invalid_argument(api, output_filter, message):
    e = refused(api.predict, "tiny", None, "", {"examples": [tiny_example(0.0)]}, output_filter)
    assert (e.status, e.message) == (INVALID_ARGUMENT, message)


def test_predict_strict_dtypes_refuses_another_dtype_with_the_sessions_message(api):
    e = refused(api.predict, "tiny", None, "predict_raw", {"x": np.array([0.0], np.float64)}, strict_dtypes=True)
    assert (e.status, e.message) == (INVALID_ARGUMENT, "Expects arg[0] to be float but double is provided (input 'x')")
    e = refused(api.predict, "tiny", None, "", {"examples": np.array([1.0], np.float32)}, strict_dtypes=True)
    assert e.message.startswith("Expects arg[0] to be string but float is provided")


def test_predict_without_strict_dtypes_converts_to_the_inputs_dtype(api):
    _, _, out = api.predict("tiny", None, "predict_raw", {"x": np.array([0.0], np.float64)})
    assert out["click_probability"].tolist() == [0.5]


def test_predict_on_a_zero_size_batch_returns_zero_size_outputs(api):
    _, _, out = api.predict("tiny", None, "", {"examples": np.array([], dtype=object)}, strict_dtypes=True)
    assert out["click_probability"].shape == (0,)


def test_predict_with_a_version_and_a_label_is_invalid_argument(api):
    e = refused(api.predict, "tiny", 1, "", {"examples": [tiny_example(0.0)]}, label="stable")
    assert (e.status, e.message) == (INVALID_ARGUMENT, "Both model version (1) and model version label (stable) "
                                                       "cannot be supplied.")


def test_predict_with_an_unknown_label_is_invalid_argument(api):
    e = refused(api.predict, "tiny", None, "", {"examples": [tiny_example(0.0)]}, label="stable")
    assert (e.status, e.message) == (INVALID_ARGUMENT, "Unrecognized servable version label: stable")


def test_predict_with_an_empty_model_name_is_invalid_argument(api):
    e = refused(api.predict, "", None, "", {"examples": [tiny_example(0.0)]})
    assert (e.status, e.message) == (INVALID_ARGUMENT, "ModelSpec has no name specified.")


def test_predict_with_the_method_check_refuses_an_unknown_method_name_as_internal():
    model = FakeModel({"p": np.zeros(1)})
    model.signatures["odd"] = Signature("custom/method", {"a": _info("a:0")}, {"p": _info("p:0")})
    e = refused(ServingApi(FakeStore(model), method_name_check=True).predict, "m", None, "odd", {"a": [b"x"]})
    assert e.status == INTERNAL and e.message == (
        "Expected prediction signature method_name to be one of {tensorflow/serving/predict, "
        "tensorflow/serving/classify, tensorflow/serving/regress}. Was: custom/method")
    ServingApi(FakeStore(model)).predict("m", None, "odd", {"a": [b"x"]})  # no check by default


def test_tensorflow_argument_error_in_the_graph_is_invalid_argument_without_graph_noise(api):
    e = refused(api.predict, "tiny", None, "", {"examples": [b"not a serialized example"]})
    assert e.status == INVALID_ARGUMENT
    assert "Graph execution error" not in e.message and "[[" not in e.message and e.message


def test_predict_with_ragged_input_is_invalid_argument(api):
    # np.ndim() of a ragged list raised ValueError, which escaped ServingApi as a 500.
    e = refused(api.predict, "tiny", None, "predict_raw", {"x": [[1.0], [1.0, 2.0]]})
    assert e.status == INVALID_ARGUMENT and "input 'x': ragged nested lists" in e.message


# ----------------------------------------------------------------------------- classify / regress
def test_classify_on_a_predict_signature_without_an_inputs_input_is_invalid_argument(api):
    e = refused(api.classify, "tiny", None, "", [tiny_example(1.0)])
    assert e.status == INVALID_ARGUMENT
    assert e.message.startswith("No classification inputs found in SignatureDef: inputs {\n  key: \"examples\"")


def test_classify_with_the_method_check_on_a_predict_signature_is_invalid_argument(store):
    e = refused(ServingApi(store, method_name_check=True).classify, "tiny", None, "", [tiny_example(1.0)])
    assert e.message == ("Expected classification signature method_name to be tensorflow/serving/classify. "
                         "Was: tensorflow/serving/predict")


def test_regress_on_a_predict_signature_without_an_inputs_input_is_invalid_argument(api):
    e = refused(api.regress, "tiny", None, "predict_raw", [tiny_example(1.0)])
    assert e.status == INVALID_ARGUMENT and e.message.startswith("No regression inputs found in SignatureDef: ")


def test_regress_on_a_classify_signature_is_invalid_argument():
    model = FakeModel()
    e = refused(ServingApi(FakeStore(model)).regress, "m", None, "cls", [b"e"])
    assert e.message == "Expected one output Tensor." and model.calls == []
    e = refused(ServingApi(FakeStore(model), method_name_check=True).regress, "m", None, "cls", [b"e"])
    assert e.message.endswith("Was: tensorflow/serving/classify") and model.calls == []


@pytest.mark.parametrize("call", ["classify", "regress"])
def test_classify_and_regress_on_an_unknown_signature_are_invalid_argument(call):
    e = refused(getattr(ServingApi(FakeStore(FakeModel())), call), "m", None, "bogus", [b"e"])
    assert (e.status, e.message) == (INVALID_ARGUMENT, "No signature was found with the name: bogus")


@pytest.mark.parametrize("call,signature", [("classify", "cls"), ("regress", "reg")])
def test_classify_and_regress_without_examples_are_input_is_empty(call, signature):
    model = FakeModel()
    e = refused(getattr(ServingApi(FakeStore(model)), call), "m", None, signature, [])
    assert (e.status, e.message) == (INVALID_ARGUMENT, "Input is empty.") and model.calls == []


def test_classify_feeds_the_examples_as_inputs_and_returns_scores_and_classes():
    scores, classes = np.array([[0.3, 0.7]], np.float32), np.array([[b"0", b"1"]], dtype=object)
    model = FakeModel({"scores": scores, "classes": classes})
    v, sig, s, c = ServingApi(FakeStore(model, version=7)).classify("m", None, "cls", [b"ex1"])
    assert (v, sig) == (7, "cls") and s is scores and c is classes
    assert model.calls == [("cls", {"inputs": [b"ex1"]}, ["classes", "scores"])]


def test_regress_returns_one_value_per_example():
    model = FakeModel({"outputs": np.array([[0.1], [0.2]], np.float32)})
    _, _, values = ServingApi(FakeStore(model)).regress("m", None, "reg", [b"e1", b"e2"])
    assert values.shape == (2,) and values.tolist() == pytest.approx([0.1, 0.2])


def test_classify_batch_over_the_limit_is_invalid_argument_and_never_runs():
    model = FakeModel()
    e = refused(ServingApi(FakeStore(model), max_batch_size=2).classify, "m", None, "cls", [b"e"] * 3)
    assert e.message == "Task size 3 is larger than maximum input batch size 2" and model.calls == []


def test_tensorflow_argument_error_in_classify_is_invalid_argument():
    error = tf.errors.InvalidArgumentError(None, None, "Graph execution error:\n\nbad example\n[[{{node P}}]]")
    model = FakeModel(error)
    e = refused(ServingApi(FakeStore(model)).classify, "m", None, "cls", [b"e"])
    assert e.status == INVALID_ARGUMENT and e.message == "bad example"


# ----------------------------------------------------------------------------- metadata / status
def test_metadata_returns_the_version_and_every_signature_def_with_the_init_op(api):
    v, defs = api.metadata("tiny", None)
    assert v == 1 and set(defs) == {"serving_default", "predict_raw", "__saved_model_init_op"}
    assert defs["predict_raw"].method_name == PREDICT_METHOD and list(defs["predict_raw"].inputs) == ["x"]


def test_metadata_of_an_unknown_model_is_not_found(api):
    assert refused(api.metadata, "nope", None).status == NOT_FOUND


def test_status_lists_the_loaded_version(api):
    assert api.status("tiny") == [{"version": 1, "state": "AVAILABLE", "error": ""}]


def test_status_of_an_unknown_model_is_not_found(api):
    e = refused(api.status, "nope")
    assert e.status == NOT_FOUND and e.message == "Could not find any versions of model nope"


def test_status_of_an_unknown_version_is_not_found(api):
    e = refused(api.status, "tiny", 5)
    assert e.status == NOT_FOUND and e.message == "Could not find version 5 of model tiny"


# ----------------------------------------------------------------------------- _tf_message
def test_tf_message_drops_graph_execution_header_and_node_lines():
    msg = "Graph execution error:\n\nDetected at node 'P'\n  Name: x is required\n\t [[{{node ParseExample}}]]"
    assert _tf_message(msg) == "Detected at node 'P' Name: x is required"


def test_tf_message_keeps_the_original_when_nothing_informative_remains():
    assert _tf_message("Graph execution error:\n[[node]]") == "Graph execution error:\n[[node]]"


# ----------------------------------------------------------------------------- status codes (REST and gRPC)
@pytest.mark.parametrize("status,http,code", [
    (INVALID_ARGUMENT, 400, grpc.StatusCode.INVALID_ARGUMENT),
    (NOT_FOUND, 404, grpc.StatusCode.NOT_FOUND),
    (RESOURCE_EXHAUSTED, 429, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (UNAVAILABLE, 503, grpc.StatusCode.UNAVAILABLE),
    (INTERNAL, 500, grpc.StatusCode.INTERNAL),
    (FAILED_PRECONDITION, 400, grpc.StatusCode.FAILED_PRECONDITION),
    (UNIMPLEMENTED, 501, grpc.StatusCode.UNIMPLEMENTED),
    ("CANCELLED", 499, grpc.StatusCode.CANCELLED),
    ("DEADLINE_EXCEEDED", 504, grpc.StatusCode.DEADLINE_EXCEEDED),
    ("ALREADY_EXISTS", 409, grpc.StatusCode.ALREADY_EXISTS),
    ("ABORTED", 409, grpc.StatusCode.ABORTED),
    ("OUT_OF_RANGE", 400, grpc.StatusCode.OUT_OF_RANGE),
    ("PERMISSION_DENIED", 403, grpc.StatusCode.PERMISSION_DENIED),
    ("UNAUTHENTICATED", 401, grpc.StatusCode.UNAUTHENTICATED),
    ("UNKNOWN", 500, grpc.StatusCode.UNKNOWN),
    ("DATA_LOSS", 500, grpc.StatusCode.DATA_LOSS),
])
def test_status_maps_to_tf_serving_http_and_grpc_codes(status, http, code):
    # HTTP codes as TF Serving's http_server.cc ToHTTPStatusCode maps the canonical codes.
    e = RequestError(status, "m")
    assert (e.http_code, e.grpc_code) == (http, code)


def test_status_table_has_every_canonical_code_but_ok():
    assert set(CODES) == {c.name for c in grpc.StatusCode} - {"OK"}


def test_unknown_status_is_rejected():
    with pytest.raises(ValueError, match="status must be one of"):
        RequestError("TEAPOT", "m")


class Aborted(Exception):
    pass


class FakeContext:
    """Like grpc.ServicerContext.abort: records the code and details and raises."""

    def __init__(self):
        self.aborted = None

    def abort(self, code, details):
        self.aborted = (code, details)
        raise Aborted(details)


class _Servicer:
    def __init__(self, outcome):
        self.outcome = outcome

    @grpc_service._handled
    def Call(self, request, context):  # noqa: N802
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


@pytest.mark.parametrize("status", sorted(CODES))
def test_grpc_handler_aborts_a_request_error_with_its_grpc_code(status):
    ctx = FakeContext()
    with pytest.raises(Aborted):
        _Servicer(RequestError(status, "why")).Call(None, ctx)
    assert ctx.aborted == (CODES[status][1], "why")


def test_grpc_handler_aborts_an_unexpected_error_as_internal_with_type_and_message():
    ctx = FakeContext()
    with pytest.raises(Aborted):
        _Servicer(KeyError("k")).Call(None, ctx)
    assert ctx.aborted == (grpc.StatusCode.INTERNAL, "KeyError: 'k'")


def test_grpc_handler_returns_the_response_and_does_not_abort_on_success():
    ctx = FakeContext()
    assert _Servicer("response").Call(None, ctx) == "response" and ctx.aborted is None


def test_grpc_predict_on_an_unknown_model_aborts_not_found(api):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "nope"
    request.inputs["examples"].CopyFrom(tf.make_tensor_proto([tiny_example(0.0)], dtype=tf.string))
    ctx = FakeContext()
    with pytest.raises(Aborted):
        grpc_service.PredictionServicer(api).Predict(request, ctx)
    assert ctx.aborted == (grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(nope)")


def test_grpc_unknown_version_label_is_invalid_argument(api):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "tiny"
    request.model_spec.version_label = "stable"
    ctx = FakeContext()
    with pytest.raises(Aborted):
        grpc_service.PredictionServicer(api).Predict(request, ctx)
    assert ctx.aborted == (grpc.StatusCode.INVALID_ARGUMENT, "Unrecognized servable version label: stable")


def test_grpc_metadata_without_a_metadata_field_is_invalid_argument(api):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "tiny"
    ctx = FakeContext()
    with pytest.raises(Aborted):
        grpc_service.PredictionServicer(api).GetModelMetadata(request, ctx)
    assert ctx.aborted == (grpc.StatusCode.INVALID_ARGUMENT,
                           "GetModelMetadataRequest must specify at least one metadata_field")


def test_grpc_handler_truncates_a_long_message_as_tf_serving():
    ctx = FakeContext()
    with pytest.raises(Aborted):
        _Servicer(RequestError(INVALID_ARGUMENT, "x" * 1500)).Call(None, ctx)
    assert ctx.aborted[1] == "x" * 1024 + "...TRUNCATED"


# ----------------------------------------------------------------------------- input checks (null, ragged, non-finite)
@pytest.mark.parametrize("value", [np.array([0.5, np.nan], np.float32), np.array([np.inf], np.float64),
                                   np.array([1e39]), [0.5, float("nan")]])
def test_predict_with_a_non_finite_input_is_invalid_argument(api, value):
    e = refused(api.predict, "tiny", None, "predict_raw", {"x": value})
    assert e.status == INVALID_ARGUMENT and "is not a finite float32 value" in e.message


def test_predict_with_a_null_input_is_invalid_argument_naming_it(api):
    e = refused(api.predict, "tiny", None, "predict_raw", {"x": [0.5, None]})
    assert e.message == "input 'x': null (missing value) at [1]; every value must be given"


def test_grpc_predict_with_a_nan_tensor_is_invalid_argument(api):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "tiny"
    request.model_spec.signature_name = "predict_raw"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([0.0, np.nan], np.float32)))
    ctx = FakeContext()
    with pytest.raises(Aborted):
        grpc_service.PredictionServicer(api).Predict(request, ctx)
    assert ctx.aborted[0] == grpc.StatusCode.INVALID_ARGUMENT and "nan at [1]" in ctx.aborted[1]


def test_classify_with_a_nan_example_is_invalid_argument_and_never_runs():
    example = tf.train.Example()
    example.features.feature["f"].float_list.value.extend([1.0, float("nan")])
    model = FakeModel()
    e = refused(ServingApi(FakeStore(model)).classify, "m", None, "cls", [example.SerializeToString()])
    assert e.message.startswith("input 'inputs': example 0: feature 'f' has the value nan") and model.calls == []


def test_predict_passes_finite_numbers_as_arrays_of_the_input_dtype():
    model = FakeModel({"p": np.zeros(2)})
    model.signatures["num"] = Signature(PREDICT_METHOD, {"v": _info("v:0", tf.float32)}, {"p": _info("p:0")})
    ServingApi(FakeStore(model)).predict("m", None, "num", {"v": [1, 2.5]})
    (_, inputs, _), = model.calls
    assert inputs["v"].dtype == np.float32 and inputs["v"].tolist() == [1.0, 2.5]


# ----------------------------------------------------------------------------- redact_paths
def test_redact_paths_makes_paths_under_the_base_relative():
    from serving.status import redact_paths

    message = "OSError: Cannot parse file b'/data/base/tiny/2/saved_model.pb': bad"
    assert redact_paths(message, "/data/base") == "OSError: Cannot parse file b'tiny/2/saved_model.pb': bad"
    assert redact_paths("at: /data/base/tiny/2/{saved_model.pbtxt|saved_model.pb}", "/data/base/") == (
        "at: tiny/2/{saved_model.pbtxt|saved_model.pb}")


def test_redact_paths_cuts_other_absolute_paths_and_keeps_relative_ones():
    from serving.status import redact_paths

    assert redact_paths("NotFoundError: /opt/x/variables.index; Was: tensorflow/serving/predict ./a/b") == (
        "NotFoundError: .../variables.index; Was: tensorflow/serving/predict ./a/b")


# ----------------------------------------------------------------------------- the non-finite pre-scan
def _float_example(*values) -> bytes:
    example = tf.train.Example()
    example.features.feature["f"].float_list.value.extend(values)
    example.features.feature["s"].bytes_list.value.append(b"some text")
    return example.SerializeToString()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), -float("nan")])
def test_the_pre_scan_finds_a_non_finite_float_anywhere_in_a_batch(bad):
    from serving.api import _may_hold_non_finite

    rng = np.random.default_rng(0)
    for position in (0, 3, 7):
        values = rng.normal(size=8).astype(np.float32).tolist()
        values[position] = bad
        batch = [_float_example(0.5)] * 5 + [_float_example(*values)]
        assert _may_hold_non_finite(batch)


def test_the_pre_scan_clears_finite_batches_without_parsing_them():
    from serving.api import _may_hold_non_finite

    assert not _may_hold_non_finite([_float_example(0.5, 1.0, -2.25, 100.0)] * 512)
    assert not _may_hold_non_finite([])


def test_a_finite_batch_the_pre_scan_flags_passes_the_exact_check():
    from serving.api import _check_examples, _may_hold_non_finite

    batch = [_float_example(float(np.float32(3.4e38)), 1e-38)]  # exponent byte 0x7F, finite
    assert _may_hold_non_finite(batch)
    _check_examples("inputs", batch)  # no error: every value is finite
