"""The validation gate ("blessing") a candidate version passes before it is published.

Checks, in order; the first failure raises ``GateFailedError`` naming the check and its numbers:

  ==============  =============================================================================
  check           passes when
  ==============  =============================================================================
  load            the candidate loads with the TF1 session loader (tag ``serve``, fresh graph),
                  as TF Serving's C++ loader does, with the expected signatures
  warmup          every ``assets.extra/tf_serving_warmup_requests`` record replays with finite
                  outputs of one row per example
  skew            on raw test rows, ``serving_default`` (raw tf.Example in) equals the Keras
                  serving model on the Python TF Transform output (the typed records as the
                  tensors parsing gives: list and weight columns as ``SparseTensor``s), and
                  ``predict_raw`` (its input columns, lists padded with "") equals
                  ``serving_default``, within ``export.skew_tolerance``; rows also found in the
                  preprocessed test TFRecords (matched by categorical ids, labels and
                  passthrough values) score the same from the TFRecord features
  metrics         per-task test AUC through ``serving_default`` >= ``export.min_auc[task]`` and
                  at most ``export.max_auc_drop`` below the currently published version
  ==============  =============================================================================

``run_gate`` returns the blessing (checks and numbers) that export writes as ``BLESSED``
only after every check passed.
"""
from __future__ import annotations

import logging
import math

import numpy as np
import tensorflow as tf

from core import features
from core.errors import GateFailedError
from core.feature_specs import encode_raw_example
from serving.raw_examples import to_columns, to_tensors
from serving.session_model import SessionModel
from serving.warmup import WarmupError, replay_warmup

log = logging.getLogger("serving.gate")

REQUIRED_SIGNATURES = ("serving_default", "predict_raw", "classification", "regression")
SKEW_ROWS = 256
_BATCH = 1024


def _fail(check: str, message: str):
    raise GateFailedError(f"gate check '{check}' failed: {message}; nothing was published")


def check_load(export_dir: str) -> tuple[SessionModel, dict]:
    try:
        model = SessionModel(export_dir)
    except Exception as e:  # noqa: BLE001  (any loader failure fails the gate)
        _fail("load", f"tf.compat.v1.saved_model.loader.load({export_dir!r}, tags=['serve']) raised {type(e).__name__}: {e}")
    missing = [s for s in REQUIRED_SIGNATURES if s not in model.signatures]
    if missing:
        _fail("load", f"signature(s) {missing} missing; found {sorted(model.signatures)}")
    return model, {"signatures": sorted(model.signatures)}


def check_warmup(model: SessionModel, export_dir: str, expected: int) -> dict:
    try:
        n = replay_warmup(model, export_dir)
    except WarmupError as e:
        _fail("warmup", str(e))
    if n != expected:
        _fail("warmup", f"replayed {n} warmup requests, expected {expected}")
    return {"requests": n}


def predict_examples(model: SessionModel, examples: list[bytes], signature: str = "serving_default") -> dict:
    """Runs serialized examples through a signature in batches; output key -> ndarray."""
    parts = [model.run(signature, {"examples" if signature == "serving_default" else "inputs": examples[i:i + _BATCH]})
             for i in range(0, len(examples), _BATCH)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}


def _python_transform(cfg, tft_layer, records: list[dict]) -> dict:
    """The TF Transform layer on every raw feature column of the typed records (in Python,
    not through the exported graph); transformed name -> ndarray."""
    out = tft_layer(to_tensors(cfg, records))
    return {k: (tf.sparse.to_dense(v) if isinstance(v, tf.sparse.SparseTensor) else v).numpy() for k, v in out.items()}


def _keras_outputs(keras_model, transformed: dict, model_inputs: list[str], keys: list[str]) -> dict:
    out = keras_model({k: tf.constant(transformed[k]) for k in model_inputs}, training=False)
    return {k: np.reshape(out[k].numpy(), [-1]) for k in keys}


def _max_diff(a: dict, b: dict, keys: list[str]) -> float:
    return max(float(np.max(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64)), initial=0.0)) for k in keys)


def check_skew(cfg, model: SessionModel, tft_layer, keras_model, info: features.FeatureInfo,
               records: list[dict], tfrecords: dict | None) -> dict:
    """See the module docstring; ``tfrecords`` is the parsed test split (name -> ndarray) or None."""
    tol = cfg.export.skew_tolerance
    records = records[:SKEW_ROWS]
    if not records:
        _fail("skew", "no valid raw test rows to compare")
    keys = [k for k in model.signatures["serving_default"].outputs]
    served = predict_examples(model, [encode_raw_example(cfg, r["features"]) for r in records])
    transformed = _python_transform(cfg, tft_layer, records)
    trained = _keras_outputs(keras_model, transformed, info.model_inputs, keys)
    diff = _max_diff(served, trained, keys)
    if not diff <= tol:
        _fail("skew", f"serving_default vs Keras model on transformed features: max |diff| {diff:.3g} > tolerance {tol:g}")
    raw_out = model.run("predict_raw", to_columns(cfg, records, list(model.signatures["predict_raw"].inputs)))
    raw_diff = _max_diff(served, raw_out, keys)
    if not raw_diff <= tol:
        _fail("skew", f"predict_raw vs serving_default: max |diff| {raw_diff:.3g} > tolerance {tol:g}")
    result = {"rows": len(records), "max_abs_diff": diff, "predict_raw_max_abs_diff": raw_diff, "tolerance": tol}
    result.update(_tfrecord_skew(cfg, info, keras_model, served, transformed, records, tfrecords, keys, tol))
    return result


def _row_key(cat_ids, labels, passthrough) -> tuple:
    return tuple(int(x) for v in cat_ids for x in np.reshape(v, [-1])) + \
        tuple(float(np.float32(x)) for x in labels) + tuple(float(np.float32(x)) for x in passthrough)


def _tfrecord_skew(cfg, info, keras_model, served, transformed, records, tfrecords, keys, tol) -> dict:
    if not tfrecords:
        return {"tfrecord_rows_matched": 0}
    # Rows are matched by every integer output (ids, buckets, list ids, crosses; not only the
    # model's: a student reading a few features would match different rows with equal ids).
    cats = sorted(k for k in set(transformed) & set(tfrecords)
                  if np.asarray(tfrecords[k]).dtype.kind in "iu" and k != features.GROUP_KEY) or list(info.categorical)
    tasks = cfg.data.tasks
    pt = [c for c in info.passthrough if c in tfrecords]
    index: dict = {}
    n = len(tfrecords[cats[0]]) if cats else 0
    for i in range(n):
        key = _row_key([tfrecords[c][i] for c in cats], [tfrecords[features.label_key(t.name)][i] for t in tasks],
                       [tfrecords[c][i] for c in pt])
        index[key] = None if key in index else i  # ambiguous keys are not matched
    pairs = []
    for j, r in enumerate(records):
        key = _row_key([transformed[c][j] for c in cats], [r["features"][t.label] for t in tasks],
                       [r["features"][c] for c in pt])
        if index.get(key) is not None:
            pairs.append((j, index[key]))
    if not pairs:
        return {"tfrecord_rows_matched": 0}
    rows = [i for _, i in pairs]
    from_records = _keras_outputs(keras_model, {k: tfrecords[k][rows] for k in info.model_inputs}, info.model_inputs, keys)
    served_rows = {k: served[k][[j for j, _ in pairs]] for k in keys}
    diff = _max_diff(served_rows, from_records, keys)
    if not diff <= tol:
        _fail("skew", f"serving_default vs Keras model on the preprocessed test TFRecords ({len(pairs)} matched rows): "
                      f"max |diff| {diff:.3g} > tolerance {tol:g}")
    return {"tfrecord_rows_matched": len(pairs), "tfrecord_max_abs_diff": diff}


def _auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    if len(np.unique(labels)) < 2:
        return None
    return float(roc_auc_score(labels, scores))


def compute_metrics(cfg, model: SessionModel, records: list[dict], eval_keys: dict) -> dict:
    """Per-task AUC on labelled raw records through ``serving_default``; task -> {auc, rows, output}."""
    served = predict_examples(model, [encode_raw_example(cfg, r["features"]) for r in records])
    out = {}
    for t in cfg.data.tasks:
        key = eval_keys[t.name]
        if key not in served:
            _fail("metrics", f"task '{t.name}' is scored by output '{key}', which serving_default lacks ({sorted(served)})")
        labels = np.asarray([r["features"][t.label] for r in records])
        out[t.name] = {"auc": _auc(labels, served[key]), "rows": len(records), "positives": int(labels.sum()), "output": key}
    return out


def check_metrics(cfg, metrics: dict, previous: dict | None) -> dict:
    min_auc, max_drop = cfg.export.min_auc, cfg.export.max_auc_drop
    for task, m in metrics.items():
        auc = m["auc"]
        if task in min_auc:
            if auc is None:
                _fail("metrics", f"task '{task}': AUC undefined (test rows hold one class only: {m['positives']} "
                                 f"positives of {m['rows']}); min_auc {min_auc[task]} cannot be checked")
            if auc < min_auc[task]:
                _fail("metrics", f"task '{task}': test AUC {auc:.4f} < export.min_auc {min_auc[task]}")
        prev = ((previous or {}).get(task) or {}).get("auc")
        if prev is not None and auc is not None and prev - auc > max_drop:
            _fail("metrics", f"task '{task}': test AUC {auc:.4f} is {prev - auc:.4f} below the published version's "
                             f"{prev:.4f} (export.max_auc_drop {max_drop})")
    return {"tasks": metrics, "min_auc": dict(min_auc), "max_auc_drop": max_drop,
            "previous": {t: ((previous or {}).get(t) or {}).get("auc") for t in metrics}}


def run_gate(cfg, export_dir: str, *, tft_layer, keras_model, info, eval_keys: dict, test_records: list[dict],
             tfrecords: dict | None, warmup_requests: int, previous_metrics: dict | None) -> dict:
    """Runs every check on the candidate in ``export_dir``; returns the blessing dict."""
    model, load = check_load(export_dir)
    try:
        checks = {"load": load}
        log.info("gate: load ok (%s)", ", ".join(load["signatures"]))
        checks["warmup"] = check_warmup(model, export_dir, warmup_requests)
        log.info("gate: warmup ok (%d requests)", checks["warmup"]["requests"])
        checks["skew"] = check_skew(cfg, model, tft_layer, keras_model, info, test_records, tfrecords)
        log.info("gate: skew ok (max |diff| %.2g over %d rows, %d TFRecord rows matched)",
                 checks["skew"]["max_abs_diff"], checks["skew"]["rows"], checks["skew"]["tfrecord_rows_matched"])
        metrics = compute_metrics(cfg, model, test_records, eval_keys)
        checks["metrics"] = check_metrics(cfg, metrics, previous_metrics)
        log.info("gate: metrics ok (%s)", ", ".join(
            f"{t} AUC {m['auc']:.4f}" if m["auc"] is not None and not math.isnan(m["auc"]) else f"{t} AUC n/a"
            for t, m in metrics.items()))
    finally:
        model.close()
    return {"blessed": True, "checks": checks, "metrics": metrics}
