"""Clients of a TF Serving endpoint (this server or the real one): REST and gRPC.

``RestClient`` speaks the JSON API with ``requests`` (keep-alive session); ``GrpcClient``
uses the official ``tensorflow_serving.apis`` stubs. Both raise ``ServingClientError``
carrying the server's status and message.

``predict_raw`` takes one input per raw feature column; list features go in the padded
representation (``serving.signatures``): a list per row, padded with ``""`` to the batch's
longest list (weight columns with 0.0), since TF Serving's JSON and ``TensorProto`` tensors
are rectangular (a ragged batch is a 400 / INVALID_ARGUMENT). ``RestClient.predict_raw`` and
``GrpcClient.predict_raw`` pad typed records themselves (``serving.raw_examples``), for the
columns the served signature takes (a student export may take fewer).

Command line (scores a few validation rows of a run)::

    python -m serving.client --grpc 127.0.0.1:8500 --model ranker --run-dir runs/default --rows 3
    python -m serving.client --rest http://127.0.0.1:8501 --model ranker --run-dir runs/default
    python -m serving.client --rest http://127.0.0.1:8501 --model ranker --run-dir runs/default \\
        --signature predict_raw --columnar
"""
from __future__ import annotations

import argparse
import json
import sys

from core import fs


class ServingClientError(Exception):
    """A request failed: ``code`` is the HTTP status (REST) or ``grpc.StatusCode`` (gRPC)."""

    def __init__(self, code, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class RestClient:
    """TF Serving REST client for one model; ``base_url`` like ``http://127.0.0.1:8501``."""

    def __init__(self, base_url: str, model: str, timeout: float = 30.0):
        import requests

        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout = timeout
        self._session = requests.Session()

    def _url(self, version: int | None, suffix: str = "") -> str:
        v = f"/versions/{version}" if version is not None else ""
        return f"{self.base_url}/v1/models/{self.model}{v}{suffix}"

    def _check(self, r) -> dict:
        try:
            body = r.json()
        except ValueError:
            body = {"error": r.text}
        if r.status_code != 200:
            raise ServingClientError(r.status_code, body.get("error", r.text))
        return body

    def status(self, version: int | None = None) -> dict:
        return self._check(self._session.get(self._url(version), timeout=self.timeout))

    def metadata(self, version: int | None = None) -> dict:
        return self._check(self._session.get(self._url(version, "/metadata"), timeout=self.timeout))

    def post(self, verb: str, body: dict, version: int | None = None) -> dict:
        return self._check(self._session.post(self._url(version, f":{verb}"), data=json.dumps(body), timeout=self.timeout))

    def predict(self, instances=None, inputs=None, signature: str = "", version: int | None = None) -> dict:
        """Row format when ``instances`` is given, columnar with ``inputs``; returns the JSON reply."""
        body = {"signature_name": signature} if signature else {}
        body.update({"instances": instances} if instances is not None else {"inputs": inputs})
        return self.post("predict", body, version)

    def predict_examples(self, examples: list[bytes], signature: str = "", version: int | None = None) -> dict:
        import base64

        return self.predict(instances=[{"b64": base64.b64encode(e).decode("ascii")} for e in examples],
                            signature=signature, version=version)

    def raw_inputs(self, signature: str = "predict_raw", version: int | None = None) -> list[str]:
        """The input keys of a served signature (its metadata): the raw columns to send."""
        defs = self.metadata(version)["metadata"]["signature_def"]["signature_def"]
        if signature not in defs:
            raise ServingClientError(400, f"signature {signature!r} not served; available: {sorted(defs)}")
        return list(defs[signature]["inputs"])

    def predict_raw(self, cfg, records: list[dict], columnar: bool = False, version: int | None = None,
                    columns=None) -> list[dict]:
        """Scores typed records (``serving.raw_examples.read_split`` items) through
        ``predict_raw``, lists padded with ""; returns one dict of outputs per record."""
        from serving.raw_examples import to_columns, to_instances

        columns = self.raw_inputs("predict_raw", version) if columns is None else columns
        if columnar:
            out = self.predict(inputs=to_columns(cfg, records, columns), signature="predict_raw",
                               version=version)["outputs"]
            out = out if isinstance(out, dict) else {"output": out}
            return [{k: v[i] for k, v in out.items()} for i in range(len(records))]
        out = self.predict(instances=to_instances(cfg, records, columns), signature="predict_raw",
                           version=version)["predictions"]
        return [p if isinstance(p, dict) else {"output": p} for p in out]

    def classify(self, examples: list[dict], signature: str = "classification", version: int | None = None) -> dict:
        return self.post("classify", {"signature_name": signature, "examples": examples}, version)

    def regress(self, examples: list[dict], signature: str = "regression", version: int | None = None) -> dict:
        return self.post("regress", {"signature_name": signature, "examples": examples}, version)

    def close(self) -> None:
        self._session.close()


class GrpcClient:
    """TF Serving gRPC client for one model; ``target`` like ``127.0.0.1:8500``."""

    def __init__(self, target: str, model: str, timeout: float = 30.0):
        import grpc
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        self.model = model
        self.timeout = timeout
        self._channel = grpc.insecure_channel(target)
        self.prediction = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self._channel)

    def _spec(self, request, signature: str, version: int | None):
        request.model_spec.name = self.model
        if signature:
            request.model_spec.signature_name = signature
        if version is not None:
            request.model_spec.version.value = version
        return request

    def _call(self, method, request):
        import grpc

        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as e:
            raise ServingClientError(e.code(), e.details()) from None

    def predict(self, inputs: dict, signature: str = "", version: int | None = None, output_filter=()) -> dict:
        """``inputs``: key -> array-like; returns output key -> numpy array."""
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = self._spec(predict_pb2.PredictRequest(), signature, version)
        for k, v in inputs.items():
            request.inputs[k].CopyFrom(tf.make_tensor_proto(v))
        request.output_filter.extend(output_filter)
        response = self._call(self.prediction.Predict, request)
        return {k: tf.make_ndarray(t) for k, t in response.outputs.items()}

    def predict_examples(self, examples: list[bytes], signature: str = "", version: int | None = None) -> dict:
        import tensorflow as tf

        return self.predict({"examples": tf.make_tensor_proto(examples, dtype=tf.string)}, signature, version)

    def raw_inputs(self, signature: str = "predict_raw", version: int | None = None) -> dict:
        """Input key -> ``tf.DType`` of a served signature (its metadata)."""
        import tensorflow as tf
        from tensorflow_serving.apis import get_model_metadata_pb2

        sig_map = get_model_metadata_pb2.SignatureDefMap()
        self.metadata(version).metadata["signature_def"].Unpack(sig_map)
        if signature not in sig_map.signature_def:
            import grpc

            raise ServingClientError(grpc.StatusCode.INVALID_ARGUMENT,
                                     f"signature {signature!r} not served; available: {sorted(sig_map.signature_def)}")
        return {k: tf.as_dtype(v.dtype) for k, v in sig_map.signature_def[signature].inputs.items()}

    def predict_raw(self, cfg, records: list[dict], version: int | None = None, dtypes: dict | None = None) -> dict:
        """Scores typed records through ``predict_raw``: a ``TensorProto`` per column (lists
        ``DT_STRING [batch, width]`` padded with "", weights ``DT_FLOAT [batch, width]``);
        returns output key -> numpy array."""
        from serving.raw_examples import to_columns
        from serving.warmup import tensor_proto

        dtypes = self.raw_inputs("predict_raw", version) if dtypes is None else dtypes
        columns = to_columns(cfg, records, list(dtypes))
        return self.predict({k: tensor_proto(v, dtypes[k]) for k, v in columns.items()}, "predict_raw", version)

    def _input(self, request, examples: list[bytes]):
        from tensorflow.core.example import example_pb2

        for e in examples:
            request.input.example_list.examples.add().CopyFrom(example_pb2.Example.FromString(e))
        return request

    def classify(self, examples: list[bytes], signature: str = "classification", version: int | None = None):
        from tensorflow_serving.apis import classification_pb2

        request = self._input(self._spec(classification_pb2.ClassificationRequest(), signature, version), examples)
        return self._call(self.prediction.Classify, request)

    def regress(self, examples: list[bytes], signature: str = "regression", version: int | None = None):
        from tensorflow_serving.apis import regression_pb2

        request = self._input(self._spec(regression_pb2.RegressionRequest(), signature, version), examples)
        return self._call(self.prediction.Regress, request)

    def metadata(self, version: int | None = None):
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = self._spec(get_model_metadata_pb2.GetModelMetadataRequest(), "", version)
        request.metadata_field.append("signature_def")
        return self._call(self.prediction.GetModelMetadata, request)

    def status(self, version: int | None = None):
        from tensorflow_serving.apis import get_model_status_pb2

        request = self._spec(get_model_status_pb2.GetModelStatusRequest(), "", version)
        return self._call(self.models.GetModelStatus, request)

    def close(self) -> None:
        self._channel.close()


def _run_rows(run_dir: str, rows: int) -> tuple:
    import yaml

    from core.config import config_from_dict
    from core.run_dir import RunDir
    from core.feature_specs import encode_raw_example
    from serving.raw_examples import read_split

    rd = RunDir(run_dir)
    cfg = config_from_dict(yaml.safe_load(fs.read_text(rd.require(rd.config_file, "run"))))
    pattern, fmt = rd.raw_input(cfg)
    records = read_split(cfg, pattern, fmt, "validation", rows)
    return cfg, records, [encode_raw_example(cfg, r["features"]) for r in records]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m serving.client", description="Score a run's validation rows on a "
                                "TF Serving endpoint (this project's server or tensorflow/serving).")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--rest", metavar="URL", help="REST base URL, e.g. http://127.0.0.1:8501")
    target.add_argument("--grpc", metavar="HOST:PORT", help="gRPC target, e.g. 127.0.0.1:8500")
    p.add_argument("--model", default="ranker", help="model name (export.model_name)")
    p.add_argument("--run-dir", required=True, help="run directory whose validation rows to send")
    p.add_argument("--rows", type=int, default=3, help="how many rows to score (default 3)")
    p.add_argument("--version", type=int, help="a specific version (default: the latest served)")
    p.add_argument("--signature", choices=["serving_default", "predict_raw"], default="serving_default",
                   help="serving_default (serialized tf.Examples, the default) or predict_raw (one input per raw "
                        "column; list features padded with \"\")")
    p.add_argument("--columnar", action="store_true", help="REST predict_raw: the columnar \"inputs\" format "
                                                            "(default: row \"instances\")")
    args = p.parse_args(argv)
    cfg, records, examples = _run_rows(fs.absolute(args.run_dir), args.rows)
    raw = args.signature == "predict_raw"
    try:
        if args.rest:
            client = RestClient(args.rest, args.model)
            out = (client.predict_raw(cfg, records, args.columnar, args.version) if raw else
                   client.predict_examples(examples, version=args.version)["predictions"])
        else:
            client = GrpcClient(args.grpc, args.model)
            arrays = (client.predict_raw(cfg, records, args.version) if raw else
                      client.predict_examples(examples, version=args.version))
            out = [{k: float(v[i]) for k, v in arrays.items()} for i in range(len(examples))]
    except ServingClientError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for rec, pred in zip(records, out):
        print(json.dumps({"source": f"{fs.basename(rec['source'])}:{rec['position']}", **pred}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
