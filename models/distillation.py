"""Knowledge-distillation losses for one binary task (Hinton et al.; Tang et al. 2020's factors).

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

import models  # noqa: F401  (Keras 2)
import tensorflow as tf
import tf_keras as keras

from models.ranker import MultiTaskRanker

MODES = ("kd", "label_smoothing", "reweight", "none")
TEACHER_LOGIT_PREFIX = "teacher_logit_"


def teacher_logit_key(task: str) -> str:
    """Name of the float feature holding the teacher's logit for ``task`` in the scored data."""
    return f"{TEACHER_LOGIT_PREFIX}{task}"


def needs_teacher(mode: str) -> bool:
    """Whether ``mode`` reads the teacher's logits."""
    return mode in ("kd", "reweight")


def _check(mode: str, alpha: float, temperature: float) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}. Received: mode={mode!r}")
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
      mode: one of ``MODES``.
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
    _check(mode, alpha, temperature)
    y = tf.cast(tf.reshape(labels, [-1]), tf.float32)
    s = tf.cast(tf.reshape(student_logits, [-1]), tf.float32)
    if needs_teacher(mode):
        if teacher_logits is None:
            raise ValueError(f"mode={mode!r} needs the teacher's logits. Received: teacher_logits=None")
        t = tf.stop_gradient(tf.cast(tf.reshape(teacher_logits, [-1]), tf.float32))
    w = None if sample_weight is None else tf.cast(tf.reshape(sample_weight, [-1]), tf.float32)
    hard = _bce(y, s)
    if mode == "none":
        return hard
    if mode == "kd":
        temp = tf.constant(float(temperature), tf.float32)
        soft = _bce(tf.sigmoid(t / temp), s / temp) * temp * temp
        return (1.0 - alpha) * hard + alpha * soft
    if mode == "label_smoothing":
        m = tf.stop_gradient(_batch_mean(y, w))
        return _bce((1.0 - alpha) * y + alpha * m, s)
    # reweight
    p = tf.sigmoid(t)
    conf = y * p + (1.0 - y) * (1.0 - p)
    conf = tf.stop_gradient(tf.math.divide_no_nan(conf, _batch_mean(conf, w)))
    return conf * hard


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
        _check(mode, alpha, temperature)
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


class DistilledRanker(MultiTaskRanker):
    """A ``MultiTaskRanker`` (the student) trained with ``distillation_loss`` per task.

    The teacher's per-task logits are read from the batch (``teacher_logit_<task>``, written
    by the teacher-scoring job) or, when absent, computed by ``teacher`` (online mode). With
    ``teacher`` and ``alignment_weight > 0`` it adds Li & Bilen's feature alignment:
    ``lambda * sum_t mean_i || l2n(A_t s_t(x_i)) - sg(l2n(h_t(x_i))) ||^2`` where ``s_t`` is the
    student's representation for task ``t`` (the shared bottom's output), ``h_t`` the
    teacher's (the input of its task tower) and ``A_t`` a ``FeatureAdaptor``. The teacher is
    frozen and not tracked (not in this model's weights or checkpoints); adaptors are trained
    but never reach ``serving_model()``.

    Only the per-impression term of each task is distilled; a masked pCVR term
    (``masked_child_loss`` without ESMM) stays plain BCE.

    Args (beyond ``MultiTaskRanker``'s):
      mode, alpha, temperature: see ``distillation_loss``.
      teacher: a built ``MultiTaskRanker`` with the teacher's weights (online mode), or None.
      alignment_weight: ``lambda >= 0``; > 0 needs ``teacher``.
    """

    def __init__(self, *args, mode: str = "kd", alpha: float = 0.5, temperature: float = 2.0, teacher=None,
                 alignment_weight: float = 0.0, **kwargs):
        _check(mode, alpha, temperature)
        if alignment_weight < 0:
            raise ValueError(f"alignment_weight must be >= 0. Received: alignment_weight={alignment_weight}")
        if alignment_weight > 0 and teacher is None:
            raise ValueError("feature alignment (alignment_weight > 0) needs the online teacher. Received: teacher=None")
        super().__init__(*args, **kwargs)
        self.mode, self.alpha, self.temperature = mode, float(alpha), float(temperature)
        self.alignment_weight = float(alignment_weight)
        # Plain callables: Keras tracks layers set as attributes, and the frozen teacher must
        # stay out of the student's weights, checkpoints and parameter count.
        self._teacher_forward = None
        if teacher is not None:
            teacher.trainable = False
            self._teacher_forward = lambda x: teacher.forward(x, training=False)
        self.adaptors = {}
        if self.alignment_weight > 0:
            from models.adaptors import FeatureAdaptor

            reps = teacher.task_representations(_dummy_inputs(teacher), training=False)
            self.adaptors = {t: FeatureAdaptor(int(reps[t].shape[-1]), name=f"adaptor_{t}") for t in self.task_names}

    def forward(self, features, training=False) -> dict:
        fwd = super().forward(features, training=training)
        for t, adaptor in self.adaptors.items():  # variables exist before the optimizer is built
            if not adaptor.built:  # called, not just built, so its variables are named adaptor_<t>/...
                adaptor(fwd["representations"][t])
        return fwd

    def _teacher(self, inputs):
        if self._teacher_forward is None:
            return None
        return self._teacher_forward(inputs)

    def _teacher_logits(self, inputs, teacher_fwd) -> dict:
        from models.outputs import CTCVR, logit_key

        out = {}
        for t in self.task_names:
            key = teacher_logit_key(t)
            if key in inputs:
                out[t] = tf.cast(inputs[key], tf.float32)
            elif teacher_fwd is not None:
                teacher_out = teacher_fwd["outputs"]
                esmm_key = logit_key(CTCVR)
                child = self.funnel[1] if self.funnel else None
                out[t] = teacher_out[esmm_key] if (t == child and esmm_key in teacher_out) else teacher_fwd["logits"][t]
            elif needs_teacher(self.mode):
                raise ValueError(f"mode={self.mode!r}: the batch has no '{key}' feature and there is no online teacher")
        return out

    def _distilled_term(self, task: str) -> int | None:
        """Index in ``_task_terms`` of the per-impression term (None: nothing to distil)."""
        if self.funnel is not None and task == self.funnel[1] and self.masked_child_loss and not self.esmm:
            return None
        return 0

    def supervised_loss(self, inputs, fwd, training=False):
        if self.mode == "none":
            return super().supervised_loss(inputs, fwd, training)
        from pipeline.features import WEIGHT_KEY, label_key

        labels = {t: tf.cast(inputs[label_key(t)], tf.float32) for t in self.task_names}
        first = labels[self.task_names[0]]
        weight = tf.cast(inputs[WEIGHT_KEY], tf.float32) if WEIGHT_KEY in inputs else tf.ones_like(first)
        teacher = self._teacher_logits(inputs, fwd.get("teacher"))
        loss = 0.0
        for t in self.task_names:
            distilled = self._distilled_term(t)
            task_loss = 0.0
            for i, (y, z, w) in enumerate(self._task_terms(t, fwd["logits"], labels, weight)):
                mode = self.mode if i == distilled else "none"
                per_example = distillation_loss(y, z, teacher.get(t), mode=mode, alpha=self.alpha,
                                                temperature=self.temperature, sample_weight=w)
                task_loss += tf.nn.compute_average_loss(per_example * w)
                if i == 0:  # the task's AUC metric, as the plain ranker computes it
                    self.ranking_tasks[t](labels=y[:, None], predictions=z[:, None], sample_weight=w[:, None],
                                          training=training, compute_metrics=True)
            loss += self.task_weights[t] * task_loss
        return loss

    def extra_loss(self, inputs, fwd, training=False):
        loss = super().extra_loss(inputs, fwd, training)
        if not self.adaptors:
            return loss
        teacher_reps = fwd["teacher"]["representations"]
        weight = tf.ones_like(fwd["logits"][self.task_names[0]])
        for t in self.task_names:
            per_example = feature_alignment_loss(self.adaptors[t](fwd["representations"][t]), teacher_reps[t])
            loss += self.alignment_weight * tf.nn.compute_average_loss(per_example * weight)
        return loss

    def compute_loss(self, inputs, training=False):
        fwd = self.forward(inputs, training=training)
        needs_online = self.adaptors or (needs_teacher(self.mode) and any(
            teacher_logit_key(t) not in inputs for t in self.task_names))
        if self._teacher_forward is not None and needs_online:
            fwd["teacher"] = self._teacher(inputs)
        return self.supervised_loss(inputs, fwd, training) + self.extra_loss(inputs, fwd, training)


def _dummy_inputs(ranker) -> dict:
    batch = {n: tf.zeros([2], tf.int64) for n in ranker.embedding.cardinalities}
    batch.update({n: tf.zeros([2], tf.float32) for n in ranker.embedding.numeric})
    return batch
