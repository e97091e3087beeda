"""NumPy evaluation metrics: AUC, log loss, calibration, GAUC, reliability bins."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import log_loss, roc_auc_score

EPS = 1e-7


class Undefined(float):
    """A metric without a value (the AUC of labels of one class): NaN, printed ``undefined``.

    A float NaN for arithmetic, comparisons, NumPy and JSON (``NaN``), so every consumer of
    the metrics keeps working, yet never reads as a number in a report
    (``f"AUC {m['auc']:.4f}"`` gives ``AUC undefined``).
    """

    def __new__(cls):
        return super().__new__(cls, "nan")

    def __format__(self, spec: str) -> str:
        return "undefined"

    def __repr__(self) -> str:
        return "undefined"

    __str__ = __repr__

    def __reduce__(self):
        return (Undefined, ())


UNDEFINED = Undefined()


def is_undefined(value) -> bool:
    """None or NaN (``UNDEFINED`` included)."""
    return value is None or (isinstance(value, (float, np.floating)) and np.isnan(value))


def _check(labels, preds, weights=None):
    labels, preds = np.asarray(labels, np.float64).ravel(), np.asarray(preds, np.float64).ravel()
    if labels.shape != preds.shape:
        raise ValueError(f"labels and predictions differ in length: {labels.shape[0]} vs {preds.shape[0]}")
    if labels.size == 0:
        raise ValueError("no examples to evaluate (labels is empty)")
    weights = np.ones_like(labels) if weights is None else np.asarray(weights, np.float64).ravel()
    return labels, preds, weights


def auc(labels, preds, weights=None) -> float:
    """ROC AUC; ``UNDEFINED`` (NaN) when only one class is present."""
    labels, preds, weights = _check(labels, preds, weights)
    if labels.min() == labels.max():
        return UNDEFINED
    return float(roc_auc_score(labels, preds, sample_weight=weights))


def logloss(labels, preds, weights=None) -> float:
    labels, preds, weights = _check(labels, preds, weights)
    return float(log_loss(labels, np.clip(preds, EPS, 1 - EPS), sample_weight=weights, labels=[0, 1]))


def calibration(labels, preds, weights=None) -> dict:
    """mean prediction / mean label (1.0 = calibrated on average), with both means."""
    labels, preds, weights = _check(labels, preds, weights)
    mp, ml = float(np.average(preds, weights=weights)), float(np.average(labels, weights=weights))
    return {"calibration": mp / ml if ml > 0 else UNDEFINED, "mean_prediction": mp, "mean_label": ml}


def gauc(labels, preds, groups, weights=None) -> float:
    """Group AUC: per-group AUC averaged with weights = group size, over groups with both
    classes (``UNDEFINED`` when no group has both)."""
    labels, preds, weights = _check(labels, preds, weights)
    groups = np.asarray(groups).ravel()
    order = np.argsort(groups, kind="stable")
    g, l, p, w = groups[order], labels[order], preds[order], weights[order]
    bounds = np.flatnonzero(np.diff(g)) + 1
    total, norm = 0.0, 0.0
    for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, g.size]):
        gl = l[lo:hi]
        if gl.min() == gl.max():
            continue
        size = float(w[lo:hi].sum())
        total += size * roc_auc_score(gl, p[lo:hi], sample_weight=w[lo:hi])
        norm += size
    return float(total / norm) if norm > 0 else UNDEFINED


def reliability(labels, preds, bins: int = 10) -> dict:
    """Quantile bins of the prediction: mean prediction and observed rate per bin."""
    labels, preds, _ = _check(labels, preds)
    edges = np.unique(np.quantile(preds, np.linspace(0, 1, bins + 1)))
    idx = np.clip(np.searchsorted(edges, preds, side="right") - 1, 0, max(0, len(edges) - 2))
    mean_pred, rate, count = [], [], []
    for b in range(max(1, len(edges) - 1)):
        m = idx == b
        if m.any():
            mean_pred.append(float(preds[m].mean()))
            rate.append(float(labels[m].mean()))
            count.append(int(m.sum()))
    return {"mean_prediction": mean_pred, "observed_rate": rate, "count": count}


def task_metrics(labels, preds, weights=None, groups=None, oracle=None) -> dict:
    """auc, logloss, calibration (+ means), gauc (with groups), oracle_auc/oracle_gap (with oracle).

    Metrics without a value (the AUCs and the gap when the labels hold one class) are
    ``UNDEFINED``, never a number."""
    out = {"auc": auc(labels, preds, weights), "logloss": logloss(labels, preds, weights)}
    out.update(calibration(labels, preds, weights))
    if groups is not None:
        out["gauc"] = gauc(labels, preds, groups, weights)
    if oracle is not None:
        out["oracle_auc"] = auc(labels, oracle, weights)
        undefined = is_undefined(out["oracle_auc"]) or is_undefined(out["auc"])
        out["oracle_gap"] = UNDEFINED if undefined else out["oracle_auc"] - out["auc"]
    return out
