"""The train stage: artifacts, resume from BackupAndRestore, config errors."""
import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from models import model_io
from models.builder import build_ranker
from models.callbacks import InterruptAfter
from models.inputs import count_examples, make_dataset
from models.training import train_model
from core.config import load_config
from core.errors import ConfigError
from pipeline.stages.train import run as run_train, training_datasets
from tests.fakes.transformed_run import REPO, TINY, fake_examples, make_fake_run


@pytest.fixture
def fake(tmp_path):
    run_dir, info = make_fake_run(str(tmp_path / "run"))
    cfg = load_config(os.path.join(REPO, "configs", "default.yaml"), TINY + ["training.learning_rate=0.01"])
    return cfg, run_dir, info


def _fit(cfg, run_dir, info, model, model_dir=None, **kwargs):
    """``train_model`` on the run's train/validation splits, as the train stage feeds it."""
    t = cfg.training
    train = make_dataset(run_dir.split_pattern("train"), info, t.batch_size, shuffle=True,
                         shuffle_buffer=t.shuffle_buffer, seed=t.seed, repeat=t.steps_per_epoch is not None)
    val = make_dataset(run_dir.split_pattern("validation"), info, t.batch_size)
    rows = None if t.steps_per_epoch else count_examples(run_dir.split_pattern("train"))
    return train_model(model, train, val, t, model_dir, train_rows=rows, name="teacher", **kwargs)


class EpochRecorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.started = []

    def on_epoch_begin(self, epoch, logs=None):
        self.started.append(epoch)


@pytest.mark.slow
def test_train_stage_writes_serving_model_config_metrics_logs_and_plot(fake):
    cfg, run_dir, info = fake
    cfg.training.epochs = 2
    result = run_train(cfg, run_dir, None)
    teacher = run_dir.model_dir("teacher")
    assert result.rows == 2 * 768 or result.metrics["epochs_run"] == 1
    assert result.metrics["best_epoch"] in (1, 2) and result.metrics["params"] > 0
    assert 0.0 <= result.metrics["val_auc_mean"] <= 1.0
    saved = keras.models.load_model(model_io.serving_model_dir(teacher), compile=False)
    assert not [v.name for v in saved.variables if "aux_tower" in v.name]
    assert sorted(saved.input_names) == sorted(info.model_inputs)
    cfg_json = json.load(open(os.path.join(teacher, "model_config.json")))
    assert cfg_json["model"]["aux"]["enabled"] is True and cfg_json["feature_info"] == info.to_dict()
    metrics = json.load(open(os.path.join(teacher, "metrics.json")))
    assert len(metrics["history"]["val_auc_mean"]) == result.metrics["epochs_run"]
    assert os.listdir(os.path.join(teacher, "logs", "validation"))  # TensorBoard event files
    assert os.path.exists(os.path.join(teacher, "checkpoints", "best.index"))
    assert result.plots == ["plots/teacher_training.png"] and os.path.getsize(run_dir.path("plots", "teacher_training.png")) > 0
    assert "aux towers linear" in result.report


@pytest.mark.slow
def test_killed_run_resumes_from_backup_at_the_interrupted_epoch(fake):
    cfg, run_dir, info = fake
    cfg.training.early_stopping_patience = 5

    def fit(extra):
        model = build_ranker(cfg.model, info, cfg.data.tasks, cfg.data.funnel, seed=1)
        return _fit(cfg, run_dir, info, model, run_dir.model_dir("teacher"), epochs=3, callbacks=extra)

    first = EpochRecorder()
    with pytest.raises(KeyboardInterrupt):
        fit([first, InterruptAfter(epoch=1, batches=2)])
    assert first.started == [0, 1]
    assert os.listdir(run_dir.path("teacher", "backup"))
    second = EpochRecorder()
    result = fit([second])
    assert second.started == [1, 2], "must resume at epoch 2 (index 1), not restart at epoch 1"
    assert result.epochs == [0, 1, 2] and result.resumed_epoch == 1  # the history keeps epoch 1
    assert all(len(v) == 3 for v in result.history.values()), result.history
    assert result.rows == 3 * count_examples(run_dir.split_pattern("train"))
    assert not os.path.exists(run_dir.path("teacher", "backup", "chief"))  # deleted after a finished run


@pytest.mark.slow
def test_a_resumed_train_stage_writes_what_an_uninterrupted_one_writes(tmp_path):
    """The train stage killed in epoch 2 and run again: metrics.json holds all three epochs
    (epoch 1 was lost), the same values as an uninterrupted run to 1e-6 (the final AUC
    differed: the resumed epochs read other batches), the same best epoch, rows and plot."""
    cfg = load_config(os.path.join(REPO, "configs", "default.yaml"),
                      TINY + ["training.learning_rate=0.01", "training.epochs=3", "training.early_stopping_patience=5"])
    runs = {name: make_fake_run(str(tmp_path / name)) for name in ("straight", "killed")}
    straight = run_train(cfg, runs["straight"][0], None)

    run_dir, info = runs["killed"]
    data = training_datasets(cfg, run_dir, info)  # as the stage trains
    rows = data.train_rows
    model = build_ranker(cfg.model, info, cfg.data.tasks, cfg.data.funnel, seed=cfg.training.seed)
    with pytest.raises(KeyboardInterrupt):
        train_model(model, data.epoch_batches, data.validation, cfg.training, run_dir.model_dir("teacher"),
                    tasks=cfg.task_names, train_rows=rows, validation_rows=data.validation_rows, name="teacher",
                    callbacks=[InterruptAfter(epoch=1, batches=2)])
    resumed = run_train(cfg, run_dir, None)

    a, b = (json.load(open(os.path.join(r.model_dir("teacher"), "metrics.json"))) for r in
            (runs["straight"][0], run_dir))
    assert sorted(b["history"]) == sorted(a["history"]) and len(a["history"]["val_auc_mean"]) == 3
    for k, values in a["history"].items():
        np.testing.assert_allclose(b["history"][k], values, rtol=0, atol=1e-6, err_msg=k)
    assert (b["best_epoch"], b["rows"]) == (a["best_epoch"], a["rows"]) and a["rows"] == 3 * rows
    assert b["best_metrics"] == pytest.approx(a["best_metrics"], abs=1e-6)
    assert resumed.metrics == pytest.approx(straight.metrics, abs=1e-5) and resumed.rows == straight.rows
    assert "resumed from the backup at epoch 2" in resumed.report
    assert not os.path.exists(run_dir.path("teacher", "backup", "chief"))


@pytest.mark.slow
def test_train_stage_reports_an_undefined_auc_for_a_task_with_one_label_class(tmp_path, caplog):
    """All-0 conversion labels: the stage metrics, report and metrics.json say undefined
    (Keras' AUC said 0.0, and val_auc_mean was half the click AUC)."""
    from tests.fakes.transformed_run import write_split

    run_dir, info = make_fake_run(str(tmp_path / "run"))
    for i, (split, n) in enumerate((("train", 768), ("validation", 256))):
        cols = fake_examples(n, seed=i)
        cols["label_conversion"] = np.zeros(n, np.float32)
        write_split(run_dir.split_pattern(split), cols, shards=2 if split == "train" else 1)
    # 12 steps: a learning rate that learns the fake click signal in them (AUC well above 0.5)
    cfg = load_config(os.path.join(REPO, "configs", "default.yaml"), TINY + ["training.learning_rate=0.02"])
    with caplog.at_level("WARNING", logger="models.training"):
        result = run_train(cfg, run_dir, None)
    assert result.metrics["val_conversion_auc"] is None
    assert result.metrics["val_auc_mean"] == result.metrics["val_click_auc"] > 0.5
    assert "val_conversion_auc=undefined" in result.report
    metrics = json.load(open(run_dir.path("teacher", "metrics.json")))
    assert metrics["history"]["val_conversion_auc"] == [None] and metrics["history"]["conversion_auc"] == [None]
    warnings = [r.getMessage() for r in caplog.records if "single label class" in r.getMessage()]
    assert len(warnings) == 1 and "'conversion'" in warnings[0], warnings


@pytest.mark.slow
def test_training_is_repeatable_with_a_seed(fake):
    cfg, run_dir, info = fake
    ds = lambda: tf.data.Dataset.from_tensors({k: tf.constant(v) for k, v in fake_examples(128, 0).items()})  # noqa: E731
    weights = []
    for _ in range(2):
        model = build_ranker(cfg.model, info, cfg.data.tasks, cfg.data.funnel, seed=3)
        train_model(model, ds(), ds(), cfg.training, None, epochs=1)
        weights.append(model.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_unknown_monitor_is_a_config_error(fake):
    cfg, run_dir, info = fake
    cfg.training.monitor = "val_accuracy"
    model = build_ranker(cfg.model, info, cfg.data.tasks, cfg.data.funnel, seed=1)
    with pytest.raises(ConfigError, match="training.monitor"):
        _fit(cfg, run_dir, info, model)


@pytest.mark.slow
def test_several_steps_per_execution_keep_epochs_and_validation_whole(fake):
    """``training.steps_per_execution`` > 1: each epoch is still one pass over the training
    split and validation still scores every validation example."""
    cfg, run_dir, info = fake
    cfg.training.steps_per_execution = 4
    cfg.training.early_stopping_patience = 5
    model = build_ranker(cfg.model, info, cfg.data.tasks, cfg.data.funnel, seed=1)
    result = _fit(cfg, run_dir, info, model, epochs=2)
    steps = math.ceil(count_examples(run_dir.split_pattern("train")) / cfg.training.batch_size)
    assert result.epochs == [0, 1]
    assert int(model.optimizer.iterations.numpy()) == 2 * steps
    val = make_dataset(run_dir.split_pattern("validation"), info, cfg.training.batch_size)
    n_val = math.ceil(count_examples(run_dir.split_pattern("validation")) / cfg.training.batch_size)
    again = model.evaluate(val, steps=n_val, return_dict=True, verbose=0)  # the restored best epoch's weights
    assert again["loss"] == pytest.approx(result.best_metrics["val_loss"], rel=1e-5)
