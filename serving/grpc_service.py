"""TF Serving's gRPC API with the official ``tensorflow_serving.apis`` protos.

``PredictionService``: Predict, Classify, Regress, MultiInference, GetModelMetadata
(``signature_def``); ``ModelService``: GetModelStatus, HandleReloadConfigRequest. The
official stubs (``prediction_service_pb2_grpc.PredictionServiceStub``,
``model_service_pb2_grpc.ModelServiceStub``) are the clients. Every ``model_spec`` may name
a ``version`` or a ``version_label``; a request without ``model_spec`` is INVALID_ARGUMENT
``Missing ModelSpec`` (MultiInference reads its first task's). A ``RequestError`` from
``ServingApi`` aborts the call with the matching ``grpc.StatusCode`` (``serving.status.CODES``),
its message cut at 1024 characters as TF Serving's ``ToGRPCStatus`` does.

Predict inputs are dense ``TensorProto``s taken with their own dtype: a tensor of another
dtype than the signature's input is INVALID_ARGUMENT ``Expects arg[0] to be float but double
is provided`` (the session's message; no conversion, unlike JSON numbers over REST). A list
feature is ``DT_STRING [batch, width]`` padded with ""; a ``DT_VARIANT`` or unreadable tensor
is INVALID_ARGUMENT. A zero-size batch runs like any other (TF Serving does not refuse it
over gRPC); Classify/Regress/MultiInference without examples is INVALID_ARGUMENT ``Input is
empty.``. Response tensors carry their values in the typed fields (``float_val``,
``string_val``, ...), as TF Serving's default (``AsProtoField``) does, so clients reading
``outputs[k].float_val`` work; Classify/Regress examples with a context are the context's
serialized bytes followed by the example's (TF Serving's merge).
"""
from __future__ import annotations

import functools
import logging
import math
from concurrent import futures

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
                                     inference_pb2, model_management_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc, regression_pb2)

from serving.model_config import ModelConfigError, models_from_proto
from serving.signatures import CLASSIFY_METHOD
from serving.status import CODES, INTERNAL, RequestError, grpc_message, invalid, redact_paths

log = logging.getLogger("serving.grpc")

_STATE_ENUM = get_model_status_pb2.ModelVersionStatus.State
SIGNATURE_DEF = "signature_def"  # the one metadata field (GetModelMetadataImpl::kSignatureDef)
DEFAULT_SIGNATURE = "serving_default"


def _handled(method):
    """Turns RequestError (and anything unexpected) into an aborted call with a status code."""

    @functools.wraps(method)
    def wrapper(self, request, context):
        try:
            return method(self, request, context)
        except RequestError as e:
            context.abort(e.grpc_code, grpc_message(e.message))
        except Exception as e:  # noqa: BLE001  (the server keeps running)
            log.exception("internal error in %s", method.__name__)
            err = RequestError(INTERNAL, redact_paths(f"{type(e).__name__}: {e}"))
            context.abort(err.grpc_code, grpc_message(err.message))

    return wrapper


def _model_spec(request):
    """``request.model_spec``; INVALID_ARGUMENT ``Missing ModelSpec`` when it is not set."""
    if not request.HasField("model_spec"):
        raise invalid("Missing ModelSpec")
    return request.model_spec


def _version(model_spec) -> tuple:
    """``(version or None, version label or None)`` of a ModelSpec's ``version_choice``."""
    choice = model_spec.WhichOneof("version_choice")
    if choice == "version":
        return model_spec.version.value, None
    if choice == "version_label":
        return None, model_spec.version_label
    return None, None


def _examples(model_input) -> list[bytes]:
    """Serialized examples of a tensorflow.serving.Input: with a context, the context's
    serialized bytes followed by each example's (parsing them merges the two, as TF Serving's
    InputToSerializedExampleTensor does). No examples (or no kind set): an empty list."""
    kind = model_input.WhichOneof("kind")
    if kind == "example_list":
        return [e.SerializeToString() for e in model_input.example_list.examples]
    if kind == "example_list_with_context":
        ctx = model_input.example_list_with_context.context.SerializeToString()
        return [ctx + e.SerializeToString() for e in model_input.example_list_with_context.examples]
    return []


def _ndarray(key: str, tensor):
    """A request ``TensorProto`` as numpy; INVALID_ARGUMENT for a malformed one (TF Serving's
    ``tensor parsing error: <key>``) or a composite representation (``DT_VARIANT``: a ragged or
    other composite tensor), which no signature takes: list features are dense
    ``[batch, width]`` tensors padded with "" (``serving.signatures``)."""
    if tensor.dtype == types_pb2.DT_VARIANT:
        raise invalid(f"input '{key}': a DT_VARIANT tensor (a ragged or other composite value) is not accepted; "
                      "send a dense tensor, a list feature as DT_STRING [batch, width] padded with \"\"")
    if tensor.dtype == types_pb2.DT_STRING and not tensor.tensor_content:
        shape = [d.size for d in tensor.tensor_shape.dim]
        values = tensor.string_val
        if len(values) == math.prod(shape):  # the usual case, without tf.make_ndarray's generic path
            arr = np.array(values, dtype=object)
            return arr if len(shape) == 1 else arr.reshape(shape)
    try:
        return tf.make_ndarray(tensor)
    except Exception:  # noqa: BLE001  (TypeError, ValueError, KeyError for unsupported dtypes: all the client's)
        raise invalid(f"tensor parsing error: {key}") from None


# numpy dtype -> the TensorProto field TF Serving's AsProtoField fills
_FIELDS = {np.dtype(np.float32): "float_val", np.dtype(np.float64): "double_val", np.dtype(np.int32): "int_val",
           np.dtype(np.int16): "int_val", np.dtype(np.int8): "int_val", np.dtype(np.uint8): "int_val",
           np.dtype(np.uint16): "int_val", np.dtype(np.int64): "int64_val", np.dtype(np.bool_): "bool_val",
           np.dtype(np.uint32): "uint32_val", np.dtype(np.uint64): "uint64_val"}


def tensor_proto(value, out=None) -> tensor_pb2.TensorProto:
    """An output array as TF Serving's ``Tensor::AsProtoField`` writes it: dtype, shape and
    the values in the dtype's typed field (``float_val``, ``int64_val``, ``string_val``, ...);
    other dtypes (half, complex) as ``tf.make_tensor_proto`` encodes them. Fills ``out`` when
    given (a map entry of the response)."""
    arr = np.asarray(value)
    proto = out if out is not None else tensor_pb2.TensorProto()
    if arr.dtype.kind in "OSU":
        proto.dtype = types_pb2.DT_STRING
        proto.string_val.extend(v.encode() if isinstance(v, str) else v for v in arr.reshape(-1).tolist())
    else:
        field = _FIELDS.get(arr.dtype)
        if field is None:
            proto.CopyFrom(tf.make_tensor_proto(arr))
            return proto
        proto.dtype = tf.as_dtype(arr.dtype).as_datatype_enum
        getattr(proto, field).extend(arr.reshape(-1).tolist())
    for d in arr.shape:
        proto.tensor_shape.dim.add(size=d)
    return proto


def _response_spec(response_spec, name: str, version: int, signature: str | None) -> None:
    """TF Serving's MakeModelSpec: name, version and (when given) the signature name, ""
    meaning serving_default."""
    response_spec.name = name
    response_spec.version.value = version
    if signature is not None:
        response_spec.signature_name = signature or DEFAULT_SIGNATURE


def _fill_classifications(result, scores, classes) -> None:
    """ClassificationResult: one Classifications per example, one Class per column, with
    the label when the signature has ``classes`` and the score when it has ``scores``."""
    rows = len(scores if scores is not None else classes)
    labels = classes.tolist() if classes is not None else None
    values = scores.tolist() if scores is not None else None
    for i in range(rows):
        c = result.classifications.add()
        if labels is not None and values is not None:
            for label, score in zip(labels[i], values[i]):
                c.classes.add(label=label.decode("utf-8", "replace") if isinstance(label, bytes) else str(label),
                              score=score)
        elif labels is not None:
            for label in labels[i]:
                c.classes.add(label=label.decode("utf-8", "replace") if isinstance(label, bytes) else str(label))
        else:
            for score in values[i]:
                c.classes.add(score=score)


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, api):
        self.api = api

    @_handled
    def Predict(self, request, context):  # noqa: N802  (gRPC method names)
        spec = _model_spec(request)
        version, label = _version(spec)
        inputs = {k: _ndarray(k, t) for k, t in request.inputs.items()}
        v, sig, outputs = self.api.predict(spec.name, version, spec.signature_name, inputs,
                                           list(request.output_filter) or None, label=label, strict_dtypes=True)
        response = predict_pb2.PredictResponse()
        _response_spec(response.model_spec, spec.name, v, sig)
        for k, value in outputs.items():
            tensor_proto(value, response.outputs[k])
        return response

    @_handled
    def Classify(self, request, context):  # noqa: N802
        spec = _model_spec(request)
        version, label = _version(spec)
        v, sig, scores, classes = self.api.classify(spec.name, version, spec.signature_name, _examples(request.input),
                                                    label=label)
        response = classification_pb2.ClassificationResponse()
        _response_spec(response.model_spec, spec.name, v, sig)
        _fill_classifications(response.result, scores, classes)
        return response

    @_handled
    def Regress(self, request, context):  # noqa: N802
        spec = _model_spec(request)
        version, label = _version(spec)
        v, sig, values = self.api.regress(spec.name, version, spec.signature_name, _examples(request.input),
                                          label=label)
        response = regression_pb2.RegressionResponse()
        _response_spec(response.model_spec, spec.name, v, sig)
        for value in values.tolist():
            response.result.regressions.add(value=value)
        return response

    @_handled
    def MultiInference(self, request, context):  # noqa: N802
        first = request.tasks[0].model_spec if request.tasks else None
        version, label = _version(first) if first is not None else (None, None)
        tasks = [(t.model_spec.name, t.model_spec.signature_name, t.method_name) for t in request.tasks]
        v, results = self.api.multi_inference(tasks, _examples(request.input), version, label=label)
        response = inference_pb2.MultiInferenceResponse()
        for task, result in zip(request.tasks, results):
            out = response.results.add()
            _response_spec(out.model_spec, task.model_spec.name, v, task.model_spec.signature_name)
            if task.method_name == CLASSIFY_METHOD:
                _fill_classifications(out.classification_result, result[1], result[2])
            else:
                for value in result[1].tolist():
                    out.regression_result.regressions.add(value=value)
        return response

    @_handled
    def GetModelMetadata(self, request, context):  # noqa: N802
        spec = _model_spec(request)
        if not request.metadata_field:
            raise invalid("GetModelMetadataRequest must specify at least one metadata_field")
        for f in request.metadata_field:
            if f != SIGNATURE_DEF:
                raise invalid(f"Metadata field {f} is not supported")
        version, label = _version(spec)
        v, defs = self.api.metadata(spec.name, version, label=label)
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        for k, d in defs.items():
            sig_map.signature_def[k].CopyFrom(d)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        _response_spec(response.model_spec, spec.name, v, None)
        response.metadata[SIGNATURE_DEF].Pack(sig_map)
        return response


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, api):
        self.api = api

    @_handled
    def GetModelStatus(self, request, context):  # noqa: N802
        spec = _model_spec(request)
        version, label = _version(spec)
        response = get_model_status_pb2.GetModelStatusResponse()
        for s in self.api.status(spec.name, version, label=label):
            st = response.model_version_status.add(version=s["version"], state=_STATE_ENUM.Value(s["state"]))
            st.status.error_code = 2 if s["error"] else 0  # UNKNOWN / OK
            st.status.error_message = s["error"]
        return response

    @_handled
    def HandleReloadConfigRequest(self, request, context):  # noqa: N802
        """Serves the request's ModelServerConfig from now on (``ModelStore.reload_config``);
        the outcome is the response's ``status`` (the call itself succeeds), as in TF Serving."""
        response = model_management_pb2.ReloadConfigResponse()
        if request.config.WhichOneof("config") != "model_config_list":
            error = ModelConfigError("ServerModelConfig type not supported by HandleReloadConfigRequest. Only "
                                     "ModelConfigList is currently supported")
        else:
            try:
                self.api.store.reload_config(models_from_proto(request.config))
                error = None
            except ModelConfigError as e:
                error = e
        if error is not None:
            log.error("ReloadConfig failed: %s", error)
            response.status.error_code = CODES[error.status][1].value[0]
            response.status.error_message = str(error)
        return response


class GrpcServer:
    """A grpc server on (host, port) with both servicers; port 0 picks a free one.

    ``max_workers`` threads run calls; a request message over ``max_message_bytes`` is refused
    by gRPC itself with RESOURCE_EXHAUSTED (``serving.max_body_bytes``).
    """

    def __init__(self, api, host: str = "127.0.0.1", port: int = 8500, max_workers: int = 16,
                 max_message_bytes: int = 4 << 20):
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
                                  options=[("grpc.max_receive_message_length", max_message_bytes)])
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionServicer(api), self.server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(api), self.server)
        self.port = self.server.add_insecure_port(f"{host}:{port}")
        if self.port == 0:
            raise OSError(f"cannot bind gRPC to {host}:{port}")

    def start(self) -> "GrpcServer":
        self.server.start()
        return self

    def stop(self, grace: float = 1.0) -> None:
        self.server.stop(grace).wait()
