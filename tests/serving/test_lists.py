"""List features (issue 13) through export and serving.

The export of ``exported_list_run`` (``tests/fakes/serving_models.py``: the pipeline's TF
Transform graph and rankers over a sequence ``hist_items`` sharing ``item_id``'s table and
weighted tags ``item_tags`` + ``item_tag_weights``) is checked for what
``serving/signatures.py`` documents: ``serving_default`` parses ``bytes_list`` /
``float_list`` features of any length; ``predict_raw`` takes the padded representation
(``""`` dropped wherever it stands, weights aligned, their padded entries ignored);
REST (row and columnar) accepts padded lists and rejects ragged ones with TF Serving's
400; gRPC takes 2-D ``DT_STRING`` tensors; warmup replays a ``predict_raw`` request; the
gate's skew check passes; a student that skips features is served without their columns.
"""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from models import model_io
from core.feature_specs import encode_raw_example, serving_feature_spec
from core.features import raw_columns_for, raw_feature_columns
from serving.api import ServingApi
from serving.model_store import ModelStore
from serving.raw_examples import pad_lists, read_split, to_columns, to_instances
from serving.rest import RestHandler
from serving.session_model import SessionModel
from serving.signatures import padded_to_sparse, raw_input_columns
from serving.status import INVALID_ARGUMENT, RequestError
from serving.warmup import read_warmup, replay_warmup
from tests.fakes.serving_models import LIST_COLUMNS, STUDENT_FEATURES

KEYS = ("click_probability", "conversion_probability")


@pytest.fixture(scope="module")
def rows(list_run):
    """Raw test rows (typed), with empty lists and sequences longer than max_length among them."""
    cfg = list_run.cfg
    records = read_split(cfg, *list_run.run_dir.raw_input(cfg), "test", 64)
    lengths = [len(r["features"]["hist_items"]) for r in records]
    assert 0 in lengths and max(lengths) > cfg.data.lists[0].max_length  # the data covers both
    return records


@pytest.fixture(scope="module")
def teacher(list_run):
    model = SessionModel(list_run.teacher)
    yield model
    model.close()


@pytest.fixture(scope="module")
def api(list_run):
    store = ModelStore(list_run.base, poll_seconds=60)
    store.poll_once()  # notes the versions (START)
    store.poll_once()  # unchanged since: loads them (warmup included)
    yield ServingApi(store, max_batch_size=128)
    store.stop()


@pytest.fixture(scope="module")
def handler(api):
    return RestHandler(api)


def served(model, cfg, records) -> dict:
    return model.run("serving_default", {"examples": [encode_raw_example(cfg, r["features"]) for r in records]})


def assert_same(a: dict, b: dict, atol=1e-6):
    for k in KEYS:
        np.testing.assert_allclose(np.asarray(a[k], np.float64), np.asarray(b[k], np.float64), atol=atol)


def post(handler, body, model="ranker"):
    return handler.dispatch("POST", f"/v1/models/{model}:predict", json.dumps(body).encode())


def error_of(response) -> str:
    status, body = response
    assert status == 400, body
    assert list(body) == ["error"]
    return body["error"]


# ----------------------------------------------------------------------------- the SavedModel
def _spec(info):
    return info.dtype, [d.size for d in info.tensor_shape.dim]


def test_predict_raw_takes_padded_2d_lists_and_serving_default_serialized_examples(list_run):
    from tensorflow.core.framework import types_pb2 as t
    from tensorflow.python.tools import saved_model_cli

    cfg = list_run.cfg
    sigs = saved_model_cli.get_signature_def_map(list_run.teacher, "serve")
    assert {k: _spec(v) for k, v in sigs["serving_default"].inputs.items()} == {"examples": (t.DT_STRING, [-1])}
    expected = {c: (t.DT_STRING, [-1]) for c in cfg.data.categorical}
    expected.update({c: (t.DT_FLOAT, [-1]) for c in cfg.data.numeric})
    expected.update({"hist_items": (t.DT_STRING, [-1, -1]), "item_tags": (t.DT_STRING, [-1, -1]),
                     "item_tag_weights": (t.DT_FLOAT, [-1, -1])})
    assert {k: _spec(v) for k, v in sigs["predict_raw"].inputs.items()} == expected
    assert set(raw_input_columns(list_run.teacher)) == set(raw_feature_columns(cfg))


def test_saved_model_round_trip_in_tf2_and_the_session_loader_agree(list_run, rows, teacher):
    cfg = list_run.cfg
    loaded = tf.saved_model.load(list_run.teacher)
    cols = to_columns(cfg, rows[:8])
    spec = loaded.signatures["predict_raw"].structured_input_signature[1]
    tf2 = loaded.signatures["predict_raw"](**{k: tf.constant(v, spec[k].dtype) for k, v in cols.items()})
    assert_same({k: v.numpy() for k, v in tf2.items()}, teacher.run("predict_raw", cols))
    examples = tf.constant([encode_raw_example(cfg, r["features"]) for r in rows[:8]])
    assert_same({k: v.numpy() for k, v in loaded.signatures["serving_default"](examples=examples).items()},
                served(teacher, cfg, rows[:8]))


def test_predict_raw_on_padded_lists_equals_serving_default(list_run, rows, teacher):
    cfg = list_run.cfg
    expected = served(teacher, cfg, rows)
    cols = to_columns(cfg, rows)  # truncated as the transform truncates, padded to max_length
    assert {len(v) for v in cols["hist_items"]} == {6} and {len(v) for v in cols["item_tags"]} == {4}
    assert {len(v) for v in cols["item_tag_weights"]} == {4} and "" in sum(cols["hist_items"], [])
    assert_same(teacher.run("predict_raw", cols), expected)
    wide = to_columns(cfg, rows, width="batch")  # untruncated, padded to the longest list of the batch
    assert {len(v) for v in wide["hist_items"]} == {max(len(r["features"]["hist_items"]) for r in rows)} != {6}
    assert_same(teacher.run("predict_raw", wide), expected)


def test_client_side_truncation_keeps_what_the_transform_keeps(list_run):
    from serving.raw_examples import truncated

    hist, tags = list_run.cfg.data.lists  # a recent_last sequence (max_length 6), a multi-valued list (4)
    values = [f"v{i}" for i in range(9)]
    assert truncated(values, hist) == values[-6:] and truncated(values, tags) == values[:4]
    assert truncated(values[:2], hist) == values[:2]


def _repadded(cols: dict, front: int, extra: int) -> dict:
    """Every list with ``front`` "" before its values, one "" after its first value and
    ``extra`` more at the end, its weights moved along; the weights at the "" positions are
    garbage (99.0), which must be ignored."""
    out = dict(cols)
    weighted = {"item_tags": "item_tag_weights"}
    for name in LIST_COLUMNS:
        new_values, new_weights = [], []
        for i, values in enumerate(cols[name]):
            kept = [j for j, v in enumerate(values) if v != ""]
            real = [values[j] for j in kept]
            w = [cols[weighted[name]][i][j] for j in kept] if name in weighted else [1.0] * len(real)
            new_values.append([""] * front + real[:1] + [""] + real[1:] + [""] * extra)
            new_weights.append([99.0] * front + w[:1] + [99.0] + w[1:] + [99.0] * extra)
        width = max(len(v) for v in new_values)
        out[name] = pad_lists(new_values, "", width)
        if name in weighted:
            out[weighted[name]] = pad_lists(new_weights, 99.0, width)
    return out


def test_empty_strings_anywhere_are_dropped_and_their_weights_ignored(list_run, rows, teacher):
    cols = to_columns(list_run.cfg, rows)
    reference = teacher.run("predict_raw", cols)
    assert_same(teacher.run("predict_raw", _repadded(cols, front=2, extra=3)), reference)


def test_a_batch_of_only_empty_lists_all_padding_or_width_zero(list_run, rows, teacher):
    cfg = list_run.cfg
    empty = [{"features": {**r["features"], "hist_items": [], "item_tags": [], "item_tag_weights": []}} for r in rows[:3]]
    expected = served(teacher, cfg, empty)
    cols = to_columns(cfg, empty)
    assert cols["hist_items"] == [[""] * 6] * 3 and cols["item_tag_weights"] == [[0.0] * 4] * 3
    assert_same(teacher.run("predict_raw", cols), expected)
    zero = to_columns(cfg, empty, width="batch")
    assert zero["hist_items"] == [[], [], []]
    assert_same(teacher.run("predict_raw", zero), expected)


def _parsed(lists: list, dtype=tf.string):
    feature = (lambda v: tf.train.Feature(bytes_list=tf.train.BytesList(value=[x.encode() for x in v]))) \
        if dtype == tf.string else (lambda v: tf.train.Feature(float_list=tf.train.FloatList(value=v)))
    examples = [tf.train.Example(features=tf.train.Features(feature={"l": feature(v)})).SerializeToString()
                for v in lists]
    return tf.io.parse_example(tf.constant(examples, tf.string), {"l": tf.io.VarLenFeature(dtype)})["l"]


@pytest.mark.parametrize("lists", [
    [["a", "b", "c"], [], ["d"]],
    [[], []],
    [["x"]],
    [["a"] * 7, ["b", "c"]],
], ids=["mixed", "all-empty", "one", "long"])
def test_padded_to_sparse_gives_what_parsing_a_var_len_feature_gives(lists):
    expected = _parsed(lists)
    sparse, _ = padded_to_sparse(tf.constant(pad_lists(lists, ""), tf.string, shape=[len(lists), max(map(len, lists))]))
    np.testing.assert_array_equal(sparse.indices.numpy(), expected.indices.numpy())
    np.testing.assert_array_equal(sparse.values.numpy(), expected.values.numpy())
    np.testing.assert_array_equal(sparse.dense_shape.numpy(), expected.dense_shape.numpy())


def test_padded_to_sparse_reindexes_inner_padding_and_keeps_zero_weights():
    values = tf.constant([["", "a", "", "b"], ["c", "", "", ""], ["", "", "", ""]])
    weights = tf.constant([[7.0, 0.0, 7.0, 2.5], [0.0, 7.0, 7.0, 7.0], [7.0, 7.0, 7.0, 7.0]])
    sparse, w = padded_to_sparse(values, weights, "l", "w")
    assert sparse.indices.numpy().tolist() == [[0, 0], [0, 1], [1, 0]]
    assert sparse.values.numpy().tolist() == [b"a", b"b", b"c"]
    assert sparse.dense_shape.numpy().tolist() == [3, 2]
    assert w.values.numpy().tolist() == [0.0, 2.5, 0.0]  # a weight of 0.0 is a weight, not padding
    assert w.indices.numpy().tolist() == sparse.indices.numpy().tolist()
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"weight column \\?'w\\?' must have the shape"):
        padded_to_sparse(values, weights[:, :3], "l", "w")


def test_padded_to_sparse_of_an_empty_batch():
    sparse, w = padded_to_sparse(tf.zeros([0, 3], tf.string), tf.zeros([0, 3]))
    assert sparse.dense_shape.numpy().tolist() == [0, 0] and w.values.shape == (0,)


def test_an_absent_list_feature_is_the_empty_list(list_run, rows, teacher):
    from tensorflow.core.example import example_pb2

    cfg = list_run.cfg
    typed = {**rows[0]["features"], "hist_items": [], "item_tags": [], "item_tag_weights": []}
    with_empty = encode_raw_example(cfg, typed)
    absent = example_pb2.Example.FromString(with_empty)
    for c in ("hist_items", "item_tags", "item_tag_weights"):
        del absent.features.feature[c]
    a = teacher.run("serving_default", {"examples": [with_empty]})
    b = teacher.run("serving_default", {"examples": [absent.SerializeToString()]})
    assert_same(a, b, atol=0)


def test_a_weight_count_that_differs_from_its_list_is_400(list_run, rows, api):
    cfg = list_run.cfg
    typed = next(r["features"] for r in rows if r["features"]["item_tags"])
    bad = encode_raw_example(cfg, {**typed, "item_tag_weights": typed["item_tag_weights"] + [1.0]})
    with pytest.raises(RequestError) as e:
        api.predict("ranker", None, "serving_default", {"examples": [bad]})
    assert e.value.status == INVALID_ARGUMENT
    assert "feature 'item_tag_weights' must hold one weight per value of the list feature 'item_tags'" in e.value.message
    cols = to_columns(cfg, rows[:2])
    cols["item_tag_weights"] = [w + [1.0] for w in cols["item_tag_weights"]]
    with pytest.raises(RequestError) as e:
        api.predict("ranker", None, "predict_raw", cols)
    assert e.value.status == INVALID_ARGUMENT and "must have the shape of its list 'item_tags'" in e.value.message


# ----------------------------------------------------------------------------- REST (row and columnar JSON)
def test_rest_row_and_columnar_requests_with_padded_lists(list_run, rows, handler, teacher):
    cfg = list_run.cfg
    expected = served(teacher, cfg, rows)
    status, body = post(handler, {"signature_name": "predict_raw", "instances": to_instances(cfg, rows)})
    assert status == 200, body
    assert_same({k: [p[k] for p in body["predictions"]] for k in KEYS}, expected)
    status, body = post(handler, {"signature_name": "predict_raw", "inputs": to_columns(cfg, rows)})
    assert status == 200, body
    assert_same(body["outputs"], expected)


def _instances(cfg, rows, n=2):
    """Row-format instances of ``n`` rows whose only difference in shape is ``hist_items``
    (2 values in instance 0, 1 in instance 1): unpadded, i.e. ragged."""
    out = to_instances(cfg, rows[:n])
    out[0]["hist_items"], out[1]["hist_items"] = ["i1", "i2"], ["i3"]
    return out


HINT = ("(input 'hist_items': ragged nested lists; every instance must have the same shape (TF Serving's JSON "
        "tensors are dense: send a list feature padded with \"\" to one width))")


def test_rest_row_request_with_ragged_lists_is_400_with_tf_servings_message(list_run, rows, handler):
    message = error_of(post(handler, {"signature_name": "predict_raw", "instances": _instances(list_run.cfg, rows)}))
    # tensorflow_serving/util/json_tensor.cc: FillTensorMapFromInstancesList + AddInstanceItem
    assert message == ("Failed to process element: 1 key: hist_items of 'instances' list. Error: INVALID_ARGUMENT: "
                       "Expecting tensor size: 2 but got: 1 " + HINT)


def test_rest_columnar_request_with_ragged_lists_is_400_with_tf_servings_message(list_run, rows, handler):
    cols = to_columns(list_run.cfg, rows[:2])
    cols["hist_items"] = [["i1", "i2"], ["i3"]]
    message = error_of(post(handler, {"signature_name": "predict_raw", "inputs": cols}))
    # json_tensor.cc: FillTensorProto, the second row's list against the first's length
    assert message == "Encountered list at unexpected size: 1 at level: 1 expected size: 2 " + HINT


@pytest.mark.parametrize("column,value,expected", [
    ("hist_items", ["i1", 5], "JSON Value: 5 Type: Number is not of expected type: string"),
    ("hist_items", ["i1", True], "JSON Value: true Type: True is not of expected type: string"),
    ("item_tag_weights", ["heavy"], "JSON Value: \"heavy\" Type: String is not of expected type: float"),
], ids=["number-in-a-string-list", "boolean", "string-weight"])
def test_rest_list_of_the_wrong_dtype_is_400_with_tf_servings_message(list_run, rows, handler, column, value, expected):
    instances = to_instances(list_run.cfg, rows[:1])
    instances[0][column] = value
    if column == "item_tag_weights":
        instances[0]["item_tags"] = ["t1"]  # one tag for the one weight
    message = error_of(post(handler, {"signature_name": "predict_raw", "instances": instances}))
    assert message == f"Failed to process element: 0 key: {column} of 'instances' list. Error: INVALID_ARGUMENT: {expected}"


def test_rest_list_sent_as_a_flat_value_per_row_is_a_rank_400(list_run, rows, handler):
    cols = to_columns(list_run.cfg, rows[:2])
    cols["hist_items"] = ["i1", "i2"]  # one string per row: rank 1, the signature takes [batch, width]
    message = error_of(post(handler, {"signature_name": "predict_raw", "inputs": cols}))
    assert "input 'hist_items': expected rank 2" in message


def test_rest_composite_list_representation_is_400(list_run, rows, handler):
    cols = to_columns(list_run.cfg, rows[:2])
    cols["hist_items"] = {"values": ["i1", "i2", "i3"], "row_splits": [0, 2, 3]}
    assert "unexpected JSON object" in error_of(post(handler, {"signature_name": "predict_raw", "inputs": cols}))


def test_rest_classify_with_json_lists_equals_serving_default(list_run, rows, handler, teacher):
    cfg = list_run.cfg
    examples = [{c: r["features"][c] for c in raw_feature_columns(cfg)} for r in rows]
    assert any(e["item_tags"] == [] for e in examples)  # an empty list is a feature with no kind set
    status, body = handler.dispatch("POST", "/v1/models/ranker:classify", json.dumps(
        {"signature_name": "classification", "examples": examples}).encode())
    assert status == 200, body
    np.testing.assert_allclose([r[1][1] for r in body["results"]], served(teacher, cfg, rows)["click_probability"],
                               atol=1e-6)


# ----------------------------------------------------------------------------- a real server: REST + gRPC clients
@pytest.fixture(scope="module")
def server(list_run):
    from serving.server import ModelServer

    srv = ModelServer(list_run.base, rest_port=0, grpc_port=0, poll_seconds=0.2, max_batch_size=512).start()
    assert srv.store.wait_for_version("ranker", 1, timeout=60)  # after its warmup replay
    assert srv.store.wait_for_version("student", 1, timeout=60)
    yield srv
    srv.stop()


def test_rest_and_grpc_clients_send_padded_lists(list_run, rows, server, teacher):
    from serving.client import GrpcClient, RestClient

    cfg = list_run.cfg
    expected = served(teacher, cfg, rows)
    rest = RestClient(f"http://127.0.0.1:{server.rest_port}", "ranker")
    grpc_client = GrpcClient(f"127.0.0.1:{server.grpc_port}", "ranker")
    try:
        for columnar in (False, True):
            out = rest.predict_raw(cfg, rows, columnar=columnar)
            assert_same({k: [p[k] for p in out] for k in KEYS}, expected)
        assert_same(grpc_client.predict_raw(cfg, rows), expected)
        dtypes = grpc_client.raw_inputs()
        assert dtypes["hist_items"] == tf.string and dtypes["item_tag_weights"] == tf.float32
    finally:
        rest.close()
        grpc_client.close()


def test_grpc_2d_string_tensor_with_the_official_stub(list_run, rows, server, teacher):
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
    import grpc

    cfg = list_run.cfg
    cols = to_columns(cfg, rows[:4])
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = "ranker", "predict_raw"
    spec = serving_feature_spec(cfg)
    for k, v in cols.items():
        request.inputs[k].CopyFrom(tf.make_tensor_proto(np.asarray(v, dtype=object if spec[k].dtype == tf.string
                                                                   else np.float32), dtype=spec[k].dtype))
    assert [d.size for d in request.inputs["hist_items"].tensor_shape.dim] == [4, len(cols["hist_items"][0])]
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
    assert_same({k: tf.make_ndarray(response.outputs[k]) for k in KEYS}, served(teacher, cfg, rows[:4]))


@pytest.mark.parametrize("change", ["flat-values", "variant", "floats", "three-dims"])
def test_grpc_ragged_or_mistyped_list_tensors_are_invalid_argument(list_run, rows, server, change):
    import grpc

    from serving.client import GrpcClient, ServingClientError
    from serving.warmup import tensor_proto

    cfg = list_run.cfg
    client = GrpcClient(f"127.0.0.1:{server.grpc_port}", "ranker")
    dtypes = client.raw_inputs()
    inputs = {k: tensor_proto(v, dtypes[k]) for k, v in to_columns(cfg, rows[:3]).items()}
    if change == "flat-values":  # a ragged batch sent as its values (rank 1): not the padded representation
        inputs["hist_items"] = tf.make_tensor_proto(["i1", "i2", "i3"], dtype=tf.string)
    elif change == "variant":  # a composite (e.g. ragged) tensor: DT_VARIANT, which used to escape as a 500
        from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

        inputs["hist_items"] = tensor_pb2.TensorProto(dtype=types_pb2.DT_VARIANT, tensor_shape=tensor_shape_pb2.
                                                      TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=3)]))
    elif change == "floats":
        inputs["hist_items"] = tf.make_tensor_proto(np.zeros([3, 2], np.float32))
    else:
        inputs["hist_items"] = tf.make_tensor_proto(np.full([3, 2, 1], "i1", dtype=object), dtype=tf.string)
    try:
        with pytest.raises(ServingClientError) as e:
            client.predict(inputs, signature="predict_raw")
        assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT and "hist_items" in e.value.message
        assert client.predict_raw(cfg, rows[:2])["click_probability"].shape == (2,)  # still serving
    finally:
        client.close()


def test_client_command_line_scores_rows_through_predict_raw(list_run, server, capsys):
    from serving.client import main

    for target in (["--rest", f"http://127.0.0.1:{server.rest_port}"], ["--grpc", f"127.0.0.1:{server.grpc_port}"]):
        assert main(target + ["--model", "ranker", "--run-dir", list_run.run_dir.root, "--rows", "3",
                              "--signature", "predict_raw", "--columnar"]) == 0
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert len(lines) == 3 and all(0.0 < line["click_probability"] < 1.0 for line in lines)


# ----------------------------------------------------------------------------- warmup and the gate
def test_warmup_has_a_predict_raw_request_with_2d_string_tensors_and_replays(list_run, teacher):
    logs = read_warmup(list_run.teacher)
    assert len(logs) == list_run.cfg.export.warmup_examples + 1
    assert {log.predict_log.request.model_spec.signature_name for log in logs[:-1]} == {"serving_default"}
    raw = logs[-1].predict_log.request
    assert raw.model_spec.signature_name == "predict_raw"
    hist = raw.inputs["hist_items"]
    assert hist.dtype == tf.string.as_datatype_enum and len(hist.tensor_shape.dim) == 2
    assert hist.tensor_shape.dim[0].size == list_run.cfg.export.warmup_examples
    assert replay_warmup(teacher, list_run.teacher) == len(logs)


def test_the_gate_blessed_the_list_model_on_every_skew_comparison(list_run):
    blessing = json.load(open(os.path.join(list_run.teacher, "BLESSED")))
    skew = blessing["checks"]["skew"]
    assert skew["max_abs_diff"] <= 1e-5 and skew["predict_raw_max_abs_diff"] <= 1e-5
    assert skew["tfrecord_rows_matched"] > 0 and skew["tfrecord_max_abs_diff"] <= 1e-5
    assert blessing["checks"]["warmup"]["requests"] == list_run.cfg.export.warmup_examples + 1


def test_the_skew_check_on_lists_catches_a_different_model(list_run, rows, teacher):
    import tensorflow_transform as tft

    from core.errors import GateFailedError
    from models.builder import build_ranker
    from models.model_io import load_feature_info
    from serving import gate

    cfg = list_run.cfg
    info = load_feature_info(list_run.run_dir.feature_info_file)
    layer = tft.TFTransformOutput(list_run.run_dir.transform_output_dir).transform_features_layer()
    import tf_keras

    same = tf_keras.models.load_model(model_io.serving_model_dir(list_run.run_dir.model_dir("teacher")))
    ok = gate.check_skew(cfg, teacher, layer, same, info, rows, None)
    assert ok["max_abs_diff"] <= 1e-5 and ok["predict_raw_max_abs_diff"] <= 1e-5
    other = build_ranker(cfg.model, info, cfg.data.tasks, cfg.data.funnel, seed=77).serving_model()
    with pytest.raises(GateFailedError, match=r"gate check 'skew' failed: serving_default vs Keras model"):
        gate.check_skew(cfg, teacher, layer, other, info, rows, None)


# ----------------------------------------------------------------------------- a student reading a subset
def test_student_export_takes_only_the_columns_its_features_need(list_run):
    cfg = list_run.cfg
    columns = raw_input_columns(list_run.student)
    assert set(columns) == set(raw_columns_for(cfg, STUDENT_FEATURES))
    assert {"item_tags", "item_tag_weights", "item_id"} <= set(columns)
    assert not {"hist_items", "hour", "item_category", "user_activity"} & set(columns)
    blessing = json.load(open(os.path.join(list_run.student, "BLESSED")))
    assert blessing["checks"]["skew"]["max_abs_diff"] <= 1e-5 and blessing["checks"]["skew"]["tfrecord_rows_matched"] > 0


def test_the_transform_layer_drops_the_outputs_of_absent_columns(list_run, rows):
    import tensorflow_transform as tft

    from serving.raw_examples import to_tensors

    cfg = list_run.cfg
    layer = tft.TFTransformOutput(list_run.run_dir.transform_output_dir).transform_features_layer()
    full = layer(to_tensors(cfg, rows))
    part = layer(to_tensors(cfg, rows, raw_columns_for(cfg, STUDENT_FEATURES)))
    assert "hist_items" in full and "hist_items" not in part and "hour" not in part
    for k, v in part.items():
        np.testing.assert_array_equal(v.numpy(), full[k].numpy())


def test_a_client_of_the_student_sends_no_skipped_column(list_run, rows, handler, api):
    cfg = list_run.cfg
    columns = list(raw_input_columns(list_run.student))
    status, body = post(handler, {"signature_name": "predict_raw", "instances": to_instances(cfg, rows, columns)},
                        model="student")
    assert status == 200, body
    # serving_default ignores the skipped features: the same with or without them
    _, _, with_all = api.predict("student", None, "serving_default",
                                 {"examples": [encode_raw_example(cfg, r["features"]) for r in rows]})
    assert_same({k: [p[k] for p in body["predictions"]] for k in KEYS}, with_all)
    status, body = post(handler, {"signature_name": "predict_raw", "instances": to_instances(cfg, rows)},
                        model="student")
    assert "unknown input(s) ['hist_items'" in error_of((status, body))
