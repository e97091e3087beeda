"""TF Serving's REST JSON conventions, both ways.

* binary strings travel as ``{"b64": "<base64>"}`` (e.g. serialized tf.Examples);
* Predict requests: row format ``{"instances": [...]}`` (one item per example; a dict per
  item when the signature has several inputs, a bare value when it has one) or columnar
  ``{"inputs": {key: [...]}}`` (a bare list for a single input), never both;
* responses: row format -> ``{"predictions": [...]}`` (a dict per row, or a plain value when
  the signature has one output); columnar -> ``{"outputs": {...}}`` (or a plain list);
* Classify/Regress requests carry ``"examples"``: objects of feature -> value(s), turned
  into ``tf.Example`` (str/b64 -> bytes_list, int -> int64_list, float -> float_list), with
  optional ``"context"`` features added to every example. A feature is a flat list of
  non-null values (a list feature of any length; ``[]`` is a feature with no kind set, as in
  TF Serving, which parses as an empty list of any type); float features must be finite
  float32 numbers and integer ones int64s.

Predict inputs are checked the way TF Serving's ``json_tensor.cc`` (2.19,
``FillTensorMapFromInstancesList`` / ``FillTensorMapFromInputsMap``) checks them, with its
error texts: a JSON tensor is dense (rectangular). Row format: every instance of an input
must have the same size and shape (``Failed to process element: 1 key: hist_items of
'instances' list. Error: INVALID_ARGUMENT: Expecting tensor size: 3 but got: 2``);
columnar, and within one instance, every list at a level has the length of the first one
(``Encountered list at unexpected size: 2 at level: 1 expected size: 3``) and values sit at
one depth (``... found at incorrect level ...``); a value of the wrong JSON type is ``JSON
Value: 5 Type: Number is not of expected type: string``. Shape errors carry a hint after
TF Serving's text: a list feature (``data.lists``) is sent padded with ``""`` to one width
(``serving.signatures``: padded representation; ragged rejected with 400). Nulls are left
to ``serving.api``'s check (a clearer message than TF Serving's type error).

Decoding is iterative, so any nesting depth ``json.loads`` accepts is a 400 at worst, never a
RecursionError.
"""
from __future__ import annotations

import base64
import json
import reprlib

import numpy as np

from serving.status import invalid


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxstring, _SHORT.maxother = 3, 6, 40, 40
_INT64_MIN, _INT64_MAX = -(2 ** 63), 2 ** 63 - 1
MAX_DIMS = 32  # as serving.api: numpy's limit for object arrays
_DEBUG_BYTES = 256  # TF Serving's kMaxJsonDebugStringBytes
# TensorFlow's DataTypeString of the dtypes whose tf.DType name differs.
_TF_TYPE_NAMES = {"float32": "float", "float64": "double", "float16": "half"}
_RAGGED_HINT = ("input '{key}': ragged nested lists; every instance must have the same shape (TF Serving's JSON "
                "tensors are dense: send a list feature padded with \"\" to one width)")


def _short(value) -> str:
    """A bounded repr of a request value (reprlib: no recursion into deep nesting)."""
    return _SHORT.repr(value)


def _decode_object(value: dict):
    if set(value) == {"b64"}:
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (ValueError, TypeError) as e:  # binascii.Error, and non-ASCII str, are ValueErrors
            raise invalid(f"Unable to base64 decode: {e}") from None
    raise invalid(f"unexpected JSON object {sorted(value)}; only {{\"b64\": ...}} objects are values")


def decode_value(value):
    """Replaces ``{"b64": ...}`` objects (at any depth) by bytes; lists are copied, iteratively."""
    if isinstance(value, dict):
        return _decode_object(value)
    if not isinstance(value, list):
        return value
    out: list = []
    stack = [(iter(value), out)]
    while stack:
        items, dst = stack[-1]
        for v in items:
            if isinstance(v, list):
                child: list = []
                dst.append(child)
                stack.append((iter(v), child))
                break
            dst.append(_decode_object(v) if isinstance(v, dict) else v)
        else:
            stack.pop()
    return out


def _is_named(item) -> bool:
    return isinstance(item, dict) and set(item) != {"b64"}


class _TensorError(Exception):
    """A TF Serving JSON-to-tensor error: its message, and whether it is about the shape."""

    def __init__(self, message: str, shape: bool):
        super().__init__(message)
        self.message, self.shape = message, shape


def _type_name(dtype) -> str | None:
    """TensorFlow's ``DataTypeString`` of a signature input's dtype (None: unknown)."""
    name = getattr(getattr(dtype, "dtype", dtype), "name", dtype)
    return _TF_TYPE_NAMES.get(name, name) if isinstance(name, str) else None


def _json_type(v) -> str:
    if v is None:
        return "Null"
    if isinstance(v, bool):
        return "True" if v else "False"
    if isinstance(v, (int, float)):
        return "Number"
    if isinstance(v, str):
        return "String"
    if isinstance(v, list):
        return "Array"
    return "Object"  # bytes: a decoded {"b64": ...}


def _json_text(v) -> str:
    """TF Serving's ``JsonValueToDebugString`` of a value (truncated to 256 bytes)."""
    if isinstance(v, bytes):
        text = json.dumps({"b64": base64.b64encode(v).decode("ascii")}, indent=4)
    elif isinstance(v, float):
        text = repr(v).replace("e+", "e") if v == v and v not in (float("inf"), float("-inf")) else json.dumps(v)
    else:
        text = json.dumps(v, ensure_ascii=False)
    return text.encode("utf-8")[:_DEBUG_BYTES].decode("utf-8", errors="ignore")


def _value_ok(v, type_name: str) -> bool:
    """TF Serving's ``AddValueToTensor`` type rule for one JSON value (True: accepted)."""
    number = isinstance(v, (int, float)) and not isinstance(v, bool)
    integer = isinstance(v, int) and not isinstance(v, bool)
    if isinstance(v, bytes):  # a {"b64": ...} object: string tensors only
        return type_name == "string"
    if type_name in ("float", "double"):
        return number
    if type_name in ("int32", "int16", "int8", "uint8"):
        return integer and -(2 ** 31) <= v < 2 ** 31
    if type_name == "string":
        return isinstance(v, str)
    if type_name == "int64":
        return integer and _INT64_MIN <= v <= _INT64_MAX
    if type_name == "bool":
        return isinstance(v, bool)
    if type_name == "uint32":
        return integer and 0 <= v < 2 ** 32
    if type_name == "uint64":
        return integer and 0 <= v < 2 ** 64
    return True  # other dtypes: TensorFlow's conversion names the problem


def _dense_shape(key: str, value) -> list[int]:
    """TF Serving's ``GetDenseTensorShape``: the lengths along the first elements."""
    shape, v = [], value
    while isinstance(v, list):
        shape.append(len(v))
        if len(shape) > MAX_DIMS:
            raise invalid(f"input '{key}': nested more than {MAX_DIMS} levels deep")
        if not v:
            break
        v = v[0]
    return shape


def _tensor_size(key: str, value, type_name: str | None) -> tuple[int, list[int]]:
    """(values, shape) of one JSON tensor, checked as TF Serving's ``FillTensorProto`` does
    (depth first, in order); raises ``_TensorError``."""
    shape = _dense_shape(key, value)
    rank, count = len(shape), 0
    stack = [(value, 0)]
    while stack:
        v, level = stack.pop()
        if not isinstance(v, list):
            if level != rank:
                raise _TensorError(f"JSON Value: {_json_text(v)} found at incorrect level: {level + 1} in the JSON "
                                   f"DOM. Expected at level: {rank}", True)
            if v is not None and type_name is not None and not _value_ok(v, type_name):
                raise _TensorError(f"JSON Value: {_json_text(v)} Type: {_json_type(v)} is not of expected type: "
                                   f"{type_name}", False)
            count += 1
            continue
        if level >= rank:
            raise _TensorError(f"Encountered list at unexpected level: {level} expected < {rank}", True)
        if len(v) != shape[level]:
            raise _TensorError(f"Encountered list at unexpected size: {len(v)} at level: {level} expected size: "
                               f"{shape[level]}", True)
        stack.extend((x, level + 1) for x in reversed(v))
    return count, shape


def _shape_text(shape: list[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _failed(e: _TensorError, key: str, where: str):
    message = f"{where}{e.message}"
    return invalid(f"{message} ({_RAGGED_HINT.format(key=key)})" if e.shape else message)


def _check_instances(instances: list, named: bool, key0: str, types: dict) -> None:
    """TF Serving's checks of the row format: each instance's tensor, then its size and shape
    against the first instance's."""
    first: dict = {}
    for n, item in enumerate(instances):
        for key, value in (item.items() if named else [(key0, item)]):
            where = (f"Failed to process element: {n} key: {key} of 'instances' list. Error: INVALID_ARGUMENT: "
                     if named else f"Failed to process element: {n} of 'instances' list. Error: INVALID_ARGUMENT: ")
            if key not in types:
                continue  # an unknown input: the model names it
            try:
                size, shape = _tensor_size(key, value, types[key])
                if key not in first:
                    first[key] = (size, shape)
                elif first[key][0] != size:
                    raise _TensorError(f"Expecting tensor size: {first[key][0]} but got: {size}", True)
                elif first[key][1] != shape:
                    raise _TensorError(f"Expecting shape {_shape_text(first[key][1])} but got: "
                                       f"{_shape_text(shape)}", True)
            except _TensorError as e:
                raise _failed(e, key, where) from None


def _check_columns(inputs: dict, types: dict) -> None:
    for key, value in inputs.items():
        if key in types:
            try:
                _tensor_size(key, value, types[key])
            except _TensorError as e:
                raise _failed(e, key, "") from None


def _input_types(inputs) -> tuple[list[str], dict]:
    """(input keys, key -> DataTypeString or None) of a list of keys or a mapping key ->
    dtype / ``TensorInfo``."""
    if isinstance(inputs, dict):
        return list(inputs), {k: _type_name(v) for k, v in inputs.items()}
    return list(inputs), {k: None for k in inputs}


def predict_inputs(body: dict, input_keys) -> tuple[dict, bool]:
    """(input key -> list, row_format) from a Predict request body.

    ``input_keys``: the signature's input keys, or a mapping key -> dtype (a ``tf.DType`` or
    anything with a ``dtype``, e.g. ``serving.session_model.TensorInfo``), which also checks
    the JSON types as TF Serving does. Shapes are checked either way (module docstring).
    """
    input_keys, types = _input_types(input_keys)
    if "instances" in body and "inputs" in body:
        raise invalid("JSON request can have either \"instances\" or \"inputs\", not both")
    if "instances" in body:
        instances = body["instances"]
        if not isinstance(instances, list):
            raise invalid("\"instances\" must be a JSON list")
        if instances and all(_is_named(i) for i in instances):
            keys = set(instances[0])
            for n, item in enumerate(instances):
                if set(item) != keys:
                    raise invalid(f"instance {n} has keys {sorted(item)}, but instance 0 has {sorted(keys)}; "
                                  "every instance must name the same inputs")
            decoded = [{k: decode_value(v) for k, v in item.items()} for item in instances]
            _check_instances(decoded, True, "", types)
            return {k: [item[k] for item in decoded] for k in instances[0]}, True
        if any(_is_named(i) for i in instances):
            raise invalid("instances mix named (object) and unnamed items")
        if len(input_keys) != 1:
            raise invalid(f"instances must be objects naming the signature's inputs {sorted(input_keys)}")
        decoded = decode_value(instances)
        _check_instances(decoded, False, input_keys[0], types)
        return {input_keys[0]: decoded}, True
    if "inputs" in body:
        inputs = body["inputs"]
        if _is_named(inputs):
            feed = {k: decode_value(v) for k, v in inputs.items()}
        elif len(input_keys) != 1:
            raise invalid(f"\"inputs\" must be an object naming the signature's inputs {sorted(input_keys)}")
        else:
            feed = {input_keys[0]: decode_value(inputs)}
        _check_columns(feed, types)
        return feed, False
    raise invalid("Missing 'inputs' or 'instances' key")


def encode_array(key: str, array) -> list:
    """A numpy output as JSON values (bytes -> str, or b64 when the key ends in _bytes or not UTF-8)."""
    arr = np.asarray(array)
    if arr.dtype.kind in "OS":
        def enc(b):
            if isinstance(b, bytes):
                if not key.endswith("_bytes"):
                    try:
                        return b.decode("utf-8")
                    except UnicodeDecodeError:
                        pass
                return {"b64": base64.b64encode(b).decode("ascii")}
            return b
        return np.vectorize(enc, otypes=[object])(arr).tolist() if arr.size else arr.tolist()
    return arr.tolist()


def predict_response(outputs: dict, row_format: bool) -> dict:
    encoded = {k: encode_array(k, v) for k, v in outputs.items()}
    if not row_format:
        return {"outputs": next(iter(encoded.values())) if len(encoded) == 1 else encoded}
    if len(encoded) == 1:
        return {"predictions": next(iter(encoded.values()))}
    n = len(next(iter(encoded.values())))
    return {"predictions": [{k: v[i] for k, v in encoded.items()} for i in range(n)]}


def _feature(name: str, value):
    from tensorflow.core.example import feature_pb2

    values = value if isinstance(value, list) else [value]
    values = decode_value(values)
    if not values:  # TF Serving leaves the kind unset: an empty feature of any type (an empty list)
        return feature_pb2.Feature()
    for i, v in enumerate(values):
        if v is None:
            raise invalid(f"feature '{name}': null (missing value) at position {i}; omit the feature "
                          "or give it a value")
        if isinstance(v, list):
            raise invalid(f"feature '{name}': nested lists are not allowed; a tf.Example feature is a flat "
                          f"list of values, got {_short(value)}")
    if all(isinstance(v, (bytes, str)) for v in values):
        return feature_pb2.Feature(bytes_list=feature_pb2.BytesList(
            value=[v.encode("utf-8") if isinstance(v, str) else v for v in values]))
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        for v in values:
            if not _INT64_MIN <= v <= _INT64_MAX:
                raise invalid(f"feature '{name}': integer {_short(v)} is out of the int64 range")
        return feature_pb2.Feature(int64_list=feature_pb2.Int64List(value=values))
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        for v in values:
            if not _finite_float32(v):
                raise invalid(f"feature '{name}': {_short(v)} is not a finite float32; NaN, Infinity and "
                              f"numbers beyond float32's range (about ±3.4e38) are not valid values")
        return feature_pb2.Feature(float_list=feature_pb2.FloatList(value=values))
    raise invalid(f"feature '{name}': values must be all strings, all integers or all numbers, got {_short(value)}")


def _finite_float32(v) -> bool:
    try:
        f = float(v)
    except OverflowError:  # an int beyond float64
        return False
    with np.errstate(over="ignore"):
        return bool(np.isfinite(np.float32(f)))


def examples_from_json(body: dict) -> list[bytes]:
    """Serialized tf.Examples of a Classify/Regress body (``examples`` + optional ``context``)."""
    from tensorflow.core.example import example_pb2, feature_pb2

    examples = body.get("examples")
    if not isinstance(examples, list):
        raise invalid("Missing or malformed 'examples' key: expected a JSON list of objects")
    context = body.get("context") or {}
    if not isinstance(context, dict):
        raise invalid("'context' must be a JSON object")
    out = []
    for n, ex in enumerate(examples):
        if not isinstance(ex, dict):
            raise invalid(f"example {n}: expected a JSON object of feature -> value, got {type(ex).__name__}")
        feats = {k: _feature(k, v) for k, v in {**context, **ex}.items()}
        out.append(example_pb2.Example(features=feature_pb2.Features(feature=feats)).SerializeToString())
    return out
