"""Scoring a serving model on a split and computing the per-task test metrics."""
from __future__ import annotations

import logging

import numpy as np


from models import metrics as M
from models.inputs import make_dataset
from models.outputs import eval_output_key
from core.features import GROUP_KEY, WEIGHT_KEY, label_key

log = logging.getLogger("models.evaluation")


def predict_split(serving_model, file_pattern: str, feature_info, batch_size: int = 4096) -> dict:
    """Runs ``serving_model`` over a split; returns numpy arrays of every output and of the
    labels, example weights, group ids and passthrough columns (keys as in the examples).

    The model is fed the inputs it declares (a Keras model's ``input_names``; a model on a
    feature subset takes fewer than ``feature_info.model_inputs``), else ``model_inputs``."""
    names = _input_names(serving_model, feature_info)
    ds = make_dataset(file_pattern, feature_info, batch_size)
    keep = [label_key(t) for t in feature_info.tasks] + [WEIGHT_KEY] + list(feature_info.passthrough)
    if feature_info.has_group:
        keep.append(GROUP_KEY)
    chunks: dict[str, list] = {}
    n = 0
    for batch in ds:
        out = serving_model({k: batch[k] for k in names}, training=False)
        for k, v in list(out.items()) + [(k, batch[k]) for k in keep]:
            chunks.setdefault(k, []).append(np.asarray(v))
        n += int(batch[WEIGHT_KEY].shape[0])
    if n == 0:
        raise ValueError(f"no examples in {file_pattern}")
    log.info("scored %d examples of %s", n, file_pattern)
    return {k: np.concatenate(v) for k, v in chunks.items()}


def _input_names(serving_model, feature_info) -> list:
    declared = getattr(serving_model, "input_names", None)
    if declared and all(n in feature_info.model_inputs for n in declared):
        return list(declared)
    return list(feature_info.model_inputs)


def evaluate_predictions(arrays: dict, tasks, model_cfg, funnel, oracle: dict | None = None,
                         use_groups: bool = True, split: str = "test") -> dict:
    """task -> metrics (auc, logloss, calibration, gauc?, oracle_auc?, oracle_gap?).

    Each task is scored on its per-impression label with ``eval_output_key`` (pCTCVR for
    the ESMM child); ``oracle`` maps a task to the passthrough column of its true probability.
    A task whose labels in ``split`` (the split ``arrays`` were scored on, for the warning)
    hold one class has no AUC: its AUCs and gap are ``metrics.UNDEFINED`` (NaN, printed
    ``undefined``), with one warning naming the task and the split.
    """
    oracle = oracle or {}
    weights = arrays.get(WEIGHT_KEY)
    groups = arrays.get(GROUP_KEY) if use_groups else None
    result = {}
    for task in tasks:
        name = getattr(task, "name", task)
        preds = arrays[eval_output_key(name, model_cfg, funnel)]
        truth = arrays[oracle[name]] if name in oracle and oracle[name] in arrays else None
        labels = arrays[label_key(name)]
        result[name] = M.task_metrics(labels, preds, weights, groups, truth)
        if M.is_undefined(result[name]["auc"]):
            log.warning("task '%s' has a single label class in the %s split (all %g, %d examples): its AUC is "
                        "undefined", name, split, float(np.ravel(labels)[0]), np.size(labels))
    return result
