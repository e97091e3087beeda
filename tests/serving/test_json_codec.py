"""``serving.json_codec`` on its own: TF Serving's REST JSON conventions, no server, no model.

What is checked is what the module docstring (and TF Serving's ``json_tensor``) documents:
``{"b64": ...}`` binary values, row ``"instances"`` vs columnar ``"inputs"`` requests (never
both), ``"predictions"`` for row requests and ``"outputs"`` for columnar ones (a plain value
when there is a single output), and Classify/Regress ``"examples"`` + ``"context"`` turned
into ``tf.Example`` protos. Every error is a ``RequestError`` with status INVALID_ARGUMENT
(what the REST front end turns into a 400).
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


def test_non_string_base64_payload_is_invalid_argument():
    assert "Unable to base64 decode" in invalid_message(json_codec.decode_value, {"b64": 123})


def test_object_other_than_b64_is_invalid_argument():
    assert "unexpected JSON object ['a']" in invalid_message(json_codec.decode_value, [{"a": 1}])


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
    assert "every instance must name the same inputs" in invalid_message(json_codec.predict_inputs, body, ["a", "b"])


def test_instances_mixing_objects_and_bare_values_are_invalid():
    body = {"instances": [{"x": 1.0}, 2.0]}
    assert "mix named (object) and unnamed" in invalid_message(json_codec.predict_inputs, body, ["x"])


def test_bare_instances_for_a_multi_input_signature_are_invalid():
    message = invalid_message(json_codec.predict_inputs, {"instances": [1.0, 2.0]}, ["a", "b"])
    assert "instances must be objects naming the signature's inputs ['a', 'b']" in message


@pytest.mark.parametrize("instances", [{"x": [1.0]}, "1.0", 1.0])
def test_instances_that_are_not_a_list_are_invalid(instances):
    assert "must be a JSON list" in invalid_message(json_codec.predict_inputs, {"instances": instances}, ["x"])


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
    message = invalid_message(json_codec.predict_inputs, {"inputs": [1.0]}, ["a", "b"])
    assert "\"inputs\" must be an object naming the signature's inputs ['a', 'b']" in message


def test_request_with_both_instances_and_inputs_is_invalid():
    body = {"instances": [1.0], "inputs": [1.0]}
    assert "either \"instances\" or \"inputs\", not both" in invalid_message(json_codec.predict_inputs, body, ["x"])


def test_request_with_neither_instances_nor_inputs_is_invalid():
    message = invalid_message(json_codec.predict_inputs, {"signature_name": "s"}, ["x"])
    assert message == "Missing 'inputs' or 'instances' key"


def test_bad_b64_inside_instances_is_invalid_argument():
    assert "Unable to base64 decode" in invalid_message(json_codec.predict_inputs, {"instances": [{"b64": "A"}]}, ["x"])


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


def test_unknown_inputs_are_not_checked_here():
    feed, _ = json_codec.predict_inputs({"instances": [{"y": [1]}, {"y": [1, 2]}]}, {"x": F32})
    assert feed == {"y": [[1], [1, 2]]}  # the model names the unknown input


def test_an_empty_json_list_is_a_feature_of_no_kind_like_tf_serving():
    (example,) = parse_examples({"examples": [{"tags": [], "x": 1.0}]})
    assert example.features.feature["tags"].WhichOneof("kind") is None
    assert list(example.features.feature["x"].float_list.value) == [1.0]


# ----------------------------------------------------------------------------- encode_array
def test_float_outputs_become_python_floats():
    values = json_codec.encode_array("p", np.array([0.5, 0.25], np.float32))
    assert values == [0.5, 0.25] and all(type(v) is float for v in values)


def test_int_outputs_become_python_ints():
    values = json_codec.encode_array("ids", np.array([[1, 2]], np.int64))
    assert values == [[1, 2]] and type(values[0][0]) is int


def test_utf8_byte_strings_become_json_strings():
    assert json_codec.encode_array("classes", np.array([[b"0", "é".encode()]], dtype=object)) == [["0", "é"]]


def test_outputs_named_bytes_are_b64_encoded():
    assert json_codec.encode_array("image_bytes", np.array([b"ab"], dtype=object)) == [{"b64": "YWI="}]


def test_non_utf8_bytes_fall_back_to_b64():
    assert json_codec.encode_array("label", np.array([b"\xff\xfe"], dtype=object)) == [{"b64": "//4="}]


def test_empty_string_output_encodes_to_an_empty_list():
    assert json_codec.encode_array("classes", np.zeros([0, 2], dtype=object)) == []


def test_b64_output_round_trips_through_decode_value():
    raw = bytes(range(256))
    encoded = json_codec.encode_array("blob_bytes", np.array([raw], dtype=object))
    assert json_codec.decode_value(json.loads(json.dumps(encoded))) == [raw]


# ----------------------------------------------------------------------------- predict_response
def _two_outputs():
    return {"p": np.array([0.5, 0.75], np.float32), "label": np.array([b"a", b"b"], dtype=object)}


def test_row_request_with_several_outputs_gets_one_object_per_prediction():
    assert json_codec.predict_response(_two_outputs(), row_format=True) == {
        "predictions": [{"p": 0.5, "label": "a"}, {"p": 0.75, "label": "b"}]}


def test_row_request_with_one_output_gets_plain_prediction_values():
    out = json_codec.predict_response({"p": np.array([[0.5, 0.5], [1.0, 0.0]], np.float32)}, row_format=True)
    assert out == {"predictions": [[0.5, 0.5], [1.0, 0.0]]}


def test_columnar_request_with_several_outputs_gets_an_outputs_object():
    assert json_codec.predict_response(_two_outputs(), row_format=False) == {
        "outputs": {"p": [0.5, 0.75], "label": ["a", "b"]}}


def test_columnar_request_with_one_output_gets_a_plain_outputs_value():
    assert json_codec.predict_response({"p": np.array([0.5], np.float32)}, row_format=False) == {"outputs": [0.5]}


def test_predict_response_is_json_serialisable():
    out = json_codec.predict_response(_two_outputs(), row_format=True)
    assert json.loads(json.dumps(out)) == out


def test_row_request_round_trips_through_inputs_and_response():
    body = json.loads(json.dumps({"instances": [{"a": 1.5, "b": b64(b"k1")}, {"a": 2.5, "b": b64(b"k2")}]}))
    feed, row = json_codec.predict_inputs(body, ["a", "b"])
    outputs = {"a": np.asarray(feed["a"], np.float32), "b_bytes": np.asarray(feed["b"], dtype=object)}
    assert json_codec.predict_response(outputs, row) == {
        "predictions": [{"a": 1.5, "b_bytes": b64(b"k1")}, {"a": 2.5, "b_bytes": b64(b"k2")}]}


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


def test_integers_mixed_with_floats_make_a_float_feature():
    (ex,) = parse_examples({"examples": [{"f": [1, 2.5]}]})
    assert ex.features.feature["f"].float_list.value == [1.0, 2.5]


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
    (["a", 1], "all strings, all integers or all numbers"),
    ([None], "null (missing value) at position 0"),
    ([[1, 2]], "nested lists are not allowed"),
    (True, "all strings, all integers or all numbers"),
    ({"k": 1}, "unexpected JSON object"),
])
def test_feature_values_of_unsupported_types_are_invalid(value, fragment):
    message = invalid_message(json_codec.examples_from_json, {"examples": [{"feat": value}]})
    assert fragment in message


def test_feature_errors_name_the_feature():
    assert "feature 'mixed'" in invalid_message(json_codec.examples_from_json, {"examples": [{"mixed": ["a", 1]}]})


@pytest.mark.parametrize("body", [{}, {"examples": {"x": 1.0}}, {"examples": "x"}])
def test_missing_or_non_list_examples_are_invalid(body):
    assert "Missing or malformed 'examples' key" in invalid_message(json_codec.examples_from_json, body)


def test_example_that_is_not_an_object_is_invalid():
    message = invalid_message(json_codec.examples_from_json, {"examples": [{"x": 1.0}, [1.0]]})
    assert "example 1: expected a JSON object" in message


def test_context_that_is_not_an_object_is_invalid():
    message = invalid_message(json_codec.examples_from_json, {"context": ["u1"], "examples": [{"x": 1.0}]})
    assert "'context' must be a JSON object" in message


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


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), 1e39, [1.0, 1e39], [1, 2.5, 10 ** 400]])
def test_a_non_finite_float_feature_is_invalid(value):
    message = invalid_message(json_codec.examples_from_json, {"examples": [{"feat": value}]})
    assert "is not a finite float32" in message


@pytest.mark.parametrize("value", [2 ** 63, -(2 ** 63) - 1, 10 ** 30])
def test_an_integer_feature_beyond_int64_is_invalid_not_an_internal_error(value):
    # Before: protobuf's ValueError("Value out of range") escaped as a 500.
    assert "out of the int64 range" in invalid_message(json_codec.examples_from_json, {"examples": [{"feat": value}]})


def test_int64_and_float32_limits_themselves_are_accepted():
    ex, = parse_examples({"examples": [{"i": [2 ** 63 - 1, -(2 ** 63)], "f": [3.4e38, -3.4e38]}]})
    assert list(ex.features.feature["i"].int64_list.value) == [2 ** 63 - 1, -(2 ** 63)]
    assert ex.features.feature["f"].float_list.value[0] == pytest.approx(3.4e38, rel=1e-6)
