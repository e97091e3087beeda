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


def _captured_axes(monkeypatch):
    """Replaces the PNG writer of ``models.plots``: the figures' axes are kept for inspection."""
    from models import plots

    axes = {}

    def keep(fig, path):
        axes[os.path.basename(path)] = fig.axes[0]
        return path

    monkeypatch.setattr(plots, "save_figure", keep)
    return axes


def _drawn(ax) -> dict:
    """label (without the '(n=..)' suffix) -> (x, y) of every drawn line."""
    out = {}
    for handle, label in zip(*ax.get_legend_handles_labels()):
        line = handle.lines[0] if hasattr(handle, "lines") else handle  # errorbar: its data line
        out[label.split(" (")[0]] = (list(line.get_xdata()), list(line.get_ydata()))
    return out


def test_reliability_diagram_linear_axes_no_empty_bins_zero_rates_at_zero(monkeypatch):
    from models import plots

    axes = _captured_axes(monkeypatch)
    curves = {"teacher": {"mean_prediction": [0.002, 0.03, 0.2, 0.5], "observed_rate": [0.0, 0.04, 0.0, 0.45],
                          "count": [300, 300, 0, 300]},  # the third bin holds no example
              "student": {"mean_prediction": [0.01, 0.3], "observed_rate": [0.0, 0.2], "count": [500, 500]},
              "oracle": {"mean_prediction": [0.005, 0.4], "observed_rate": [0.004, 0.41], "count": [500, 500]}}
    plots.reliability_diagram(curves, "/nonexistent/calibration_x.png", "reliability: x")
    ax = axes["calibration_x.png"]
    assert ax.get_xscale() == ax.get_yscale() == "linear"
    assert ax.get_xlim()[0] == ax.get_ylim()[0] == 0.0 and ax.get_xlim() == ax.get_ylim()
    drawn = _drawn(ax)
    assert {"teacher", "student", "oracle", "perfect calibration"} <= set(drawn)
    assert drawn["teacher"] == ([0.002, 0.03, 0.5], [0.0, 0.04, 0.45])  # empty bin left out, rate 0 at 0
    assert drawn["student"][1] == [0.0, 0.2]
    assert all(y == 0.0 or y >= 1e-3 for _, ys in drawn.values() for y in ys)  # nothing parked at 1e-5


@pytest.mark.slow
def test_calibration_plots_carry_teacher_student_and_oracle(fake, monkeypatch):
    cfg, run_dir, info = fake
    _save(cfg, run_dir, info, "teacher", cfg.model)
    _save(cfg, run_dir, info, "student", cfg.distill.student)
    axes = _captured_axes(monkeypatch)
    result = run_evaluate(cfg, run_dir, None)
    assert result.metrics["calibration_curves"] == {t: ["teacher", "student", "oracle"] for t in ("click", "conversion")}
    for task in ("click", "conversion"):
        ax = axes[f"calibration_{task}.png"]
        assert ax.get_xscale() == "linear" and {"teacher", "student", "oracle"} <= set(_drawn(ax))
        assert f"![calibration {task}: teacher, student, oracle](plots/calibration_{task}.png)" in result.report
    assert result.extra["rows_unit"] == "test examples (each model)"
