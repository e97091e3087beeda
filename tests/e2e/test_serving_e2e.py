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
    from core.features import raw_feature_columns
    from serving.raw_examples import read_split, to_columns
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
        # every raw feature column; list features (data.lists) padded with "" (serving.signatures)
        raw = requests.post(f"http://127.0.0.1:{server.rest_port}/v1/models/ranker:predict", json={
            "signature_name": "predict_raw", "inputs": to_columns(cfg, rows)}).json()
        for i in range(len(rows)):
            for key in ("click_probability", "conversion_probability"):
                assert rest["predictions"][i][key] == pytest.approx(float(grpc_out[key][i]), abs=1e-6)
                assert raw["outputs"][key][i] == pytest.approx(float(grpc_out[key][i]), abs=1e-6)
        cls = requests.post(f"http://127.0.0.1:{server.rest_port}/v1/models/ranker:classify", json={
            "signature_name": "classification",
            "examples": [{c: r["features"][c] for c in raw_feature_columns(cfg)} for r in rows]}).json()
        assert [c[1][1] for c in cls["results"]] == pytest.approx([float(p) for p in grpc_out["click_probability"]], abs=1e-6)
    finally:
        server.stop()

    result = run_stage("predict", cfg, run_dir, opts)
    m = result.metrics
    assert m["rows_read"] == cfg.synthetic.rows == m["predicted"] + m["dead_lettered"]


# The synthetic data's behaviour sequence and tags (pipeline/synthetic: hist_items most recent
# last, item_tags as tag:weight tokens) as list features, and a student that skips the sequence.
LISTS = ("data.lists=[{name: hist_items, kind: sequence, shares: item_id, max_length: 12, pooling: attention, "
         "target: item_id}, {name: item_tags, kind: multi_valued, max_length: 4, pooling: sum, weights: tokens}]")
STUDENT = "distill.student.features=[user_id, item_id, item_category, device, hour, item_tags, price, item_rating]"


@pytest.mark.slow
def test_pipeline_with_list_features_export_serve_predict(tmp_path, capsys):
    """generate -> preprocess -> train -> distill -> export (the student, which skips
    hist_items) -> serve (REST rows/columns, gRPC 2-D strings) -> predict, and the teacher's
    export with the sequence served next to it."""
    from core.config import load_config
    from core.feature_specs import encode_raw_example
    from core.features import raw_columns_for
    from serving.client import GrpcClient, RestClient
    from serving.raw_examples import read_split
    from serving.server import ModelServer
    from serving.signatures import raw_input_columns
    from serving.warmup import read_warmup
    from tests.conftest import REPO

    cfg = load_config(os.path.join(REPO, "configs", "default.yaml"), [
        "synthetic.rows=3000", "synthetic.chunk_rows=1000", "synthetic.num_users=200", "synthetic.num_items=100",
        "preprocess.beam.direct_running_mode=in_memory", "model.embedding_dim=4", "model.bottom_units=[16]",
        "model.tower_units=[8]", "model.cross_layers=0", "training.epochs=1", "training.batch_size=256",
        "export.min_auc={}", "export.max_auc_drop=1.0", LISTS, STUDENT])
    run_dir = RunDir(str(tmp_path / "run"))
    opts = argparse.Namespace(model=None, input=None, output=None, format=None)
    for stage in ("generate", "preprocess", "train", "distill", "export"):
        run_stage(stage, cfg, run_dir, opts)
    run_stage("export", cfg, run_dir, argparse.Namespace(model="teacher", input=None, output=None, format=None))
    capsys.readouterr()
    model_dir = os.path.join(run_dir.serving_base(), "ranker")
    student_dir, teacher_dir = os.path.join(model_dir, "1"), os.path.join(model_dir, "2")
    for d in (student_dir, teacher_dir):
        skew = json.load(open(os.path.join(d, versions.BLESSED_FILE)))["checks"]["skew"]
        assert skew["max_abs_diff"] <= cfg.export.skew_tolerance and skew["tfrecord_rows_matched"] > 0
        assert read_warmup(d)[-1].predict_log.request.model_spec.signature_name == "predict_raw"
    student_columns = set(raw_input_columns(student_dir))
    assert student_columns == set(raw_columns_for(cfg, cfg.distill.student.features))
    assert "hist_items" not in student_columns and "hist_items" in raw_input_columns(teacher_dir)

    server = ModelServer(run_dir.serving_base(), rest_port=0, grpc_port=0, poll_seconds=0.2).start()
    try:
        assert server.store.wait_for_version("ranker", 2, 60)  # the teacher, with the sequence
        rows = read_split(cfg, *run_dir.raw_input(cfg), "test", 8)
        assert any(r["features"]["hist_items"] for r in rows)
        examples = [encode_raw_example(cfg, r["features"]) for r in rows]
        rest = RestClient(f"http://127.0.0.1:{server.rest_port}", "ranker")
        grpc_client = GrpcClient(f"127.0.0.1:{server.grpc_port}", "ranker")
        expected = grpc_client.predict_examples(examples)["click_probability"]
        for columnar in (False, True):
            got = [p["click_probability"] for p in rest.predict_raw(cfg, rows, columnar=columnar)]
            assert got == pytest.approx([float(p) for p in expected], abs=1e-6)
        assert grpc_client.predict_raw(cfg, rows)["click_probability"] == pytest.approx(expected, abs=1e-6)
    finally:
        server.stop()

    result = run_stage("predict", cfg, run_dir, opts)  # the newest version: the teacher
    m = result.metrics
    assert m["rows_read"] == cfg.synthetic.rows == m["predicted"] + m["dead_lettered"] and m["dead_lettered"] == 0
