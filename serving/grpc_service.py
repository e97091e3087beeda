"""TF Serving's gRPC API with the official ``tensorflow_serving.apis`` protos.

``PredictionService``: Predict, Classify, Regress, GetModelMetadata (``signature_def``);
Predict inputs are dense ``TensorProto``s (a list feature: ``DT_STRING [batch, width]``
padded with ""; a ``DT_VARIANT`` or otherwise unreadable tensor is INVALID_ARGUMENT);
``ModelService``: GetModelStatus. The official stubs
(``prediction_service_pb2_grpc.PredictionServiceStub``, ``model_service_pb2_grpc.ModelServiceStub``)
are the clients. A ``RequestError`` from ``ServingApi`` aborts the call with the matching
``grpc.StatusCode`` (``serving.status.CODES``).
"""
from __future__ import annotations

import functools
import logging
from concurrent import futures

import grpc
import tensorflow as tf
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
                                     model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc,
                                     regression_pb2)

from serving.status import INTERNAL, RequestError, invalid, redact_paths

log = logging.getLogger("serving.grpc")

_STATE_ENUM = get_model_status_pb2.ModelVersionStatus.State


def _handled(method):
    """Turns RequestError (and anything unexpected) into an aborted call with a status code."""

    @functools.wraps(method)
    def wrapper(self, request, context):
        try:
            return method(self, request, context)
        except RequestError as e:
            context.abort(e.grpc_code, e.message)
        except Exception as e:  # noqa: BLE001  (the server keeps running)
            log.exception("internal error in %s", method.__name__)
            err = RequestError(INTERNAL, redact_paths(f"{type(e).__name__}: {e}"))
            context.abort(err.grpc_code, err.message)

    return wrapper


def _version(model_spec):
    if model_spec.version_label:
        raise invalid("version_label is not supported by this server; use version")
    return model_spec.version.value if model_spec.HasField("version") else None


def _examples(model_input) -> list[bytes]:
    """Serialized examples of a tensorflow.serving.Input (context features merged into each)."""
    kind = model_input.WhichOneof("kind")
    if kind == "example_list":
        return [e.SerializeToString() for e in model_input.example_list.examples]
    if kind == "example_list_with_context":
        ctx = model_input.example_list_with_context.context
        out = []
        for e in model_input.example_list_with_context.examples:
            merged = tf.train.Example()
            merged.CopyFrom(ctx)
            merged.MergeFrom(e)
            out.append(merged.SerializeToString())
        return out
    raise invalid("Input is empty: set example_list or example_list_with_context")


def _ndarray(key: str, tensor):
    """A request ``TensorProto`` as numpy; INVALID_ARGUMENT for a malformed one or a composite
    representation (``DT_VARIANT``: a ragged or other composite tensor), which no signature
    takes: list features are dense ``[batch, width]`` tensors padded with "" (``serving.signatures``)."""
    from tensorflow.core.framework import types_pb2

    if tensor.dtype == types_pb2.DT_VARIANT:
        raise invalid(f"input '{key}': a DT_VARIANT tensor (a ragged or other composite value) is not accepted; "
                      "send a dense tensor, a list feature as DT_STRING [batch, width] padded with \"\"")
    try:
        return tf.make_ndarray(tensor)
    except Exception as e:  # noqa: BLE001  (TypeError, ValueError, KeyError for unsupported dtypes: all the client's)
        raise invalid(f"input '{key}': malformed TensorProto ({types_pb2.DataType.Name(tensor.dtype)}): "
                      f"{type(e).__name__}: {e}") from None


def _spec(response_spec, name: str, version: int, signature: str) -> None:
    response_spec.name = name
    response_spec.version.value = version
    response_spec.signature_name = signature


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, api):
        self.api = api

    @_handled
    def Predict(self, request, context):  # noqa: N802  (gRPC method names)
        inputs = {k: _ndarray(k, t) for k, t in request.inputs.items()}
        v, sig, outputs = self.api.predict(request.model_spec.name, _version(request.model_spec),
                                           request.model_spec.signature_name, inputs,
                                           list(request.output_filter) or None)
        response = predict_pb2.PredictResponse()
        _spec(response.model_spec, request.model_spec.name, v, sig)
        for k, value in outputs.items():
            response.outputs[k].CopyFrom(tf.make_tensor_proto(value))
        return response

    @_handled
    def Classify(self, request, context):  # noqa: N802
        v, sig, scores, classes = self.api.classify(request.model_spec.name, _version(request.model_spec),
                                                    request.model_spec.signature_name, _examples(request.input))
        response = classification_pb2.ClassificationResponse()
        _spec(response.model_spec, request.model_spec.name, v, sig)
        for cs, ss in zip(classes.tolist(), scores.tolist()):
            c = response.result.classifications.add()
            for label, score in zip(cs, ss):
                c.classes.add(label=label.decode("utf-8") if isinstance(label, bytes) else str(label), score=score)
        return response

    @_handled
    def Regress(self, request, context):  # noqa: N802
        v, sig, values = self.api.regress(request.model_spec.name, _version(request.model_spec),
                                          request.model_spec.signature_name, _examples(request.input))
        response = regression_pb2.RegressionResponse()
        _spec(response.model_spec, request.model_spec.name, v, sig)
        for value in values.tolist():
            response.result.regressions.add(value=value)
        return response

    @_handled
    def GetModelMetadata(self, request, context):  # noqa: N802
        if "signature_def" not in request.metadata_field:
            raise invalid("Metadata field signature_def is not found: set metadata_field to ['signature_def']")
        v, defs = self.api.metadata(request.model_spec.name, _version(request.model_spec))
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        for k, d in defs.items():
            sig_map.signature_def[k].CopyFrom(d)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        _spec(response.model_spec, request.model_spec.name, v, "")
        response.metadata["signature_def"].Pack(sig_map)
        return response


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, api):
        self.api = api

    @_handled
    def GetModelStatus(self, request, context):  # noqa: N802
        response = get_model_status_pb2.GetModelStatusResponse()
        for s in self.api.status(request.model_spec.name, _version(request.model_spec)):
            st = response.model_version_status.add(version=s["version"], state=_STATE_ENUM.Value(s["state"]))
            st.status.error_code = 2 if s["error"] else 0  # UNKNOWN / OK
            st.status.error_message = s["error"]
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
