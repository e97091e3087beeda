"""Keras callbacks of the training loop: the mean validation AUC and per-epoch log lines."""
from __future__ import annotations

import logging
import os

import numpy as np

import tf_keras as keras

log = logging.getLogger("models.training")


class AucMean(keras.callbacks.Callback):
    """Adds ``auc_mean`` / ``val_auc_mean`` (mean of the per-task ``<t>_auc``) to the epoch logs.

    Must come before the callbacks that monitor it (EarlyStopping, ModelCheckpoint): Keras
    passes the same logs dict to each callback in order.
    """

    def __init__(self, tasks: list[str]):
        super().__init__()
        if not tasks:
            raise ValueError("AucMean needs at least one task. Received: tasks=[]")
        self.tasks = list(tasks)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        for prefix in ("", "val_"):
            values = [logs.get(f"{prefix}{t}_auc") for t in self.tasks]
            if all(v is not None for v in values):
                logs[f"{prefix}auc_mean"] = float(np.mean(values))


class EpochLog(keras.callbacks.Callback):
    """Logs one line per epoch (the progress record when the progress bar is off)."""

    def __init__(self, role: str, epochs: int):
        super().__init__()
        self.role, self.epochs = role, epochs

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        shown = {k: v for k, v in logs.items() if "auc" in k or k in ("loss", "val_loss")}
        log.info("%s epoch %d/%d: %s", self.role, epoch + 1, self.epochs,
                 ", ".join(f"{k}={float(v):.4f}" for k, v in sorted(shown.items())))


class InterruptAfter(keras.callbacks.Callback):
    """Raises ``KeyboardInterrupt`` after ``batches`` training batches of epoch ``epoch``
    (0-based): simulates a killed job, for testing ``BackupAndRestore``."""

    def __init__(self, epoch: int, batches: int):
        super().__init__()
        self.epoch, self.batches, self._current = epoch, batches, -1

    def on_epoch_begin(self, epoch, logs=None):
        self._current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self._current == self.epoch and batch + 1 >= self.batches:
            raise KeyboardInterrupt(f"interrupted after {self.batches} batches of epoch {self.epoch + 1}")


class EpochSummaries(keras.callbacks.Callback):
    """Per-epoch scalars in TensorBoard's layout (``logs/train``, ``logs/validation``).

    ``keras.callbacks.TensorBoard`` needs the ``tensorboard`` package for ``tf.summary.scalar``;
    this writes the same event files with core TensorFlow (``tf.summary.write`` and the
    scalars plugin metadata), so TensorBoard reads them and training has no extra dependency.
    """

    def __init__(self, log_dir: str):
        super().__init__()
        self.log_dir = log_dir
        self._writers = {}

    def _writer(self, name):
        import tensorflow as tf

        if name not in self._writers:
            self._writers[name] = tf.summary.create_file_writer(os.path.join(self.log_dir, name))
        return self._writers[name]

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf
        from tensorflow.core.framework import summary_pb2

        meta = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
        lr = getattr(self.model.optimizer, "learning_rate", None)
        values = dict(logs or {})
        if lr is not None:
            values["learning_rate"] = float(lr(self.model.optimizer.iterations) if callable(lr) else keras.backend.get_value(lr))
        for key, value in values.items():
            split, tag = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            with self._writer(split).as_default():
                tf.summary.write(f"epoch_{tag}", tf.constant(float(value)), step=epoch, metadata=meta.SerializeToString())
        for w in self._writers.values():
            w.flush()

    def on_train_end(self, logs=None):
        for w in self._writers.values():
            w.close()
        self._writers = {}
