"""The server's operations, shared by the REST and gRPC front ends.

``ServingApi`` resolves a model and a version (or a version label) through the
``ModelStore`` and runs Predict, Classify, Regress and MultiInference on numpy inputs, with
TF Serving 2.19's checks, order, status codes and messages: Predict's signature and input
checks (``serving.session_model.check_request``; an unknown signature is FAILED_PRECONDITION),
Classify/Regress's (``classifier.cc``/``regressor.cc``: ``No signature was found with the
name: x``, the signature's structure, ``Input is empty.``, the outputs' shapes and dtypes),
MultiInference's (``multi_inference.cc``), the optional method-name check
(``--enable_signature_method_name_check``), the batch-size limit, and TensorFlow's own
argument errors turned into ``RequestError`` (400) instead of escaping as 500s. The front
ends only translate wire formats (JSON or protos) to and from these calls.

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
from google.protobuf import text_format
from tensorflow.core.example import example_pb2
from tensorflow.core.framework import types_pb2

from serving.session_model import check_request, dtype_error
from serving.signatures import CLASSIFY_METHOD, PREDICT_METHOD, REGRESS_METHOD
from serving.status import INTERNAL, RequestError, invalid, unimplemented

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


def _may_hold_non_finite(items) -> bool:
    """False when no serialized example in ``items`` can hold a NaN or Infinity float: a
    ``float_list`` value is 4 little-endian bytes in the serialization, and a non-finite
    float32 has all 8 exponent bits set (``b[3] & 0x7F == 0x7F`` and ``b[2] & 0x80``). One
    vectorised scan of all the bytes; True (a candidate somewhere, e.g. inside a string or a
    large varint) sends the batch to the exact per-example check."""
    try:
        blob = b"".join(items)
    except TypeError:  # not all bytes (the model's conversion error will name them)
        blob = b"".join(item for item in items if isinstance(item, bytes))
    if b"\x7f" not in blob and b"\xff" not in blob:  # no exponent byte at all (C speed)
        return False
    buf = np.frombuffer(blob, np.uint8)
    return bool(np.any(((buf[3:] & 0x7F) == 0x7F) & (buf[2:-1] >= 0x80)))


def _check_examples(key: str, examples) -> None:
    """400 when a serialized tf.Example has a non-finite float feature value (NaN, Infinity)."""
    flat = examples.reshape(-1) if isinstance(examples, np.ndarray) else examples
    if not isinstance(flat, (list, tuple, np.ndarray)):
        flat = [flat]
    if not _may_hold_non_finite(flat.tolist() if isinstance(flat, np.ndarray) else flat):
        return
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


def _shape(arr) -> str:
    """TensorShape::DebugString: ``[2,3]``."""
    return "[" + ",".join(str(d) for d in np.shape(arr)) + "]"


def _dt(arr) -> str:
    """The DataType enum name of an array's dtype (``DT_DOUBLE``; object arrays ``DT_STRING``)."""
    dtype = tf.string if arr.dtype.kind in "OSU" else tf.as_dtype(arr.dtype)
    return types_pb2.DataType.Name(dtype.as_datatype_enum)


def _debug_string(model, signature: str) -> str:
    """The SignatureDef's text (C++ ``DebugString``), as TF Serving's messages embed it."""
    proto = getattr(model, "signature_defs", {}).get(signature)
    return text_format.MessageToString(proto) if proto is not None else f"{signature}\n"


class ServingApi:
    """Predict / Classify / Regress / MultiInference / metadata / status over a ``ModelStore``.

    Every call takes ``label=`` (a version label, ``model_spec.version_label``) besides
    ``version``; both given is INVALID_ARGUMENT (``ModelStore.acquire``).

    Args:
      store: the ``ModelStore`` serving the models.
      max_batch_size: largest batch (first dimension) a request may carry; larger is a 400.
      method_name_check: TF Serving's ``--enable_signature_method_name_check``: Predict
        needs a predict/classify/regress method name and Classify/Regress their own one.
        Off by default, as in TF Serving: Classify/Regress then check the signature's
        structure only (one ``inputs`` input; ``classes``/``scores`` or ``outputs`` outputs).
    """

    def __init__(self, store, max_batch_size: int = 1024, *, method_name_check: bool = False):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1. Received: max_batch_size={max_batch_size}")
        self.store = store
        self.max_batch_size = max_batch_size
        self.method_name_check = method_name_check

    def _acquire(self, name, version, label):
        if label is None:
            return self.store.acquire(name, version)
        return self.store.acquire(name, version, label=label)

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

    # ------------------------------------------------------------------ predict
    def predict(self, name: str, version: int | None, signature: str, inputs, output_filter=None, *,
                label: str | None = None, strict_dtypes: bool = False):
        """Returns ``(version, signature, outputs)`` with outputs as numpy arrays.

        ``inputs`` is a dict of input key -> array-like, or a function of the resolved
        ``Signature`` returning one (the REST front end needs the signature's input keys to
        read row-format instances; resolving both under one ``acquire`` keeps a version swap
        between the two from failing the request). Checks in TF Serving's order
        (``serving.session_model``); ``strict_dtypes`` (gRPC: the tensors' own dtypes) makes
        an ndarray of another dtype than its input's the session's INVALID_ARGUMENT instead of
        a conversion (REST: JSON numbers take the input's dtype, as in TF Serving).
        """
        signature = signature or DEFAULT_SIGNATURE
        with self._acquire(name, version, label) as (v, model):
            sig = model.signature(signature)
            if self.method_name_check and sig.method_name not in (PREDICT_METHOD, CLASSIFY_METHOD, REGRESS_METHOD):
                raise RequestError(INTERNAL, f"Expected prediction signature method_name to be one of "
                                             f"{{{PREDICT_METHOD}, {CLASSIFY_METHOD}, {REGRESS_METHOD}}}. Was: "
                                             f"{sig.method_name}")
            feed = inputs(sig) if callable(inputs) else inputs
            check_request(sig, feed, output_filter)
            if strict_dtypes:
                for i, (key, info) in enumerate(sig.inputs.items()):
                    value = feed.get(key)
                    if isinstance(value, np.ndarray):
                        error = dtype_error(i, key, value, info)
                        if error is not None:
                            raise error
            for value in feed.values():
                self._check_batch(_batch_size(value))
            feed = {k: _checked_input(k, value, sig.inputs.get(k)) for k, value in feed.items()}
            return v, signature, self._run(model, signature, feed, output_filter)

    # ------------------------------------------------------------------ classify / regress
    def _signature_for(self, model, signature: str, method: str):
        """The Classify/Regress signature after TF Serving's Get*SignatureDef and
        PreProcess* checks; returns ``(Signature, input key, output keys)``."""
        sig = model.signatures.get(signature)
        if sig is None:
            raise invalid(f"No signature was found with the name: {signature}")
        return sig, self._preprocess(model, signature, sig, method)

    def _preprocess(self, model, signature: str, sig, method: str) -> list[str]:
        """TF Serving's PreProcessClassification / PreProcessRegression: the output keys."""
        api = "classification" if method == CLASSIFY_METHOD else "regression"
        if self.method_name_check and sig.method_name != method:
            raise invalid(f"Expected {api} signature method_name to be {method}. Was: {sig.method_name}")
        if len(sig.inputs) != 1:
            raise invalid("Expected one input Tensor.")
        if method == CLASSIFY_METHOD:
            if len(sig.outputs) not in (1, 2):
                raise invalid(f"Expected one or two output Tensors, found {len(sig.outputs)}")
            if "inputs" not in sig.inputs:
                raise invalid(f"No classification inputs found in SignatureDef: {_debug_string(model, signature)}")
            outputs = [k for k in ("classes", "scores") if k in sig.outputs]
            if not outputs:
                raise invalid("Expected classification signature outputs to contain at least one of \"classes\" or "
                              f"\"scores\". Signature was: {_debug_string(model, signature)}")
            return outputs
        if len(sig.outputs) != 1:
            raise invalid("Expected one output Tensor.")
        if "inputs" not in sig.inputs:
            raise invalid(f"No regression inputs found in SignatureDef: {_debug_string(model, signature)}")
        if "outputs" not in sig.outputs:
            raise invalid(f"No regression outputs found in SignatureDef: {_debug_string(model, signature)}")
        return ["outputs"]

    def _examples_in(self, examples) -> list:
        examples = list(examples)
        if not examples:
            raise invalid("Input is empty.")
        self._check_batch(len(examples))
        _check_examples("inputs", examples)
        return examples

    def _run_examples(self, name, version, label, signature, examples, method: str):
        """Runs a Classify/Regress signature on serialized examples; returns
        ``(version, signature, outputs)``."""
        signature = signature or DEFAULT_SIGNATURE
        with self._acquire(name, version, label) as (v, model):
            _, outputs = self._signature_for(model, signature, method)
            examples = self._examples_in(examples)
            out = self._run(model, signature, {"inputs": examples}, outputs)
            return v, signature, out, len(examples)

    def classify(self, name: str, version: int | None, signature: str, examples: list[bytes], *,
                 label: str | None = None):
        """Returns ``(version, signature, scores [n, k] or None, classes [n, k] or None)``
        (None: the signature has no such output)."""
        v, signature, out, n = self._run_examples(name, version, label, signature, examples, CLASSIFY_METHOD)
        return (v, signature) + _classification(out, n)

    def regress(self, name: str, version: int | None, signature: str, examples: list[bytes], *,
                label: str | None = None):
        """Returns ``(version, signature, values [n])``."""
        v, signature, out, n = self._run_examples(name, version, label, signature, examples, REGRESS_METHOD)
        return v, signature, _regression(out, n)

    # ------------------------------------------------------------------ multi inference
    def multi_inference(self, tasks: list[tuple], examples: list[bytes], version: int | None = None, *,
                        label: str | None = None):
        """TF Serving's MultiInference: ``tasks`` are ``(model name, signature, method)``,
        run over the same ``examples`` in one session run; the version (or label) is the first
        task's. Returns ``(version, [result per task])``, a result being ``(signature,
        scores, classes)`` for a classify task and ``(signature, values)`` for a regress one.
        """
        name = tasks[0][0] if tasks else ""
        with self._acquire(name, version, label) as (v, model):
            plan, seen = [], set()
            for task_model, signature, method in tasks:
                if not task_model:
                    raise invalid("Found ModelSpec with an empty model name.")
                if task_model != name:
                    raise invalid("All ModelSpecs in a MultiInferenceRequest must access the same model name.")
                signature = signature or DEFAULT_SIGNATURE
                if signature in seen:
                    raise invalid(f"Duplicate evaluation of signature: {signature}")
                seen.add(signature)
                sig = model.signatures.get(signature)
                if sig is None:
                    raise invalid(f"Requested signature not found in model graph: {signature}")
                if method not in (CLASSIFY_METHOD, REGRESS_METHOD):
                    raise unimplemented(f"Unsupported signature method_name: {method}")
                plan.append((signature, method, sig, self._preprocess(model, signature, sig, method)))
            examples = self._examples_in(examples)
            fetched = self._run_tasks(model, plan, examples)
            results = []
            for (signature, method, _, _), out in zip(plan, fetched):
                if method == CLASSIFY_METHOD:
                    results.append((signature,) + _classification(out, len(examples)))
                else:
                    results.append((signature, _regression(out, len(examples))))
            return v, results

    def _run_tasks(self, model, plan, examples) -> list[dict]:
        """Each task's outputs (key -> ndarray): one session run feeding the examples to every
        task's input tensor (one tensor when the signatures share it) and fetching every
        output tensor once. A model without ``run_tensors`` runs each signature instead."""
        run_tensors = getattr(model, "run_tensors", None)
        if run_tensors is None:
            return [self._run(model, signature, {"inputs": examples}, outputs) for signature, _, _, outputs in plan]
        feeds = {sig.inputs["inputs"].name: examples for _, _, sig, _ in plan}
        fetches = sorted({sig.outputs[k].name for _, _, sig, outputs in plan for k in outputs})
        try:
            values = dict(zip(fetches, run_tensors(feeds, fetches)))
        except tf.errors.InvalidArgumentError as e:
            raise invalid(_tf_message(e.message)) from None
        return [{k: values[sig.outputs[k].name] for k in outputs} for _, _, sig, outputs in plan]

    # ------------------------------------------------------------------ metadata / status
    def metadata(self, name: str, version: int | None, *, label: str | None = None):
        """Returns ``(version, {signature name: SignatureDef proto})``: every SignatureDef of
        the meta graph, ``__saved_model_init_op`` included, as TF Serving lists them."""
        with self._acquire(name, version, label) as (v, model):
            return v, dict(model.signature_defs)

    def status(self, name: str, version: int | None = None, *, label: str | None = None) -> list[dict]:
        """``ModelStore.status``. ``label`` is accepted and, as TF Serving's GetModelStatus
        does (it reads only ``model_spec.version``), ignored: every version is listed."""
        return self.store.status(name, version)


def _classification(out: dict, n: int) -> tuple:
    """``(scores, classes)`` after TF Serving's PostProcessClassificationResult checks."""
    classes, scores = out.get("classes"), out.get("scores")
    for key, arr, dtype, want in (("classes", classes, "DT_STRING", "OS"), ("scores", scores, "DT_FLOAT", "f")):
        if arr is None:
            continue
        if np.ndim(arr) != 2:
            raise invalid(f"Expected Tensor shape: [batch_size num_classes] but got {_shape(arr)}")
        if arr.dtype.kind not in want or (want == "f" and arr.dtype != np.float32):
            raise invalid(f"Expected {key} Tensor of {dtype}. Got: {_dt(arr)}")
        if arr.shape[0] != n:
            raise invalid(f"Expected {key} output batch size of {n}. Got: {arr.shape[0]}")
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise invalid(f"Tensors class and score should match in dim_size(1). Got {classes.shape[1]} vs. "
                      f"{scores.shape[1]}")
    return scores, classes


def _regression(out: dict, n: int) -> np.ndarray:
    """The ``[n]`` values after TF Serving's PostProcessRegressionResult checks."""
    arr = np.asarray(out["outputs"])
    if not (arr.ndim == 1 or (arr.ndim == 2 and arr.shape[1] == 1)):
        raise invalid("Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got "
                      f"{_shape(arr)}")
    if arr.shape[0] != n:
        raise invalid(f"Input batch size did not match output batch size: {n} vs. {arr.shape[0]}")
    if arr.dtype != np.float32:
        raise invalid(f"Expected output Tensor of DT_FLOAT.  Got: {_dt(arr)}")
    return arr.reshape(-1)
