"""The training loop: Adam with a per-epoch exponential decay, early stopping, callbacks.

``train_model(model, train_ds, val_ds, training_cfg, model_dir)`` fits any
``MultiTaskRanker`` (teacher or student) on the given datasets, validates every epoch and,
with a ``model_dir``, writes there only: logs/ (TensorBoard), backup/ (``ResumableBackup``: a
killed run resumes after its last finished epoch with its weights, optimizer, epoch logs and
early-stopping state, and reads the same data there as an uninterrupted run) and
checkpoints/ (best weights). It knows neither the pipeline config nor the run directory: the
stages build the datasets and save the trained model (``model_io.save_trained``).
"""
from __future__ import annotations

import logging
import math
import sys
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence, Union

import numpy as np

import tensorflow as tf
import tf_keras as keras

from models import multi_worker
from models.callbacks import AucMean, EpochLog, EpochRecord, EpochSummaries, ResumableBackup, is_undefined
from core import fs
from core.errors import ConfigError

log = logging.getLogger("models.training")


@dataclass
class TrainResult:
    """What a training run produced."""

    history: dict = field(default_factory=dict)  # metric -> per-epoch values of the whole run (None: undefined)
    epochs: list = field(default_factory=list)  # epoch indices of the history (0-based), resumed runs included
    best_epoch: int = 0  # 1-based
    best_metrics: dict = field(default_factory=dict)
    params: int = 0
    rows: int = 0  # training examples seen over all epochs of the history
    artifacts: dict = field(default_factory=dict)
    resumed_epoch: int = 0  # the epoch (0-based) this call started at: > 0 when it resumed a backup


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


def make_callbacks(model_dir: Optional[str], training_cfg, tasks: list[str], name: str, epochs: int,
                   backup: bool = True) -> list:
    """AucMean first, then NaN guard, the epoch log (labelled ``name``), the epoch record, early
    stopping (best-weights restore) and, with a ``model_dir``, checkpoints, TensorBoard and the
    backup (``ResumableBackup``, last: it saves the state the others reached in the epoch)."""
    mode = monitor_mode(training_cfg.monitor, tasks)
    stopper = keras.callbacks.EarlyStopping(monitor=training_cfg.monitor, mode=mode,
                                            patience=training_cfg.early_stopping_patience, restore_best_weights=True)
    record = EpochRecord()
    cbs = [AucMean(tasks, name), keras.callbacks.TerminateOnNaN(), EpochLog(name, epochs), record, stopper]
    if model_dir:
        best = keras.callbacks.ModelCheckpoint(fs.join(model_dir, "checkpoints", "best"),
                                               monitor=training_cfg.monitor, mode=mode, save_best_only=True,
                                               save_weights_only=True)
        cbs.append(best)
        if multi_worker.is_chief():  # one set of TensorBoard event files, not one per worker
            cbs.append(EpochSummaries(fs.join(model_dir, "logs")))
        if backup:
            cbs.append(ResumableBackup(fs.join(model_dir, "backup"), record, early_stopping=stopper,
                                       checkpoint=best))
    return cbs


def _keras_verbose(verbose: Optional[int]) -> int:
    """``training.verbose``; None: Keras' step progress bar on a terminal, nothing in a log."""
    if verbose is not None:
        return verbose
    return 1 if sys.stdout.isatty() else 0


def resume_epoch(backup_dir: str) -> int:
    """The epoch (0-based) a run backed up in ``backup_dir`` resumes at: one past the last epoch
    its BackupAndRestore checkpoint holds; 0 without one."""
    ckpt = tf.train.latest_checkpoint(fs.join(backup_dir, "chief"))
    if not ckpt:
        return 0
    # The reader of the checkpoint prefix itself: tf.train.load_variable would first ask whether
    # the prefix is a directory, which TF's ram:// wrongly answers yes to ("ckpt-1" prefixes
    # "ckpt-1.index").
    reader = tf.compat.v1.train.NewCheckpointReader(ckpt)
    return max(0, int(reader.get_tensor("ckpt_saved_epoch/.ATTRIBUTES/VARIABLE_VALUE")) + 1)


def epoch_stream(epoch_data: Callable[[int], tf.data.Dataset], first: int, epochs: int,
                 steps: int) -> tf.data.Dataset:
    """Epochs ``first`` .. ``epochs - 1`` of ``epoch_data`` one after the other, ``steps`` batches each."""
    stream = None
    for e in range(first, max(epochs, first + 1)):
        part = epoch_data(e).take(steps)
        stream = part if stream is None else stream.concatenate(part)
    return stream.prefetch(tf.data.AUTOTUNE)


def train_model(model, train_ds: Union[tf.data.Dataset, Callable[[int], tf.data.Dataset]], val_ds: tf.data.Dataset,
                training_cfg,
                model_dir: Optional[str] = None, *, tasks: Optional[Sequence[str]] = None,
                steps_per_epoch: Optional[int] = None, train_rows: Optional[int] = None,
                validation_rows: Optional[int] = None,
                epochs: Optional[int] = None, callbacks: Sequence = (), backup: bool = True,
                verbose: Optional[int] = None, name: str = "model",
                shard_patterns: Sequence[str] = ()) -> TrainResult:
    """Compiles ``model`` and fits it on ``train_ds``, validating on ``val_ds`` after every epoch.

    Adam with a learning rate that decays by ``training_cfg.lr_decay_rate`` once per epoch;
    early stopping on ``training_cfg.monitor`` (patience ``early_stopping_patience``) restores
    the best epoch's weights; a NaN loss stops the run. Every epoch logs ``loss``,
    ``<task>_auc``, ``auc_mean`` and their ``val_`` counterparts; a task's AUC on a split whose
    labels hold one class is undefined (NaN in the logs, None in the result, left out of
    ``auc_mean``, one warning). A run killed after epoch e (with a ``model_dir`` and
    ``backup``) resumes at epoch e + 1 and reproduces the uninterrupted run: the same weights,
    optimizer state, learning rate, early-stopping state and training batches there, and the
    whole history in the result. Under a distribution
    strategy, build ``model`` inside the strategy's scope; the datasets are distributed by
    Keras (``make_dataset`` shards them by record across workers). With several workers
    each writes its checkpoints and backups where Keras puts them (the chief into
    ``model_dir``, the others into temporary directories), TensorBoard events come from the
    chief only.

    Args:
      model: a built ``MultiTaskRanker`` (or ``DistilledRanker``).
      train_ds: batches of training examples, dict name -> tensor ``(batch,)`` as
        ``inputs.make_dataset`` yields them: the model inputs, ``label_<task>``,
        ``example_weight`` and, for a distilled student, ``teacher_logit_<task>``. It must
        repeat when epochs have a fixed number of steps (``steps_per_epoch``). Or, better, a
        callable ``epoch (0-based) -> Dataset`` of that epoch's batches (one pass, or
        repeating with ``steps_per_epoch``), shuffled with a seed of its own
        (``inputs.epoch_seed``): each epoch's order is then a function of the seed and the
        epoch, and a resumed run reads no data it does not train on. A plain dataset is
        put where the finished epochs left it on resume (repeating: their batches are
        skipped; one pass per epoch: their iterators are drawn, as a reshuffling dataset's
        order depends on how often it was iterated), so pass a fresh one, as a restarted
        process builds it. One pass per epoch must have the length ``train_rows`` gives.
      val_ds: batches of validation examples, finite; every batch is scored each epoch.
      training_cfg: the ``TrainingConfig``: epochs, learning rate and decay, monitor and
        patience, steps per execution, seed, verbosity (``batch_size``: the batch size of
        the datasets, for the epoch length).
      model_dir: where checkpoints/ (best weights), backup/ (BackupAndRestore) and logs/
        (TensorBoard) go; nothing is written anywhere else. None: nothing is written.
      tasks: task names of the AUC metrics (default ``model.task_names``).
      steps_per_epoch: batches per epoch (default ``training_cfg.steps_per_epoch``); then
        ``train_ds`` must repeat. None in both: one epoch is one pass over ``train_ds``.
      train_rows: examples in one pass over ``train_ds`` when epochs are passes (e.g.
        ``inputs.count_examples`` of its shards): the epoch length the learning-rate decay
        and ``steps_per_execution`` need, without reading ``train_ds``. None: its batches
        are counted (one pass).
      validation_rows: examples in ``val_ds``, if known: the number of validation batches
        several steps per execution need, without reading it. None: its batches are counted.
      epochs: maximum epochs (default ``training_cfg.epochs``).
      callbacks: extra Keras callbacks, run after the built-in ones.
      backup: with a ``model_dir``, keep a BackupAndRestore backup, so that a killed run
        resumes at the epoch it was in (the backup is removed once the run finishes).
      verbose: Keras progress output (default ``training_cfg.verbose``).
      name: the label of the per-epoch log lines (``"teacher epoch 2/5: loss=..."``).
      shard_patterns: globs of the TFRecord shards the datasets read; a corrupt or
        truncated one is named in the error.

    Returns:
      A ``TrainResult``: ``history`` (metric -> per-epoch values of all epochs, those before
      a resume included; None where a value is undefined), its epochs (0-based), the best
      epoch (1-based) and its metrics, the trainable parameter count, the training rows seen
      over those epochs and the epoch this call resumed at. ``artifacts`` is empty: the
      caller saves the model (``model_io.save_trained``).

    Raises:
      ConfigError: ``training_cfg.monitor`` names no logged metric.
      ValueError: ``steps_per_epoch`` < 1.
      InputError: a corrupt or truncated shard of ``shard_patterns``.
    """
    t = training_cfg
    task_names = list(tasks or model.task_names)
    epochs = epochs or t.epochs
    fit_steps = steps_per_epoch or t.steps_per_epoch
    if fit_steps is not None and fit_steps < 1:
        raise ValueError(f"`steps_per_epoch` must be >= 1. Received: steps_per_epoch={fit_steps}")
    cbs = make_callbacks(model_dir, t, task_names, name, epochs, backup=backup) + list(callbacks)
    keras.utils.set_random_seed(t.seed)
    backup_cb = next((c for c in cbs if isinstance(c, ResumableBackup)), None)
    first = resume_epoch(backup_cb.backup_dir) if backup_cb is not None else 0
    epoch_data = train_ds if callable(train_ds) else None
    passes = fit_steps is None  # an epoch is one pass over train_ds
    if not passes:
        steps = fit_steps
    elif train_rows:
        steps = math.ceil(train_rows / t.batch_size)
    else:
        steps = _num_batches(epoch_data(0) if epoch_data is not None else train_ds)
    val_steps = None
    if t.steps_per_execution > 1:  # several steps per call: validation = all its batches
        val_steps = math.ceil(validation_rows / t.batch_size) if validation_rows is not None else _num_batches(val_ds)
    if epoch_data is not None:  # one stream of the epochs still to run, `steps` batches each
        train_ds, fit_steps = epoch_stream(epoch_data, first, epochs, steps), steps
    elif t.steps_per_execution > 1 and passes:
        # Several steps per call need known epoch lengths: one epoch = `steps` batches of the
        # repeated data (reshuffled on each pass).
        train_ds, fit_steps = train_ds.repeat(), steps
    elif passes:
        # A pass of known length: Keras then runs exactly `steps` steps per epoch. Of unknown
        # length, the call that finds the data exhausted still counts an optimizer step, which
        # shifts the learning-rate decay (by one step per fit call: a resumed run decayed on
        # other steps than an uninterrupted one) and the progress bar reads the step counter.
        train_ds = train_ds.apply(tf.data.experimental.assert_cardinality(steps))
    if epoch_data is None and first > 0:  # a plain dataset: where the finished epochs left it
        if fit_steps is None:
            # Keras iterates it afresh every epoch, and a reshuffling dataset's k-th iterator
            # draws the k-th order: draw (and drop) the finished epochs' iterators.
            for _ in range(first):
                iter(train_ds)
        else:  # one iterator through the repeated data: skip the finished epochs' batches
            train_ds = train_ds.skip(first * fit_steps)
    if first > 0:
        log.info("%s: resuming at epoch %d/%d from the backup in %s", name, first + 1, epochs, backup_cb.backup_dir)
    model.compile(optimizer=make_optimizer(t, steps), steps_per_execution=t.steps_per_execution)
    create_variables(model)
    # Per-batch logs under a distribution strategy: the first replica's metrics (the default,
    # "sum", adds the workers' AUCs). Epoch logs are read across all replicas either way.
    model.distribute_reduction_method = "first"
    log.info("%s: training %d epochs of %d steps (batch %d), %d parameters", name, epochs, steps, t.batch_size,
             count_params(model))
    try:
        hist = model.fit(train_ds, validation_data=val_ds, epochs=epochs, steps_per_epoch=fit_steps,
                         validation_steps=val_steps, callbacks=cbs, verbose=_keras_verbose(t.verbose if verbose is None else verbose))
    except tf.errors.DataLossError as e:  # name the corrupt or truncated shard
        if not shard_patterns:
            raise
        from core.artifact_checks import shard_error

        raise shard_error(list(shard_patterns), e) from None
    if backup_cb is not None and backup_cb.resumed_epoch != first:
        log.warning("%s: the backup resumed at epoch %d, its data at epoch %d", name, backup_cb.resumed_epoch + 1,
                    first + 1)
    per_epoch = train_rows if (passes and train_rows) else steps * t.batch_size
    return _result(hist, cbs, model, per_epoch, first)


def create_variables(model) -> None:
    """Creates every variable of a compiled ranker, the optimizer's slots included, before
    ``fit``: a ``tf.function`` that creates variables on its first call is traced twice (once
    creating them, once without), and a ranker's train step is most of the first epoch's
    tracing. Variables are created under the model's distribution strategy."""
    from core.feature_specs import dummy_batch

    with model.distribute_strategy.scope():
        model(dummy_batch(model.embedding.feature_info()), training=False)
        model.optimizer.build(model.trainable_variables)


def _num_batches(ds: tf.data.Dataset) -> int:
    n = int(ds.cardinality().numpy())
    return n if n >= 0 else int(ds.reduce(tf.constant(0, tf.int64), lambda k, _: k + 1).numpy())


def _result(hist, cbs, model, rows_per_epoch: int, resumed_epoch: int = 0) -> TrainResult:
    record = next(c for c in cbs if isinstance(c, EpochRecord))
    epochs = sorted(record.logs)  # every epoch of the run, those of a resumed backup included
    keys = list(dict.fromkeys(k for e in epochs for k in record.logs[e]))
    history = {k: [_value(record.logs[e].get(k)) for e in epochs] for k in keys}
    stopper = next(c for c in cbs if isinstance(c, keras.callbacks.EarlyStopping))
    best = stopper.best_epoch  # absolute 0-based epoch index
    idx = epochs.index(best) if best in epochs else (len(epochs) - 1)
    best_metrics = {k: vs[idx] for k, vs in history.items() if idx < len(vs)}
    return TrainResult(history=history, epochs=epochs, best_epoch=(epochs[idx] + 1) if epochs else 0,
                       best_metrics=best_metrics, params=count_params(model), rows=len(epochs) * rows_per_epoch,
                       resumed_epoch=resumed_epoch)


def _value(v) -> Optional[float]:
    """A logged value for the history: float, or None where it is undefined (NaN AUC) or missing."""
    return None if v is None or is_undefined(float(v)) else float(v)
