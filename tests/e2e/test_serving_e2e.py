"""End to end on tiny synthetic data: generate -> preprocess -> train -> export -> serve -> predict."""
import argparse
import base64
import json
import os

import pytest
import requests

from core.run_dir import RunDir
from pipeline.stages import run_stage
from serving import versions


@pytest.mark.slow
def test_pipeline_export_serve_predict(tiny_config, tmp_path, capsys):
    from serving.client import GrpcClient
    from core.feature_specs import encode_raw_example
    from serving.raw_examples import read_split
    from serving.server import ModelServer

    cfg = tiny_config
    run_dir = RunDir(str(tmp_path / "run"))
    opts = argparse.Namespace(model=None, input=None, output=None, format=None)
    for stage in ("generate", "preprocess", "train", "export"):
        run_stage(stage, cfg, run_dir, opts)
    message = capsys.readouterr().out
    assert "published ranker version 1 (teacher)" in message and "curl -s -X POST" in message
    model_dir = os.path.join(run_dir.serving_base(), "ranker")
    blessing = json.load(open(os.path.join(model_dir, "1", versions.BLESSED_FILE)))
    assert blessing["checks"]["skew"]["max_abs_diff"] <= cfg.export.skew_tolerance
    assert blessing["checks"]["skew"]["tfrecord_rows_matched"] > 0  # rows matched in the preprocessed TFRecords

    server = ModelServer(run_dir.serving_base(), rest_port=0, grpc_port=0, poll_seconds=0.2).start()
    try:
        assert server.store.wait_for_version("ranker", 1, 60)
        rows = read_split(cfg, *run_dir.raw_input(cfg), "test", 4)
        examples = [encode_raw_example(cfg, r["features"]) for r in rows]
        rest = requests.post(f"http://127.0.0.1:{server.rest_port}/v1/models/ranker:predict",
                             json={"instances": [{"b64": base64.b64encode(e).decode()} for e in examples]}).json()
        grpc_out = GrpcClient(f"127.0.0.1:{server.grpc_port}", "ranker").predict_examples(examples)
        raw = requests.post(f"http://127.0.0.1:{server.rest_port}/v1/models/ranker:predict", json={
            "signature_name": "predict_raw",
            "inputs": {c: [r["features"][c] for r in rows] for c in cfg.data.categorical + cfg.data.numeric}}).json()
        for i in range(len(rows)):
            for key in ("click_probability", "conversion_probability"):
                assert rest["predictions"][i][key] == pytest.approx(float(grpc_out[key][i]), abs=1e-6)
                assert raw["outputs"][key][i] == pytest.approx(float(grpc_out[key][i]), abs=1e-6)
        cls = requests.post(f"http://127.0.0.1:{server.rest_port}/v1/models/ranker:classify", json={
            "signature_name": "classification",
            "examples": [{c: r["features"][c] for c in cfg.data.categorical + cfg.data.numeric} for r in rows]}).json()
        assert [c[1][1] for c in cls["results"]] == pytest.approx([float(p) for p in grpc_out["click_probability"]], abs=1e-6)
    finally:
        server.stop()

    result = run_stage("predict", cfg, run_dir, opts)
    m = result.metrics
    assert m["rows_read"] == cfg.synthetic.rows == m["predicted"] + m["dead_lettered"]
