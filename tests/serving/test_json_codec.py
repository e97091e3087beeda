"""``serving.json_codec`` on its own: TF Serving's REST JSON conventions, no server, no model.

What is checked is what the module docstring (and TF Serving 2.19's ``json_tensor.cc``)
documents: ``{"b64": ...}`` binary values, row ``"instances"`` vs columnar ``"inputs"``
requests (never both), ``"predictions"`` for row requests and ``"outputs"`` for columnar ones
(a plain value when there is a single output), numbers written as ``WriteDecimal`` writes
them, and Classify/Regress ``"examples"`` + ``"context"`` turned into serialized
``tf.Example`` protos. The error texts are TF Serving's (``debug_json`` quotes JSON values as
rapidjson's PrettyWriter prints them). Every error is a ``RequestError`` with status
INVALID_ARGUMENT (what the REST front end turns into a 400).
"""
import base64
import json

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.example import example_pb2

from serving import json_codec
from serving.status import INVALID_ARGUMENT, RequestError


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode("ascii")}


def invalid_message(fn, *args) -> str:
    """Calls ``fn``; asserts it refuses with INVALID_ARGUMENT and returns the message."""
    with pytest.raises(RequestError) as e:
        fn(*args)
    assert e.value.status == INVALID_ARGUMENT
    return e.value.message


F32_, STR_, I64_ = tf.float32, tf.string, tf.int64


def parse_examples(body: dict) -> list:
    return [example_pb2.Example.FromString(s) for s in json_codec.examples_from_json(body)]


# ----------------------------------------------------------------------------- decode_value
def test_b64_object_decodes_to_bytes():
    assert json_codec.decode_value(b64(b"\x00\xffraw")) == b"\x00\xffraw"


def test_b64_objects_decode_at_any_depth():
    value = [[b64(b"a"), b64(b"b")], [b64(b"c"), "plain"]]
    assert json_codec.decode_value(value) == [[b"a", b"b"], [b"c", "plain"]]


@pytest.mark.parametrize("value", [1, 2.5, "text", None, True, [1, [2, 3]]])
def test_plain_json_values_pass_through_unchanged(value):
    assert json_codec.decode_value(value) == value


@pytest.mark.parametrize("encoded", ["AA=", "not base64!", "QUJD\n"])
def test_malformed_base64_is_invalid_argument(encoded):
    assert "Unable to base64 decode" in invalid_message(json_codec.decode_value, {"b64": encoded})


def test_non_ascii_base64_string_is_invalid_argument_not_an_internal_error():
    # base64 raises a plain ValueError (not binascii.Error) for non-ASCII str; it used to escape as a 500.
    assert "Unable to base64 decode" in invalid_message(json_codec.decode_value, {"b64": "é"})


def test_non_string_base64_payload_is_not_a_binary_value():
    # IsValBase64Object: the one key "b64" with a string value
    message = invalid_message(json_codec.decode_value, {"b64": 123})
    assert message.startswith('JSON Value: {\n    "b64": 123\n} not formatted correctly for base64 data')


def test_object_other_than_b64_is_invalid_argument():
    assert "unexpected JSON object ['a']" in invalid_message(json_codec.decode_value, [{"a": 1}])


@pytest.mark.parametrize("value,text", [
    ({"instances": []}, '{\n    "instances": []\n}'),
    ([1, 2.0, "a", True, None], '[1, 2.0, "a", true, null]'),
    ({"a": [{"b": 1}]}, '{\n    "a": [{\n            "b": 1\n        }]\n}'),
    ([1e-7, 1e40, 0.001, 123.0, 1e21, -0.5], "[1e-7, 1e40, 0.001, 123.0, 1e21, -0.5]"),
    ("tab\tquote\"\x01", '"tab\\tquote\\"\\u0001"'),
    (2 ** 63, "9223372036854775808"),
], ids=["object", "array", "nested", "doubles", "escapes", "uint64"])
def test_debug_json_prints_values_as_rapidjsons_pretty_writer(value, text):
    assert json_codec.debug_json(value) == text


def test_debug_json_stops_after_256_bytes():
    text = json_codec.debug_json({"instances": ["x" * 100] * 10})
    assert 256 <= len(text) < 256 + 110 and text.startswith('{\n    "instances": ["')


def test_b64_object_with_an_extra_key_is_not_a_binary_value():
    assert "unexpected JSON object" in invalid_message(json_codec.decode_value, {"b64": "AA==", "x": 1})


# ----------------------------------------------------------------------------- predict_inputs: row format
def test_instances_of_bare_values_feed_the_single_input_in_row_format():
    feed, row = json_codec.predict_inputs({"instances": [1.0, 2.0]}, ["x"])
    assert feed == {"x": [1.0, 2.0]} and row is True


def test_instances_of_b64_objects_are_unnamed_values_of_the_single_input():
    feed, row = json_codec.predict_inputs({"instances": [b64(b"e1"), b64(b"e2")]}, ["examples"])
    assert feed == {"examples": [b"e1", b"e2"]} and row is True


def test_instances_of_objects_are_batched_per_named_input():
    body = {"instances": [{"a": 1, "b": b64(b"x")}, {"a": 2, "b": b64(b"y")}]}
    feed, row = json_codec.predict_inputs(body, ["a", "b"])
    assert feed == {"a": [1, 2], "b": [b"x", b"y"]} and row is True


def test_named_instances_are_accepted_for_a_single_input_signature():
    feed, _ = json_codec.predict_inputs({"instances": [{"x": 0.5}]}, ["x"])
    assert feed == {"x": [0.5]}


def test_instances_naming_different_inputs_are_invalid():
    body = {"instances": [{"a": 1, "b": 2}, {"a": 3}]}
    assert invalid_message(json_codec.predict_inputs, body, ["a", "b"]) == (
        "Failed to process element: 1 of 'instances' list. JSON object: {\n    \"a\": 3\n} keys must be equal to: a,b")


@pytest.mark.parametrize("instances,expected", [
    ([{"x": 1.0}, 2.0], "Expecting object but got list at item 1 of input list"),
    ([2.0, {"x": 1.0}], "Expecting value/list but got object at item 1 of input list"),
])
def test_instances_mixing_objects_and_bare_values_are_invalid(instances, expected):
    assert invalid_message(json_codec.predict_inputs, {"instances": instances}, ["x"]) == expected


def test_bare_instances_for_a_multi_input_signature_are_invalid():
    assert invalid_message(json_codec.predict_inputs, {"instances": [1.0, 2.0]}, ["a", "b"]) == (
        "instances is a plain list, but expecting list of objects as multiple input tensors required as per "
        "tensorinfo_map")


@pytest.mark.parametrize("instances", [{"x": [1.0]}, "1.0", 1.0])
def test_instances_that_are_not_a_list_are_invalid(instances):
    message = invalid_message(json_codec.predict_inputs, {"instances": instances}, ["x"])
    assert message.startswith("JSON Value: {") and message.endswith("Expecting 'instances' to be an list/array")


def test_empty_instances_are_invalid():
    assert invalid_message(json_codec.predict_inputs, {"instances": []}, ["x"]) == (
        "JSON Value: {\n    \"instances\": []\n} No values in 'instances' array")


def test_a_signature_without_inputs_is_invalid():
    assert invalid_message(json_codec.predict_inputs, {"instances": [1]}, [], "get") == (
        "Failed to get input map for signature: get")


# ----------------------------------------------------------------------------- predict_inputs: columnar format
def test_inputs_object_feeds_named_inputs_in_columnar_format():
    feed, row = json_codec.predict_inputs({"inputs": {"a": [1, 2], "b": [b64(b"x"), b64(b"y")]}}, ["a", "b"])
    assert feed == {"a": [1, 2], "b": [b"x", b"y"]} and row is False


def test_inputs_bare_list_feeds_the_single_input():
    feed, row = json_codec.predict_inputs({"inputs": [[1.0, 2.0]]}, ["x"])
    assert feed == {"x": [[1.0, 2.0]]} and row is False


def test_inputs_b64_object_is_a_value_of_the_single_input_not_a_named_map():
    feed, row = json_codec.predict_inputs({"inputs": b64(b"blob")}, ["examples"])
    assert feed == {"examples": b"blob"} and row is False


def test_bare_inputs_for_a_multi_input_signature_are_invalid():
    assert invalid_message(json_codec.predict_inputs, {"inputs": [1.0]}, ["a", "b"]) == (
        "inputs is a plain value/list, but expecting an object as multiple input tensors required as per "
        "tensorinfo_map")


def test_a_named_input_missing_from_inputs_is_invalid_and_extra_ones_are_ignored():
    assert invalid_message(json_codec.predict_inputs, {"inputs": {"a": [1]}}, ["a", "b"]) == (
        "Missing named input: b in 'inputs' object.")
    feed, _ = json_codec.predict_inputs({"inputs": {"a": [1], "b": [2], "zzz": [3]}}, ["a", "b"])
    assert feed == {"a": [1], "b": [2]}  # FillTensorMapFromInputsMap reads the signature's inputs only


def test_empty_columnar_inputs_are_an_empty_batch_as_in_tf_serving():
    # GetDenseTensorShape([]) is [0]; TF Serving runs the model on the empty batch
    assert json_codec.predict_inputs({"inputs": []}, {"x": F32}) == ({"x": []}, False)


def test_request_with_both_instances_and_inputs_is_invalid():
    body = {"instances": [1.0], "inputs": [1.0]}
    assert invalid_message(json_codec.predict_inputs, body, ["x"]).endswith(
        "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist ")


def test_request_with_neither_instances_nor_inputs_is_invalid():
    message = invalid_message(json_codec.predict_inputs, {"signature_name": "s"}, ["x"])
    assert message == "Missing 'inputs' or 'instances' key"


def test_bad_b64_inside_instances_is_invalid_argument():
    assert invalid_message(json_codec.predict_inputs, {"instances": [{"b64": "A"}]}, ["x"]) == (
        "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: Unable to base64 decode")


@pytest.mark.parametrize("body,inputs", [
    ({"instances": [b64(b"a"), b64(b"b")]}, {"e": STR_}),
    ({"instances": [{"l": ["a", ""], "w": [0.5, 1], "i": 3}, {"l": ["b", "c"], "w": [2.0, 0.0], "i": -1}]},
     {"l": STR_, "w": F32_, "i": I64_}),
    ({"instances": [[1.0, 2.0], [3, 4.5]]}, {"x": F32_}),
    ({"inputs": {"l": [["a"], [b64(b"b")]], "i": [1, 2]}}, {"l": STR_, "i": I64_}),
], ids=["b64", "named", "rows", "columns"])
def test_the_fast_path_gives_what_the_exact_path_gives(body, inputs, monkeypatch):
    fast = json_codec.predict_inputs(body, inputs)

    def never(*args):
        raise json_codec._NotFast()

    monkeypatch.setattr(json_codec, "_fast_column", never)
    assert json_codec.predict_inputs(body, inputs) == fast


# ----------------------------------------------------------------------------- predict_inputs: TF Serving's dense JSON tensors
# The texts are those of tensorflow_serving/util/json_tensor.cc (TF Serving 2.19): AddInstanceItem
# ("Expecting tensor size" / "Expecting shape"), FillTensorProto ("Encountered list at
# unexpected size/level", "found at incorrect level"), TypeError ("is not of expected type"),
# each row-format error wrapped by FillTensorMapFromInstancesList ("Failed to process element").
F32, STR, I64 = tf.float32, tf.string, tf.int64


def _hint(key):
    return (f" (input '{key}': ragged nested lists; every instance must have the same shape (TF Serving's JSON "
            "tensors are dense: send a list feature padded with \"\" to one width))")


@pytest.mark.parametrize("body,inputs,expected", [
    ({"instances": [[1.0], [1.0, 2.0]]}, {"x": F32},
     "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: Expecting tensor size: 1 but got: 2"),
    ({"instances": [{"x": [[1.0, 2.0]]}, {"x": [1.0, 2.0]}]}, {"x": F32},
     "Failed to process element: 1 key: x of 'instances' list. Error: INVALID_ARGUMENT: Expecting shape [1,2] but got: [2]"),
    ({"instances": [{"x": [[1.0], [2.0, 3.0]]}]}, {"x": F32},
     "Failed to process element: 0 key: x of 'instances' list. Error: INVALID_ARGUMENT: Encountered list at unexpected "
     "size: 2 at level: 1 expected size: 1"),
    ({"instances": [{"l": []}, {"l": ["a"]}]}, {"l": STR},
     "Failed to process element: 1 key: l of 'instances' list. Error: INVALID_ARGUMENT: Expecting tensor size: 0 but got: 1"),
    ({"inputs": {"l": [["a", "b"], ["c"]]}}, {"l": STR},
     "Encountered list at unexpected size: 1 at level: 1 expected size: 2"),
    ({"inputs": {"x": [[1.0], 2.0]}}, {"x": F32},
     "JSON Value: 2.0 found at incorrect level: 2 in the JSON DOM. Expected at level: 2"),
    ({"inputs": {"x": [1.0, [2.0]]}}, {"x": F32}, "Encountered list at unexpected level: 1 expected < 1"),
    ({"inputs": [[1.0], [2.0, 3.0]]}, {"x": F32}, "Encountered list at unexpected size: 2 at level: 1 expected size: 1"),
], ids=["rows-size", "rows-shape", "inside-an-instance", "empty-then-one", "columns", "value-at-a-list-level",
        "list-at-a-value-level", "bare-columns"])
def test_ragged_json_tensors_get_tf_servings_message_then_a_hint(body, inputs, expected):
    key = next(iter(inputs))
    assert invalid_message(json_codec.predict_inputs, body, inputs) == expected + _hint(key)


@pytest.mark.parametrize("value,dtype,expected", [
    (5, STR, "JSON Value: 5 Type: Number is not of expected type: string"),
    (True, STR, "JSON Value: true Type: True is not of expected type: string"),
    ("a", F32, "JSON Value: \"a\" Type: String is not of expected type: float"),
    (False, F32, "JSON Value: false Type: False is not of expected type: float"),
    (1.5, I64, "JSON Value: 1.5 Type: Number is not of expected type: int64"),
    (2 ** 63, I64, "JSON Value: 9223372036854775808 Type: Number is not of expected type: int64"),
    (1, tf.bool, "JSON Value: 1 Type: Number is not of expected type: bool"),
    (b64(b"a"), F32, 'JSON Value: {\n    "b64": "YQ=="\n} Type: Object is not of expected type: float'),
    (1.5, tf.float64, None), (1, F32, None), ("a", STR, None), (b64(b"a"), STR, None), (True, tf.bool, None),
], ids=["number-for-string", "bool-for-string", "string-for-float", "bool-for-float", "float-for-int64",
        "beyond-int64", "number-for-bool", "b64-for-float", "double", "int-for-float", "string", "b64-string", "bool"])
def test_json_value_types_follow_tf_serving(value, dtype, expected):
    rows = {"instances": [{"k": ["ok"] if dtype == STR else [value]}, {"k": [value]}]}
    if expected is None:
        feed, _ = json_codec.predict_inputs(rows, {"k": dtype})
        assert len(feed["k"]) == 2
        return
    message = invalid_message(json_codec.predict_inputs, rows, {"k": dtype})
    element = 1 if dtype == STR else 0
    assert message == f"Failed to process element: {element} key: k of 'instances' list. Error: INVALID_ARGUMENT: {expected}"
    assert invalid_message(json_codec.predict_inputs, {"inputs": {"k": [[value]]}}, {"k": dtype}) == expected


def test_padded_lists_and_scalars_of_one_width_pass():
    body = {"instances": [{"l": ["a", ""], "w": [0.5, 0.0], "x": 1.0}, {"l": ["b", "c"], "w": [0.0, 2.0], "x": 2}]}
    feed, row = json_codec.predict_inputs(body, {"l": STR, "w": F32, "x": F32})
    assert feed == {"l": [["a", ""], ["b", "c"]], "w": [[0.5, 0.0], [0.0, 2.0]], "x": [1.0, 2]} and row


def test_nulls_are_left_to_the_api_check_and_keys_alone_check_shapes_only():
    feed, _ = json_codec.predict_inputs({"inputs": {"x": [1.0, None]}}, {"x": F32})
    assert feed == {"x": [1.0, None]}  # serving.api names the null (a clearer 400 than a type error)
    feed, _ = json_codec.predict_inputs({"inputs": {"x": ["a"]}}, ["x"])  # no dtypes: no type check
    assert feed == {"x": ["a"]}
    assert "Expecting tensor size" in invalid_message(json_codec.predict_inputs, {"instances": [[1], [1, 2]]}, ["x"])


def test_an_unknown_named_input_is_tf_servings_error_with_the_unknown_inputs_named():
    message = invalid_message(json_codec.predict_inputs, {"instances": [{"y": [1], "x": 1.0}]}, {"x": F32})
    assert message == ("Failed to process element: 0 key: y of 'instances' list. Error: INVALID_ARGUMENT: JSON object: "
                       "does not have named input: y (unknown input(s) ['y']; the signature expects ['x'])")


def test_an_empty_json_list_is_a_feature_of_no_kind_like_tf_serving():
    (example,) = parse_examples({"examples": [{"tags": [], "x": 1.0}]})
    assert example.features.feature["tags"].WhichOneof("kind") is None
    assert list(example.features.feature["x"].float_list.value) == [1.0]


# ----------------------------------------------------------------------------- responses
def predict_json(outputs, row_format=True):
    return json.loads(json_codec.encode_predict(outputs, row_format))


@pytest.mark.parametrize("value,text", [
    (0.5, "0.5"), (0.2, "0.2"), (1.0, "1.0"), (-3.0, "-3.0"), (0.0, "0.0"), (100.0, "100.0"),
    (0.7310586, "0.731058598"),  # %g (0.731059) does not read back as the same float32: %.9g
    (1e7, "1e+07"), (3e-5, "3e-05"), (123456.0, "123456.0"), (1234567.0, "1234567.0"),
    (float("nan"), "NaN"), (float("inf"), "Infinity"), (-float("inf"), "-Infinity"),
])
def test_float32_outputs_are_written_as_tf_servings_write_decimal(value, text):
    assert json_codec.encode_predict({"p": np.array([value], np.float32)}, False) == b'{"outputs":[' + text.encode() + b"]}"


def test_float64_outputs_use_double_precision():
    out = json_codec.encode_predict({"p": np.array([0.1, 1 / 3], np.float64)}, False)
    assert out == b'{"outputs":[0.1,0.33333333333333331]}'


def test_every_float32_reads_back_exactly():
    values = np.random.default_rng(0).standard_normal(2000).astype(np.float32) * np.float32(10.0) ** \
        np.random.default_rng(1).integers(-12, 12, 2000).astype(np.float32)
    back = np.asarray(predict_json({"p": values}, False)["outputs"], np.float32)
    np.testing.assert_array_equal(back, values)


def test_int_and_bool_outputs_are_json_integers_and_booleans():
    assert predict_json({"ids": np.array([[1, -2]], np.int64), "ok": np.array([True], bool)}) == {
        "predictions": [{"ids": [1, -2], "ok": True}]}


def test_utf8_byte_strings_become_json_strings():
    out = predict_json({"classes": np.array([[b"0", "é".encode()]], dtype=object)}, False)
    assert out == {"outputs": [["0", "é"]]}


def test_outputs_named_bytes_are_b64_encoded():
    assert predict_json({"image_bytes": np.array([b"ab"], dtype=object)}, False) == {"outputs": [{"b64": "YWI="}]}


def test_non_utf8_bytes_fall_back_to_b64():
    assert predict_json({"label": np.array([b"\xff\xfe"], dtype=object)}, False) == {"outputs": [{"b64": "//4="}]}


def test_an_empty_string_output_encodes_to_empty_lists():
    assert predict_json({"classes": np.zeros([0, 2], dtype=object)}, False) == {"outputs": []}
    assert predict_json({"classes": np.zeros([2, 0], dtype=object)}, False) == {"outputs": [[], []]}


def test_b64_output_round_trips_through_decode_value():
    raw = bytes(range(256))
    encoded = predict_json({"blob_bytes": np.array([raw], dtype=object)}, False)["outputs"]
    assert json_codec.decode_value(encoded) == [raw]


def _two_outputs():
    return {"p": np.array([0.5, 0.75], np.float32), "label": np.array([b"a", b"b"], dtype=object)}


def test_row_request_with_several_outputs_gets_one_object_per_prediction():
    assert predict_json(_two_outputs()) == {"predictions": [{"p": 0.5, "label": "a"}, {"p": 0.75, "label": "b"}]}


def test_row_request_with_one_output_gets_plain_prediction_values():
    out = predict_json({"p": np.array([[0.5, 0.5], [1.0, 0.0]], np.float32)})
    assert out == {"predictions": [[0.5, 0.5], [1.0, 0.0]]}


def test_columnar_request_with_several_outputs_gets_an_outputs_object():
    assert predict_json(_two_outputs(), row_format=False) == {"outputs": {"p": [0.5, 0.75], "label": ["a", "b"]}}


def test_columnar_request_with_one_output_gets_a_plain_outputs_value():
    assert predict_json({"p": np.array([0.5], np.float32)}, row_format=False) == {"outputs": [0.5]}
    assert predict_json({"p": np.float32(0.5)}, row_format=False) == {"outputs": 0.5}


def test_a_three_dimensional_output_keeps_its_nesting():
    value = np.arange(12, dtype=np.int64).reshape(2, 3, 2)
    assert predict_json({"t": value}) == {"predictions": value.tolist()}
    assert predict_json({"t": value}, False) == {"outputs": value.tolist()}


@pytest.mark.parametrize("outputs,expected", [
    ({"s": np.float32(1.0)}, "Tensor name: s has no shape information "),
    ({"a": np.zeros(2, np.float32), "b": np.zeros(3, np.float32)}, "Tensor name: b has inconsistent batch size: 3 "
                                                                   "expecting: 2"),
    ({}, "Cannot convert empty tensor map to JSON"),
])
def test_row_outputs_without_one_batch_size_are_invalid(outputs, expected):
    assert invalid_message(json_codec.encode_predict, outputs, True) == expected


def test_row_request_round_trips_through_inputs_and_response():
    body = json.loads(json.dumps({"instances": [{"a": 1.5, "b": b64(b"k1")}, {"a": 2.5, "b": b64(b"k2")}]}))
    feed, row = json_codec.predict_inputs(body, ["a", "b"])
    outputs = {"a": np.asarray(feed["a"], np.float32), "b_bytes": np.asarray(feed["b"], dtype=object)}
    assert predict_json(outputs, row) == {
        "predictions": [{"a": 1.5, "b_bytes": b64(b"k1")}, {"a": 2.5, "b_bytes": b64(b"k2")}]}


def test_classify_results_pair_each_label_with_its_score():
    out = json_codec.encode_classify(np.array([[0.25, 0.75]], np.float32), np.array([[b"0", b"1"]], dtype=object))
    assert out == b'{"results":[[["0",0.25],["1",0.75]]]}'


def test_classify_results_without_classes_or_scores_have_empty_labels_or_zero_scores():
    assert json.loads(json_codec.encode_classify(np.array([[0.5]], np.float32), None)) == {"results": [[["", 0.5]]]}
    assert json.loads(json_codec.encode_classify(None, np.array([[b"a"]], dtype=object))) == {"results": [[["a", 0.0]]]}


def test_regress_results_are_one_float_per_example():
    assert json_codec.encode_regress(np.array([0.25, 2.0], np.float32)) == b'{"results":[0.25,2.0]}'


# ----------------------------------------------------------------------------- examples_from_json
def test_example_features_get_the_list_kind_of_their_json_type():
    (ex,) = parse_examples({"examples": [{"s": "ios", "i": 3, "f": 0.5, "b": b64(b"\x00")}]})
    feats = ex.features.feature
    assert feats["s"].bytes_list.value == [b"ios"]
    assert feats["i"].int64_list.value == [3]
    assert feats["f"].float_list.value == [0.5]
    assert feats["b"].bytes_list.value == [b"\x00"]


def test_example_feature_lists_keep_every_value():
    (ex,) = parse_examples({"examples": [{"tags": ["a", "b"], "ids": [1, 2, 3]}]})
    assert ex.features.feature["tags"].bytes_list.value == [b"a", b"b"]
    assert ex.features.feature["ids"].int64_list.value == [1, 2, 3]


@pytest.mark.parametrize("value,kind", [([1, 2.5], "int64"), ([2.5, 1], "float"), (["a", 1], "bytes"),
                                        ([1, "a"], "int64"), ([b64(b"x"), 0.5], "bytes")])
def test_a_feature_mixing_value_kinds_is_invalid_as_in_tf_serving(value, kind):
    # AddValueToFeature: the first value sets the kind; [1, 2.5] is not a float feature there
    assert invalid_message(json_codec.examples_from_json, {"examples": [{"f": value}]}) == (
        f"Unexpected element type in feature: f expecting type: {kind}")


def test_booleans_are_int64_values_as_in_tf_serving():
    (ex,) = parse_examples({"examples": [{"b": [True, False, 3]}]})
    assert ex.features.feature["b"].int64_list.value == [1, 0, 3]


def test_serialized_examples_equal_the_protobuf_serialization():
    features = {"s": ["ios", "é"], "i": [1, -2, 2 ** 63 - 1, -(2 ** 63)], "f": [0.5, -1e-3, 3.4e38], "b": b64(b"\x00"),
                "e": [], "one": 7}
    (raw,) = json_codec.examples_from_json({"examples": [features]})
    expected = tf.train.Example(features=tf.train.Features(feature={
        "s": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"ios", "é".encode()])),
        "i": tf.train.Feature(int64_list=tf.train.Int64List(value=[1, -2, 2 ** 63 - 1, -(2 ** 63)])),
        "f": tf.train.Feature(float_list=tf.train.FloatList(value=[0.5, -1e-3, 3.4e38])),
        "b": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"\x00"])),
        "e": tf.train.Feature(), "one": tf.train.Feature(int64_list=tf.train.Int64List(value=[7]))}))
    assert example_pb2.Example.FromString(raw) == expected


def test_an_example_without_features_is_the_empty_example():
    assert json_codec.examples_from_json({"examples": [{}]}) == [b""]


def test_examples_are_serialized_in_request_order():
    exs = parse_examples({"examples": [{"x": 1.0}, {"x": 2.0}, {"x": 3.0}]})
    assert [e.features.feature["x"].float_list.value[0] for e in exs] == [1.0, 2.0, 3.0]


def test_context_features_are_added_to_every_example():
    exs = parse_examples({"context": {"user": "u1"}, "examples": [{"x": 1.0}, {"x": 2.0}]})
    assert [e.features.feature["user"].bytes_list.value for e in exs] == [[b"u1"], [b"u1"]]
    assert [set(e.features.feature) for e in exs] == [{"user", "x"}, {"user", "x"}]


def test_context_overlap_resolves_like_the_grpc_example_list_with_context():
    from tensorflow_serving.apis import input_pb2

    from serving.grpc_service import _examples

    (rest,) = json_codec.examples_from_json({"context": {"x": 1.0, "c": "ctx"}, "examples": [{"x": 2.0}]})
    model_input = input_pb2.Input()
    model_input.example_list_with_context.context.ParseFromString(
        json_codec.examples_from_json({"examples": [{"x": 1.0, "c": "ctx"}]})[0])
    model_input.example_list_with_context.examples.add().ParseFromString(
        json_codec.examples_from_json({"examples": [{"x": 2.0}]})[0])
    (grpc_ex,) = _examples(model_input)
    assert example_pb2.Example.FromString(rest) == example_pb2.Example.FromString(grpc_ex)
    assert example_pb2.Example.FromString(rest).features.feature["x"].float_list.value == [2.0]


@pytest.mark.parametrize("value,fragment", [
    ([None], "feature 'feat': null (missing value) at position 0"),
    ([[1, 2]], "Feature: feat has element with unexpected JSON type: Array (nested lists are not allowed"),
    ({"k": 1}, "Feature: feat has element with unexpected JSON type: Object (unexpected JSON object ['k']"),
    (2 ** 63, "Feature: feat has uint64_t element. Only int64_t is supported."),
])
def test_feature_values_of_unsupported_types_are_invalid(value, fragment):
    message = invalid_message(json_codec.examples_from_json, {"examples": [{"feat": value}]})
    assert message.startswith(fragment)


@pytest.mark.parametrize("body,expected", [
    ({}, "JSON Value: {} When method is classify, key 'examples' is expected and was not found"),
    ({"examples": {"x": 1.0}}, 'JSON Value: {\n    "examples": {\n        "x": 1.0\n    }\n} Expecting '
                               "'examples' value to be an list/array"),
    ({"examples": "x"}, 'JSON Value: {\n    "examples": "x"\n} Expecting \'examples\' value to be an list/array'),
    ({"examples": []}, 'JSON Value: {\n    "examples": []\n} \'examples\' value is an empty array'),
], ids=["missing", "object", "string", "empty"])
def test_missing_non_list_or_empty_examples_are_invalid(body, expected):
    assert invalid_message(json_codec.examples_from_json, body) == expected


def test_example_that_is_not_an_object_is_invalid():
    message = invalid_message(json_codec.examples_from_json, {"examples": [{"x": 1.0}, [1.0]]})
    assert message == "Example must be JSON object but got JSON Array"


def test_context_that_is_not_an_object_is_invalid_before_the_examples_are_read():
    assert invalid_message(json_codec.examples_from_json, {"context": ["u1"], "examples": []}) == (
        "Example must be JSON object but got JSON Array")


# ----------------------------------------------------------------------------- feature values: null, nested, range
def test_decode_value_handles_any_depth_without_recursion():
    value = 1.0
    for _ in range(100_000):
        value = [value]
    out = json_codec.decode_value(value)
    for _ in range(100_000):
        out = out[0]
    assert out == 1.0


def test_decode_value_keeps_the_order_of_mixed_nesting():
    assert json_codec.decode_value([1, [2, [3, b64(b"x")], 4], 5]) == [1, [2, [3, b"x"], 4], 5]


def test_a_null_feature_value_names_the_missing_value():
    message = invalid_message(json_codec.examples_from_json, {"examples": [{"feat": [1.0, None]}]})
    assert message.startswith("feature 'feat': null (missing value) at position 1")


def test_a_deeply_nested_feature_value_is_invalid_not_a_recursion_error():
    value = 1.0
    for _ in range(5000):
        value = [value]
    message = invalid_message(json_codec.examples_from_json, {"examples": [{"feat": value}]})
    assert "nested lists are not allowed" in message and len(message) < 300


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), 1e39, [1.0, 1e39], [2.5, 10 ** 400]])
def test_a_non_finite_float_feature_is_invalid(value):
    message = invalid_message(json_codec.examples_from_json, {"examples": [{"feat": value}]})
    assert "is not a finite float32" in message


def test_an_integer_in_uint64_beyond_int64_is_invalid_not_an_internal_error():
    # Before: protobuf's ValueError("Value out of range") escaped as a 500.
    assert invalid_message(json_codec.examples_from_json, {"examples": [{"feat": [1, 2 ** 63]}]}) == (
        "Feature: feat has uint64_t element. Only int64_t is supported.")


@pytest.mark.parametrize("value", [-(2 ** 63) - 1, 10 ** 30])
def test_an_integer_beyond_64_bits_is_a_float_value_as_tf_servings_parser_reads_it(value):
    (ex,) = parse_examples({"examples": [{"feat": value}]})
    assert ex.features.feature["feat"].float_list.value == [pytest.approx(float(value), rel=1e-6)]


def test_int64_and_float32_limits_themselves_are_accepted():
    ex, = parse_examples({"examples": [{"i": [2 ** 63 - 1, -(2 ** 63)], "f": [3.4e38, -3.4e38]}]})
    assert list(ex.features.feature["i"].int64_list.value) == [2 ** 63 - 1, -(2 ** 63)]
    assert ex.features.feature["f"].float_list.value[0] == pytest.approx(3.4e38, rel=1e-6)
