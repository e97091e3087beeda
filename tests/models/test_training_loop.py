"""The training loop's contract (models/training.py): datasets, a TrainingConfig and a model
directory in, a TrainResult out; and the logged loss of every ranker, the student's included."""
import os

import pytest
import tensorflow as tf

from core.features import FeatureInfo, teacher_logit_key
from models.builder import build_ranker
from models.distillation import DistilledRanker
from models.training import TrainResult, train_model
from tests.fakes.transformed_run import CARDINALITIES, NUMERIC, fake_examples

INFO = FeatureInfo(categorical=dict(CARDINALITIES), numeric=list(NUMERIC), tasks=["click", "conversion"],
                   passthrough=["p_click", "p_conversion"], has_weight=False, has_group=True)


def _dataset(n: int, seed: int, batch_size: int, teacher_logits: bool = False) -> tf.data.Dataset:
    """In-memory batches shaped like ``make_dataset``'s (optionally with teacher logits)."""
    cols = fake_examples(n, seed)
    if teacher_logits:  # a "teacher" that knows the click model a little
        cols.update({teacher_logit_key(t): (2.0 * cols["p_click"] - 1.0).astype("float32") for t in INFO.tasks})
    return tf.data.Dataset.from_tensor_slices(cols).batch(batch_size)


def _files(root) -> set:
    return {os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs}


def test_train_model_fits_in_memory_data_and_writes_only_into_the_model_dir(tiny_model_config, tmp_path,
                                                                            monkeypatch):
    cfg = tiny_model_config
    t = cfg.training
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    model_dir = str(tmp_path / "model")
    before = _files(tmp_path)
    model = build_ranker(cfg.model, INFO, cfg.data.tasks, cfg.data.funnel, seed=1)

    result = train_model(model, _dataset(256, 0, t.batch_size), _dataset(128, 1, t.batch_size), t, model_dir,
                         epochs=1, verbose=0)

    assert isinstance(result, TrainResult) and result.epochs == [0] and result.best_epoch == 1
    for key in ("val_click_auc", "val_conversion_auc", "val_auc_mean"):
        assert len(result.history[key]) == 1 and 0.0 <= result.history[key][0] <= 1.0, result.history
    assert result.history["loss"][0] > 0 and result.history["val_loss"][0] > 0
    assert result.params > 0 and result.rows == 4 * t.batch_size  # one pass: 4 batches of 64
    assert result.artifacts == {}  # saving the model is the caller's job
    written = _files(tmp_path) - before
    assert written and all(p.startswith("model" + os.sep) for p in written), sorted(written)
    assert os.path.exists(os.path.join(model_dir, "checkpoints", "best.index"))
    assert not os.listdir(cwd)


def test_train_model_without_a_model_dir_writes_nothing(tiny_model_config, tmp_path, monkeypatch):
    cfg = tiny_model_config
    monkeypatch.chdir(tmp_path)
    model = build_ranker(cfg.model, INFO, cfg.data.tasks, cfg.data.funnel, seed=1)
    result = train_model(model, _dataset(128, 0, 64), _dataset(64, 1, 64), cfg.training, None, steps_per_epoch=2,
                         epochs=1, verbose=0)
    assert result.rows == 2 * cfg.training.batch_size
    assert not os.listdir(tmp_path)


def test_one_epoch_student_logs_a_positive_loss_and_val_loss(tiny_model_config):
    """``training.monitor: loss`` needs the student's loss tracked (it was 0.0 every epoch)."""
    cfg = tiny_model_config
    cfg.training.monitor = "val_loss"
    d = cfg.distill
    model = build_ranker(d.student, INFO, cfg.data.tasks, cfg.data.funnel, seed=2, cls=DistilledRanker, mode="kd",
                         alpha=d.alpha, temperature=d.temperature)
    result = train_model(model, _dataset(256, 0, 64, teacher_logits=True), _dataset(128, 1, 64, teacher_logits=True),
                         cfg.training, None, epochs=1, verbose=0, name="student")
    assert result.history["loss"][0] > 0 and result.history["val_loss"][0] > 0, result.history
    assert result.best_metrics["val_loss"] == pytest.approx(result.history["val_loss"][0])


def test_student_loss_metric_is_the_mean_of_its_batch_losses(tiny_model_config):
    cfg = tiny_model_config
    model = build_ranker(cfg.distill.student, INFO, cfg.data.tasks, cfg.data.funnel, seed=2, cls=DistilledRanker,
                         mode="kd")
    batches = list(_dataset(128, 0, 64, teacher_logits=True))
    losses = [float(model.compute_loss(b)) for b in batches]
    assert float(model.loss_tracker.result()) == pytest.approx(sum(losses) / len(losses), rel=1e-5)
