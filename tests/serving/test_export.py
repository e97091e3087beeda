"""The exported SavedModel: layout, signatures and dtypes (read back with saved_model_cli), warmup, blessing."""
import json
import os
import types

import numpy as np
import pytest
import tensorflow as tf

from models import model_io
from models.builder import build_ranker
from serving import versions
from pipeline.stages.export import run as run_export
from serving.session_model import SessionModel
from serving.signatures import probability_outputs, set_method_names
from serving.warmup import read_warmup
from tests.fakes.serving_models import serving_config
from tests.fakes.serving_models import build_fake_run


def test_published_layout_and_blessing(fake_run):
    assert versions.list_versions(fake_run.model_dir) == [1]
    assert sorted(os.listdir(fake_run.model_dir)) == ["1"]  # no leftover build directory
    v1 = os.path.join(fake_run.model_dir, "1")
    blessing = json.load(open(os.path.join(v1, "BLESSED")))
    assert blessing["blessed"] and set(blessing["checks"]) == {"load", "warmup", "skew", "metrics"}
    assert blessing["checks"]["skew"]["max_abs_diff"] <= 1e-5
    assert blessing["checks"]["skew"]["tfrecord_rows_matched"] > 0
    metrics = json.load(open(os.path.join(v1, versions.METRICS_FILE)))
    assert metrics["click"]["auc"] > 0.7  # the fake model's click score is informative
    assert metrics["conversion"]["output"] == "conversion_probability"
    assert len(os.listdir(os.path.join(v1, "assets"))) == len(fake_run.cfg.data.categorical)  # TFT vocabularies
    result = fake_run.result
    assert "curl -s -X POST" in result.message and "serving.client --grpc" in result.message
    assert os.path.exists(os.path.join(fake_run.run_dir.root, result.plots[0]))


def test_warmup_requests(fake_run):
    logs = read_warmup(os.path.join(fake_run.model_dir, "1"))
    assert len(logs) == fake_run.cfg.export.warmup_examples == 16
    req = logs[0].predict_log.request
    assert req.model_spec.name == "ranker" and req.model_spec.signature_name == "serving_default"
    assert list(req.inputs) == ["examples"]


def _spec(info):
    return info.dtype, [d.size for d in info.tensor_shape.dim]


def test_signatures_with_saved_model_cli(fake_run):
    from tensorflow.core.framework import types_pb2 as t
    from tensorflow.python.tools import saved_model_cli

    sigs = saved_model_cli.get_signature_def_map(os.path.join(fake_run.model_dir, "1"), "serve")
    assert {"serving_default", "predict_raw", "classification", "regression"} <= set(sigs)
    sd = sigs["serving_default"]
    assert sd.method_name == "tensorflow/serving/predict"
    assert {k: _spec(v) for k, v in sd.inputs.items()} == {"examples": (t.DT_STRING, [-1])}
    # probabilities only (no logits, no aux towers)
    assert {k: _spec(v) for k, v in sd.outputs.items()} == {
        "click_probability": (t.DT_FLOAT, [-1]), "conversion_probability": (t.DT_FLOAT, [-1])}
    raw = {k: _spec(v) for k, v in sigs["predict_raw"].inputs.items()}
    expected = {c: (t.DT_STRING, [-1]) for c in fake_run.cfg.data.categorical}
    expected.update({c: (t.DT_FLOAT, [-1]) for c in fake_run.cfg.data.numeric})
    assert raw == expected
    assert set(sigs["predict_raw"].outputs) == set(sd.outputs)
    cl = sigs["classification"]
    assert cl.method_name == "tensorflow/serving/classify"
    assert {k: _spec(v) for k, v in cl.inputs.items()} == {"inputs": (t.DT_STRING, [-1])}
    assert {k: _spec(v) for k, v in cl.outputs.items()} == {
        "scores": (t.DT_FLOAT, [-1, 2]), "classes": (t.DT_STRING, [-1, 2])}
    rg = sigs["regression"]
    assert rg.method_name == "tensorflow/serving/regress"
    assert {k: _spec(v) for k, v in rg.outputs.items()} == {"outputs": (t.DT_FLOAT, [-1])}


def test_classification_scores_match_probability(fake_run):
    from serving.gate import predict_examples
    from core.feature_specs import encode_raw_example
    from serving.raw_examples import read_split

    cfg = fake_run.cfg
    rows = read_split(cfg, *fake_run.run_dir.raw_input(cfg), "test", 5)
    examples = [encode_raw_example(cfg, r["features"]) for r in rows]
    model = SessionModel(os.path.join(fake_run.model_dir, "1"))
    try:
        p = predict_examples(model, examples)["click_probability"]
        cls = model.run("classification", {"inputs": examples})
        np.testing.assert_allclose(cls["scores"][:, 1], p, atol=1e-7)
        np.testing.assert_allclose(cls["scores"].sum(axis=1), 1.0, atol=1e-6)
        assert cls["classes"].tolist() == [[b"0", b"1"]] * len(rows)
        np.testing.assert_allclose(model.run("regression", {"inputs": examples})["outputs"], p, atol=1e-7)
    finally:
        model.close()


def test_set_method_names_rejects_unknown_signature(fake_run, tmp_path):
    import shutil

    d = str(tmp_path / "m")
    shutil.copytree(os.path.join(fake_run.model_dir, "1"), d)
    with pytest.raises(ValueError, match="signature 'nope' not in"):
        set_method_names(d, {"nope": "tensorflow/serving/classify"})


def test_probability_outputs_requires_one():
    assert probability_outputs(["a_logit", "a_probability", "ctcvr_probability"]) == ["a_probability", "ctcvr_probability"]
    with pytest.raises(ValueError, match="Received outputs"):
        probability_outputs(["a_logit"])


def test_esmm_ranker_exports_ctcvr_and_is_gated_on_it(tmp_path):
    """An ESMM teacher (the real MultiTaskRanker) exports pCTCVR = pCTR x pCVR next to its
    heads; the gate scores conversion with ``ctcvr_probability`` (the per-impression output)."""
    cfg = serving_config("model.esmm=true", "model.embedding_dim=4", "model.bottom_units=[8]",
                         "model.tower_units=[4]", "model.cross_layers=0", "export.serve_model=teacher")
    run_dir = build_fake_run(cfg, str(tmp_path / "run"))
    info = model_io.load_feature_info(run_dir.feature_info_file)
    model = build_ranker(cfg.model, info, cfg.data.tasks, cfg.data.funnel, seed=1)
    model.serving_model().save(os.path.join(run_dir.model_dir("teacher"), "serving_model"))

    run_export(cfg, run_dir, types.SimpleNamespace(model=None))
    v1 = os.path.join(run_dir.serving_base(), "ranker", "1")
    blessing = json.load(open(os.path.join(v1, "BLESSED")))
    assert blessing["blessed"] and blessing["checks"]["skew"]["max_abs_diff"] <= 1e-5
    metrics = json.load(open(os.path.join(v1, versions.METRICS_FILE)))
    assert metrics["conversion"]["output"] == "ctcvr_probability"

    loaded = tf.saved_model.load(v1)
    raw = loaded.signatures["predict_raw"]
    _, spec = raw.structured_input_signature
    rows = {k: tf.constant(["u1", "u2"] if s.dtype == tf.string else [1.0, 2.0], dtype=s.dtype) for k, s in spec.items()}
    out = {k: v.numpy() for k, v in raw(**rows).items()}
    assert {"ctcvr_probability", "click_probability", "conversion_probability"} <= set(out)
    np.testing.assert_allclose(out["ctcvr_probability"], out["click_probability"] * out["conversion_probability"],
                               rtol=1e-5)


class _StrictTransform(tf.Module):
    """Stands in for the TF Transform layer: like ``TransformFeaturesLayer`` it rejects input
    keys that are not the raw feature names (``ValueError: Unexpected inputs to transform``)."""

    def __init__(self, categorical, numeric):
        super().__init__()
        self.categorical, self.numeric = list(categorical), list(numeric)

    def __call__(self, inputs):
        unexpected = set(inputs) - set(self.categorical) - set(self.numeric)
        if unexpected:
            raise ValueError(f"Unexpected inputs to transform: {unexpected}")
        out = {c: tf.strings.to_hash_bucket_fast(inputs[c], 7) for c in self.categorical}
        out.update({c: tf.cast(inputs[c], tf.float32) for c in self.numeric})
        return out


def test_predict_raw_keeps_column_names_that_are_not_python_identifiers(tmp_path):
    """``item-price``, ``ctx.device``, ``2nd_item``: tf.function's keyword arguments would
    become ``item_price`` ... and the transform would reject them at export. The signature
    takes one dict: its keys (and the SignatureDef input keys clients send) stay the user's."""
    import tf_keras as keras

    from serving.signatures import ServingModule, save_serving_module

    categorical, numeric = ["ctx.device", "user-segment", "2nd_item"], ["item-price"]
    inputs = {c: keras.Input(shape=(), dtype="int64", name=c.replace(".", "_")) for c in categorical}
    inputs.update({c: keras.Input(shape=(), dtype="float32", name=c) for c in numeric})
    parts = [keras.layers.Reshape((1,))(tf.cast(v, tf.float32)) for v in inputs.values()]
    logit = keras.layers.Reshape(())(keras.layers.Dense(1)(keras.layers.Concatenate()(parts)))
    model = keras.Model(inputs, {"click_logit": logit, "click_probability": keras.layers.Activation("sigmoid")(logit)})
    spec = {c: tf.io.FixedLenFeature([], tf.string, default_value="") for c in categorical}
    spec.update({c: tf.io.FixedLenFeature([], tf.float32) for c in numeric})
    module = ServingModule(_StrictTransform(categorical, numeric), model, spec, categorical + numeric, "click")
    export_dir = str(tmp_path / "m")
    save_serving_module(module, export_dir)

    served = SessionModel(export_dir)
    try:
        assert set(served.signatures["predict_raw"].inputs) == set(categorical + numeric)
        rows = {"ctx.device": ["ios", "web"], "user-segment": ["a", "b"], "2nd_item": ["i1", "i2"], "item-price": [1.5, 30.0]}
        out = served.run("predict_raw", rows)["click_probability"]
        examples = [tf.train.Example(features=tf.train.Features(feature={
            **{c: tf.train.Feature(bytes_list=tf.train.BytesList(value=[rows[c][i].encode()])) for c in categorical},
            "item-price": tf.train.Feature(float_list=tf.train.FloatList(value=[rows["item-price"][i]]))})).SerializeToString()
            for i in range(2)]
        expected = served.run("serving_default", {"examples": examples})["click_probability"]
        assert out.shape == (2,) and np.all(np.isfinite(out))
        np.testing.assert_allclose(out, expected, atol=1e-7)
    finally:
        served.close()


def test_serving_module_names_a_column_no_signature_key_can_hold():
    from serving.signatures import ServingModule

    spec = {"user country": tf.io.FixedLenFeature([], tf.string, default_value="")}
    with pytest.raises(ValueError, match=r"\['user country'\] cannot be predict_raw signature keys"):
        ServingModule(_StrictTransform(["user country"], []), None, spec, ["user country"], "click")


def _executed_call_ops(export_dir: str, examples: list) -> list[str]:
    """The function-call nodes (PartitionedCall / StatefulPartitionedCall) the TF1 session
    still executes for one serving_default run: what the inliner left as separate calls."""
    graph = tf.Graph()
    with tf.compat.v1.Session(graph=graph) as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], export_dir)
        sig = meta.signature_def["serving_default"]
        fetches = [graph.get_tensor_by_name(v.name) for v in sig.outputs.values()]
        feed = {graph.get_tensor_by_name(sig.inputs["examples"].name): examples}
        sess.run(fetches, feed)  # the first run optimises the graph
        metadata = tf.compat.v1.RunMetadata()
        sess.run(fetches, feed, options=tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE),
                 run_metadata=metadata)
    ops = {n.node_name: n.timeline_label.split(" = ", 1)[-1].split("(", 1)[0]
           for d in metadata.step_stats.dev_stats for n in d.node_stats}
    assert "ParseExampleV2" in ops.values()  # the trace lists the executed ops
    return [name for name, op in ops.items() if op in ("PartitionedCall", "StatefulPartitionedCall")]


def test_the_tf_transform_graph_is_inlined_and_scores_as_the_layer_call(list_run, tmp_path):
    """The pipeline's TF Transform layer is copied into the signatures (``InlinedTransform``):
    in the TF1 session TF Serving runs, no function call is left (called as one function, the
    layer is one: TF's inliner refuses TF Transform's saved function), and the scores are the
    layer call's, in serving_default and predict_raw."""
    from core.config import weight_columns
    from core.feature_specs import encode_raw_example
    from serving.export import serving_parts
    from serving.raw_examples import read_split, to_columns
    from serving.signatures import ServingModule, save_serving_module

    cfg = list_run.cfg
    parts = serving_parts(cfg, list_run.run_dir, "teacher")
    assert parts.module._inlined is not None
    called = ServingModule(parts.module.tft_layer, parts.keras_model, parts.feature_spec, parts.info.model_inputs,
                           "click", list_weights=weight_columns(cfg.data), inline_transform=False)
    assert called._inlined is None
    dirs = {"inlined": str(tmp_path / "inlined"), "called": str(tmp_path / "called")}
    save_serving_module(parts.module, dirs["inlined"])
    save_serving_module(called, dirs["called"])
    rows = read_split(cfg, *list_run.run_dir.raw_input(cfg), "test", 40)
    examples = [encode_raw_example(cfg, r["features"]) for r in rows]

    assert _executed_call_ops(dirs["inlined"], examples) == []
    assert any("transform_features_layer" in n for n in _executed_call_ops(dirs["called"], examples))
    out = {}
    for name, d in dirs.items():
        m = SessionModel(d)
        try:
            out[name] = (m.run("serving_default", {"examples": examples}),
                         m.run("predict_raw", to_columns(cfg, rows, list(m.signatures["predict_raw"].inputs))))
        finally:
            m.close()
    for i in range(2):
        assert set(out["inlined"][i]) == set(out["called"][i]) == set(parts.module.output_names)
        for k in out["called"][i]:
            np.testing.assert_allclose(out["inlined"][i][k], out["called"][i][k], atol=1e-6)
            assert np.std(out["inlined"][i][k]) > 0  # real scores, not a constant


def test_a_transform_that_is_not_a_tf_transform_layer_is_called_as_it_is():
    from serving.signatures import InlinedTransform

    assert not InlinedTransform.supports(_StrictTransform(["a"], []))
    assert not InlinedTransform.supports(lambda raw: raw)
