"""Saving and loading trained artifacts of a role ('teacher', 'student') in its model directory.

    <model_dir>/serving_model/     tf_keras functional model, TF SavedModel format (main towers only),
                                   published with ``core.fs.publish_dir``: read it at ``serving_model_dir``
    <model_dir>/model_config.json  {"model": ModelConfig, "tasks": [...], "funnel": ..., "feature_info": ...}
    <model_dir>/metrics.json       training history, best epoch and its metrics, parameter count
"""
from __future__ import annotations

import dataclasses

import tf_keras as keras

from models import multi_worker
from core import artifact_checks
from core import config as config_module
from core.config import FunnelConfig, ModelConfig, TaskConfig
from core.errors import InputError
from core.features import FeatureInfo
from core import fs
from core.fs import publish_dir, read_json, write_json_atomic

SERVING_MODEL = "serving_model"
MODEL_CONFIG = "model_config.json"
METRICS = "metrics.json"


def serving_model_dir(model_dir: str) -> str:
    """The published SavedModel under ``<model_dir>/serving_model`` (its committed attempt)."""
    return fs.published(fs.join(model_dir, SERVING_MODEL))


def has_serving_model(model_dir: str) -> bool:
    """Whether ``model_dir`` holds a saved (published) serving model."""
    return fs.exists(fs.join(serving_model_dir(model_dir), "saved_model.pb"))


def load_feature_info(path: str, stage: str = "preprocess") -> FeatureInfo:
    """FeatureInfo from a ``feature_info.json``; ``InputError`` naming ``stage`` when it is missing."""
    if not fs.exists(path):
        raise InputError(f"{path} not found; run `python -m pipeline {stage}` for this run directory first")
    return FeatureInfo.from_dict(read_json(path, "feature_info.json"))


def save_trained(model_dir: str, model, result, *, role: str, model_cfg, feature_info, tasks, funnel=None) -> dict:
    """Saves a trained model into its model directory.

    Writes ``<model_dir>/serving_model/`` (atomically: the main towers only), then
    ``model_config.json`` and ``metrics.json``. In multi-worker training every worker must
    call this (the save may run collective ops); only the chief's copy is written, the other
    workers save into temporary directories that are removed (``multi_worker.write_dir``).

    Args:
      model_dir: the role's directory (``RunDir.model_dir(role)``).
      model: the trained ``MultiTaskRanker``.
      result: its ``TrainResult`` (history, best epoch and metrics, parameters, rows).
      role: 'teacher' or 'student', recorded in model_config.json.
      model_cfg: the ModelConfig the model was built from.
      feature_info: the FeatureInfo of the transformed data; the one recorded is what the
        model reads, ``feature_info.select(model_cfg.features)`` (all of it when
        ``model_cfg.features`` is empty), so its ``model_inputs`` are the serving model's inputs.
      tasks: its TaskConfigs.
      funnel: the FunnelConfig, or None.

    Returns:
      dict artifact -> path (``serving_model``, ``model_config``, ``metrics``, ``logs``); empty
      on a worker other than the chief.
    """
    path = fs.join(model_dir, SERVING_MODEL)
    feature_info = feature_info.select(list(getattr(model_cfg, "features", None) or []))
    if not multi_worker.is_chief():  # multi-worker: every worker saves, only the chief's copy is kept
        with multi_worker.write_dir(path) as tmp:
            _save_serving_model(model, tmp)
        return {}
    with publish_dir(path) as tmp:
        _save_serving_model(model, tmp)
    path = fs.published(path)
    write_json_atomic(fs.join(model_dir, MODEL_CONFIG), {
        "role": role,
        "model": dataclasses.asdict(model_cfg),
        "tasks": [dataclasses.asdict(t) for t in tasks],
        "funnel": dataclasses.asdict(funnel) if funnel is not None else None,
        "feature_info": feature_info.to_dict(),
    })
    write_json_atomic(fs.join(model_dir, METRICS), {
        "best_epoch": result.best_epoch, "best_metrics": result.best_metrics, "params": result.params,
        "rows": result.rows, "history": result.history,
    })
    return {"serving_model": path, "model_config": fs.join(model_dir, MODEL_CONFIG),
            "metrics": fs.join(model_dir, METRICS), "logs": fs.join(model_dir, "logs")}


def _save_serving_model(model, path: str) -> None:
    """Saves ``model.serving_model()`` (uncompiled: it is never trained) at ``path``. Compiled
    with nothing first: tf_keras' save otherwise warns, on every save, that "the compiled
    metrics have yet to be built" (loading uses ``compile=False`` either way)."""
    serving = model.serving_model()
    serving.compile()
    serving.save(path)


def load_model_config(model_dir: str, stage: str):
    """(ModelConfig, [TaskConfig], FunnelConfig | None, FeatureInfo) saved with the model in ``model_dir``.

    The FeatureInfo is that of the features the model reads (``save_trained``): its
    ``model_inputs`` are the serving model's inputs.

    ``InputError`` naming ``stage`` (the stage that writes it) when it is missing or malformed."""
    path = fs.join(model_dir, MODEL_CONFIG)
    if not fs.exists(path):
        raise InputError(f"{path} not found; run `python -m pipeline {stage}` for this run directory first")
    d = read_json(path, "model_config.json")
    try:
        model_cfg = config_module._build(ModelConfig, d["model"], "model")
        tasks = [TaskConfig(**t) for t in d["tasks"]]
        funnel = FunnelConfig(**d["funnel"]) if d.get("funnel") else None
        info = FeatureInfo.from_dict(d["feature_info"])
    except (KeyError, TypeError) as e:
        raise InputError(f"{path}: malformed model config ({type(e).__name__}: {e})") from None
    return model_cfg, tasks, funnel, info


def load_serving_model(model_dir: str, stage: str) -> keras.Model:
    """The serving model in ``model_dir`` (dict in -> dict of logits/probabilities out); ``stage`` writes it."""
    path = serving_model_dir(model_dir)
    artifact_checks.require_saved_model(path, stage)
    return keras.models.load_model(path, compile=False)
