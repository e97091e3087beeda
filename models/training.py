"""Fit glue: Adam with a per-epoch exponential decay, callbacks, datasets and saved artifacts.

``train_model(cfg, run_dir, role, model)`` trains any ``MultiTaskRanker`` (teacher or
student) on ``run_dir``'s train split, monitors the validation split, and writes into
``run_dir.model_dir(role)``: serving_model/, model_config.json, metrics.json, logs/
(TensorBoard), backup/ (BackupAndRestore: a killed run resumes from its last finished
epoch), checkpoints/ (best weights).
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

import tensorflow as tf
import tf_keras as keras

from models import model_io, multi_worker
from models.callbacks import AucMean, EpochLog, EpochSummaries
from models.inputs import count_examples, make_dataset
from core.errors import ConfigError

log = logging.getLogger("models.training")


@dataclass
class TrainResult:
    """What a training run produced."""

    history: dict = field(default_factory=dict)  # metric -> per-epoch values
    epochs: list = field(default_factory=list)  # epoch indices run in this call (0-based)
    best_epoch: int = 0  # 1-based
    best_metrics: dict = field(default_factory=dict)
    params: int = 0
    rows: int = 0  # training examples seen in this call
    artifacts: dict = field(default_factory=dict)


def count_params(model) -> int:
    """Number of trainable parameters (aux towers included during training)."""
    return int(sum(int(np.prod(v.shape)) for v in model.trainable_weights))


def monitor_mode(monitor: str, tasks: list[str]) -> str:
    """'max' for AUC monitors, 'min' for losses; ConfigError for an unknown monitor."""
    known = ["auc_mean", "loss"] + [f"{t}_auc" for t in tasks]
    known += [f"val_{k}" for k in known]
    if monitor not in known:
        raise ConfigError(f"training.monitor: expected one of {known}, got {monitor!r}")
    return "max" if "auc" in monitor else "min"


def make_optimizer(training_cfg, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """Adam whose learning rate decays by ``lr_decay_rate`` once per epoch."""
    schedule = keras.optimizers.schedules.ExponentialDecay(
        training_cfg.learning_rate, decay_steps=max(1, steps_per_epoch), decay_rate=training_cfg.lr_decay_rate,
        staircase=True)
    return keras.optimizers.Adam(learning_rate=schedule)


def make_callbacks(model_dir: Optional[str], training_cfg, tasks: list[str], role: str, epochs: int,
                   backup: bool = True) -> list:
    """AucMean first, then NaN guard, early stopping (best-weights restore) and, with a
    ``model_dir``, checkpoints, BackupAndRestore and TensorBoard."""
    mode = monitor_mode(training_cfg.monitor, tasks)
    cbs = [AucMean(tasks), keras.callbacks.TerminateOnNaN(), EpochLog(role, epochs),
           keras.callbacks.EarlyStopping(monitor=training_cfg.monitor, mode=mode,
                                         patience=training_cfg.early_stopping_patience, restore_best_weights=True)]
    if model_dir:
        cbs.append(keras.callbacks.ModelCheckpoint(os.path.join(model_dir, "checkpoints", "best"),
                                                   monitor=training_cfg.monitor, mode=mode, save_best_only=True,
                                                   save_weights_only=True))
        if multi_worker.is_chief():  # one set of TensorBoard event files, not one per worker
            cbs.append(EpochSummaries(os.path.join(model_dir, "logs")))
        if backup:
            cbs.append(keras.callbacks.BackupAndRestore(os.path.join(model_dir, "backup")))
    return cbs


def train_model(cfg, run_dir, role: str, model, *, model_cfg=None, feature_info=None, tasks=None,
                train_ds=None, val_ds=None, epochs: Optional[int] = None, callbacks=(), backup: bool = True,
                save: bool = True, verbose: Optional[int] = None) -> TrainResult:
    """Compiles and fits ``model``; with ``save``, writes the role's artifacts.

    Args:
      cfg: the PipelineConfig (``cfg.training`` drives the loop).
      run_dir: the RunDir; data come from its train/validation splits unless datasets are given.
      role: 'teacher' or 'student' (the model directory).
      model: a built ``MultiTaskRanker`` (built under the strategy scope when distributed).
      model_cfg: the ModelConfig the model was built from (saved in model_config.json;
        default ``cfg.model``).
      feature_info: FeatureInfo (default: read from the run directory).
      tasks: the TaskConfigs (default ``cfg.data.tasks``).
      train_ds, val_ds: override the datasets (e.g. the distillation data with teacher logits).
      epochs: override ``cfg.training.epochs``.
      callbacks: extra Keras callbacks, run after the built-in ones.
      backup: use BackupAndRestore (off for throwaway runs like the Pareto grid).
      save: write serving_model/, model_config.json, metrics.json.
      verbose: override ``cfg.training.verbose``.
    """
    t = cfg.training
    model_cfg = model_cfg or cfg.model
    tasks = tasks or cfg.data.tasks
    task_names = [x.name for x in tasks]
    feature_info = feature_info or model_io.load_feature_info(run_dir)
    epochs = epochs or t.epochs
    model_dir = run_dir.model_dir(role) if (save or backup) else None
    keras.utils.set_random_seed(t.seed)
    if train_ds is None:
        n_train = count_examples(run_dir.split_pattern("train"))
        train_ds = make_dataset(run_dir.split_pattern("train"), feature_info, t.batch_size, shuffle=True,
                                shuffle_buffer=t.shuffle_buffer, seed=t.seed, repeat=t.steps_per_epoch is not None)
    else:
        n_train = None
    if val_ds is None:
        val_ds = make_dataset(run_dir.split_pattern("validation"), feature_info, t.batch_size)
    steps = t.steps_per_epoch or (math.ceil(n_train / t.batch_size) if n_train else None)
    if steps is None:
        steps = _num_batches(train_ds)
    fit_steps, val_steps = t.steps_per_epoch, None
    if t.steps_per_execution > 1 and fit_steps is None:
        # Several steps per call need known epoch lengths: one epoch = `steps` batches of the
        # repeated split (reshuffled on each pass), validation = all its batches.
        train_ds, fit_steps, val_steps = train_ds.repeat(), steps, _num_batches(val_ds)
    model.compile(optimizer=make_optimizer(t, steps), steps_per_execution=t.steps_per_execution)
    # Per-batch logs under a distribution strategy: the first replica's metrics (the default,
    # "sum", adds the workers' AUCs). Epoch logs are read across all replicas either way.
    model.distribute_reduction_method = "first"
    cbs = make_callbacks(model_dir, t, task_names, role, epochs, backup=backup) + list(callbacks)
    log.info("%s: training %d epochs of %d steps (batch %d), %d parameters", role, epochs, steps, t.batch_size,
             count_params(model))
    try:
        hist = model.fit(train_ds, validation_data=val_ds, epochs=epochs, steps_per_epoch=fit_steps,
                         validation_steps=val_steps, callbacks=cbs, verbose=t.verbose if verbose is None else verbose)
    except tf.errors.DataLossError as e:  # name the corrupt or truncated shard
        from core.artifact_checks import shard_error

        raise shard_error([run_dir.split_pattern("train"), run_dir.split_pattern("validation")], e) from None
    per_epoch = steps * t.batch_size if (t.steps_per_epoch or not n_train) else n_train
    result = _result(hist, cbs, model, per_epoch)
    if save:
        result.artifacts = model_io.save_trained(run_dir, role, model, model_cfg, feature_info, tasks,
                                                 cfg.data.funnel, result)
    return result


def _num_batches(ds: tf.data.Dataset) -> int:
    n = int(ds.cardinality().numpy())
    return n if n >= 0 else int(ds.reduce(tf.constant(0, tf.int64), lambda k, _: k + 1).numpy())


def _result(hist, cbs, model, rows_per_epoch: int) -> TrainResult:
    history = {k: [float(v) for v in vs] for k, vs in hist.history.items()}
    stopper = next(c for c in cbs if isinstance(c, keras.callbacks.EarlyStopping))
    best = stopper.best_epoch  # absolute 0-based epoch index
    idx = hist.epoch.index(best) if best in hist.epoch else (len(hist.epoch) - 1)
    best_metrics = {k: vs[idx] for k, vs in history.items() if idx < len(vs)}
    return TrainResult(history=history, epochs=list(hist.epoch), best_epoch=(hist.epoch[idx] + 1) if hist.epoch else 0,
                       best_metrics=best_metrics, params=count_params(model), rows=len(hist.epoch) * rows_per_epoch)
