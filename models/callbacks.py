"""Keras callbacks of the training loop: the mean AUC, per-epoch log lines, the record of
every epoch's logs and the backup that resumes a killed run with all of its state."""
from __future__ import annotations

import io
import logging

import numpy as np

import tf_keras as keras

from core import fs
from core.fs import read_json, write_json_atomic
from models.metrics import is_undefined  # None or NaN: e.g. the AUC of labels of one class

log = logging.getLogger("models.training")


class AucMean(keras.callbacks.Callback):
    """Adds ``auc_mean`` / ``val_auc_mean`` (mean of the per-task ``<t>_auc``) to the epoch logs.

    A task's AUC is undefined (NaN, see ``ranker.DefinedAUC``) on a split whose labels hold a
    single class (all 0 or all 1): that task is left out of the mean (NaN when no task has a
    defined AUC), and one warning per task names it and the split(s), the first time.

    Must come before the callbacks that monitor it (EarlyStopping, ModelCheckpoint): Keras
    passes the same logs dict to each callback in order.
    """

    SPLITS = (("", "training"), ("val_", "validation"))

    def __init__(self, tasks: list[str], role: str = "model"):
        super().__init__()
        if not tasks:
            raise ValueError("AucMean needs at least one task. Received: tasks=[]")
        self.tasks = list(tasks)
        self.role = role
        self.warned: set = set()  # (task, split) pairs already warned about

    def on_train_begin(self, logs=None):
        self.warned = set()

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        new = {}
        for prefix, split in self.SPLITS:
            values = {t: logs.get(f"{prefix}{t}_auc") for t in self.tasks}
            if any(v is None for v in values.values()):
                continue
            defined = [float(v) for v in values.values() if not is_undefined(float(v))]
            logs[f"{prefix}auc_mean"] = float(np.mean(defined)) if defined else float("nan")
            for t, v in values.items():
                if is_undefined(float(v)) and (t, split) not in self.warned:
                    self.warned.add((t, split))
                    new.setdefault(t, []).append(split)
        for t, splits in new.items():
            log.warning("%s: task '%s' has a single label class (all 0 or all 1) in the %s split%s (epoch %d): "
                        "its AUC is undefined, logged as NaN (null in metrics.json) and left out of %s",
                        self.role, t, " and ".join(splits), "s" if len(splits) > 1 else "", epoch + 1,
                        " and ".join(f"{'val_' if s == 'validation' else ''}auc_mean" for s in splits))


class EpochLog(keras.callbacks.Callback):
    """Logs one line per epoch (the progress record when the progress bar is off)."""

    def __init__(self, role: str, epochs: int):
        super().__init__()
        self.role, self.epochs = role, epochs

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        shown = {k: v for k, v in logs.items() if "auc" in k or k in ("loss", "val_loss")}
        log.info("%s epoch %d/%d: %s", self.role, epoch + 1, self.epochs,
                 ", ".join(f"{k}={'undefined' if is_undefined(float(v)) else f'{float(v):.4f}'}"
                           for k, v in sorted(shown.items())))


class EpochRecord(keras.callbacks.Callback):
    """The logs of every epoch of the run, epoch (0-based) -> {metric: float}.

    Unlike Keras' ``History`` (this ``fit`` call only), it spans a resumed run:
    ``ResumableBackup`` puts the finished epochs' logs back before training resumes. Must come
    after ``AucMean`` (its means are recorded).
    """

    def __init__(self):
        super().__init__()
        self.logs: dict[int, dict] = {}

    def on_train_begin(self, logs=None):
        self.logs = {}

    def on_epoch_end(self, epoch, logs=None):
        self.logs[int(epoch)] = {k: float(v) for k, v in (logs or {}).items()}


class ResumableBackup(keras.callbacks.BackupAndRestore):
    """``BackupAndRestore`` that resumes a killed run where it left off, not only its weights.

    Keras' backup (``<backup_dir>/chief``, written at every epoch end) restores the model, the
    optimizer (slots and step count, hence the learning-rate schedule) and the epoch to resume
    at. This adds what it leaves out, in ``<backup_dir>/chief/training_state.json`` (written
    atomically before the checkpoint, so it is never behind it): the finished epochs' logs
    (put back into ``record``), the ``early_stopping`` state (best value and epoch, patience
    count; its best weights in ``best_weights-<epoch>.npz``) and the ``checkpoint``'s best
    value. On resume only epochs up to the checkpoint's are used (a kill between the two
    writes leaves the JSON one epoch ahead). It also resets the step counter the checkpoint
    restores (the steps of all finished epochs), which the progress bar reads as the length of
    an epoch of unknown size (resumed epochs printed twice their step count).

    Only the chief writes the state; every worker reads it (like Keras' backup). The backup,
    state included, is removed when ``fit`` finishes.
    """

    STATE = "training_state.json"

    def __init__(self, backup_dir: str, record: EpochRecord, early_stopping=None, checkpoint=None):
        super().__init__(backup_dir)
        self.record, self.early_stopping, self.checkpoint = record, early_stopping, checkpoint
        self.resumed_epoch = 0  # the epoch (0-based) this fit call started at
        self._states: dict[int, dict] = {}

    @property
    def state_dir(self) -> str:
        return fs.join(self.backup_dir, "chief")  # Keras' read directory

    def _writes(self) -> bool:
        return bool(self.model.distribute_strategy.extended.should_checkpoint)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)  # restores the checkpoint, if any
        self.model._train_counter.assign(0)
        saved = int(keras.backend.get_value(self._training_state._ckpt_saved_epoch))
        self.resumed_epoch, self._states = max(0, saved + 1), {}
        if saved < 0:
            return
        path = fs.join(self.state_dir, self.STATE)
        if not fs.exists(path):
            log.warning("resuming at epoch %d without %s: the logs and early-stopping state of the earlier epochs "
                        "are lost", saved + 2, path)
            return
        states = {int(e): v for e, v in read_json(path, self.STATE)["epochs"].items() if int(e) <= saved}
        self._states = states
        self.record.logs.update({e: dict(v["logs"]) for e, v in sorted(states.items())})
        last = states.get(saved, {})
        es = self.early_stopping
        if es is not None and "early_stopping" in last:
            st = last["early_stopping"]
            es.best, es.best_epoch, es.wait = float(st["best"]), int(st["best_epoch"]), int(st["wait"])
            if st.get("best_weights"):
                with np.load(io.BytesIO(fs.read_bytes(fs.join(self.state_dir, st["best_weights"])))) as f:
                    es.best_weights = [f[f"arr_{i}"] for i in range(len(f.files))]
        if self.checkpoint is not None and last.get("checkpoint_best") is not None:
            self.checkpoint.best = float(last["checkpoint_best"])

    def on_epoch_end(self, epoch, logs=None):
        if self._writes():
            state = {"logs": self.record.logs.get(int(epoch), {k: float(v) for k, v in (logs or {}).items()})}
            es = self.early_stopping
            if es is not None:
                weights = None
                if es.best_weights is not None:
                    weights = f"best_weights-{es.best_epoch:04d}.npz"
                    if not fs.exists(fs.join(self.state_dir, weights)) or es.best_epoch == epoch:
                        _save_arrays(fs.join(self.state_dir, weights), es.best_weights)
                state["early_stopping"] = {"best": float(es.best), "best_epoch": int(es.best_epoch),
                                           "wait": int(es.wait), "best_weights": weights}
            if self.checkpoint is not None and self.checkpoint.best is not None:
                state["checkpoint_best"] = float(self.checkpoint.best)
            self._states[int(epoch)] = state
            write_json_atomic(fs.join(self.state_dir, self.STATE),
                              {"epochs": {str(e): v for e, v in sorted(self._states.items())}})
        super().on_epoch_end(epoch, logs)  # the checkpoint of this epoch
        if self._writes():  # best weights no longer referenced by the last backed-up epoch
            keep = (self._states[int(epoch)].get("early_stopping") or {}).get("best_weights")
            for path in fs.glob(fs.join(self.state_dir, "best_weights-*.npz")):
                if fs.basename(path) != keep:
                    fs.remove(path)


def _save_arrays(path: str, arrays) -> None:
    """``np.savez`` of ``arrays`` (``arr_0``, ``arr_1``, ...), written atomically (``core.fs.write_atomic``)."""
    buf = io.BytesIO()
    np.savez(buf, *arrays)
    fs.write_atomic(path, buf.getvalue())


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
            self._writers[name] = tf.summary.create_file_writer(fs.join(self.log_dir, name))
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
