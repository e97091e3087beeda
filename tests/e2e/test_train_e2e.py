"""End to end on real stages: generate -> preprocess -> train -> evaluate with tiny_config."""
import json
import os

import pytest

from models import model_io
from core.run_dir import RunDir
from pipeline.stages import run_stage


@pytest.mark.slow
def test_generate_preprocess_train_evaluate(tiny_config, tmp_path):
    run_dir = RunDir(str(tmp_path / "run"))
    for stage in ("generate", "preprocess", "train", "evaluate"):
        run_stage(stage, tiny_config, run_dir, None)
    summary = json.load(open(run_dir.summary_file))
    assert all(summary["stages"][s]["status"] == "ok" for s in ("generate", "preprocess", "train", "evaluate"))
    train = summary["stages"]["train"]
    assert train["rows"] > 0 and train["metrics"]["params"] > 0
    teacher = summary["models"]["teacher"]
    for task in ("click", "conversion"):
        m = teacher[task]
        assert 0.0 <= m["auc"] <= 1.0 and m["logloss"] > 0 and "oracle_gap" in m and "gauc" in m
    assert model_io.has_serving_model(run_dir.model_dir("teacher"))
    report = open(run_dir.report_file).read()
    assert "## evaluate" in report and "oracle AUC" in report and "plots/calibration_click.png" in report
