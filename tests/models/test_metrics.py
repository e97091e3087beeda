"""NumPy evaluation metrics."""
import numpy as np
import pytest

from models import metrics as M


def test_auc_logloss_calibration_on_known_values():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.4, 0.35, 0.8])
    assert M.auc(y, p) == pytest.approx(0.75)
    assert M.logloss(y, p) == pytest.approx(-np.mean(np.log([0.9, 0.6, 0.35, 0.8])))
    cal = M.calibration(y, p)
    assert cal["calibration"] == pytest.approx(np.mean(p) / 0.5)
    assert M.auc(np.zeros(3), [0.1, 0.2, 0.3]) != M.auc(np.zeros(3), [0.1, 0.2, 0.3])  # NaN: one class


def test_gauc_weights_groups_by_size_and_skips_one_class_groups():
    y = np.array([0, 1, 0, 1, 1, 0, 0])
    p = np.array([0.2, 0.9, 0.8, 0.1, 0.6, 0.5, 0.3])
    g = np.array([1, 1, 2, 2, 2, 3, 3])  # group 3 has no positive: skipped
    expected = (2 * 1.0 + 3 * M.auc([0, 1, 1], [0.8, 0.1, 0.6])) / 5
    assert M.gauc(y, p, g) == pytest.approx(expected)


def test_task_metrics_reports_oracle_gap():
    rng = np.random.default_rng(0)
    truth = rng.random(2000)
    y = (rng.random(2000) < truth).astype(float)
    noisy = np.clip(truth + rng.normal(0, 0.3, 2000), 0, 1)
    m = M.task_metrics(y, noisy, oracle=truth)
    assert m["oracle_auc"] > m["auc"]
    assert m["oracle_gap"] == pytest.approx(m["oracle_auc"] - m["auc"])
    assert "gauc" not in m


def test_reliability_bins_cover_all_rows():
    rng = np.random.default_rng(1)
    p = rng.random(1000)
    y = (rng.random(1000) < p).astype(float)
    r = M.reliability(y, p, bins=10)
    assert sum(r["count"]) == 1000 and len(r["count"]) == 10
    assert np.allclose(r["mean_prediction"], r["observed_rate"], atol=0.12)


def test_mismatched_or_empty_inputs_raise():
    with pytest.raises(ValueError, match="differ in length"):
        M.auc([0, 1], [0.5])
    with pytest.raises(ValueError, match="empty"):
        M.logloss([], [])


def test_undefined_metrics_say_so_instead_of_printing_a_number():
    u = M.auc(np.ones(4), [0.1, 0.2, 0.3, 0.4])
    assert M.is_undefined(u) and np.isnan(u) and np.isnan(np.mean([u, 0.5]))
    assert f"AUC {u:.4f}, gap {u:+.4f}" == "AUC undefined, gap undefined" and str(u) == "undefined"
    assert not M.is_undefined(0.5) and M.is_undefined(None)
    m = M.task_metrics(np.zeros(4), [0.1, 0.2, 0.3, 0.4], groups=[1, 1, 2, 2], oracle=[0.1, 0.1, 0.2, 0.2])
    assert all(M.is_undefined(m[k]) for k in ("auc", "gauc", "oracle_auc", "oracle_gap", "calibration")), m
    assert m["logloss"] > 0


def test_evaluation_of_a_task_with_one_label_class_warns_once_and_reports_no_auc(caplog):
    from types import SimpleNamespace

    from models.evaluation import evaluate_predictions

    rng = np.random.default_rng(0)
    arrays = {"label_click": (rng.random(100) < 0.3).astype(np.float32), "label_conversion": np.zeros(100, np.float32),
              "click_probability": rng.random(100), "conversion_probability": rng.random(100) * 0.1}
    cfg = SimpleNamespace(esmm=False)
    with caplog.at_level("WARNING", logger="models.evaluation"):
        result = evaluate_predictions(arrays, ["click", "conversion"], cfg, None)
    assert 0.0 < result["click"]["auc"] < 1.0 and not M.is_undefined(result["click"]["auc"])
    assert M.is_undefined(result["conversion"]["auc"]) and f"{result['conversion']['auc']:.4f}" == "undefined"
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "'conversion'" in warnings[0] and "test split" in warnings[0], warnings
