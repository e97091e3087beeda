"""The server's operations, shared by the REST and gRPC front ends.

``ServingApi`` resolves a model and version through the ``ModelStore`` and runs Predict,
Classify and Regress on numpy inputs, with TF Serving's checks: the batch-size limit, the
classify/regress method names, and TensorFlow's own argument errors turned into
``RequestError`` (400) instead of escaping as 500s. The front ends only translate wire
formats (JSON or protos) to and from these calls.

Inputs are checked before a model runs (``_checked_input``), each a 400 naming the input:
a null (missing) value, ragged nested lists, nesting deeper than 32 levels, and a numeric
value that is not finite in the input's dtype (NaN, Infinity, or 1e39 for float32, which
would overflow to Infinity) -- TensorFlow would accept those and answer NaN. Serialized
``tf.Example`` inputs (Classify/Regress, and Predict inputs named ``examples``/``inputs``)
are parsed and their float features checked the same way.
"""
from __future__ import annotations

import math
import re

import numpy as np
import tensorflow as tf
from tensorflow.core.example import example_pb2

from serving.signatures import CLASSIFY_METHOD, REGRESS_METHOD
from serving.status import RequestError, invalid

DEFAULT_SIGNATURE = "serving_default"
EXAMPLE_INPUT_KEYS = ("examples", "inputs")  # string inputs that carry serialized tf.Examples
MAX_DIMS = 32  # numpy's limit for object arrays


def _batch_size(value) -> int:
    if isinstance(value, np.ndarray):
        return value.shape[0] if value.ndim else 1
    return len(value) if isinstance(value, (list, tuple)) else 1


def _at(index) -> str:
    return "".join(f"[{int(i)}]" for i in index) or "(scalar)"


def _first(value, predicate) -> tuple:
    """Index of the first leaf of nested lists where ``predicate`` holds (iterative), or ()."""
    stack = [(value, ())]
    while stack:
        v, index = stack.pop()
        if isinstance(v, (list, tuple)):
            stack.extend((x, index + (i,)) for i, x in reversed(list(enumerate(v))))
        elif predicate(v):
            return index
    return ()


def _check_nesting(key: str, value) -> None:
    """400 for null values, ragged lists and too deep nesting in a (nested) list input."""
    level, dims = [value], 0
    while True:
        if any(v is None for v in level):
            raise invalid(f"input '{key}': null (missing value) at {_at(_first(value, lambda v: v is None))}; "
                          "every value must be given")
        lists = [v for v in level if isinstance(v, (list, tuple))]
        if not lists:
            return
        lengths = sorted({len(v) for v in lists})
        if len(lists) != len(level) or len(lengths) != 1:
            found = f"lists of lengths {lengths[:5]}" + (" and values" if len(lists) != len(level) else "")
            raise invalid(f"input '{key}': ragged nested lists at depth {dims + 1} ({found}); every instance "
                          "must have the same shape")
        dims += 1
        if dims > MAX_DIMS:
            raise invalid(f"input '{key}': nested more than {MAX_DIMS} levels deep")
        level = [x for v in lists for x in v]


def _checked_numeric(key: str, value, info):
    """``value`` as an array of the input's numeric dtype; 400 when a value is not finite in it."""
    dtype = info.dtype
    try:
        arr = np.asarray(value)
        if arr.dtype.kind == "O":  # e.g. integers beyond int64
            arr = arr.astype(np.float64)
    except OverflowError:
        raise invalid(f"input '{key}': a number is too large for {dtype.name}") from None
    except (TypeError, ValueError):
        return value  # strings, booleans, objects: the model's conversion error names them
    if arr.dtype.kind not in "iuf" or not (dtype.is_floating or dtype.is_integer):
        return value
    with np.errstate(over="ignore", invalid="ignore"):
        cast = arr.astype(dtype.as_numpy_dtype)
        bad = ~np.isfinite(arr) if arr.dtype.kind == "f" else np.zeros(arr.shape, bool)
        if dtype.is_floating:
            bad |= ~np.isfinite(cast)
        else:
            bad |= (arr < dtype.min) | (arr > dtype.max)
    if bad.any():
        index = np.unravel_index(int(np.flatnonzero(bad)[0]), bad.shape) if bad.ndim else ()
        raise invalid(f"input '{key}': {arr[index].item()!r} at {_at(index)} is not a finite {dtype.name} value; "
                      f"NaN, Infinity and numbers beyond {dtype.name}'s range"
                      f"{' (about ±3.4e38)' if dtype == tf.float32 else ''} are not valid inputs")
    return cast


def _check_examples(key: str, examples) -> None:
    """400 when a serialized tf.Example has a non-finite float feature value (NaN, Infinity)."""
    flat = examples.reshape(-1) if isinstance(examples, np.ndarray) else examples
    if not isinstance(flat, (list, tuple, np.ndarray)):
        flat = [flat]
    for n, item in enumerate(flat):
        if not isinstance(item, bytes):
            continue
        try:
            example = example_pb2.Example.FromString(item)
        except Exception:  # noqa: BLE001  (not a tf.Example: the model reports it)
            continue
        for name, feature in example.features.feature.items():
            if feature.WhichOneof("kind") == "float_list":
                for v in feature.float_list.value:
                    if not math.isfinite(v):
                        raise invalid(f"input '{key}': example {n}: feature '{name}' has the value {v!r}; NaN "
                                      "and Infinity (or numbers beyond float32's range, which become Infinity) "
                                      "are not valid inputs")


def _checked_input(key: str, value, info):
    """The feed value for one input after the checks of the module docstring."""
    if info is None:  # not in the signature: the model names it
        return value
    if not isinstance(value, np.ndarray):
        _check_nesting(key, value)
    if info.dtype == tf.string:
        if key in EXAMPLE_INPUT_KEYS:
            _check_examples(key, value if isinstance(value, np.ndarray) else np.asarray(value, dtype=object))
        return value
    return _checked_numeric(key, value, info)


_ASSERTION = re.compile(r"^assertion failed: \[(.*)\]$")


def _tf_message(message: str) -> str:
    """The informative lines of a TensorFlow error (no 'Graph execution error:' or node lists);
    a ``tf.debugging.Assert`` of the exported graph (``serving.signatures``) as its message."""
    lines = [ln.strip() for ln in message.splitlines()]
    keep = [ln for ln in lines if ln and ln != "Graph execution error:" and not ln.startswith("[[")]
    text = " ".join(keep) or message
    m = _ASSERTION.match(text)
    return m.group(1).replace("\\'", "'") if m else text


class ServingApi:
    """Predict / Classify / Regress / metadata / status over a ``ModelStore``.

    Args:
      store: the ``ModelStore`` serving the models.
      max_batch_size: largest batch (first dimension) a request may carry; larger is a 400.
    """

    def __init__(self, store, max_batch_size: int = 1024):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1. Received: max_batch_size={max_batch_size}")
        self.store = store
        self.max_batch_size = max_batch_size

    def _check_batch(self, n: int) -> None:
        if n > self.max_batch_size:
            raise invalid(f"Task size {n} is larger than maximum input batch size {self.max_batch_size}")

    def _run(self, model, signature: str, inputs: dict, output_filter=None) -> dict:
        try:
            return model.run(signature, inputs, output_filter)
        except RequestError:
            raise
        except tf.errors.InvalidArgumentError as e:
            raise invalid(_tf_message(e.message)) from None

    def predict(self, name: str, version: int | None, signature: str, inputs, output_filter=None):
        """Returns ``(version, signature, outputs)`` with outputs as numpy arrays.

        ``inputs`` is a dict of input key -> array-like, or a function of the resolved
        ``Signature`` returning one (the REST front end needs the signature's input keys to
        read row-format instances; resolving both under one ``acquire`` keeps a version swap
        between the two from failing the request).
        """
        signature = signature or DEFAULT_SIGNATURE
        with self.store.acquire(name, version) as (v, model):
            sig = model.signature(signature)
            feed = inputs(sig) if callable(inputs) else inputs
            for value in feed.values():
                self._check_batch(_batch_size(value))
            feed = {k: _checked_input(k, value, sig.inputs.get(k)) for k, value in feed.items()}
            return v, signature, self._run(model, signature, feed, output_filter)

    def _method(self, model, signature: str, method: str, api: str) -> None:
        sig = model.signature(signature)
        if sig.method_name != method:
            raise invalid(f"Expected {api} signature method_name to be {method}. Was: {sig.method_name} "
                          f"(signature \"{signature}\")")

    def _run_examples(self, name, version, signature, examples, method: str, api: str):
        """Runs a Classify/Regress-style signature (``inputs``: serialized examples); returns
        ``(version, signature, outputs)``."""
        signature = signature or DEFAULT_SIGNATURE
        self._check_batch(len(examples))
        _check_examples("inputs", list(examples))
        with self.store.acquire(name, version) as (v, model):
            self._method(model, signature, method, api)
            return v, signature, self._run(model, signature, {"inputs": list(examples)})

    def classify(self, name: str, version: int | None, signature: str, examples: list[bytes]):
        """Returns ``(version, signature, scores [n, k], classes [n, k])``."""
        v, signature, out = self._run_examples(name, version, signature, examples, CLASSIFY_METHOD, "classification")
        return v, signature, out["scores"], out["classes"]

    def regress(self, name: str, version: int | None, signature: str, examples: list[bytes]):
        """Returns ``(version, signature, values [n])``."""
        v, signature, out = self._run_examples(name, version, signature, examples, REGRESS_METHOD, "regression")
        return v, signature, np.reshape(out["outputs"], [-1])

    def metadata(self, name: str, version: int | None):
        """Returns ``(version, {signature name: SignatureDef proto})``."""
        with self.store.acquire(name, version) as (v, model):
            return v, dict(model.signature_defs)

    def status(self, name: str, version: int | None = None) -> list[dict]:
        return self.store.status(name, version)
