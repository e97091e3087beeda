"""Distillation losses: hand-computed values per mode, alpha and T behaviour, gradients."""
import math

import numpy as np
import pytest
import tensorflow as tf

from models.distillation_losses import DistillationLoss, distillation_loss, feature_alignment_loss


def sig(x):
    return 1.0 / (1.0 + math.exp(-x))


def bce(q, logit):
    p = sig(logit)
    return -(q * math.log(p) + (1 - q) * math.log(1 - p))


Y = [1.0, 0.0, 1.0, 0.0]
S = [0.5, -0.3, -1.2, 2.0]
T_LOGITS = [2.0, -1.0, 0.4, -0.7]


def loss(mode, **kw):
    return distillation_loss(tf.constant(Y), tf.constant(S), tf.constant(T_LOGITS), mode=mode, **kw).numpy()


def test_none_is_plain_bce():
    np.testing.assert_allclose(loss("none"), [bce(y, s) for y, s in zip(Y, S)], rtol=1e-5)


def test_kd_matches_hand_computation():
    a, T = 0.3, 2.5
    expected = [(1 - a) * bce(y, s) + a * T * T * bce(sig(t / T), s / T) for y, s, t in zip(Y, S, T_LOGITS)]
    np.testing.assert_allclose(loss("kd", alpha=a, temperature=T), expected, rtol=1e-5)


def test_kd_alpha_zero_is_plain_bce_and_alpha_one_ignores_labels():
    np.testing.assert_allclose(loss("kd", alpha=0.0, temperature=3.0), loss("none"), rtol=1e-6)
    flipped = distillation_loss(tf.constant([1 - y for y in Y]), tf.constant(S), tf.constant(T_LOGITS),
                                mode="kd", alpha=1.0, temperature=2.0).numpy()
    np.testing.assert_allclose(flipped, loss("kd", alpha=1.0, temperature=2.0), rtol=1e-6)


def test_kd_temperature_scales_the_soft_term_by_t_squared():
    # alpha=1: T^2 * BCE(sigmoid(t/T), sigmoid(s/T)); with s = t = 0 this is T^2 * log 2.
    zero = tf.zeros([3])
    for T in (1.0, 2.0, 4.0):
        v = distillation_loss(zero, zero, zero, mode="kd", alpha=1.0, temperature=T).numpy()
        np.testing.assert_allclose(v, [T * T * math.log(2)] * 3, rtol=1e-5)


def test_kd_gradient_wrt_student_logit():
    a, T = 0.4, 3.0
    s = tf.Variable(S)
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(distillation_loss(tf.constant(Y), s, tf.constant(T_LOGITS), mode="kd",
                                                alpha=a, temperature=T))
    grad = tape.gradient(total, s).numpy()
    expected = [(1 - a) * (sig(si) - y) + a * T * (sig(si / T) - sig(t / T)) for y, si, t in zip(Y, S, T_LOGITS)]
    np.testing.assert_allclose(grad, expected, rtol=1e-5)


def test_kd_minimum_of_the_soft_term_is_at_the_teacher_logit():
    t = tf.constant([1.3, -0.8])
    s = tf.Variable([1.3, -0.8])
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(distillation_loss(tf.constant([0.0, 1.0]), s, t, mode="kd", alpha=1.0, temperature=2.0))
    np.testing.assert_allclose(tape.gradient(total, s).numpy(), [0.0, 0.0], atol=1e-6)


def test_no_gradient_flows_into_the_teacher():
    t = tf.Variable(T_LOGITS)
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(distillation_loss(tf.constant(Y), tf.constant(S), t, mode="kd"))
    assert tape.gradient(total, t) is None


def test_label_smoothing_uses_the_batch_mean_label():
    a = 0.2
    m = sum(Y) / len(Y)
    expected = [bce((1 - a) * y + a * m, s) for y, s in zip(Y, S)]
    got = distillation_loss(tf.constant(Y), tf.constant(S), None, mode="label_smoothing", alpha=a).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_label_smoothing_weighted_mean_label():
    a, w = 0.5, [3.0, 1.0, 0.0, 0.0]
    m = 3.0 / 4.0
    expected = [bce((1 - a) * y + a * m, s) for y, s in zip(Y, S)]
    got = distillation_loss(tf.constant(Y), tf.constant(S), mode="label_smoothing", alpha=a,
                            sample_weight=tf.constant(w)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_reweight_weights_by_teacher_confidence_normalised_to_mean_one():
    conf = [sig(t) if y == 1 else 1 - sig(t) for y, t in zip(Y, T_LOGITS)]
    mean = sum(conf) / len(conf)
    expected = [c / mean * bce(y, s) for c, y, s in zip(conf, Y, S)]
    np.testing.assert_allclose(loss("reweight"), expected, rtol=1e-5)


def test_keras_loss_reduces_to_the_batch_mean():
    y_true = tf.stack([tf.constant(Y), tf.constant(T_LOGITS)], axis=1)
    value = DistillationLoss(mode="kd", alpha=0.3, temperature=2.5)(y_true, tf.constant(S)).numpy()
    assert value == pytest.approx(float(np.mean(loss("kd", alpha=0.3, temperature=2.5))), rel=1e-5)
    plain = DistillationLoss(mode="none")(tf.constant(Y), tf.constant(S)).numpy()
    assert plain == pytest.approx(float(np.mean(loss("none"))), rel=1e-5)
    restored = DistillationLoss.from_config(DistillationLoss(mode="reweight", alpha=0.1).get_config())
    assert (restored.mode, restored.alpha, restored.temperature) == ("reweight", 0.1, 2.0)


@pytest.mark.parametrize("kwargs, match", [
    ({"mode": "soft"}, "mode"), ({"alpha": 1.5}, "alpha"), ({"temperature": 0.0}, "temperature"),
])
def test_invalid_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        distillation_loss(tf.constant(Y), tf.constant(S), tf.constant(T_LOGITS), **kwargs)


def test_kd_without_teacher_logits_raises():
    with pytest.raises(ValueError, match="teacher"):
        distillation_loss(tf.constant(Y), tf.constant(S), None, mode="kd")


def test_feature_alignment_is_the_squared_distance_of_unit_vectors():
    s = tf.constant([[3.0, 0.0], [1.0, 1.0]])
    t = tf.constant([[0.0, 2.0], [5.0, 5.0]])
    np.testing.assert_allclose(feature_alignment_loss(s, t).numpy(), [2.0, 0.0], atol=1e-6)
    tv = tf.Variable(t)
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(feature_alignment_loss(s, tv))
    assert tape.gradient(total, tv) is None
    with pytest.raises(ValueError, match="width"):
        feature_alignment_loss(tf.zeros([1, 3]), tf.zeros([1, 4]))
