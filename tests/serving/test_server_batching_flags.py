"""TF Serving's ``--enable_batching`` / ``--batching_parameters_file`` in the serve stage and
``ModelServer``: the flags, the parameters they select, the loader wrapping every version in
``serving.batching.BatchingModel``, and requests through a batching server (REST, gRPC
Predict, MultiInference)."""
import argparse
import base64
import json
import math
import os
import subprocess
import sys
import threading
import urllib.request

import pytest

from core.errors import ConfigError
from tests.conftest import REPO
from tests.fakes.serving_models import tiny_example

SAMPLE = os.path.join(REPO, "serving", "tfserving", "batching_parameters.txt")
CLASSIFY, REGRESS = "tensorflow/serving/classify", "tensorflow/serving/regress"


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# ----------------------------------------------------------------------------- the parameters
def test_without_enable_batching_there_is_no_batching():
    from serving.server import batching_parameters

    assert batching_parameters(False) is None


def test_enable_batching_alone_gives_tf_servings_default_parameters():
    from serving.batching import BatchingOptions
    from serving.server import batching_parameters

    params = batching_parameters(True)
    assert params.thread_pool_name.value == "model_server_batch_threads"  # server.cc sets only this field
    assert not params.HasField("max_batch_size") and not params.HasField("batch_timeout_micros")
    options = BatchingOptions.from_parameters(params)
    assert (options.max_batch_size, options.batch_timeout_micros, options.max_enqueued_batches) == (1000, 0, 10)


def test_the_parameters_file_is_read_with_enable_batching():
    from serving.server import batching_parameters

    params = batching_parameters(True, SAMPLE)
    assert (params.max_batch_size.value, params.batch_timeout_micros.value, params.max_enqueued_batches.value,
            params.num_batch_threads.value, params.pad_variable_length_inputs) == (1024, 2000, 64, 2, False)


def test_a_parameters_file_without_enable_batching_is_refused_as_tf_serving_does():
    from serving.server import batching_parameters

    with pytest.raises(ConfigError, match="--batching_parameters_file is set without setting --enable_batching"):
        batching_parameters(False, SAMPLE)


@pytest.mark.parametrize("text,needle", [
    ("max_batch_size { value: 8 } oops", "not a BatchingParameters text proto"),
    ("max_batch_size { value: 0 }", "max_batch_size must be positive"),
    (None, "cannot read"),
], ids=["not-a-text-proto", "refused-value", "missing-file"])
def test_a_bad_parameters_file_is_a_config_error_naming_the_file(tmp_path, text, needle):
    from serving.server import ModelServer

    path = tmp_path / "batching.txt"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError) as e:
        ModelServer(str(tmp_path), rest_port=None, grpc_port=0, enable_batching=True,
                    batching_parameters_file=str(path))
    assert needle in str(e.value) and str(path) in str(e.value)


# ----------------------------------------------------------------------------- the loader
class _FakeModel:
    signatures, signature_defs = {}, {}

    def __init__(self, path):
        self.path, self.closed = path, False

    def close(self):
        self.closed = True


def test_the_batching_loader_wraps_what_the_loader_loads():
    from serving.batching import BatchingModel
    from serving.server import batching_loader, batching_parameters

    model = batching_loader(_FakeModel, batching_parameters(True))("/m/1")
    try:
        assert isinstance(model, BatchingModel) and model.model.path == "/m/1"
    finally:
        model.close()
    assert model.model.closed  # closing the wrapper closes the loaded model


def test_the_batching_loader_closes_the_loaded_model_when_wrapping_fails():
    from serving.batching import BatchingParameters
    from serving.server import batching_loader

    params = BatchingParameters()
    params.num_batch_threads.value = 0  # refused by BatchingModel
    loaded = []

    def loader(path):
        loaded.append(_FakeModel(path))
        return loaded[-1]

    with pytest.raises(ValueError, match="num_batch_threads must be positive"):
        batching_loader(loader, params)("/m/1")
    assert loaded[0].closed


# ----------------------------------------------------------------------------- the serve stage
def _parsed(*argv):
    from pipeline.cli import build_parser

    return build_parser().parse_args(["serve", *argv])


@pytest.mark.parametrize("argv", [("--enable_batching", "--batching_parameters_file", "b.txt"),
                                  ("--enable-batching", "--batching-parameters-file", "b.txt")],
                         ids=["tf-serving-names", "dashed"])
def test_the_serve_stage_parses_the_batching_flags(argv):
    opts = _parsed(*argv)
    assert opts.enable_batching is True and opts.batching_parameters_file == "b.txt"
    default = _parsed()
    assert default.enable_batching is False and default.batching_parameters_file is None


def _serve_kwargs(tmp_path, monkeypatch, opts) -> dict:
    """The keywords the serve stage gives ModelServer (a fake that stops at once)."""
    import pipeline.stages.serve as serve
    import serving.server
    from core.run_dir import RunDir
    from tests.fakes.serving_models import serving_config

    seen = {}

    class FakeServer:
        rest_port, grpc_port, batching = 1, 2, None

        def __init__(self, *args, **kwargs):
            seen.update(kwargs)
            self.store = type("S", (), {"model_names": lambda s: [], "all_status": lambda s: {}})()

        def start(self):
            return self

        def stop(self):
            pass

    class SetEvent(threading.Event):  # the serve loop ends at once
        def __init__(self):
            super().__init__()
            self.set()

    monkeypatch.setattr(serving.server, "ModelServer", FakeServer)
    monkeypatch.setattr(serve.threading, "Event", SetEvent)
    serve.run(serving_config(), RunDir(str(tmp_path)), opts)
    return seen


def test_the_serve_stage_passes_the_batching_flags_to_the_server(tmp_path, monkeypatch):
    opts = _parsed("--model-base", str(tmp_path), "--enable_batching", "--batching_parameters_file", SAMPLE)
    kwargs = _serve_kwargs(tmp_path, monkeypatch, opts)
    assert kwargs["enable_batching"] is True and kwargs["batching_parameters_file"] == SAMPLE
    off = _serve_kwargs(tmp_path, monkeypatch, _parsed("--model-base", str(tmp_path)))
    assert "enable_batching" not in off and "batching_parameters_file" not in off


@pytest.mark.slow
def test_the_serve_stage_reports_a_batching_file_without_enable_batching_in_one_error_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pipeline", "serve", "--model-base", str(tmp_path),
                           "--batching_parameters_file", SAMPLE, "--grpc-port", "0"], cwd=REPO,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": REPO})
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert lines[-1] == ("error: --batching_parameters_file is set without setting --enable_batching to true "
                         f"(file: {SAMPLE})"), proc.stderr
    assert "Traceback" not in proc.stderr


# ----------------------------------------------------------------------------- requests through batching
@pytest.fixture(scope="module")
def batching_server(multi_base):
    """A server with --enable_batching (TF Serving's default parameters) over ``multi_base``
    (model ``multi`` version 2: p = sigmoid(3 x))."""
    from serving.server import ModelServer

    srv = ModelServer(multi_base, rest_port=0, grpc_port=0, poll_seconds=0.1, enable_batching=True).start()
    assert srv.store.wait_for_version("multi", 2, timeout=60)
    yield srv
    srv.stop()


def _prediction_stub(port: int):
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    return channel, prediction_service_pb2_grpc.PredictionServiceStub(channel)


def _predict_request(name: str, xs):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.inputs["examples"].CopyFrom(tf.make_tensor_proto([tiny_example(x) for x in xs], dtype=tf.string))
    return request


def test_a_batching_server_serves_batching_models(batching_server):
    from serving.batching import BatchingModel

    assert batching_server.batching.max_batch_size == 1000
    with batching_server.store.acquire("multi") as (version, model):
        assert version == 2 and isinstance(model, BatchingModel)


def test_grpc_predict_through_batching_answers_correctly(batching_server):
    channel, stub = _prediction_stub(batching_server.grpc_port)
    with channel:
        response = stub.Predict(_predict_request("multi", [0.5, -1.0]), timeout=30)
    assert response.model_spec.version.value == 2
    assert list(response.outputs["click_probability"].float_val) == pytest.approx([_sigmoid(1.5), _sigmoid(-3.0)],
                                                                                  abs=1e-6)


def test_rest_predict_through_batching_answers_correctly(batching_server):
    body = json.dumps({"instances": [{"b64": base64.b64encode(tiny_example(0.25)).decode()}]}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{batching_server.rest_port}/v1/models/multi:predict",
                                     data=body, method="POST")
    with urllib.request.urlopen(request, timeout=30) as r:
        predictions = json.loads(r.read())["predictions"]
    assert predictions == [pytest.approx(_sigmoid(0.75), abs=1e-6)]


def test_multi_inference_through_batching_runs_each_signature(batching_server):
    """BatchingModel has no ``run_tensors``: MultiInference runs the classify and regress
    signatures one after the other through the batching queue, with the same answers."""
    from tensorflow_serving.apis import inference_pb2

    request = inference_pb2.MultiInferenceRequest()
    for signature, method in (("classification", CLASSIFY), ("regression", REGRESS)):
        task = request.tasks.add(method_name=method)
        task.model_spec.name, task.model_spec.signature_name = "multi", signature
    for x in (0.5, -1.0):
        request.input.example_list.examples.add().ParseFromString(tiny_example(x))
    channel, stub = _prediction_stub(batching_server.grpc_port)
    with channel:
        response = stub.MultiInference(request, timeout=30)
    p = [_sigmoid(1.5), _sigmoid(-3.0)]
    classes = response.results[0].classification_result.classifications
    assert [[(c.label, c.score) for c in row.classes] for row in classes] == [
        [("0", pytest.approx(1 - q, abs=1e-6)), ("1", pytest.approx(q, abs=1e-6))] for q in p]
    assert [r.value for r in response.results[1].regression_result.regressions] == pytest.approx(p, abs=1e-6)


def test_concurrent_requests_run_as_one_batch_and_each_gets_its_own_rows(tiny_base, tmp_path):
    """max_batch_size 4 and a 20 s timeout: four concurrent one-row requests fill exactly one
    batch (one model run), and each response holds its own row."""
    from serving.server import ModelServer

    path = tmp_path / "batching.txt"
    path.write_text("max_batch_size { value: 4 } batch_timeout_micros { value: 20000000 } num_batch_threads { value: 1 }")
    srv = ModelServer(tiny_base, rest_port=None, grpc_port=0, poll_seconds=0.1, enable_batching=True,
                      batching_parameters_file=str(path)).start()
    try:
        assert srv.store.wait_for_version("tiny", 1, timeout=60)
        xs = [0.1, -0.7, 1.3, 2.0]
        answers = {}
        channel, stub = _prediction_stub(srv.grpc_port)
        with channel:
            def call(x):
                answers[x] = stub.Predict(_predict_request("tiny", [x]), timeout=60)

            threads = [threading.Thread(target=call, args=(x,)) for x in xs]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        for x in xs:
            out = answers[x].outputs
            assert list(out["click_probability"].float_val) == pytest.approx([_sigmoid(x)], abs=1e-6)
            assert list(out["conversion_probability"].float_val) == pytest.approx([_sigmoid(x) / 2], abs=1e-6)
        with srv.store.acquire("tiny") as (_, model):
            assert model.batches_run == 1
    finally:
        srv.stop()
