"""TF Serving 2.19 conformance of the gRPC API: what a client of TF Serving sees, here.

Written from TF Serving's behaviour (its sources: ``predict_util.cc``, ``classifier.cc``,
``regressor.cc``, ``multi_inference.cc``, ``get_model_metadata_impl.cc``,
``get_model_status_impl.cc``, ``server_core.cc``, ``util.cc``) with the official stubs
against a running ``ModelServer`` on ephemeral ports. One test per behaviour, each asserting
the ``grpc.StatusCode`` and TF Serving's message (its stable part where ours adds the input's
name). The server serves a models.config: model ``multi`` versions 1 and 2 (labels
``stable`` -> 1, ``canary`` -> 2) and model ``separate`` (classification and regression on
different input tensors) -- ``multi_base`` of ``conftest.py``.
"""
import math

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
                                     inference_pb2, model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc,
                                     regression_pb2)

from tests.fakes.serving_models import tiny_example

CLASSIFY, REGRESS, PREDICT = "tensorflow/serving/classify", "tensorflow/serving/regress", "tensorflow/serving/predict"


def sigmoid(z):
    return 1 / (1 + math.exp(-z))


@pytest.fixture(scope="module")
def server(multi_base, tmp_path_factory):
    from serving.server import ModelServer

    config = tmp_path_factory.mktemp("conformance") / "models.config"
    config.write_text(f"""model_config_list {{
      config {{ name: "multi" base_path: "{multi_base}/multi" model_platform: "tensorflow"
               model_version_policy {{ specific {{ versions: 1 versions: 2 }} }}
               version_labels {{ key: "stable" value: 1 }} version_labels {{ key: "canary" value: 2 }} }}
      config {{ name: "separate" base_path: "{multi_base}/separate" model_platform: "tensorflow" }}
    }}""")
    srv = ModelServer(None, rest_port=None, grpc_port=0, poll_seconds=0.1, max_batch_size=64,
                      model_config_file=str(config), allow_version_labels_for_unavailable_models=True).start()
    for name, version in (("multi", 1), ("multi", 2), ("separate", 1)):
        assert srv.store.wait_for_version(name, version, timeout=60)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as ch:
        yield ch


@pytest.fixture(scope="module")
def stub(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def model_stub(channel):
    return model_service_pb2_grpc.ModelServiceStub(channel)


def refused(call, request) -> tuple:
    """(status code, details) of a call that must fail."""
    with pytest.raises(grpc.RpcError) as e:
        call(request, timeout=30)
    return e.value.code(), e.value.details()


def set_spec(model_spec, version=None, version_label=None) -> None:
    if version is not None:
        model_spec.version.value = version
    if version_label is not None:
        model_spec.version_label = version_label


def predict_request(name="multi", signature="", examples=(0.0,), **spec) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    if signature:
        request.model_spec.signature_name = signature
    set_spec(request.model_spec, **spec)
    if examples is not None:
        request.inputs["examples"].CopyFrom(tf.make_tensor_proto([tiny_example(x) for x in examples], dtype=tf.string))
    return request


def example_input(target, xs, context=None):
    """Fills a tensorflow.serving.Input with examples of feature x (and an optional context)."""
    if context is None:
        lst = target.example_list
    else:
        lst = target.example_list_with_context
        lst.context.features.feature[context[0]].float_list.value.append(context[1])
    for x in xs:
        e = lst.examples.add()
        if x is not None:
            e.features.feature["x"].float_list.value.append(x)


def classify_request(signature="classification", xs=(0.0,), name="multi", **kw):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    if "label" in kw:
        request.model_spec.version_label = kw["label"]
    example_input(request.input, xs, kw.get("context"))
    return request


def regress_request(signature="regression", xs=(0.0,), name="multi", **kw):
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    if "label" in kw:
        request.model_spec.version_label = kw["label"]
    example_input(request.input, xs)
    return request


def multi_request(tasks, xs=(0.0, 1.0), label=None):
    request = inference_pb2.MultiInferenceRequest()
    for name, signature, method in tasks:
        t = request.tasks.add()
        t.model_spec.name = name
        t.model_spec.signature_name = signature
        t.method_name = method
    if label is not None:
        request.tasks[0].model_spec.version_label = label
    example_input(request.input, xs)
    return request


# ============================================================================= Predict
def test_predict_answers_the_latest_version_with_model_spec_and_typed_value_fields(stub):
    response = stub.Predict(predict_request(examples=(0.0, 1.0)), timeout=30)
    assert (response.model_spec.name, response.model_spec.version.value) == ("multi", 2)
    assert response.model_spec.signature_name == "serving_default"  # "" names the default, echoed resolved
    out = response.outputs["click_probability"]
    assert out.dtype == types_pb2.DT_FLOAT and [d.size for d in out.tensor_shape.dim] == [2]
    assert not out.tensor_content  # AsProtoField: the values in float_val, as TF Serving's default
    assert list(out.float_val) == pytest.approx([0.5, sigmoid(3.0)], rel=1e-6)


def test_predict_with_another_dtype_than_the_input_is_the_sessions_invalid_argument(stub):
    request = predict_request(signature="predict_raw", examples=None)
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([0.5], np.float64)))
    code, details = refused(stub.Predict, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("Expects arg[0] to be float but double is provided")


def test_predict_with_a_string_tensor_for_a_float_input_is_invalid_argument(stub):
    request = predict_request(signature="predict_raw", examples=None)
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([b"0.5"], dtype=tf.string))
    assert refused(stub.Predict, request)[1].startswith("Expects arg[0] to be float but string is provided")


def test_predict_with_a_zero_size_batch_is_ok_with_zero_size_outputs(stub):
    request = predict_request(examples=None)
    request.inputs["examples"].CopyFrom(tf.make_tensor_proto(np.array([], dtype=object), dtype=tf.string,
                                                             shape=[0]))
    out = stub.Predict(request, timeout=30).outputs["click_probability"]
    assert [d.size for d in out.tensor_shape.dim] == [0] and len(out.float_val) == 0


def test_predict_on_an_unknown_signature_is_failed_precondition(stub):
    assert refused(stub.Predict, predict_request(signature="nope")) == (
        grpc.StatusCode.FAILED_PRECONDITION, 'Serving signature key "nope" not found.')


def test_predict_on_an_unknown_model_is_not_found(stub):
    assert refused(stub.Predict, predict_request(name="nope")) == (
        grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(nope)")


def test_predict_on_a_version_not_served_is_not_found(stub):
    assert refused(stub.Predict, predict_request(version=9)) == (
        grpc.StatusCode.NOT_FOUND, "Servable not found for request: Specific(multi, 9)")


def test_predict_on_a_served_version_answers_that_version(stub):
    response = stub.Predict(predict_request(version=1, examples=(1.0,)), timeout=30)
    assert response.model_spec.version.value == 1
    assert response.outputs["click_probability"].float_val[0] == pytest.approx(sigmoid(1.0), rel=1e-6)


def test_predict_without_model_spec_is_invalid_argument(stub):
    request = predict_request()
    request.ClearField("model_spec")
    assert refused(stub.Predict, request) == (grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")


def test_predict_with_an_empty_model_name_is_invalid_argument(stub):
    request = predict_request(name="")
    request.model_spec.signature_name = "serving_default"  # model_spec set, its name empty
    assert refused(stub.Predict, request) == (grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec has no name specified.")


def test_predict_with_an_input_alias_not_in_the_signature_is_invalid_argument(stub):
    request = predict_request(signature="predict_raw", examples=None)
    request.inputs["y"].CopyFrom(tf.make_tensor_proto(np.array([0.5], np.float32)))
    code, details = refused(stub.Predict, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details == ("Signature input alias: x(feed name: predict_raw_x:0) not found in request and no default value "
                       "provided. Inputs expected to be in the request {y}, or default input alias set: ")


def test_predict_with_an_extra_input_is_invalid_argument(stub):
    request = predict_request(examples=(0.0,))
    request.inputs["extra"].CopyFrom(tf.make_tensor_proto([b"a"], dtype=tf.string))
    assert refused(stub.Predict, request) == (grpc.StatusCode.INVALID_ARGUMENT, (
        "input size does not match signature: 2!=1 len({examples,extra}) != len({examples}). Sent extra: {extra}. "
        "Missing but required: {}."))


def test_predict_without_inputs_is_invalid_argument(stub):
    assert refused(stub.Predict, predict_request(examples=None)) == (grpc.StatusCode.INVALID_ARGUMENT, (
        "input size does not match signature: 0!=1 len({}) != len({examples}). Sent extra: {}. "
        "Missing but required: {examples}."))


def test_predict_with_an_unknown_output_filter_is_invalid_argument(stub):
    request = predict_request()
    request.output_filter.append("nope")
    assert refused(stub.Predict, request) == (grpc.StatusCode.INVALID_ARGUMENT, (
        "output tensor alias not found in signature: nope Outputs expected to be in the set {click_probability}."))


def test_predict_with_a_repeated_output_filter_is_invalid_argument(stub):
    request = predict_request()
    request.output_filter.extend(["click_probability", "click_probability"])
    assert refused(stub.Predict, request) == (grpc.StatusCode.INVALID_ARGUMENT,
                                              "duplicate output tensor alias: click_probability")


def test_predict_with_an_unparsable_tensor_is_invalid_argument(stub):
    request = predict_request(signature="predict_raw", examples=None)
    request.inputs["x"].CopyFrom(tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_content=b"\0\0\0",
                                                        tensor_shape={"dim": [{"size": 2}]}))
    assert refused(stub.Predict, request) == (grpc.StatusCode.INVALID_ARGUMENT, "tensor parsing error: x")


@pytest.mark.parametrize("label,version,p", [("stable", 1, sigmoid(1.0)), ("canary", 2, sigmoid(3.0))])
def test_predict_with_a_version_label_answers_its_version(stub, label, version, p):
    response = stub.Predict(predict_request(examples=(1.0,), version_label=label), timeout=30)
    assert response.model_spec.version.value == version
    assert response.outputs["click_probability"].float_val[0] == pytest.approx(p, rel=1e-6)


def test_predict_with_an_unknown_version_label_is_invalid_argument(stub):
    assert refused(stub.Predict, predict_request(version_label="beta")) == (
        grpc.StatusCode.INVALID_ARGUMENT, "Unrecognized servable version label: beta")


# ============================================================================= Classify
def test_classify_answers_classes_with_labels_and_scores(stub):
    response = stub.Classify(classify_request(xs=(0.0, 1.0), label="stable"), timeout=30)
    assert (response.model_spec.version.value, response.model_spec.signature_name) == (1, "classification")
    rows = [[(c.label, c.score) for c in cl.classes] for cl in response.result.classifications]
    assert [[label for label, _ in row] for row in rows] == [["0", "1"], ["0", "1"]]
    assert [row[1][1] for row in rows] == pytest.approx([0.5, sigmoid(1.0)], rel=1e-6)


def test_classify_with_a_context_merges_it_into_every_example(stub):
    response = stub.Classify(classify_request(xs=(None, None), context=("x", 1.0), label="stable"), timeout=30)
    assert [cl.classes[1].score for cl in response.result.classifications] == pytest.approx([sigmoid(1.0)] * 2)


def test_classify_without_examples_is_input_is_empty(stub):
    assert refused(stub.Classify, classify_request(xs=())) == (grpc.StatusCode.INVALID_ARGUMENT, "Input is empty.")


def test_classify_without_an_input_kind_is_input_is_empty(stub):
    request = classify_request(xs=())
    request.ClearField("input")
    assert refused(stub.Classify, request) == (grpc.StatusCode.INVALID_ARGUMENT, "Input is empty.")


def test_classify_on_an_unknown_signature_is_invalid_argument(stub):
    assert refused(stub.Classify, classify_request(signature="nope")) == (
        grpc.StatusCode.INVALID_ARGUMENT, "No signature was found with the name: nope")


def test_classify_on_a_predict_signature_without_inputs_is_invalid_argument(stub):
    code, details = refused(stub.Classify, classify_request(signature=""))  # "" is serving_default
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith('No classification inputs found in SignatureDef: inputs {\n  key: "examples"')


def test_classify_on_a_regression_signature_lacks_classes_and_scores(stub):
    code, details = refused(stub.Classify, classify_request(signature="regression"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith('Expected classification signature outputs to contain at least one of "classes" or '
                              '"scores". Signature was: ')


def test_classify_without_model_spec_is_invalid_argument(stub):
    request = classify_request()
    request.ClearField("model_spec")
    assert refused(stub.Classify, request) == (grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")


# ============================================================================= Regress
def test_regress_answers_one_value_per_example_of_the_labelled_version(stub):
    response = stub.Regress(regress_request(xs=(0.0, 1.0), label="canary"), timeout=30)
    assert (response.model_spec.version.value, response.model_spec.signature_name) == (2, "regression")
    assert [r.value for r in response.result.regressions] == pytest.approx([0.5, sigmoid(3.0)], rel=1e-6)


def test_regress_on_a_classification_signature_is_invalid_argument(stub):
    assert refused(stub.Regress, regress_request(signature="classification")) == (
        grpc.StatusCode.INVALID_ARGUMENT, "Expected one output Tensor.")


def test_regress_without_examples_is_input_is_empty(stub):
    assert refused(stub.Regress, regress_request(xs=())) == (grpc.StatusCode.INVALID_ARGUMENT, "Input is empty.")


def test_regress_on_an_unknown_signature_is_invalid_argument(stub):
    assert refused(stub.Regress, regress_request(signature="nope")) == (
        grpc.StatusCode.INVALID_ARGUMENT, "No signature was found with the name: nope")


# ============================================================================= MultiInference
def test_multi_inference_runs_classify_and_regress_over_one_input(stub):
    request = multi_request([("multi", "classification", CLASSIFY), ("multi", "regression", REGRESS)], label="canary")
    response = stub.MultiInference(request, timeout=30)
    cls, reg = response.results
    assert [(r.model_spec.name, r.model_spec.version.value, r.model_spec.signature_name) for r in response.results] == [
        ("multi", 2, "classification"), ("multi", 2, "regression")]
    assert [c.classes[1].score for c in cls.classification_result.classifications] == pytest.approx(
        [0.5, sigmoid(3.0)], rel=1e-6)
    assert [r.value for r in reg.regression_result.regressions] == pytest.approx([0.5, sigmoid(3.0)], rel=1e-6)


def test_multi_inference_feeds_signatures_with_different_input_tensors(stub):
    # TF Serving 2.19 feeds the examples to every task's input tensor (since 2.4; 1.x refused
    # "Input tensor must be the same for all Signatures.").
    request = multi_request([("separate", "regression", REGRESS), ("separate", "regression_half", REGRESS)])
    first, half = stub.MultiInference(request, timeout=30).results
    assert [r.value for r in first.regression_result.regressions] == pytest.approx([0.5, sigmoid(1.0)], rel=1e-6)
    assert [r.value for r in half.regression_result.regressions] == pytest.approx([0.25, sigmoid(1.0) / 2], rel=1e-6)


def test_multi_inference_over_two_models_is_invalid_argument(stub):
    request = multi_request([("multi", "classification", CLASSIFY), ("separate", "regression", REGRESS)])
    assert refused(stub.MultiInference, request) == (
        grpc.StatusCode.INVALID_ARGUMENT, "All ModelSpecs in a MultiInferenceRequest must access the same model name.")


def test_multi_inference_with_a_signature_twice_is_invalid_argument(stub):
    request = multi_request([("multi", "regression", REGRESS), ("multi", "regression", REGRESS)])
    assert refused(stub.MultiInference, request) == (
        grpc.StatusCode.INVALID_ARGUMENT, "Duplicate evaluation of signature: regression")


def test_multi_inference_with_the_predict_method_is_unimplemented(stub):
    request = multi_request([("multi", "classification", CLASSIFY), ("multi", "serving_default", PREDICT)])
    assert refused(stub.MultiInference, request) == (
        grpc.StatusCode.UNIMPLEMENTED, "Unsupported signature method_name: tensorflow/serving/predict")


def test_multi_inference_on_an_unknown_signature_is_invalid_argument(stub):
    request = multi_request([("multi", "nope", REGRESS)])
    assert refused(stub.MultiInference, request) == (
        grpc.StatusCode.INVALID_ARGUMENT, "Requested signature not found in model graph: nope")


def test_multi_inference_with_a_task_without_model_name_is_invalid_argument(stub):
    request = multi_request([("multi", "classification", CLASSIFY), ("", "regression", REGRESS)])
    assert refused(stub.MultiInference, request) == (
        grpc.StatusCode.INVALID_ARGUMENT, "Found ModelSpec with an empty model name.")


def test_multi_inference_without_tasks_is_invalid_argument(stub):
    assert refused(stub.MultiInference, multi_request([])) == (
        grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec has no name specified.")


def test_multi_inference_without_examples_is_input_is_empty(stub):
    request = multi_request([("multi", "classification", CLASSIFY)], xs=())
    assert refused(stub.MultiInference, request) == (grpc.StatusCode.INVALID_ARGUMENT, "Input is empty.")


# ============================================================================= GetModelMetadata
def metadata_request(name="multi", fields=("signature_def",), **spec):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = name
    set_spec(request.model_spec, **spec)
    request.metadata_field.extend(fields)
    return request


def test_metadata_lists_every_signature_def_including_the_init_op(stub):
    response = stub.GetModelMetadata(metadata_request(version_label="stable"), timeout=30)
    assert (response.model_spec.name, response.model_spec.version.value) == ("multi", 1)
    assert response.model_spec.signature_name == ""
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(sig_map)
    assert set(sig_map.signature_def) == {"__saved_model_init_op", "serving_default", "predict_raw", "classification",
                                          "regression", "regression_half"}
    assert sig_map.signature_def["classification"].method_name == CLASSIFY


def test_metadata_without_a_metadata_field_is_invalid_argument(stub):
    assert refused(stub.GetModelMetadata, metadata_request(fields=())) == (
        grpc.StatusCode.INVALID_ARGUMENT, "GetModelMetadataRequest must specify at least one metadata_field")


def test_metadata_with_an_unsupported_field_is_invalid_argument(stub):
    assert refused(stub.GetModelMetadata, metadata_request(fields=("signature_def", "graph"))) == (
        grpc.StatusCode.INVALID_ARGUMENT, "Metadata field graph is not supported")


def test_metadata_of_an_unknown_model_is_not_found(stub):
    assert refused(stub.GetModelMetadata, metadata_request(name="nope")) == (
        grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(nope)")


def test_metadata_without_model_spec_is_invalid_argument(stub):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    assert refused(stub.GetModelMetadata, request) == (grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")


# ============================================================================= GetModelStatus
def status_request(name="multi", **spec):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    set_spec(request.model_spec, **spec)
    return request


def test_status_lists_every_version_highest_first(model_stub):
    response = model_stub.GetModelStatus(status_request(), timeout=30)
    available = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert [(s.version, s.state, s.status.error_code) for s in response.model_version_status] == [
        (2, available, 0), (1, available, 0)]


def test_status_of_one_version(model_stub):
    response = model_stub.GetModelStatus(status_request(version=1), timeout=30)
    assert [s.version for s in response.model_version_status] == [1]


def test_status_ignores_the_version_label_as_tf_serving(model_stub):
    response = model_stub.GetModelStatus(status_request(version_label="stable"), timeout=30)
    assert [s.version for s in response.model_version_status] == [2, 1]


def test_status_of_an_unknown_version_is_not_found(model_stub):
    assert refused(model_stub.GetModelStatus, status_request(version=9)) == (
        grpc.StatusCode.NOT_FOUND, "Could not find version 9 of model multi")


def test_status_of_an_unknown_model_is_not_found(model_stub):
    assert refused(model_stub.GetModelStatus, status_request(name="nope")) == (
        grpc.StatusCode.NOT_FOUND, "Could not find any versions of model nope")


def test_status_without_model_spec_is_invalid_argument(model_stub):
    assert refused(model_stub.GetModelStatus, get_model_status_pb2.GetModelStatusRequest()) == (
        grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
