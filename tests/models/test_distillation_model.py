"""DistilledRanker: loss wiring, online teacher, feature alignment, adaptors never exported."""
import numpy as np
import pytest
import tensorflow as tf

from core.feature_specs import dummy_batch
from models.builder import build_ranker
from models.distillation import DistilledRanker
from models.distillation_losses import distillation_loss
from core.config import ModelConfig
from core.features import FeatureInfo

INFO = FeatureInfo(categorical={"user_id": 7, "device": 3}, numeric=["price"], tasks=["click", "conversion"])


class _Task:
    def __init__(self, name, weight=1.0):
        self.name, self.weight = name, weight


TASKS = [_Task("click"), _Task("conversion", 0.5)]
STUDENT = ModelConfig(embedding_dim=2, bottom_units=[4], tower_units=[2])
STUDENT.aux.enabled = False
TEACHER = ModelConfig(embedding_dim=4, bottom_units=[8, 6], tower_units=[4])


def _batch(n=16, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "user_id": tf.constant(rng.integers(0, 7, n), tf.int64),
        "device": tf.constant(rng.integers(0, 3, n), tf.int64),
        "price": tf.constant(rng.normal(size=n), tf.float32),
        "label_click": tf.constant(rng.integers(0, 2, n), tf.float32),
        "label_conversion": tf.constant(rng.integers(0, 2, n), tf.float32),
        "example_weight": tf.ones([n]),
        "teacher_logit_click": tf.constant(rng.normal(size=n), tf.float32),
        "teacher_logit_conversion": tf.constant(rng.normal(size=n), tf.float32),
    }


def _student(**kwargs):
    return build_ranker(STUDENT, INFO, TASKS, seed=3, cls=DistilledRanker, **kwargs)


def test_kd_loss_is_the_weighted_sum_of_per_task_distillation_losses():
    model = _student(mode="kd", alpha=0.3, temperature=2.0)
    batch = _batch()
    logits = model.forward(batch)["logits"]
    expected = sum(w * tf.reduce_mean(distillation_loss(batch[f"label_{t}"], logits[t], batch[f"teacher_logit_{t}"],
                                                        mode="kd", alpha=0.3, temperature=2.0))
                   for t, w in (("click", 1.0), ("conversion", 0.5)))
    assert float(model.compute_loss(batch)) == pytest.approx(float(expected), rel=1e-5)


def test_mode_none_equals_the_plain_ranker_loss():
    kd_free = _student(mode="none")
    plain = build_ranker(STUDENT, INFO, TASKS, seed=3)
    batch = _batch()
    assert float(kd_free.compute_loss(batch)) == pytest.approx(float(plain.compute_loss(batch)), rel=1e-6)


def test_alpha_zero_ignores_the_teacher():
    model = _student(mode="kd", alpha=0.0)
    a, b = _batch(seed=1), _batch(seed=1)
    b["teacher_logit_click"] = b["teacher_logit_click"] + 5.0
    assert float(model.compute_loss(a)) == pytest.approx(float(model.compute_loss(b)), rel=1e-6)


def test_kd_without_teacher_logits_or_teacher_raises():
    model = _student(mode="kd")
    batch = _batch()
    del batch["teacher_logit_click"]
    with pytest.raises(ValueError, match="teacher_logit_click"):
        model.compute_loss(batch)


def test_online_teacher_supplies_logits_and_alignment_trains_adaptors_only_in_training():
    teacher = build_ranker(TEACHER, INFO, TASKS, seed=5)
    model = _student(mode="kd", teacher=teacher, alignment_weight=1.0)
    batch = _batch()
    for t in ("click", "conversion"):
        del batch[f"teacher_logit_{t}"]
    teacher_vars = {id(v) for v in teacher.variables}
    with tf.GradientTape() as tape:
        loss = model.compute_loss(batch, training=True)
    grads = tape.gradient(loss, model.trainable_variables)
    names = [v.name for v in model.trainable_variables]
    adaptor = [g for v, g in zip(model.trainable_variables, grads) if "adaptor" in v.name]
    assert len(adaptor) == 2 and all(g is not None and float(tf.reduce_sum(tf.abs(g))) > 0 for g in adaptor)
    assert model.adaptors["click"].units == 6  # the teacher's representation width
    assert not teacher_vars & {id(v) for v in model.variables}  # the teacher is not part of the student
    assert any("adaptor" in n for n in names)
    serving = model.serving_model()
    assert not [v.name for v in serving.variables if "adaptor" in v.name]
    adaptor_vars = {id(v) for a in model.adaptors.values() for v in a.weights}
    assert len(adaptor_vars) == 2 and not adaptor_vars & {id(v) for v in serving.variables}
    assert serving.count_params() < model.count_params()


def test_alignment_term_adds_to_the_loss_and_needs_a_teacher():
    teacher = build_ranker(TEACHER, INFO, TASKS, seed=5)
    batch = _batch()
    off = _student(mode="kd", teacher=teacher, alignment_weight=0.0)
    on = _student(mode="kd", teacher=teacher, alignment_weight=2.0)
    assert float(on.compute_loss(batch)) > float(off.compute_loss(batch))
    with pytest.raises(ValueError, match="teacher"):
        _student(mode="kd", alignment_weight=1.0)


def test_student_saves_and_reloads_without_adaptors(tmp_path):
    import tf_keras as keras

    teacher = build_ranker(TEACHER, INFO, TASKS, seed=5)
    model = _student(mode="kd", teacher=teacher, alignment_weight=1.0)
    model.compute_loss(_batch(), training=True)
    path = str(tmp_path / "serving_model")
    model.serving_model().save(path)
    reloaded = keras.models.load_model(path, compile=False)
    inputs = {k: v for k, v in dummy_batch(INFO, 3).items()}
    np.testing.assert_allclose(reloaded(inputs)["click_probability"].numpy(),
                               model.serving_model()(inputs)["click_probability"].numpy(), rtol=1e-6)
    assert not [v.name for v in reloaded.variables if "adaptor" in v.name]
