"""TF Serving warmup: ``assets.extra/tf_serving_warmup_requests``, a TFRecord of ``PredictionLog``.

TF Serving replays these requests after loading a version and before marking it available,
so the first real request does not pay for lazy initialisation. ``write_warmup`` writes one
``PredictLog`` per serialized example (at most 1000, TF Serving's limit), plus, for a model
with list features, one ``predict_raw`` request carrying the same rows as padded tensors
(lists ``DT_STRING [batch, width]`` padded with ``""``, weights ``DT_FLOAT [batch, width]``),
which warms the padded -> sparse path of that signature; ``replay_warmup``
runs them against a loaded model the way the server does, checking every output is finite
and has one row per example (the gate and ``serving.model_store`` both use it).
"""
from __future__ import annotations


import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

from core import fs

WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000


def warmup_path(version_dir: str) -> str:
    return fs.join(version_dir, WARMUP_FILE)


def tensor_proto(value, dtype):
    """A ``TensorProto`` of ``dtype`` of a (nested, rectangular) list input, also of a
    ``[batch, 0]`` one (all lists empty), whose dtype numpy cannot infer."""
    dtype = tf.as_dtype(dtype)
    arr = np.asarray(value, dtype=object if dtype == tf.string else dtype.as_numpy_dtype)
    return tf.make_tensor_proto(arr, dtype=dtype, shape=arr.shape)


def write_warmup(version_dir: str, examples: list[bytes], model_name: str,
                 signature_name: str = "serving_default", input_key: str = "examples",
                 raw_inputs: dict | None = None, raw_dtypes: dict | None = None) -> str:
    """Writes one PredictionLog per serialized example, then, with ``raw_inputs`` (column ->
    values, ``serving.raw_examples.to_columns``), one ``predict_raw`` request of them
    (``raw_dtypes``: column -> ``tf.DType``, the signature's); returns the file path."""
    if raw_inputs is not None and set(raw_inputs) - set(raw_dtypes or {}):
        raise ValueError(f"raw_dtypes lacks {sorted(set(raw_inputs) - set(raw_dtypes or {}))}")
    if len(examples) + (raw_inputs is not None) > MAX_WARMUP_RECORDS:
        raise ValueError(f"at most {MAX_WARMUP_RECORDS} warmup requests. Received: {len(examples)}")
    path = warmup_path(version_dir)
    fs.makedirs(fs.dirname(path))
    with tf.io.TFRecordWriter(path) as writer:
        for ex in examples:
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature_name))
            request.inputs[input_key].CopyFrom(tf.make_tensor_proto([ex], dtype=tf.string))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
        if raw_inputs is not None:
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name="predict_raw"))
            for key, value in raw_inputs.items():
                request.inputs[key].CopyFrom(tensor_proto(value, raw_dtypes[key]))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return path


def read_warmup(version_dir: str) -> list:
    """The PredictionLogs of a version's warmup file ([] when it has none)."""
    path = warmup_path(version_dir)
    if not fs.exists(path):
        return []
    logs = []
    for i, raw in enumerate(tf.data.TFRecordDataset(path).as_numpy_iterator()):
        if i >= MAX_WARMUP_RECORDS:
            break
        logs.append(prediction_log_pb2.PredictionLog.FromString(raw))
    return logs


class WarmupError(ValueError):
    """A warmup request failed or returned non-finite or mis-shaped outputs."""


def replay_warmup(model, version_dir: str) -> int:
    """Runs every warmup request on ``model`` (a ``SessionModel``); returns how many ran."""
    logs = read_warmup(version_dir)
    for i, log in enumerate(logs):
        if log.WhichOneof("log_type") != "predict_log":
            raise WarmupError(f"warmup record {i}: only predict_log records are supported, got {log.WhichOneof('log_type')}")
        request = log.predict_log.request
        inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        batch = len(next(iter(inputs.values()))) if inputs else 0
        try:
            outputs = model.run(request.model_spec.signature_name, inputs)
        except Exception as e:  # noqa: BLE001  (any failure fails the warmup)
            raise WarmupError(f"warmup record {i}: request failed: {e}") from e
        for key, value in outputs.items():
            value = np.asarray(value)
            if value.shape[:1] != (batch,):
                raise WarmupError(f"warmup record {i}: output '{key}' has shape {list(value.shape)}, expected [{batch}, ...]")
            if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
                raise WarmupError(f"warmup record {i}: output '{key}' is not finite: {value.tolist()}")
    return len(logs)
