"""TF Serving's REST JSON conventions, both ways (``tensorflow_serving/util/json_tensor.cc``, 2.19).

Requests:

* binary strings travel as ``{"b64": "<base64>"}`` (an object with the one key ``b64`` and
  a string value; e.g. serialized tf.Examples);
* Predict: row format ``{"instances": [...]}`` (one item per example; an object naming
  every input when the signature has several, a bare value or list when it has one) or
  columnar ``{"inputs": ...}`` (an object of input -> value; a bare value for a single
  input; named inputs the signature lacks are ignored, as TF Serving does), never both;
  ``"instances": []`` is a 400 (``No values in 'instances' array``);
* Classify/Regress: ``"examples"`` (a non-empty list of objects of feature -> value or
  list) and an optional ``"context"`` object whose features every example gets (an
  example's own feature of the same name wins), each turned into a serialized
  ``tf.Example``: strings and b64 objects -> ``bytes_list``, integers and booleans ->
  ``int64_list``, other numbers -> ``float_list``; a feature's values must all be of one
  kind (``[1, 2.5]`` is a 400, as in TF Serving) and ``[]`` is a feature with no kind set.

Predict inputs are checked the way ``FillTensorMapFromInstancesList`` /
``FillTensorMapFromInputsMap`` check them, with TF Serving's error texts: a JSON tensor is
dense (rectangular). Row format: every instance of an input must have the same size and
shape (``Failed to process element: 1 key: hist_items of 'instances' list. Error:
INVALID_ARGUMENT: Expecting tensor size: 3 but got: 2``); within one tensor every list at a
level has the length of the first one (``Encountered list at unexpected size: 2 at level:
1 expected size: 3``) and values sit at one depth (``... found at incorrect level ...``); a
value of the wrong JSON type is ``JSON Value: 5 Type: Number is not of expected type:
string``. Where a JSON value is quoted, it is printed as rapidjson's ``PrettyWriter`` does
(``debug_json``, at most 256 bytes). Shape errors carry a hint after TF Serving's text: a
list feature (``data.lists``) is sent padded with ``""`` to one width (``serving.signatures``:
padded representation; ragged rejected with 400). Nulls are left to ``serving.api``'s check
(a clearer message than TF Serving's type error), and so are non-finite numbers.

Most requests take a fast path: a column whose instances are all scalars, or all flat
lists of one length, of the input's JSON type is accepted after one pass over its value
types; anything else (and every error) goes through the element-by-element check that
reproduces TF Serving's message. Decoding is iterative, so any nesting depth the JSON
parser accepts is a 400 at worst, never a RecursionError.

Responses (``encode_predict``, ``encode_classify``, ``encode_regress``): ``{"predictions":
[...]}`` for row requests (an object per row, or a plain value when the signature has one
output), ``{"outputs": ...}`` for columnar ones, ``{"results": ...}`` for Classify
(``[[label, score], ...]`` per example) and Regress (a value per example), as UTF-8 JSON
bytes. Numbers are written as TF Serving's ``WriteDecimal`` writes them: a float is its
shortest ``%g`` (6 significant digits) text when that reads back as the same float32 (or
float64), else ``%.9g`` (``%.17g``), with ``.0`` added to whole numbers (``1.0``, not
``1``); ``NaN`` / ``Infinity`` / ``-Infinity`` for non-finite values. String outputs are
JSON strings, or ``{"b64": ...}`` when the output's name ends in ``_bytes`` or the bytes are
not UTF-8.
"""
from __future__ import annotations

import base64
import binascii
import itertools
import json
import math
import reprlib
import struct
from decimal import Decimal

import numpy as np
import orjson

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
_OBJECT_HINT = "unexpected JSON object {keys}; only {{\"b64\": ...}} objects are values"


# ----------------------------------------------------------------------------- parsing and quoting JSON
def parse_request(body: bytes) -> dict:
    """The JSON object of a request body; 400 ``JSON Parse error: ...`` otherwise.

    orjson parses (several times faster than ``json`` on large bodies); what it refuses
    (``NaN`` / ``Infinity``, which TF Serving's parser accepts, integers beyond 64 bits,
    nesting deeper than 1024) is parsed again by ``json``, so the accepted documents are
    ``json.loads``'s. A body that is not an object is TF Serving's ``Is not object``.
    """
    if not body:
        raise invalid("JSON Parse error: The document is empty")
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        try:
            obj = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise invalid(f"JSON Parse error: {e}") from None
        except RecursionError:  # e.g. 100,000 nested arrays: a bad request, not a server fault
            raise invalid("JSON Parse error: the request nests arrays or objects too deeply") from None
    if not isinstance(obj, dict):
        raise invalid(f"JSON Value: {debug_json(obj)} Is not object")
    return obj


def _short(value) -> str:
    """A bounded repr of a request value (reprlib: no recursion into deep nesting)."""
    return _SHORT.repr(value)


_STRING_ESCAPES = {i: f"\\u{i:04X}" for i in range(32)}
_STRING_ESCAPES.update({8: "\\b", 9: "\\t", 10: "\\n", 12: "\\f", 13: "\\r", 34: '\\"', 92: "\\\\"})


def _rapidjson_number(v) -> str | None:
    """rapidjson's text of a number (ints as integers; doubles: shortest digits, its
    ``Prettify`` layout: ``1.0``, ``0.001``, ``1e-7``, ``1.5e40``); None for NaN/Infinity,
    which its writer refuses."""
    if isinstance(v, int) and -(2 ** 63) <= v < 2 ** 64:
        return str(v)
    try:
        v = float(v)
    except OverflowError:
        return str(v)
    if not math.isfinite(v):
        return None
    sign = "-" if math.copysign(1.0, v) < 0 else ""
    if v == 0:
        return sign + "0.0"
    t = Decimal(repr(abs(v))).normalize().as_tuple()
    digits, k = "".join(map(str, t.digits)), t.exponent
    kk = len(digits) + k  # 10^(kk-1) <= v < 10^kk
    if 0 <= k and kk <= 21:
        text = digits + "0" * k + ".0"
    elif 0 < kk <= 21:
        text = digits[:kk] + "." + digits[kk:]
    elif -6 < kk <= 0:
        text = "0." + "0" * -kk + digits
    elif kk < -324:
        text = "0.0"
    elif len(digits) == 1:
        text = f"{digits}e{kk - 1}"
    else:
        text = f"{digits[0]}.{digits[1:]}e{kk - 1}"
    return sign + text


_END_OBJECT, _END_ARRAY = ("}", None), ("]", None)


def _members(obj: dict):
    for k, v in obj.items():
        yield ("key", k)
        yield v
    yield _END_OBJECT


def _debug_tokens(value):
    """The writer events of a JSON value, depth first and lazily (no recursion); bytes
    (a decoded b64 value) as the ``{"b64": ...}`` object they came from."""
    stack = [iter([value])]
    while stack:
        for v in stack[-1]:
            if isinstance(v, bytes):
                v = {"b64": base64.b64encode(v).decode("ascii")}
            if isinstance(v, dict):
                yield ("{", None)
                stack.append(_members(v))
                break
            if isinstance(v, list):
                yield ("[", None)
                stack.append(itertools.chain(v, [_END_ARRAY]))
                break
            yield v if isinstance(v, tuple) else ("value", v)
        else:
            stack.pop()


def debug_json(value) -> str:
    """TF Serving's ``JsonValueToDebugString``: rapidjson's ``PrettyWriter`` (4-space
    indent, arrays on one line) of a parsed JSON value, stopped once 256 bytes are written
    (the last token may cross the limit)."""
    out: list[str] = []
    size = 0
    levels: list[list] = []  # [in_array, values written]

    def put(text: str) -> None:
        nonlocal size
        out.append(text)
        size += len(text.encode("utf-8", "replace"))

    def prefix() -> None:
        if not levels:
            return
        level = levels[-1]
        if level[0]:
            if level[1]:
                put(", ")
        else:
            if level[1]:
                put(",\n" if level[1] % 2 == 0 else ": ")
            else:
                put("\n")
            if level[1] % 2 == 0:
                put(" " * (4 * len(levels)))
        level[1] += 1

    for kind, v in _debug_tokens(value):
        if size >= _DEBUG_BYTES:
            break
        if kind == "{" or kind == "[":
            prefix()
            put(kind)
            levels.append([kind == "[", 0])
        elif kind == "}":
            written = levels.pop()[1]
            if written:
                put("\n" + " " * (4 * len(levels)))
            put("}")
        elif kind == "]":
            levels.pop()
            put("]")
        elif kind == "key":
            prefix()
            put('"' + v.translate(_STRING_ESCAPES) + '"')
        else:
            if isinstance(v, bool) or v is None:
                text = "null" if v is None else ("true" if v else "false")
            elif isinstance(v, str):
                text = '"' + v.translate(_STRING_ESCAPES) + '"'
            else:
                text = _rapidjson_number(v)
                if text is None:  # rapidjson's writer stops at NaN / Infinity
                    break
            prefix()
            put(text)
    return "".join(out)


# ----------------------------------------------------------------------------- b64 values
def _is_b64(value) -> bool:
    """TF Serving's ``IsValBase64Object``: an object with the one key ``b64``, a string."""
    return type(value) is dict and len(value) == 1 and type(value.get("b64")) is str


def _unbase64(text: str) -> bytes:
    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):  # non-ASCII str is a ValueError
        raise invalid("Unable to base64 decode") from None


def _decode_object(value: dict):
    if _is_b64(value):
        return _unbase64(value["b64"])
    raise invalid(f"JSON Value: {debug_json(value)} not formatted correctly for base64 data "
                  f"({_OBJECT_HINT.format(keys=sorted(value))})")


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
    """An object naming inputs (any object but a b64 value)."""
    return isinstance(item, dict) and not _is_b64(item)


# ----------------------------------------------------------------------------- JSON tensors
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
    return "Object"


_INT_RANGES = {"int32": (-(2 ** 31), 2 ** 31 - 1), "int16": (-(2 ** 31), 2 ** 31 - 1),
               "int8": (-(2 ** 31), 2 ** 31 - 1), "uint8": (-(2 ** 31), 2 ** 31 - 1),
               "int64": (_INT64_MIN, _INT64_MAX), "uint32": (0, 2 ** 32 - 1), "uint64": (0, 2 ** 64 - 1)}
# The Python types of the JSON values each dtype takes (AddValueToTensor); None: no check.
_SCALAR_TYPES = {"float": {int, float}, "double": {int, float}, "string": {str}, "bool": {bool},
                 **{name: {int} for name in _INT_RANGES}}


def _value_ok(v, type_name: str) -> bool:
    """TF Serving's ``AddValueToTensor`` type rule for one JSON value (True: accepted)."""
    allowed = _SCALAR_TYPES.get(type_name)
    if allowed is None:
        return True  # other dtypes: TensorFlow's conversion names the problem
    if type(v) not in allowed:
        return False
    limits = _INT_RANGES.get(type_name)
    return limits is None or limits[0] <= v <= limits[1]


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


def _leaf(v, level: int, rank: int, type_name: str | None):
    """One value of a JSON tensor, checked (``FillTensorProto``'s leaf case) and decoded."""
    if level != rank:
        raise _TensorError(f"JSON Value: {debug_json(v)} found at incorrect level: {level + 1} in the JSON DOM. "
                           f"Expected at level: {rank}", True)
    if isinstance(v, dict):
        if type_name not in ("string", None):
            raise _TensorError(f"JSON Value: {debug_json(v)} Type: Object is not of expected type: {type_name}", False)
        if not _is_b64(v):
            raise _TensorError(f"JSON Value: {debug_json(v)} not formatted correctly for base64 data "
                               f"({_OBJECT_HINT.format(keys=sorted(v))})", False)
        try:
            return _unbase64(v["b64"])
        except Exception:  # noqa: BLE001  (a RequestError: re-raised with TF Serving's wrapping)
            raise _TensorError("Unable to base64 decode", False) from None
    if v is not None and type_name is not None and not _value_ok(v, type_name):
        raise _TensorError(f"JSON Value: {debug_json(v)} Type: {_json_type(v)} is not of expected type: {type_name}",
                           False)
    return v


def _fill(key: str, value, type_name: str | None) -> tuple:
    """(decoded value, number of values, shape) of one JSON tensor, checked as TF
    Serving's ``FillTensorProto`` does (depth first, in order); raises ``_TensorError``."""
    shape = _dense_shape(key, value)
    rank = len(shape)
    if not isinstance(value, list):
        return _leaf(value, 0, rank, type_name), 1, shape
    if len(value) != shape[0]:
        raise _TensorError(f"Encountered list at unexpected size: {len(value)} at level: 0 expected size: {shape[0]}",
                           True)
    out: list = []
    count = 0
    stack = [(iter(value), out, 0)]  # (items, decoded copy, level of the list)
    while stack:
        items, dst, level = stack[-1]
        for v in items:
            if isinstance(v, list):
                if level + 1 >= rank:
                    raise _TensorError(f"Encountered list at unexpected level: {level + 1} expected < {rank}", True)
                if len(v) != shape[level + 1]:
                    raise _TensorError(f"Encountered list at unexpected size: {len(v)} at level: {level + 1} "
                                       f"expected size: {shape[level + 1]}", True)
                child: list = []
                dst.append(child)
                stack.append((iter(v), child, level + 1))
                break
            dst.append(_leaf(v, level + 1, rank, type_name))
            count += 1
        else:
            stack.pop()
    return out, count, shape


def _shape_text(shape: list[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _failed(e: _TensorError, key: str, where: str):
    message = f"{where}{e.message}"
    return invalid(f"{message} ({_RAGGED_HINT.format(key=key)})" if e.shape else message)


class _NotFast(Exception):
    """The fast path does not apply (or the value is invalid): take the exact path."""


def _fast_b64(value) -> bytes:
    if not _is_b64(value):
        raise _NotFast()
    try:
        return binascii.a2b_base64(value["b64"], strict_mode=True)
    except (binascii.Error, ValueError):
        raise _NotFast() from None


def _scalars(values: list, type_name: str | None) -> list:
    """``values`` (JSON scalars) decoded, when each is of the JSON type ``type_name`` takes
    (or null, left to ``serving.api``); raises ``_NotFast`` otherwise."""
    kinds = set(map(type, values))
    kinds.discard(type(None))
    if list in kinds:
        raise _NotFast()
    has_objects = dict in kinds
    kinds.discard(dict)
    if has_objects and type_name not in ("string", None):
        raise _NotFast()
    allowed = _SCALAR_TYPES.get(type_name)
    if allowed is not None:
        if not kinds <= allowed:
            raise _NotFast()
        limits = _INT_RANGES.get(type_name)
        if limits is not None and kinds:
            ints = [v for v in values if type(v) is int]
            if ints and (min(ints) < limits[0] or max(ints) > limits[1]):
                raise _NotFast()
    if has_objects:
        return [_fast_b64(v) if type(v) is dict else v for v in values]
    return values


def _fast_column(values: list, type_name: str | None) -> list:
    """The instances of one input when all are scalars, or all flat lists of one length,
    of the right JSON type (every such column is a valid dense tensor); else ``_NotFast``."""
    if type(values[0]) is not list:
        return _scalars(values, type_name)
    if set(map(type, values)) != {list} or len(set(map(len, values))) != 1:
        raise _NotFast()
    width = len(values[0])
    flat = _scalars(list(itertools.chain.from_iterable(values)), type_name)
    return [flat[i:i + width] for i in range(0, len(flat), width)] if width else [[] for _ in values]


class _Instances:
    """TF Serving's ``AddInstanceItem`` state: each input's first size and shape."""

    def __init__(self, types: dict):
        self.types, self.first = types, {}

    def add(self, key: str, value, where: str):
        try:
            decoded, size, shape = _fill(key, value, self.types[key])
            if key not in self.first:
                self.first[key] = (size, shape)
            elif self.first[key][0] != size:
                raise _TensorError(f"Expecting tensor size: {self.first[key][0]} but got: {size}", True)
            elif self.first[key][1] != shape:
                raise _TensorError(f"Expecting shape {_shape_text(self.first[key][1])} but got: {_shape_text(shape)}",
                                   True)
        except _TensorError as e:
            raise _failed(e, key, where) from None
        return decoded


def _unnamed_instances(instances: list, key: str, types: dict) -> list:
    try:
        return _fast_column(instances, types[key])
    except _NotFast:
        pass
    state, out = _Instances(types), []
    for n, item in enumerate(instances):
        if _is_named(item):
            raise invalid(f"Expecting value/list but got object at item {n} of input list")
        out.append(state.add(key, item, f"Failed to process element: {n} of 'instances' list. Error: "
                                        "INVALID_ARGUMENT: "))
    return out


def _named_instances(instances: list, keys: list, types: dict) -> dict:
    names = set(keys)
    if all(type(item) is dict and item.keys() == names for item in instances):
        try:
            return {k: _fast_column([item[k] for item in instances], types[k]) for k in keys}
        except _NotFast:
            pass
    state = _Instances(types)
    columns: dict = {k: [] for k in keys}
    for n, item in enumerate(instances):
        if not _is_named(item):
            raise invalid(f"Expecting object but got list at item {n} of input list")
        for key, value in item.items():
            where = f"Failed to process element: {n} key: {key} of 'instances' list. Error: INVALID_ARGUMENT: "
            if key not in types:
                unknown = sorted(set(item) - names)
                raise invalid(f"{where}JSON object: does not have named input: {key} (unknown input(s) {unknown}; "
                              f"the signature expects {sorted(keys)})")
            columns[key].append(state.add(key, value, where))
        if item.keys() != names:
            raise invalid(f"Failed to process element: {n} of 'instances' list. JSON object: {debug_json(item)} keys "
                          f"must be equal to: {','.join(sorted(keys))}")
    return columns


def _input_column(key: str, value, type_name: str | None):
    if type(value) is list and value:
        try:
            return _fast_column(value, type_name)
        except _NotFast:
            pass
    try:
        return _fill(key, value, type_name)[0]
    except _TensorError as e:
        raise _failed(e, key, "") from None


def _input_types(inputs) -> tuple[list[str], dict]:
    """(input keys, key -> DataTypeString or None) of a list of keys or a mapping key ->
    dtype / ``TensorInfo``."""
    if isinstance(inputs, dict):
        return list(inputs), {k: _type_name(v) for k, v in inputs.items()}
    return list(inputs), {k: None for k in inputs}


def predict_inputs(body: dict, input_keys, signature_name: str = "") -> tuple[dict, bool]:
    """(input key -> decoded JSON value, row_format) from a Predict request body.

    ``input_keys``: the signature's input keys, or a mapping key -> dtype (a ``tf.DType`` or
    anything with a ``dtype``, e.g. ``serving.session_model.TensorInfo``), which also checks
    the JSON types as TF Serving does. Shapes are checked either way (module docstring);
    the errors are ``FillPredictRequestFromJson``'s, in its order.
    """
    keys, types = _input_types(input_keys)
    if not keys:
        raise invalid(f"Failed to get input map for signature: {signature_name or 'DEFAULT'}")
    if "instances" in body:
        if "inputs" in body:
            raise invalid(f"JSON Value: {debug_json(body)} Not formatted correctly expecting only one of 'inputs' or "
                          "'instances' keys to exist ")
        instances = body["instances"]
        if not isinstance(instances, list):
            raise invalid(f"JSON Value: {debug_json(body)} Expecting 'instances' to be an list/array")
        if not instances:
            raise invalid(f"JSON Value: {debug_json(body)} No values in 'instances' array")
        if not _is_named(instances[0]):
            if len(keys) > 1:
                raise invalid("instances is a plain list, but expecting list of objects as multiple input tensors "
                              "required as per tensorinfo_map")
            return {keys[0]: _unnamed_instances(instances, keys[0], types)}, True
        return _named_instances(instances, keys, types), True
    if "inputs" in body:
        inputs = body["inputs"]
        if not _is_named(inputs):
            if len(keys) > 1:
                raise invalid("inputs is a plain value/list, but expecting an object as multiple input tensors "
                              "required as per tensorinfo_map")
            return {keys[0]: _input_column(keys[0], inputs, types[keys[0]])}, False
        feed = {}
        for key in keys:  # named inputs the signature lacks are ignored, as TF Serving does
            if key not in inputs:
                raise invalid(f"Missing named input: {key} in 'inputs' object.")
            feed[key] = _input_column(key, inputs[key], types[key])
        return feed, False
    raise invalid("Missing 'inputs' or 'instances' key")


# ----------------------------------------------------------------------------- responses
def _formatted(fmt: str, values: list) -> list[str]:
    """``fmt % v`` for each value, in one formatting call."""
    texts = ((fmt + "\n") * len(values) % tuple(values)).split("\n")
    texts.pop()
    return texts


_FEW_FLOATS = 16  # below this, numpy's per-call costs outweigh a loop


def _float_text(x: float, narrow: bool) -> str:
    """``WriteDecimal`` of one value (``x``: a float32's or a float64's exact value)."""
    if not math.isfinite(x):
        return "NaN" if x != x else ("Infinity" if x > 0 else "-Infinity")
    text = "%g" % x
    try:
        same = (_F32.unpack(_F32.pack(float(text)))[0] if narrow else float(text)) == x
    except OverflowError:
        same = False
    if not same:
        text = ("%.9g" if narrow else "%.17g") % x
    return text if "." in text or "e" in text else text + ".0"


def _float_texts(values: np.ndarray) -> list[str]:
    """TF Serving's ``WriteDecimal`` text of every value of a float array (row-major): the
    ``%g`` text (6 significant digits) when it reads back as the same value of the array's
    precision, else ``%.9g`` (float32) / ``%.17g`` (float64); ``.0`` after whole numbers;
    ``NaN``, ``Infinity``, ``-Infinity``.

    Which values ``%g`` may give back is found arithmetically (the value rounded to 6
    significant digits); only those, and the values next to a rounding tie, are formatted
    with ``%g`` and read back to decide, so the choice is the one the formatted text gives.
    """
    narrow = values.dtype != np.float64
    exact = values.astype(np.float32 if narrow else np.float64).ravel()
    if len(exact) <= _FEW_FLOATS:
        return [_float_text(x, narrow) for x in exact.tolist()]
    wide = exact.astype(np.float64)
    finite = np.isfinite(wide)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        magnitude = np.floor(np.log10(np.abs(np.where(finite & (wide != 0), wide, 1.0))))
        scaled = wide * 10.0 ** (5 - magnitude)
        rounded = np.round(scaled) / 10.0 ** (5 - magnitude)
        near_tie = np.abs(scaled - np.floor(scaled) - 0.5) < 1e-6
        candidates = ((rounded.astype(np.float32) if narrow else rounded) == exact) | near_tie | (wide == 0)
    texts = _formatted("%.9g" if narrow else "%.17g", wide.tolist())
    check = np.flatnonzero(candidates & finite)
    if len(check):
        short = _formatted("%g", wide[check].tolist())
        back = np.array(short, dtype=np.float64)
        same = (back.astype(np.float32) if narrow else back) == exact[check]
        for i, text, ok in zip(check.tolist(), short, same.tolist()):
            if ok:
                texts[i] = text
    for i in np.flatnonzero(~finite).tolist():
        texts[i] = "NaN" if np.isnan(wide[i]) else ("Infinity" if wide[i] > 0 else "-Infinity")
    for i in np.flatnonzero(finite & (wide == np.trunc(wide))).tolist():  # whole numbers
        if "." not in texts[i] and "e" not in texts[i]:
            texts[i] += ".0"
    return texts


def _json_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _string_texts(key: str, values: np.ndarray) -> list[str]:
    """JSON texts of string values: a JSON string, or ``{"b64": ...}`` for an output named
    ``*_bytes`` and for bytes that are not UTF-8."""
    binary = key.endswith("_bytes")
    cache: dict = {}
    out = []
    for v in values.ravel().tolist():
        text = cache.get(v)
        if text is None:
            if isinstance(v, str):
                text = _json_string(v)
            elif not binary:
                try:
                    text = _json_string(v.decode("utf-8"))
                except UnicodeDecodeError:
                    text = None
            if text is None:
                text = '{"b64":"' + base64.b64encode(bytes(v)).decode("ascii") + '"}'
            cache[v] = text
        out.append(text)
    return out


def _texts(key: str, array: np.ndarray) -> list[str]:
    """The JSON text of each value of an output (row-major)."""
    kind = array.dtype.kind
    if kind == "f":
        return _float_texts(array)
    if kind in "iu":
        return list(map(str, array.ravel().tolist()))
    if kind == "b":
        return ["true" if v else "false" for v in array.ravel().tolist()]
    if kind in "OSU":
        return _string_texts(key, array)
    raise invalid(f"Failed to write JSON value for tensor type: {array.dtype.name} (output '{key}')")


def _nested(texts: list[str], shape: tuple, levels: int) -> list[str]:
    """Wraps the innermost ``levels`` dimensions of row-major value texts in JSON arrays."""
    for j in range(len(shape) - 1, len(shape) - 1 - levels, -1):
        d, groups = shape[j], int(np.prod(shape[:j], dtype=np.int64))
        texts = (["[" + ",".join(texts[g * d:(g + 1) * d]) + "]" for g in range(groups)] if d
                 else ["[]"] * groups)
    return texts


def _object(members: dict) -> str:
    return "{" + ",".join(f"{_json_string(k)}:{v}" for k, v in members.items()) + "}"


def encode_predict(outputs: dict, row_format: bool) -> bytes:
    """A Predict response (``MakeJsonFromTensors``): ``{"predictions": [...]}`` (row) or
    ``{"outputs": ...}`` (columnar) of output key -> array, as UTF-8 JSON."""
    if not outputs:
        raise invalid("Cannot convert empty tensor map to JSON")
    arrays = {k: np.asarray(v) for k, v in outputs.items()}
    if not row_format:
        columns = {k: _nested(_texts(k, a), a.shape, a.ndim)[0] for k, a in arrays.items()}
        body = next(iter(columns.values())) if len(columns) == 1 else _object(columns)
        return ('{"outputs":' + body + "}").encode("utf-8", "replace")
    batch = None
    for k, a in arrays.items():
        if a.ndim == 0:
            raise invalid(f"Tensor name: {k} has no shape information ")
        if batch is not None and a.shape[0] != batch:
            raise invalid(f"Tensor name: {k} has inconsistent batch size: {a.shape[0]} expecting: {batch}")
        batch = a.shape[0]
    rows = {k: _nested(_texts(k, a), a.shape, a.ndim - 1) for k, a in arrays.items()}
    if len(rows) == 1:
        items = next(iter(rows.values()))
    else:
        template = "{" + ",".join(_json_string(k).replace("%", "%%") + ":%s" for k in rows) + "}"
        items = [template % values for values in zip(*rows.values())]
    return ('{"predictions":[' + ",".join(items) + "]}").encode("utf-8", "replace")


def encode_classify(scores, classes) -> bytes:
    """A Classify response (``MakeJsonFromClassificationResult``): ``{"results": [[[label,
    score], ...], ...]}``, one list of (label, score) pairs per example; scores are float32.
    Without a ``classes`` output every label is ``""``, without ``scores`` every score 0,
    as TF Serving's ``ClassificationResult`` has them."""
    if scores is None:
        scores = np.zeros(np.shape(classes), np.float32)
    if classes is None:
        classes = np.full(np.shape(scores), b"", dtype=object)
    scores = np.asarray(scores, np.float32)
    classes = np.asarray(classes)
    pairs = [f"[{label},{score}]" for label, score in zip(_string_texts("classes", classes), _float_texts(scores))]
    return ('{"results":[' + ",".join(_nested(pairs, scores.shape, scores.ndim - 1)) + "]}").encode("utf-8", "replace")


def encode_regress(values) -> bytes:
    """A Regress response (``MakeJsonFromRegressionResult``): ``{"results": [value, ...]}``."""
    return ('{"results":[' + ",".join(_float_texts(np.asarray(values, np.float32))) + "]}").encode("utf-8")


# ----------------------------------------------------------------------------- Classify / Regress examples
_SMALL_VARINTS = [bytes([i]) for i in range(128)]
_KINDS = {1: "bytes", 2: "float", 3: "int64"}  # tf.train.Feature's kind field numbers


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _SMALL_VARINTS[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _delimited(tag: bytes, payload: bytes) -> bytes:
    return tag + _varint(len(payload)) + payload


def _kind_bytes(name: str, kind: int, values: list) -> bytes:
    """A serialized ``tf.train.Feature`` of one kind (values already of its Python type)."""
    if kind == 1:
        payload = b"".join([_delimited(b"\n", v) for v in values])
    elif kind == 2:
        try:
            if not all(map(math.isfinite, values)):
                raise OverflowError()
            payload = _delimited(b"\n", struct.pack(f"<{len(values)}f", *values))
        except OverflowError:  # NaN, Infinity, beyond float32's range (or an integer beyond float64's)
            v = next(v for v in values if not _finite_float32(v))
            raise invalid(f"feature '{name}': {_short(v)} is not a finite float32; NaN, Infinity and numbers beyond "
                          "float32's range (about ±3.4e38) are not valid values") from None
    else:
        payload = _delimited(b"\n", b"".join([_varint(v & 0xFFFFFFFFFFFFFFFF) for v in values]))
    return _delimited(b"\n\x12\x1a"[kind - 1:kind], payload)


def _finite_float32(v) -> bool:
    try:
        f = float(v)
    except OverflowError:  # an int beyond float64
        return False
    with np.errstate(over="ignore"):
        return bool(np.isfinite(np.float32(f)))


def _feature_values(name: str, values: list) -> tuple[int, list]:
    """(kind, values) of a JSON feature, element by element as ``AddValueToFeature``: the
    first value sets the kind, a later one of another kind is an error."""
    kind, out = None, []
    for i, v in enumerate(values):
        t = type(v)
        if v is None:
            raise invalid(f"feature '{name}': null (missing value) at position {i}; omit the feature or give it a "
                          "value")
        if t is list:
            raise invalid(f"Feature: {name} has element with unexpected JSON type: Array (nested lists are not "
                          "allowed: a tf.Example feature is a flat list of values)")
        if t is dict:
            if not _is_b64(v):
                raise invalid(f"Feature: {name} has element with unexpected JSON type: Object "
                              f"({_OBJECT_HINT.format(keys=sorted(v))})")
            k = 1
        elif t is str:
            k = 1
        elif t is bool:
            k, v = 3, int(v)
        elif t is int and _INT64_MIN <= v <= _INT64_MAX:
            k = 3
        elif t is int and 0 <= v < 2 ** 64:
            raise invalid(f"Feature: {name} has uint64_t element. Only int64_t is supported.")
        else:  # a float, or an integer beyond 64 bits (a double to TF Serving's parser)
            k = 2
        if kind is not None and k != kind:
            raise invalid(f"Unexpected element type in feature: {name} expecting type: {_KINDS[kind]}")
        kind = k
        out.append(_unbase64(v["b64"]) if t is dict else v)
    return kind, out


def _feature_bytes(name: str, value) -> bytes:
    """The serialized ``tf.train.Feature`` of a JSON feature value or list (``[]``: a
    feature with no kind set, as in TF Serving)."""
    values = value if type(value) is list else [value]
    if not values:
        return b""
    kinds = set(map(type, values))
    try:
        if kinds == {str}:
            return _kind_bytes(name, 1, [v.encode("utf-8") for v in values])
        if kinds == {float}:
            return _kind_bytes(name, 2, values)
        if kinds == {int} and _INT64_MIN <= min(values) and max(values) <= _INT64_MAX:
            return _kind_bytes(name, 3, values)
        kind, values = _feature_values(name, values)
        if kind == 1:
            values = [v.encode("utf-8") if isinstance(v, str) else v for v in values]
        return _kind_bytes(name, kind, values)
    except UnicodeEncodeError:
        raise invalid(f"Feature: {name} has a string that is not valid UTF-8 (a lone surrogate)") from None


_F32 = struct.Struct("<f")


class _ExampleEncoder:
    """Serialized ``Features.feature`` map entries of JSON example objects
    (``MakeExampleFromJsonObject``), with caches for one request: the encoded names, the
    entry prefix of a single float per name, and the entries of repeated strings, integers
    and string lists (categorical values recur from example to example)."""

    def __init__(self):
        self.keys: dict = {}
        self.float_prefixes: dict = {}
        self.entries: dict = {}

    def _key(self, name: str) -> bytes:
        key = self.keys.get(name)
        if key is None:
            try:
                key = self.keys[name] = _delimited(b"\n", name.encode("utf-8"))
            except UnicodeEncodeError:
                raise invalid(f"Feature name {name!r} is not valid UTF-8 (a lone surrogate)") from None
        return key

    def _entry(self, name: str, value) -> bytes:
        return _delimited(b"\n", self._key(name) + _delimited(b"\x12", _feature_bytes(name, value)))

    def entries_of(self, obj) -> dict:
        """Feature name -> map entry bytes of one JSON example object."""
        if not isinstance(obj, dict):
            raise invalid(f"Example must be JSON object but got JSON {_json_type(obj)}")
        out = {}
        for name, value in obj.items():
            t = type(value)
            if t is list and len(value) == 1 and type(value[0]) is float:
                t, value = float, value[0]  # [v] and v are one feature
            if t is float and math.isfinite(value):
                prefix = self.float_prefixes.get(name)
                if prefix is None:
                    key = self._key(name)  # entry: key, then Feature{float_list{value: [v]}} of 8 bytes
                    prefix = self.float_prefixes[name] = (b"\n" + _varint(len(key) + 10) + key
                                                          + b"\x12\x08\x12\x06\n\x04")
                try:
                    out[name] = prefix + _F32.pack(value)
                    continue
                except OverflowError:  # beyond float32: the general path names it
                    pass
            if t is str or t is int or (t is list and value and type(value[0]) is str):
                cache_key = (name, t, tuple(value) if t is list else value)
                try:
                    entry = self.entries.get(cache_key)
                except TypeError:  # an unhashable element (an object, a list): no caching
                    cache_key, entry = None, None
                if entry is None:
                    entry = self._entry(name, value)
                    if cache_key is not None:
                        self.entries[cache_key] = entry
                out[name] = entry
                continue
            out[name] = self._entry(name, value)
        return out


def examples_from_json(body: dict) -> list[bytes]:
    """Serialized tf.Examples of a Classify/Regress body (``FillClassifyRegressRequestFromJson``):
    ``context`` (optional) is read first, then ``examples``, which must be a non-empty list
    of objects; an example's features override the context's of the same name."""
    encoder = _ExampleEncoder()
    context = encoder.entries_of(body["context"]) if "context" in body else {}
    if "examples" not in body:
        raise invalid(f"JSON Value: {debug_json(body)} When method is classify, key 'examples' is expected and was "
                      "not found")
    examples = body["examples"]
    if not isinstance(examples, list):
        raise invalid(f"JSON Value: {debug_json(body)} Expecting 'examples' value to be an list/array")
    if not examples:
        raise invalid(f"JSON Value: {debug_json(body)} 'examples' value is an empty array")
    out = []
    for example in examples:
        entries = encoder.entries_of(example)
        if context:
            entries = {**context, **entries}
        out.append(_delimited(b"\n", b"".join(entries.values())) if entries else b"")
    return out
