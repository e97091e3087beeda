"""Knowledge-distillation losses for one binary task, registered as ``KD_MODES`` (Hinton et al.; Tang et al. 2020's factors).

Per example, with label ``y``, student logit ``s``, teacher logit ``t``, weight ``alpha`` and
temperature ``T`` (``BCE(q, p) = -q log p - (1 - q) log(1 - p)``, computed from logits):

* ``kd``:              ``(1 - alpha) BCE(y, sigmoid(s)) + alpha T^2 BCE(sigmoid(t / T), sigmoid(s / T))``.
  The ``T^2`` keeps the soft term's gradient on the scale of the hard one:
  ``d/ds = (1 - alpha)(sigmoid(s) - y) + alpha T (sigmoid(s / T) - sigmoid(t / T))``.
* ``label_smoothing``: ``BCE((1 - alpha) y + alpha m, sigmoid(s))`` with ``m`` the (weighted) mean
  label of the batch. The smoothing is uniform (``m`` is the same for every example) and has the
  same average soft mass as a calibrated teacher's targets (``E[sigmoid(t)] = E[y] = m``), so the
  mean target equals the mean label. No teacher and no temperature are used; ``alpha=0`` is BCE.
* ``reweight``:        ``w BCE(y, sigmoid(s))`` with ``w = p if y == 1 else 1 - p``,
  ``p = sigmoid(t)`` (the teacher's confidence on the true label, temperature 1), ``w`` held
  constant (no gradient) and normalised to mean 1 over the batch. ``alpha`` and ``T`` are unused.
* ``none``:            ``BCE(y, sigmoid(s))``, the no-KD baseline.

``distillation_loss`` returns the per-example values; ``DistillationLoss`` is the same as a Keras
loss (``y_true`` stacks ``[label, teacher_logit]``), reduced by the (weighted) batch mean.
``feature_alignment_loss`` is Li & Bilen's alignment term (see ``models.adaptors``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import tensorflow as tf
import tf_keras as keras

from core.registries import KD_MODES


@dataclass(frozen=True)
class KDMode:
    """One distillation mode: ``loss(y, s, t, alpha, temperature, w) -> (batch,)``.

    ``t`` is the teacher's logit (``None`` when ``needs_teacher`` is false), ``w`` the example
    weights or ``None`` (for batch statistics only: the caller applies them when reducing).
    """

    loss: Callable
    needs_teacher: bool


def needs_teacher(mode: str) -> bool:
    """Whether ``mode`` reads the teacher's logits."""
    return KD_MODES.get(mode).needs_teacher


def check_kd_arguments(mode: str, alpha: float, temperature: float) -> None:
    """Raises ``ValueError`` for an unregistered mode, alpha outside [0, 1] or T <= 0."""
    if mode not in KD_MODES:
        raise ValueError(f"mode must be one of {KD_MODES.names()}. Received: mode={mode!r}")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1]. Received: alpha={alpha}")
    if not float(temperature) > 0.0:
        raise ValueError(f"temperature must be > 0. Received: temperature={temperature}")


def _bce(targets, logits):
    return tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits)


def _batch_mean(x, sample_weight=None):
    if sample_weight is None:
        return tf.reduce_mean(x)
    return tf.math.divide_no_nan(tf.reduce_sum(x * sample_weight), tf.reduce_sum(sample_weight))


def distillation_loss(labels, student_logits, teacher_logits=None, *, mode: str = "kd",
                      alpha: float = 0.5, temperature: float = 2.0, sample_weight=None):
    """Per-example distillation loss of one task (see the module docstring for each mode).

    Args:
      labels: float 0/1 labels, shape ``(batch,)``.
      student_logits: the student's logits, shape ``(batch,)``.
      teacher_logits: the teacher's logits, shape ``(batch,)``; required by ``kd`` and ``reweight``.
      mode: a name registered in ``core.registries.KD_MODES``.
      alpha: weight of the soft part, in ``[0, 1]``.
      temperature: ``T > 0`` (``kd`` only).
      sample_weight: optional example weights; only used for the batch statistics of
        ``label_smoothing`` (the mean label) and ``reweight`` (the normalisation). The caller
        still applies them when reducing.

    Returns:
      A float32 tensor of shape ``(batch,)``.

    Raises:
      ValueError: for an unknown mode, alpha outside [0, 1], T <= 0, or missing teacher logits.
    """
    check_kd_arguments(mode, alpha, temperature)
    y = tf.cast(tf.reshape(labels, [-1]), tf.float32)
    s = tf.cast(tf.reshape(student_logits, [-1]), tf.float32)
    if needs_teacher(mode):
        if teacher_logits is None:
            raise ValueError(f"mode={mode!r} needs the teacher's logits. Received: teacher_logits=None")
        t = tf.stop_gradient(tf.cast(tf.reshape(teacher_logits, [-1]), tf.float32))
    else:
        t = None
    w = None if sample_weight is None else tf.cast(tf.reshape(sample_weight, [-1]), tf.float32)
    return KD_MODES.get(mode).loss(y, s, t, float(alpha), float(temperature), w)


def _kd(y, s, t, alpha, temperature, w):
    temp = tf.constant(temperature, tf.float32)
    soft = _bce(tf.sigmoid(t / temp), s / temp) * temp * temp
    return (1.0 - alpha) * _bce(y, s) + alpha * soft


def _label_smoothing(y, s, t, alpha, temperature, w):
    m = tf.stop_gradient(_batch_mean(y, w))
    return _bce((1.0 - alpha) * y + alpha * m, s)


def _reweight(y, s, t, alpha, temperature, w):
    p = tf.sigmoid(t)
    conf = y * p + (1.0 - y) * (1.0 - p)
    conf = tf.stop_gradient(tf.math.divide_no_nan(conf, _batch_mean(conf, w)))
    return conf * _bce(y, s)


def _no_kd(y, s, t, alpha, temperature, w):
    return _bce(y, s)


KD_MODES.add("kd", KDMode(_kd, needs_teacher=True), "Hinton's soft targets at temperature T, mixed with the label")
KD_MODES.add("label_smoothing", KDMode(_label_smoothing, needs_teacher=False),
             "uniform label smoothing toward the batch mean label (no teacher)")
KD_MODES.add("reweight", KDMode(_reweight, needs_teacher=True), "BCE re-weighted by the teacher's confidence on the label")
KD_MODES.add("none", KDMode(_no_kd, needs_teacher=False), "plain BCE: the no-KD baseline")


def feature_alignment_loss(projected_student, teacher_representation):
    """Li & Bilen's alignment: ``|| l2n(A h_s) - stop_gradient(l2n(h_t)) ||^2`` per example.

    Args:
      projected_student: the student representation after the task's adaptor, ``(batch, d)``.
      teacher_representation: the teacher's representation for the task, ``(batch, d)``.

    Returns:
      ``(batch,)`` squared distances in ``[0, 4]``.
    """
    if projected_student.shape[-1] != teacher_representation.shape[-1]:
        raise ValueError(
            "the adaptor output and the teacher representation must have the same width. Received: "
            f"{projected_student.shape[-1]} and {teacher_representation.shape[-1]}")
    s = tf.math.l2_normalize(tf.cast(projected_student, tf.float32), axis=-1)
    t = tf.stop_gradient(tf.math.l2_normalize(tf.cast(teacher_representation, tf.float32), axis=-1))
    return tf.reduce_sum(tf.square(s - t), axis=-1)


@keras.utils.register_keras_serializable(package="ranker")
class DistillationLoss(keras.losses.Loss):
    """``distillation_loss`` as a Keras loss on one task's logit output.

    ``y_true`` is the label ``(batch,)`` for ``label_smoothing``/``none``, or ``(batch, 2)``
    stacking ``[label, teacher_logit]`` (required by ``kd``/``reweight``); ``y_pred`` is the
    student's logit. Reduced as Keras does: the batch mean of ``sample_weight * loss``.

    Example:

    >>> loss = DistillationLoss(mode="kd", alpha=0.5, temperature=2.0)
    >>> y_true = tf.constant([[1.0, 2.0], [0.0, -1.0]])  # label, teacher logit
    >>> value = loss(y_true, tf.constant([0.5, -0.5]))
    """

    def __init__(self, mode: str = "kd", alpha: float = 0.5, temperature: float = 2.0,
                 name: str = "distillation_loss", **kwargs):
        check_kd_arguments(mode, alpha, temperature)
        super().__init__(name=name, **kwargs)
        self.mode = mode
        self.alpha = float(alpha)
        self.temperature = float(temperature)

    def call(self, y_true, y_pred):
        y_true = tf.cast(y_true, tf.float32)
        if y_true.shape.rank == 2 and y_true.shape[-1] == 2:
            labels, teacher = y_true[:, 0], y_true[:, 1]
        else:
            labels, teacher = tf.reshape(y_true, [-1]), None
        return distillation_loss(labels, y_pred, teacher, mode=self.mode, alpha=self.alpha,
                                 temperature=self.temperature)

    def get_config(self):
        config = super().get_config()
        config.update({"mode": self.mode, "alpha": self.alpha, "temperature": self.temperature})
        return config
