"""The export's classification and regression signatures share one input tensor.

tfx-bsl's RunInference with several signatures (a multi-head BulkInferrer) feeds one tensor
to every signature and refuses an export whose signatures have different input tensors
("Input tensor must be the same for all Signatures.", as TF Serving's MultiInference did
before 2.4).
"""
import os

import numpy as np
import pytest
import tensorflow as tf

from serving.session_model import SessionModel
from serving.signatures import read_signature_defs
from serving.warmup import read_warmup


@pytest.fixture(scope="module")
def version_dir(fake_run):
    return os.path.join(fake_run.model_dir, "1")


@pytest.fixture(scope="module")
def examples(version_dir):
    return [log.predict_log.request.inputs["examples"].string_val[0] for log in read_warmup(version_dir)[:5]]


def test_classification_and_regression_read_one_tensor(version_dir):
    defs = read_signature_defs(version_dir)
    name = defs["classification"].inputs["inputs"].name
    assert defs["regression"].inputs["inputs"].name == name == "classification_inputs:0"
    assert defs["serving_default"].inputs["examples"].name == "serving_default_examples:0"  # untouched

    from tensorflow.core.protobuf import saved_model_pb2

    sm = saved_model_pb2.SavedModel()
    with open(os.path.join(version_dir, "saved_model.pb"), "rb") as f:
        sm.ParseFromString(f.read())
    nodes = {n.name: n for n in sm.meta_graphs[0].graph_def.node}
    assert "regression_inputs" not in nodes  # its placeholder is gone; nothing reads it
    assert not [n.name for n in nodes.values() if any(i.split(":")[0].lstrip("^") == "regression_inputs"
                                                      for i in n.input)]


def test_one_session_run_feeds_both_signatures(version_dir, examples):
    """The TF1 loader (TF Serving's): one feed, both signatures' outputs, equal to separate runs."""
    model = SessionModel(version_dir)
    try:
        cls, reg = model.signatures["classification"], model.signatures["regression"]
        feed = {cls.inputs["inputs"].name: np.asarray(examples, dtype=object)}
        scores, values = model.session.run([cls.outputs["scores"].name, reg.outputs["outputs"].name], feed)
        np.testing.assert_allclose(values, scores[:, 1], atol=1e-6)
        np.testing.assert_allclose(values, model.run("regression", {"inputs": examples})["outputs"], atol=1e-7)
        expected = model.run("serving_default", {"examples": examples})["click_probability"]
        np.testing.assert_allclose(values, expected, atol=1e-6)
    finally:
        model.close()


def test_tf2_loader_still_runs_each_signature(version_dir, examples):
    loaded = tf.saved_model.load(version_dir)
    batch = tf.constant(examples)
    reg = loaded.signatures["regression"](inputs=batch)["outputs"].numpy()
    cls = loaded.signatures["classification"](inputs=batch)["scores"].numpy()
    np.testing.assert_allclose(reg, cls[:, 1], atol=1e-6)


def test_tfx_bsl_run_inference_with_both_signatures(version_dir, examples):
    """The multi-head BulkInferrer path: one RunInference over classification + regression."""
    import apache_beam as beam
    from apache_beam.testing.util import assert_that
    from tfx_bsl.public.beam.run_inference import RunInference
    from tfx_bsl.public.proto import model_spec_pb2

    spec = model_spec_pb2.InferenceSpecType(saved_model_spec=model_spec_pb2.SavedModelSpec(
        model_path=version_dir, signature_name=["classification", "regression"]))
    parsed = [tf.train.Example.FromString(e) for e in examples]

    def check(logs):
        assert len(logs) == len(examples)
        for log in logs:
            results = log.multi_inference_log.response.results
            assert [r.model_spec.signature_name for r in results] == ["classification", "regression"]
            cls = results[0].classification_result.classifications[0]
            reg = results[1].regression_result.regressions[0]
            assert [c.label for c in cls.classes] == ["0", "1"]
            assert cls.classes[1].score == pytest.approx(reg.value, abs=1e-6)

    with beam.Pipeline() as p:
        logs = p | beam.Create(parsed) | RunInference(spec)
        assert_that(logs, check)
