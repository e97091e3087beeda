"""A SavedModel loaded the way TF Serving's C++ loader does: TF1 session, tag ``serve``.

``SessionModel`` loads ``export_dir`` with ``tf.compat.v1.saved_model.loader.load`` into a
fresh ``tf.Graph`` and ``Session`` (which also runs the table initializers that load the
TF Transform vocabularies) and runs signatures by name with numpy feeds. Inputs are
checked against the signature before the session runs, so a wrong key, dtype or shape is a
``RequestError`` (400) naming the input, not a TensorFlow traceback. ``Session.run`` is
thread-safe; one ``SessionModel`` serves concurrent requests.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from serving.status import invalid

SERVE_TAG = "serve"


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


def _tensor_info(info) -> TensorInfo:
    shape = None if info.tensor_shape.unknown_rank else tuple(d.size for d in info.tensor_shape.dim)
    return TensorInfo(info.name, tf.dtypes.as_dtype(info.dtype), shape)


class SessionModel:
    """One loaded version: its signatures and a ``run`` method."""

    def __init__(self, export_dir: str):
        self.export_dir = export_dir
        self.graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=self.graph)
        with self.graph.as_default():
            meta = tf.compat.v1.saved_model.loader.load(self.session, [SERVE_TAG], export_dir)
        self.signature_defs = {k: v for k, v in meta.signature_def.items() if not k.startswith("__")}
        self.signatures = {
            name: Signature(
                sig.method_name,
                {k: _tensor_info(v) for k, v in sig.inputs.items()},
                {k: _tensor_info(v) for k, v in sig.outputs.items()},
            )
            for name, sig in meta.signature_def.items()
            if not name.startswith("__")
        }

    def signature(self, name: str) -> Signature:
        name = name or "serving_default"
        if name not in self.signatures:
            raise invalid(f"Serving signature name: \"{name}\" not found in signature def. "
                            f"Available: {sorted(self.signatures)}")
        return self.signatures[name]

    def run(self, signature_name: str, inputs: dict, output_filter=None) -> dict:
        """Feeds ``inputs`` (key -> array-like) to a signature; returns output key -> ndarray."""
        sig = self.signature(signature_name)
        missing = sorted(set(sig.inputs) - set(inputs))
        if missing:
            raise invalid(f"input(s) {missing} missing from the request for signature "
                          f"\"{signature_name or 'serving_default'}\"; expected {sorted(sig.inputs)}")
        extra = sorted(set(inputs) - set(sig.inputs))
        if extra:
            raise invalid(f"unknown input(s) {extra}; signature \"{signature_name or 'serving_default'}\" "
                          f"expects {sorted(sig.inputs)}")
        feed, batch = {}, None
        for key, info in sig.inputs.items():
            arr = _as_array(key, inputs[key], info)
            n = arr.shape[0] if arr.ndim else 1
            if batch is not None and n != batch:
                raise invalid(f"input '{key}' has batch size {n} but another input has {batch}; all inputs "
                              "must have the same first dimension")
            batch = n
            feed[info.name] = arr
        outputs = output_filter or list(sig.outputs)
        unknown = [k for k in outputs if k not in sig.outputs]
        if unknown:
            raise invalid(f"output_filter {unknown} not in signature outputs {sorted(sig.outputs)}")
        fetched = self.session.run([sig.outputs[k].name for k in outputs], feed_dict=feed)
        return dict(zip(outputs, fetched))

    def close(self) -> None:
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
            if arr.dtype.kind in "OUSb":
                raise TypeError(f"expected numbers, got {arr.dtype.kind == 'b' and 'booleans' or 'strings'}")
            arr = arr.astype(info.dtype.as_numpy_dtype)
    except (TypeError, ValueError) as e:
        raise invalid(f"input '{key}': cannot convert to {info.dtype.name}: {e}") from None
    if info.shape is not None and arr.ndim != len(info.shape):
        raise invalid(f"input '{key}': expected rank {len(info.shape)} (shape {list(info.shape)}), "
                      f"got shape {list(arr.shape)}")
    return arr
