"""The evaluate stage: every trained role, per-task metrics, oracle gap, calibration plots."""
import dataclasses
import os

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from models import model_io
from models.builder import build_ranker
from models.inputs import make_dataset
from models.training import TrainResult
from core.config import load_config
from core.errors import InputError
from pipeline.stages.evaluate import run as run_evaluate
from tests.fakes.transformed_run import REPO, TINY, make_fake_run


@pytest.fixture
def fake(tmp_path):
    run_dir, info = make_fake_run(str(tmp_path / "run"))
    cfg = load_config(os.path.join(REPO, "configs", "default.yaml"), TINY)
    return cfg, run_dir, info


def _save(cfg, run_dir, info, role, model_cfg):
    model = build_ranker(model_cfg, info, cfg.data.tasks, cfg.data.funnel, seed=5)
    model_io.save_trained(run_dir.model_dir(role), model, TrainResult(), role=role, model_cfg=model_cfg,
                          feature_info=info, tasks=cfg.data.tasks, funnel=cfg.data.funnel)
    return model


@pytest.mark.slow
def test_evaluates_every_role_against_per_impression_labels(fake):
    cfg, run_dir, info = fake
    teacher_cfg = dataclasses.replace(cfg.model, esmm=True)
    teacher = _save(cfg, run_dir, info, "teacher", teacher_cfg)
    _save(cfg, run_dir, info, "student", cfg.distill.student)
    result = run_evaluate(cfg, run_dir, None)
    assert sorted(result.models) == ["student", "teacher"]
    batch = next(iter(make_dataset(run_dir.split_pattern("test"), info, 1000)))
    out = teacher.serving_model()({k: batch[k] for k in info.model_inputs})
    m = result.models["teacher"]["conversion"]
    # The ESMM child is scored with pCTCVR against the per-impression conversion label.
    assert m["auc"] == pytest.approx(roc_auc_score(batch["label_conversion"], out["ctcvr_probability"]), abs=1e-6)
    assert m["oracle_auc"] == pytest.approx(roc_auc_score(batch["label_conversion"], batch["p_conversion"]), abs=1e-6)
    assert m["oracle_gap"] == pytest.approx(m["oracle_auc"] - m["auc"])
    assert m["calibration"] == pytest.approx(np.mean(out["ctcvr_probability"]) / np.mean(batch["label_conversion"]), rel=1e-4)
    assert {"auc", "logloss", "calibration", "gauc", "oracle_auc", "oracle_gap"} <= set(result.models["student"]["click"])
    assert result.rows == 256
    assert result.plots == ["plots/calibration_click.png", "plots/calibration_conversion.png"]
    assert all(os.path.getsize(run_dir.path(p)) > 0 for p in result.plots)
    assert "oracle AUC" in result.report and "teacher / conversion" in result.report


def test_no_group_column_means_no_gauc(fake):
    cfg, run_dir, info = fake
    _save(cfg, run_dir, info, "teacher", cfg.model)
    cfg.data.group_column = None
    cfg.data.oracle = {}
    result = run_evaluate(cfg, run_dir, None)
    assert "gauc" not in result.models["teacher"]["click"] and "oracle_auc" not in result.models["teacher"]["click"]


def test_without_a_trained_model_names_the_stage_to_run(fake):
    cfg, run_dir, _ = fake
    with pytest.raises(InputError, match="pipeline train"):
        run_evaluate(cfg, run_dir, None)
