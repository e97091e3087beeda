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
  non-null values; float features must be finite float32 numbers and integer ones int64s.

Decoding is iterative, so any nesting depth ``json.loads`` accepts is a 400 at worst, never a
RecursionError.
"""
from __future__ import annotations

import base64
import reprlib

import numpy as np

from serving.status import invalid


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxstring, _SHORT.maxother = 3, 6, 40, 40
_INT64_MIN, _INT64_MAX = -(2 ** 63), 2 ** 63 - 1


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


def predict_inputs(body: dict, input_keys: list[str]) -> tuple[dict, bool]:
    """(input key -> list, row_format) from a Predict request body."""
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
            return {k: [decode_value(item[k]) for item in instances] for k in keys}, True
        if any(_is_named(i) for i in instances):
            raise invalid("instances mix named (object) and unnamed items")
        if len(input_keys) != 1:
            raise invalid(f"instances must be objects naming the signature's inputs {sorted(input_keys)}")
        return {input_keys[0]: decode_value(instances)}, True
    if "inputs" in body:
        inputs = body["inputs"]
        if _is_named(inputs):
            return {k: decode_value(v) for k, v in inputs.items()}, False
        if len(input_keys) != 1:
            raise invalid(f"\"inputs\" must be an object naming the signature's inputs {sorted(input_keys)}")
        return {input_keys[0]: decode_value(inputs)}, False
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
