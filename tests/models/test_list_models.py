"""Models over every feature kind: batching of list / PLE features, a MultiTaskRanker with lists
that trains and whose serving model round-trips as a SavedModel, students on a feature subset
(their serving inputs are the subset; KD with feature alignment trains)."""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from core.features import list_weights_key
from models import model_io
from models.builder import build_ranker, model_features
from models.distillation import DistilledRanker
from models.evaluation import predict_split
from models.inputs import make_dataset
from models.training import TrainResult, train_model
from tests.models.list_data import BINS, HIST, TAGS, make_list_run

SUBSET = ["user_id", "item_id", "hist_items", "price", "price_ple"]


@pytest.fixture
def list_run(tmp_path, tiny_model_config):
    run_dir, info = make_list_run(str(tmp_path / "run"))
    return tiny_model_config, run_dir, info


def _train(model, cfg, run_dir, info, teacher_logits=(), epochs=1):
    t = dataclasses.replace(cfg.training, epochs=epochs, early_stopping_patience=5)
    train_ds = make_dataset(run_dir.split_pattern("train"), info, 64, teacher_logits=teacher_logits, shuffle=True,
                            seed=1)
    val_ds = make_dataset(run_dir.split_pattern("validation"), info, 64, teacher_logits=teacher_logits)
    return train_model(model, train_ds, val_ds, t, None, tasks=cfg.task_names, train_rows=512, backup=False,
                       verbose=0, name="test")


def test_batches_hold_lists_weights_and_ple_with_their_widths(list_run):
    _, run_dir, info = list_run
    batch = next(iter(make_dataset(run_dir.split_pattern("train"), info, 32, shuffle=True, seed=1)))
    assert batch["hist_items"].shape == (32, HIST) and batch["hist_items"].dtype == tf.int64
    assert batch["tags"].shape == (32, TAGS) and batch[list_weights_key("tags")].shape == (32, TAGS)
    assert batch["price_ple"].shape == (32, BINS) and batch["price_ple"].dtype == tf.float32
    assert batch["item_id"].shape == (32,) and batch["device_x_hour"].shape == (32,)
    assert int(tf.reduce_min(batch["hist_items"])) == -1  # padding comes through as PAD_ID


def test_ranker_with_lists_trains_and_its_serving_model_round_trips(list_run, tmp_path):
    cfg, run_dir, info = list_run
    model = build_ranker(cfg.model, info, cfg.data.tasks, cfg.data.funnel, seed=1)
    attention = [v for v in model.trainable_variables if "attention_hist_items" in v.name]
    before = [v.numpy() for v in attention]
    result = _train(model, cfg, run_dir, info, epochs=2)
    losses = result.history["loss"]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert any(not np.allclose(b, v.numpy()) for b, v in zip(before, attention))  # the attention MLP trains

    serving = model.serving_model()
    assert sorted(serving.input_names) == sorted(info.model_inputs)
    batch = next(iter(make_dataset(run_dir.split_pattern("test"), info, 50)))
    feats = {k: batch[k] for k in info.model_inputs}
    expected = serving(feats)
    path = str(tmp_path / "serving_model")
    serving.save(path)
    reloaded = keras.models.load_model(path, compile=False)
    signature = tf.saved_model.load(path).signatures["serving_default"]
    got, sig = reloaded(feats), signature(**feats)
    assert sorted(got) == sorted(expected) == sorted(sig)
    for k in expected:
        np.testing.assert_allclose(got[k], expected[k], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(sig[k], expected[k], rtol=1e-5, atol=1e-6)
    # reload -> the same layer config (lists, PLE, attention) and the test split scores through it
    emb = reloaded.get_layer("embedding")
    assert emb.get_config()["lists"] == model.embedding.get_config()["lists"]
    arrays = predict_split(reloaded, run_dir.split_pattern("test"), info)
    assert arrays["click_probability"].shape == (128,)


def test_student_on_a_feature_subset_serves_only_the_subset(list_run, tmp_path):
    cfg, run_dir, info = list_run
    student_cfg = dataclasses.replace(cfg.distill.student, features=SUBSET)
    student = build_ranker(student_cfg, info, cfg.data.tasks, cfg.data.funnel, seed=2)
    expected_inputs = ["user_id", "item_id", "hist_items", "price", "price_ple"]
    assert sorted(student.serving_inputs()) == sorted(expected_inputs)
    serving = student.serving_model()
    assert sorted(serving.input_names) == sorted(expected_inputs)
    assert model_features(student_cfg, info).model_inputs == ["user_id", "item_id", "hist_items", "price",
                                                              "price_ple"]
    # the whole transformed batch may be offered: the evaluation feeds the model its inputs only
    arrays = predict_split(serving, run_dir.split_pattern("test"), info)
    assert np.isfinite(arrays["click_logit"]).all()
    # what is recorded with it is the subset: load_model_config's info gives the serving inputs
    model_io.save_trained(str(tmp_path / "student"), student, TrainResult(), role="student", model_cfg=student_cfg,
                          feature_info=info, tasks=cfg.data.tasks, funnel=cfg.data.funnel)
    _, _, _, saved_info = model_io.load_model_config(str(tmp_path / "student"), "distill")
    assert sorted(saved_info.model_inputs) == sorted(expected_inputs)
    assert saved_info.tasks == info.tasks and saved_info.passthrough == info.passthrough
    loaded = model_io.load_serving_model(str(tmp_path / "student"), "distill")
    assert sorted(loaded.input_names) == sorted(expected_inputs)
    with pytest.raises(ValueError, match="not model features"):
        build_ranker(dataclasses.replace(student_cfg, features=["nope"]), info, cfg.data.tasks, cfg.data.funnel)


def test_distilled_student_with_feature_alignment_trains_on_a_subset(list_run):
    cfg, run_dir, info = list_run
    teacher = build_ranker(cfg.model, info, cfg.data.tasks, cfg.data.funnel, seed=5)  # every feature
    student_cfg = dataclasses.replace(cfg.distill.student, features=["user_id", "device", "price"])
    student = build_ranker(student_cfg, info, cfg.data.tasks, cfg.data.funnel, seed=3, cls=DistilledRanker,
                           mode="kd", alpha=0.5, temperature=2.0, teacher=teacher, alignment_weight=1.0)
    assert sorted(student.serving_inputs()) == ["device", "price", "user_id"]
    teacher_before = [v.numpy() for v in teacher.variables]
    adaptors = [v for a in student.adaptors.values() for v in a.weights]
    adaptors_before = [v.numpy() for v in adaptors]
    # no teacher logits in the batches: the online teacher supplies them from its own features
    result = _train(student, cfg, run_dir, info)
    assert np.isfinite(result.history["loss"]).all()
    assert all(not np.allclose(b, v.numpy()) for b, v in zip(adaptors_before, adaptors))
    for b, v in zip(teacher_before, teacher.variables):
        np.testing.assert_array_equal(b, v.numpy())  # the teacher stays frozen
    serving = student.serving_model()
    assert sorted(serving.input_names) == ["device", "price", "user_id"]
    assert not [v.name for v in serving.variables if "adaptor" in v.name]


def test_student_with_lists_distils_from_scored_logits(list_run):
    """Offline KD (teacher_logit_<task> in the batches) on a subset that keeps a list."""
    from core.features import teacher_logit_key
    from tests.models.list_data import list_examples, write_examples

    cfg, run_dir, info = list_run
    cols = list_examples(256, seed=7)
    rng = np.random.default_rng(0)
    cols.update({teacher_logit_key(t): rng.normal(size=256).astype(np.float32) for t in info.tasks})
    pattern = str(run_dir.path("scores", "train-*.tfrecord.gz"))
    write_examples(pattern.replace("*", "00000-of-00001"), cols)
    student_cfg = dataclasses.replace(cfg.distill.student, features=["item_id", "hist_items", "tags"])
    student = build_ranker(student_cfg, info, cfg.data.tasks, cfg.data.funnel, seed=3, cls=DistilledRanker, mode="kd")
    sub = model_features(student_cfg, info)
    batch = next(iter(make_dataset(pattern, sub, 64, teacher_logits=info.tasks)))
    assert set(sub.model_inputs) == {"item_id", "hist_items", "tags", list_weights_key("tags")}
    assert "price" not in batch  # only what the student reads is parsed
    with tf.GradientTape() as tape:
        loss = student.compute_loss(batch, training=True)
    grads = tape.gradient(loss, student.trainable_variables)
    item_rows = student.embedding.table_variable("item_id")
    table = [g for v, g in zip(student.trainable_variables, grads) if v is item_rows]
    assert np.isfinite(float(loss)) and table and float(tf.reduce_sum(tf.abs(tf.convert_to_tensor(table[0])))) > 0
