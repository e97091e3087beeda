"""The training loop's contract (models/training.py): datasets, a TrainingConfig and a model
directory in, a TrainResult out; and the logged loss of every ranker, the student's included."""
import os
import re

import numpy as np
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


# ---------------------------------------------------------------- resume after a kill
def _shuffled(n: int, seed: int, batch_size: int, repeat: bool) -> tf.data.Dataset:
    """In-memory training batches reshuffled on every pass, of unknown length (as TFRecords)."""
    ds = tf.data.Dataset.from_tensor_slices(fake_examples(n, seed)).filter(lambda x: True)
    ds = ds.shuffle(n, seed=5, reshuffle_each_iteration=True).batch(batch_size)
    return ds.repeat() if repeat else ds


def _resume_pair(cfg, tmp_path, make_train, epochs=3, interrupt=1, **kwargs):
    """(uninterrupted result and weights, resumed result and weights): the same training once
    straight through, once interrupted in epoch ``interrupt`` (0-based) and resumed."""
    from models.callbacks import InterruptAfter

    def fit(model_dir, extra=(), verbose=0):
        model = build_ranker(cfg.model, INFO, cfg.data.tasks, cfg.data.funnel, seed=1)
        result = train_model(model, make_train(), _dataset(128, 1, cfg.training.batch_size), cfg.training,
                             str(model_dir), epochs=epochs, callbacks=list(extra), verbose=verbose, **kwargs)
        return result, model.get_weights()

    straight = fit(tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        fit(tmp_path / "killed", [InterruptAfter(epoch=interrupt, batches=2)])
    return straight, fit(tmp_path / "killed", verbose=1)  # a fresh model and fresh datasets, as a new process


def _assert_same_run(a, b, resumed=1):
    (ra, wa), (rb, wb) = a, b
    assert rb.resumed_epoch == resumed and ra.resumed_epoch == 0
    assert rb.epochs == ra.epochs == [0, 1, 2]
    assert sorted(rb.history) == sorted(ra.history)
    for k in ra.history:  # epoch 1 kept, epochs 2-3 as if never interrupted
        np.testing.assert_allclose(rb.history[k], ra.history[k], rtol=0, atol=1e-6, err_msg=k)
    assert (rb.best_epoch, rb.rows) == (ra.best_epoch, ra.rows)
    assert rb.best_metrics == pytest.approx(ra.best_metrics, abs=1e-6)
    for x, y in zip(wa, wb):
        np.testing.assert_allclose(y, x, rtol=0, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("steps", [None, 3], ids=["passes", "fixed_steps"])
def test_a_resumed_run_reproduces_the_uninterrupted_run_with_a_plain_dataset(tiny_model_config, tmp_path, steps,
                                                                               capsys):
    """A plain (not per-epoch seeded) dataset: the resumed run skips the finished epochs'
    batches, so every epoch trains on what it trained on uninterrupted; the history keeps
    epoch 1 and the resumed epochs print their own step count (they printed 8/8, twice the 4)."""
    cfg = tiny_model_config
    cfg.training.early_stopping_patience = 5
    cfg.training.steps_per_epoch = steps
    straight, resumed = _resume_pair(cfg, tmp_path, lambda: _shuffled(256, 0, 64, repeat=steps is not None),
                                     train_rows=None if steps else 256)
    _assert_same_run(straight, resumed)
    out = capsys.readouterr().out
    per_epoch = steps or 4
    finals = [int(n) for n in re.findall(r"(?:^|\r|\n)\s*(\d+)/\d+ \[=+\]", out)]
    assert re.findall(r"^Epoch (\d)/3", out, flags=re.M) == ["2", "3"]
    assert f"{2 * per_epoch}/{2 * per_epoch}" not in out and f"{per_epoch}/{per_epoch} [" in out, out[-2000:]
    assert finals and max(finals) == per_epoch


@pytest.mark.slow
def test_a_resumed_run_with_a_per_epoch_dataset_reads_no_finished_epoch(tiny_model_config, tmp_path):
    """``train_ds`` as ``epoch -> Dataset``: epoch e is shuffled with epoch_seed(seed, e); the
    resumed run asks for epochs 2 and 3 only and reproduces the uninterrupted run."""
    from models.inputs import epoch_seed

    cfg = tiny_model_config
    cfg.training.early_stopping_patience = 5
    asked = []

    def epoch_batches(epoch):
        asked.append(epoch)
        return tf.data.Dataset.from_tensor_slices(fake_examples(256, 0)).shuffle(
            256, seed=epoch_seed(cfg.training.seed, epoch)).batch(64)

    straight, resumed = _resume_pair(cfg, tmp_path, lambda: epoch_batches, train_rows=256)
    _assert_same_run(straight, resumed)
    assert asked == [0, 1, 2] + [0, 1, 2] + [1, 2]  # straight, interrupted, resumed


@pytest.mark.slow
def test_resume_restores_the_early_stopping_state_and_its_best_weights(tiny_model_config, tmp_path):
    """Killed in epoch 3 after the best epoch 2: the resumed run keeps epoch 2 as the best
    (a fresh EarlyStopping and ModelCheckpoint took epoch 3, the only one they saw), restores
    its weights at the end and leaves them in checkpoints/best."""
    cfg = tiny_model_config
    cfg.training.early_stopping_patience = 1
    cfg.training.learning_rate = 0.2  # large enough that epoch 3 overshoots
    cfg.training.lr_decay_rate = 1.0
    straight, resumed = _resume_pair(cfg, tmp_path, lambda: _shuffled(256, 0, 64, repeat=False), train_rows=256,
                                     interrupt=2)
    ra = straight[0]
    assert ra.best_epoch == 2 and ra.history["val_auc_mean"][2] < ra.history["val_auc_mean"][1], ra.history
    _assert_same_run(straight, resumed, resumed=2)
    model = build_ranker(cfg.model, INFO, cfg.data.tasks, cfg.data.funnel, seed=1)
    model(next(iter(_dataset(8, 0, 8))))
    model.load_weights(str(tmp_path / "killed" / "checkpoints" / "best")).expect_partial()
    for x, y in zip(straight[1], model.get_weights()):
        np.testing.assert_allclose(y, x, rtol=0, atol=1e-6)


# ---------------------------------------------------------------- a task with one label class
def _one_class(n: int, seed: int, batch_size: int, task: str = "conversion", value: float = 0.0) -> tf.data.Dataset:
    cols = fake_examples(n, seed)
    cols[f"label_{task}"] = np.full(n, value, np.float32)
    return tf.data.Dataset.from_tensor_slices(cols).batch(batch_size)


def test_a_task_with_one_label_class_has_no_auc_and_is_left_out_of_the_mean(tiny_model_config, caplog):
    """All-0 conversion labels: Keras' AUC logged 0.0, which pulled val_auc_mean (the early
    stopping monitor) down by half. Now it is undefined (None in the history), the mean is
    the click AUC's and one warning names the task and both splits."""
    cfg = tiny_model_config
    model = build_ranker(cfg.model, INFO, cfg.data.tasks, cfg.data.funnel, seed=1)
    with caplog.at_level("WARNING", logger="models.training"):
        result = train_model(model, _one_class(256, 0, 64), _one_class(128, 1, 64), cfg.training, None, epochs=2,
                             verbose=0, name="teacher")
    h = result.history
    assert h["conversion_auc"] == [None, None] and h["val_conversion_auc"] == [None, None], h
    assert all(0.0 < v < 1.0 for v in h["click_auc"] + h["val_click_auc"])
    assert h["auc_mean"] == h["click_auc"] and h["val_auc_mean"] == h["val_click_auc"]
    assert result.best_metrics["val_conversion_auc"] is None
    warnings = [r.getMessage() for r in caplog.records if "single label class" in r.getMessage()]
    assert len(warnings) == 1, warnings  # once, not once per epoch
    assert "'conversion'" in warnings[0] and "training and validation" in warnings[0] and "teacher" in warnings[0]


def test_only_the_split_with_one_label_class_loses_its_auc(tiny_model_config, caplog):
    cfg = tiny_model_config
    model = build_ranker(cfg.model, INFO, cfg.data.tasks, cfg.data.funnel, seed=1)
    with caplog.at_level("WARNING", logger="models.training"):
        result = train_model(model, _one_class(256, 0, 64, "click", 1.0), _dataset(128, 1, 64), cfg.training, None,
                             epochs=1, verbose=0)
    h = result.history
    assert h["click_auc"] == [None] and h["auc_mean"] == h["conversion_auc"]
    assert 0.0 < h["val_click_auc"][0] < 1.0
    assert h["val_auc_mean"][0] == pytest.approx((h["val_click_auc"][0] + h["val_conversion_auc"][0]) / 2)
    warnings = [r.getMessage() for r in caplog.records if "single label class" in r.getMessage()]
    assert len(warnings) == 1 and "'click'" in warnings[0] and "training split" in warnings[0], warnings
