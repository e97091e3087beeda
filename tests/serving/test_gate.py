"""The validation gate: a failed check publishes nothing and names the check and numbers."""
import json
import os
import types

import pytest
import tf_keras

from models import model_io
from core.errors import GateFailedError
from core.features import FeatureInfo
from core.run_dir import read_json
from serving import export, gate, versions
from serving.session_model import SessionModel
from serving.raw_examples import read_split
from serving.warmup import write_warmup
from tests.fakes.serving_models import build_keras_model
from pipeline.stages.export import choose_role, run as run_export


def _listing(model_dir):
    return sorted(os.listdir(model_dir))


def test_min_auc_failure_publishes_nothing(fake_run):
    before = _listing(fake_run.model_dir)
    from tests.fakes.serving_models import serving_config

    strict = serving_config("export.min_auc={click: 0.999}")
    with pytest.raises(GateFailedError, match=r"gate check 'metrics' failed: task 'click': test AUC 0\.\d+ < export.min_auc 0.999"):
        run_export(strict, fake_run.run_dir, types.SimpleNamespace(model="teacher"))
    assert _listing(fake_run.model_dir) == before  # no new version, no build directory left


def test_auc_drop_against_published_version_fails(fake_run):
    version, published = versions.published_metrics(fake_run.model_dir)
    assert version == 1 and published["click"]["auc"] > 0.7
    candidate = json.loads(json.dumps(published))
    candidate["click"]["auc"] = published["click"]["auc"] - 0.02
    with pytest.raises(GateFailedError, match=r"'metrics' failed: task 'click': test AUC .* is 0.0200 below the published"):
        gate.check_metrics(fake_run.cfg, candidate, published)
    candidate["click"]["auc"] = published["click"]["auc"] - 0.005  # within export.max_auc_drop 0.01
    ok = gate.check_metrics(fake_run.cfg, candidate, published)
    assert ok["previous"]["click"] == published["click"]["auc"]


def test_undefined_auc_with_a_minimum_fails(fake_run):
    from tests.fakes.serving_models import serving_config

    one_class = {"click": {"auc": None, "rows": 5, "positives": 0}}
    with pytest.raises(GateFailedError, match="AUC undefined"):
        gate.check_metrics(serving_config("export.min_auc={click: 0.5}"), one_class, None)


def _gate_parts(fake_run):
    import tensorflow_transform as tft

    rd = fake_run.run_dir
    info = FeatureInfo.from_dict(read_json(rd.feature_info_file))
    layer = tft.TFTransformOutput(rd.transform_output_dir).transform_features_layer()
    records = read_split(fake_run.cfg, *rd.raw_input(fake_run.cfg), "test", 100)
    return info, layer, records


def test_skew_check_catches_a_different_training_model(fake_run):
    info, layer, records = _gate_parts(fake_run)
    model = SessionModel(os.path.join(fake_run.model_dir, "1"))
    try:
        same = tf_keras.models.load_model(model_io.serving_model_dir(fake_run.run_dir.model_dir("teacher")))
        ok = gate.check_skew(fake_run.cfg, model, layer, same, info, records, None)
        assert ok["max_abs_diff"] <= 1e-5 and ok["predict_raw_max_abs_diff"] <= 1e-5
        other = build_keras_model(info, rating_weight=2.5)
        with pytest.raises(GateFailedError, match=r"gate check 'skew' failed: serving_default vs Keras model .* > tolerance 1e-05"):
            gate.check_skew(fake_run.cfg, model, layer, other, info, records, None)
    finally:
        model.close()


def test_warmup_check_fails_on_a_bad_request(fake_run, tmp_path):
    import shutil

    d = str(tmp_path / "candidate")
    shutil.copytree(os.path.join(fake_run.model_dir, "1"), d)
    write_warmup(d, [b"not an example"], "ranker")
    model = SessionModel(d)
    try:
        with pytest.raises(GateFailedError, match="gate check 'warmup' failed: warmup record 0: request failed"):
            gate.check_warmup(model, d, 1)
    finally:
        model.close()


def test_load_check_fails_on_a_broken_savedmodel(tmp_path):
    d = tmp_path / "broken"
    d.mkdir()
    (d / "saved_model.pb").write_bytes(b"junk")
    with pytest.raises(GateFailedError, match="gate check 'load' failed: tf.compat.v1.saved_model.loader.load"):
        gate.check_load(str(d))


def test_role_falls_back_to_teacher_without_student(fake_run):
    assert choose_role(fake_run.cfg, fake_run.run_dir, None) == "teacher"
    from core.errors import InputError

    with pytest.raises(InputError, match="distill"):
        choose_role(fake_run.cfg, fake_run.run_dir, "student")


def test_role_without_any_trained_model_asks_for_training(tmp_path, fake_run):
    from core.errors import InputError
    from core.run_dir import RunDir

    with pytest.raises(InputError, match=r"teacher/serving_model not found; run `python -m pipeline train`"):
        choose_role(fake_run.cfg, RunDir(str(tmp_path / "empty")), None)
