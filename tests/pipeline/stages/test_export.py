"""``export.serve_model: best_under_budget``: which student the export stage publishes from
distill's recorded frontier (serving/export.py ``best_under_budget``, pipeline/stages/export.py
``choose_model``). The whole export of a chosen student runs in tests/pipeline/stages/test_distill.py."""
import os

import pytest

from core.errors import ConfigError, ExportError, InputError
from core.run_dir import RunDir, Summary
from pipeline.stages.export import choose_model
from serving.export import best_under_budget


def _model(name, kd, p50, auc_mean, model_dir="auto"):
    size = None if kd is None else name.rsplit("_", 2 if name.endswith("_no_kd") else 1)[0]
    if model_dir == "auto":
        model_dir = "teacher" if kd is None else (f"students/{size}" if kd else None)
    return {"name": name, "size": size, "kd": kd, "p50_ms": p50, "auc_mean": auc_mean, "model_dir": model_dir}


FRONTIER = [
    _model("teacher", None, 3.0, 0.90),  # best and slowest: never a candidate
    _model("small_kd", True, 1.0, 0.80),
    _model("small_no_kd", False, 1.0, 0.95),  # a no-KD student is never published by this rule
    _model("student_kd", True, 1.4, 0.84, model_dir="student"),
    _model("large_kd", True, 2.0, 0.86),
]


def test_the_best_kd_student_under_the_budget_is_chosen():
    chosen, why = best_under_budget(FRONTIER, 1.5, batch_size=64)
    assert chosen["name"] == "student_kd" and chosen["model_dir"] == "student"
    assert why["rule"] == "best_under_budget" and why["chosen"] == "student_kd" and why["size"] == "student"
    assert set(why["under_budget"]) == {"small_kd", "student_kd"} and set(why["over_budget"]) == {"large_kd"}
    assert "0.8400" in why["reason"] and "within 1.5 ms" in why["reason"] and "batch 64" in why["reason"]
    assert best_under_budget(FRONTIER, 5.0)[0]["name"] == "large_kd"
    assert best_under_budget(FRONTIER, 1.0)[0]["name"] == "small_kd"  # the budget is inclusive


def test_a_tie_in_mean_auc_goes_to_the_faster_student():
    models = [_model("a_kd", True, 1.2, 0.8), _model("b_kd", True, 0.9, 0.8), _model("c_kd", True, 1.0, 0.7)]
    assert best_under_budget(models, 2.0)[0]["name"] == "b_kd"


def test_no_student_under_the_budget_names_the_fastest_and_the_budget():
    with pytest.raises(ExportError, match=r"no KD student's serving p50 at batch 64 is within "
                                          r"export\.latency_budget_ms=0\.5 ms; the fastest, small_kd, takes 1\.000 ms"):
        best_under_budget(FRONTIER, 0.5, batch_size=64)
    assert ExportError.exit_code == 4


def test_students_without_a_saved_model_or_an_auc_are_no_candidates():
    models = [_model("teacher", None, 0.1, 0.9), _model("a_no_kd", False, 0.1, 0.9),
              _model("b_kd", True, 0.1, None), _model("c_kd", True, 0.1, 0.8, model_dir=None)]
    with pytest.raises(ExportError, match="holds no saved KD student with a test AUC"):
        best_under_budget(models, 1.0)
    assert best_under_budget(models + [_model("d_kd", True, 0.5, 0.6)], 1.0)[0]["name"] == "d_kd"


def _config(*overrides):
    from tests.fakes.serving_models import serving_config

    return serving_config(*overrides)


def test_choose_model_reads_the_frontier_distill_recorded(tmp_path):
    run_dir = RunDir(str(tmp_path / "run"))
    cfg = _config("export.serve_model=best_under_budget", "export.latency_budget_ms=1.5")
    with pytest.raises(InputError, match=r"distill recorded no AUC-vs-serving-cost frontier.*pipeline distill"):
        choose_model(cfg, run_dir, None)
    summary = Summary(run_dir)
    summary.record_stage("distill", "ok", 1.0, {"metrics": {"frontier": {"batch_size": 64, "models": FRONTIER}}})
    with pytest.raises(InputError, match=r"student/serving_model not found"):  # recorded but not on disk
        choose_model(cfg, run_dir, None)
    os.makedirs(run_dir.path("student", "serving_model"))
    role, trained_dir, selection = choose_model(cfg, run_dir, None)
    assert (role, trained_dir, selection["chosen"]) == ("student", run_dir.path("student"), "student_kd")
    # --model best_under_budget over another serve_model: the budget is still required
    with pytest.raises(ConfigError, match=r"export\.latency_budget_ms: required with --model best_under_budget"):
        choose_model(_config(), run_dir, "best_under_budget")
    # a distill attempt that failed after recording a frontier: its outputs are stale
    summary.record_stage("distill", "failed", 1.0, {"error": "killed", "metrics": {"frontier": {"models": FRONTIER}}})
    with pytest.raises(InputError, match=r"the last `distill` attempt failed"):
        choose_model(cfg, run_dir, None)
