"""A SavedModel loaded the way TF Serving's C++ loader does: TF1 session, tag ``serve``.

``SessionModel`` loads ``export_dir`` with ``tf.compat.v1.saved_model.loader.load`` into a
fresh ``tf.Graph`` and ``Session`` (which also runs the table initializers that load the
TF Transform vocabularies) and runs signatures by name with numpy feeds. ``Session.run`` is
thread-safe; one ``SessionModel`` serves concurrent requests.

A request is checked against the signature before the session runs, in the order and with
the messages of TF Serving's ``predict_util.cc`` (``check_request``): an unknown signature
is FAILED_PRECONDITION ``Serving signature key "x" not found.``; more inputs than the
signature has, or fewer without signature defaults, is INVALID_ARGUMENT ``input size does
not match signature: ...``; an input the signature has but the request lacks (and no
default) ``Signature input alias: ... not found in request ...``; an ``output_filter`` key
the signature lacks ``output tensor alias not found in signature: ...``, a repeated one
``duplicate output tensor alias: ...``. Then each input is converted to the signature's
dtype (JSON numbers are, as TF Serving's REST API converts them) and its rank checked (a
400 naming the input; TF Serving passes a wrong rank to the graph, whose error depends on
its ops). ``dtype_error`` is the check the gRPC front end applies instead of converting:
a tensor of another dtype is the session's own ``Expects arg[i] to be float but double is
provided`` (INVALID_ARGUMENT).

``signature_defs`` holds every SignatureDef of the meta graph, ``__saved_model_init_op``
included (what GetModelMetadata lists); ``signatures`` the runnable ones (no ``__`` names).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import config_pb2

from serving.status import failed_precondition, invalid

SERVE_TAG = "serve"


def load_serve_graph(session, export_dir: str):
    """Loads ``export_dir``'s ``serve`` meta graph into ``session`` (its graph the default) and
    returns the MetaGraphDef: what ``tf.compat.v1.saved_model.loader.load`` does, and what TF
    Serving's C++ loader does. That function is only a deprecation-warning wrapper (printed on
    every call) of ``SavedModelLoader.load``, which TF 2.21 keeps without a public alias."""
    from tensorflow.python.saved_model import loader_impl

    return loader_impl.SavedModelLoader(export_dir).load(session, [SERVE_TAG])
MAX_CALLABLES = 64  # distinct (feeds, fetches) pairs kept per model (signatures x output filters)


@dataclass(frozen=True)
class TensorInfo:
    name: str  # graph tensor name
    dtype: tf.DType
    shape: tuple  # -1 for unknown dims; None for unknown rank


@dataclass(frozen=True)
class Signature:
    method_name: str
    inputs: dict  # key -> TensorInfo
    outputs: dict
    defaults: dict = field(default_factory=dict)  # input key -> ndarray fed when the request omits it


def _tensor_info(info) -> TensorInfo:
    shape = None if info.tensor_shape.unknown_rank else tuple(d.size for d in info.tensor_shape.dim)
    return TensorInfo(info.name, tf.dtypes.as_dtype(info.dtype), shape)


def dtype_string(dtype) -> str:
    """TensorFlow's ``DataTypeString``: ``float``, ``double``, ``int64``, ``string``, ... (a
    ``tf.DType``, a ``DataType`` enum value or a numpy dtype; object arrays are strings)."""
    if isinstance(dtype, np.dtype) and dtype.kind in "OSU":
        return "string"
    enum = dtype if isinstance(dtype, int) else tf.dtypes.as_dtype(dtype).as_datatype_enum
    return types_pb2.DataType.Name(enum)[3:].lower()


def dtype_error(index: int, key: str, value, info: TensorInfo):
    """The session's INVALID_ARGUMENT when ``value`` (an ndarray) is not of the input's
    dtype, else None: ``Expects arg[<index>] to be float but double is provided``, followed by
    the input's name (TF Serving's message alone does not name it)."""
    got = value.dtype
    if info.dtype == tf.string:
        ok = got.kind in "OS"
    else:
        ok = got.kind not in "OSU" and got == info.dtype.as_numpy_dtype
    if ok:
        return None
    return invalid(f"Expects arg[{index}] to be {dtype_string(info.dtype)} but {dtype_string(got)} is provided "
                   f"(input '{key}')")


def _keys(keys) -> str:
    return ",".join(sorted(keys))


def check_request(sig: Signature, inputs, output_filter=None) -> list[str]:
    """TF Serving's request checks (module docstring); returns the output keys to fetch."""
    n, m = len(inputs), len(sig.inputs)
    if n > m or (n < m and not sig.defaults):
        raise invalid(f"input size does not match signature: {n}!={m} len({{{_keys(inputs)}}}) != "
                      f"len({{{_keys(sig.inputs)}}}). Sent extra: {{{_keys(set(inputs) - set(sig.inputs))}}}. "
                      f"Missing but required: {{{_keys(set(sig.inputs) - set(inputs))}}}.")
    for key, info in sig.inputs.items():
        if key not in inputs and key not in sig.defaults:
            raise invalid(f"Signature input alias: {key}(feed name: {info.name}) not found in request and no "
                          f"default value provided. Inputs expected to be in the request {{{_keys(inputs)}}}, "
                          f"or default input alias set: {_keys(sig.defaults)}")
    extra = set(inputs) - set(sig.inputs)
    if extra:
        raise invalid(f"Inputs contains invalid name. Used request inputs: {_keys(set(inputs) & set(sig.inputs))}, "
                      f"request input: {_keys(inputs)}")
    if not output_filter:
        return list(sig.outputs)
    seen = set()
    for alias in output_filter:
        if alias not in sig.outputs:
            raise invalid(f"output tensor alias not found in signature: {alias} Outputs expected to be in the set "
                          f"{{{_keys(sig.outputs)}}}.")
        if alias in seen:
            raise invalid(f"duplicate output tensor alias: {alias}")
        seen.add(alias)
    return list(output_filter)


class SessionModel:
    """One loaded version: its signatures and a ``run`` method."""

    def __init__(self, export_dir: str):
        self.export_dir = export_dir
        self.graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=self.graph)
        with self.graph.as_default():
            meta = load_serve_graph(self.session, export_dir)
        self.signature_defs = dict(meta.signature_def)
        self._callables: dict = {}
        self._callables_lock = threading.Lock()
        self.signatures = {
            name: Signature(
                sig.method_name,
                {k: _tensor_info(v) for k, v in sig.inputs.items()},
                {k: _tensor_info(v) for k, v in sig.outputs.items()},
                {k: tf.make_ndarray(v) for k, v in sig.defaults.items()},
            )
            for name, sig in meta.signature_def.items()
            if not name.startswith("__")
        }

    def signature(self, name: str) -> Signature:
        """The runnable signature ``name`` ("" is ``serving_default``); FAILED_PRECONDITION
        with TF Serving's message when the model has none of that name."""
        name = name or "serving_default"
        sig = self.signatures.get(name)
        if sig is None:
            raise failed_precondition(f"Serving signature key \"{name}\" not found.")
        return sig

    def run(self, signature_name: str, inputs: dict, output_filter=None) -> dict:
        """Feeds ``inputs`` (key -> array-like) to a signature; returns output key -> ndarray
        (the ``output_filter`` keys, in that order, else every output)."""
        sig = self.signature(signature_name)
        outputs = check_request(sig, inputs, output_filter)
        names, arrays, batch = [], [], None
        for key, info in sig.inputs.items():
            value = inputs[key] if key in inputs else sig.defaults[key]
            arr = _as_array(key, value, info)
            n = arr.shape[0] if arr.ndim else 1
            if batch is not None and n != batch:
                raise invalid(f"input '{key}' has batch size {n} but another input has {batch}; all inputs "
                              "must have the same first dimension")
            batch = n
            names.append(info.name)
            arrays.append(arr)
        fetched = self._callable(tuple(names), tuple(sig.outputs[k].name for k in outputs))(*arrays)
        return dict(zip(outputs, fetched))

    def run_tensors(self, feeds: dict, fetches: list[str]) -> list:
        """One session run: graph tensor name -> value fed, the named tensors fetched (in
        order). No signature checks: the caller (MultiInference) has done them."""
        names = tuple(feeds)
        return self._callable(names, tuple(fetches))(*(np.asarray(feeds[k], dtype=object)
                                                       if isinstance(feeds[k], list) else feeds[k] for k in names))

    def _callable(self, feeds: tuple, fetches: tuple):
        """A session callable (C++ ``Session::MakeCallable``, what TF Serving's session runs
        amount to) for these feed and fetch tensor names, made once per pair: it skips
        ``Session.run``'s per-call parsing of fetches and feeds. Thread-safe, as ``RunCallable``
        is; the arguments must already have the placeholders' dtypes (``_as_array``)."""
        fn = self._callables.get((feeds, fetches))
        if fn is None:
            with self._callables_lock:
                fn = self._callables.get((feeds, fetches))
                if fn is None:
                    if len(self._callables) >= MAX_CALLABLES:
                        self._callables.clear()
                    options = config_pb2.CallableOptions(feed=list(feeds), fetch=list(fetches))
                    fn = self.session._make_callable_from_options(options)  # noqa: SLF001  (no public API)
                    self._callables[(feeds, fetches)] = fn
        return fn

    def close(self) -> None:
        """Releases the session's callables, then the session (idempotent). A callable left
        to the interpreter's shutdown raises in ``__del__`` once TF's C API is torn down
        (printed as an "Exception ignored" traceback)."""
        with self._callables_lock:
            self._callables.clear()
        self.session.close()


def _as_array(key: str, value, info: TensorInfo) -> np.ndarray:
    """Converts one input to the signature's dtype and checks its rank."""
    try:
        if info.dtype == tf.string:
            arr = np.asarray(value, dtype=object)
            # One pass over the element types (C speed): a [512, 50] list batch is 25,600 strings.
            kinds = set(map(type, arr.reshape(-1)))
            if not all(issubclass(k, (bytes, str)) for k in kinds):
                bad = next(v for v in arr.reshape(-1) if not isinstance(v, (bytes, str)))
                raise TypeError(f"expected strings, got {type(bad).__name__} {bad!r}")
            if any(issubclass(k, str) for k in kinds):
                arr = np.vectorize(lambda v: v.encode() if isinstance(v, str) else v, otypes=[object])(arr)
        else:
            arr = np.asarray(value)
            want_bool = info.dtype == tf.bool
            if arr.dtype.kind in "OUS" or (arr.dtype.kind == "b") != want_bool:
                got = "strings" if arr.dtype.kind in "OUS" else "booleans" if arr.dtype.kind == "b" else "numbers"
                raise TypeError(f"expected {'booleans' if want_bool else 'numbers'}, got {got}")
            arr = arr.astype(info.dtype.as_numpy_dtype, copy=False)
    except (TypeError, ValueError) as e:
        raise invalid(f"input '{key}': cannot convert to {info.dtype.name}: {e}") from None
    if info.shape is not None:
        if arr.ndim != len(info.shape):
            raise invalid(f"input '{key}': expected rank {len(info.shape)} (shape {list(info.shape)}), "
                          f"got shape {list(arr.shape)}")
        if any(want >= 0 and got != want for want, got in zip(info.shape, arr.shape)):
            raise invalid(f"input '{key}': expected shape {list(info.shape)} (-1: any size), got shape "
                          f"{list(arr.shape)}")
    return arr
