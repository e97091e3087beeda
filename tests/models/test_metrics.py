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
