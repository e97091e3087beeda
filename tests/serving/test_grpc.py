"""gRPC round trips with the official tensorflow_serving stubs (via serving.client.GrpcClient)."""
import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2

from serving.client import GrpcClient, ServingClientError
from tests.fakes.serving_models import tiny_example


@pytest.fixture
def client(server):
    c = GrpcClient(f"127.0.0.1:{server.grpc_port}", "tiny")
    yield c
    c.close()


def test_predict_with_official_stub(server, client):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "tiny"
    request.inputs["examples"].CopyFrom(tf.make_tensor_proto([tiny_example(0.0), tiny_example(1.0)], dtype=tf.string))
    response = client.prediction.Predict(request, timeout=10)
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["click_probability"]), [0.5, 0.7310586], rtol=1e-6)


def test_predict_raw_and_output_filter(client):
    out = client.predict({"x": np.array([0.0], np.float32)}, signature="predict_raw", output_filter=["click_probability"])
    assert list(out) == ["click_probability"] and out["click_probability"][0] == pytest.approx(0.5)


def test_metadata_and_status(client):
    meta = client.metadata()
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    meta.metadata["signature_def"].Unpack(sig_map)
    assert set(sig_map.signature_def) == {"serving_default", "predict_raw", "__saved_model_init_op"}
    status = client.status()
    assert [(s.version, s.state) for s in status.model_version_status] == [(1, 30)]  # AVAILABLE


@pytest.mark.parametrize("call,code", [
    (lambda c: GrpcClient(c._target, "nope").predict_examples([tiny_example(1.0)]), grpc.StatusCode.NOT_FOUND),
    (lambda c: c.predict_examples([tiny_example(1.0)], version=9), grpc.StatusCode.NOT_FOUND),
    (lambda c: c.predict({"x": np.array(["a"])}, signature="predict_raw"), grpc.StatusCode.INVALID_ARGUMENT),
    (lambda c: c.predict({"y": np.array([1.0], np.float32)}, signature="predict_raw"), grpc.StatusCode.INVALID_ARGUMENT),
    (lambda c: c.predict_examples([b"garbage"]), grpc.StatusCode.INVALID_ARGUMENT),
    (lambda c: c.predict_examples([tiny_example(1.0)] * 9), grpc.StatusCode.INVALID_ARGUMENT),
    (lambda c: c.regress([tiny_example(1.0)], signature="serving_default"), grpc.StatusCode.INVALID_ARGUMENT),
])
def test_bad_requests_get_status_codes_and_server_keeps_serving(server, client, call, code):
    client._target = f"127.0.0.1:{server.grpc_port}"
    with pytest.raises(ServingClientError) as e:
        call(client)
    assert e.value.code == code, e.value.message
    assert client.predict_examples([tiny_example(0.0)])["click_probability"][0] == pytest.approx(0.5)


@pytest.mark.parametrize("value,field", [
    (np.array([0.5, 1.5], np.float32), "float_val"),
    (np.array([[1.0], [2.0]], np.float64), "double_val"),
    (np.array([3, -4], np.int32), "int_val"),
    (np.array([2 ** 40], np.int64), "int64_val"),
    (np.array([True, False]), "bool_val"),
    (np.array([b"a", b"bc"], dtype=object), "string_val"),
    (np.array(7.0, np.float32), "float_val"),
])
def test_response_tensors_carry_values_in_the_typed_field_as_tf_serving(value, field):
    from serving.grpc_service import tensor_proto

    proto = tensor_proto(value)
    assert not proto.tensor_content and len(getattr(proto, field)) == value.size
    assert [d.size for d in proto.tensor_shape.dim] == list(value.shape)
    back = tf.make_ndarray(proto)
    assert back.dtype == value.dtype and back.tolist() == value.tolist()


def test_response_tensor_of_another_dtype_round_trips_through_tensorflows_encoding():
    from serving.grpc_service import tensor_proto

    value = np.array([0.5, 2.0], np.float16)
    np.testing.assert_array_equal(tf.make_ndarray(tensor_proto(value)), value)
