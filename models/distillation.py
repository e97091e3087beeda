"""``DistilledRanker``: a student ``MultiTaskRanker`` trained with the losses of
``models.distillation_losses`` (per task, the distilled term replaces the main tower's BCE) and,
with adaptors, Li & Bilen's feature alignment to a frozen teacher's representations."""
from __future__ import annotations

import tensorflow as tf

from core import feature_specs
from core.features import WEIGHT_KEY, label_key, teacher_logit_key
from models.distillation_losses import check_kd_arguments, distillation_loss, feature_alignment_loss, needs_teacher
from models.ranker import MultiTaskRanker


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
        check_kd_arguments(mode, alpha, temperature)
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
        loss = self.supervised_loss(inputs, fwd, training) + self.extra_loss(inputs, fwd, training)
        # The steps return exactly the model's metrics (MultiTaskRanker.train_step/test_step):
        # "loss" / "val_loss" are this tracker's mean, so it must see every batch's objective.
        self.loss_tracker.update_state(loss)
        return loss


def _dummy_inputs(ranker) -> dict:
    """A zero batch of ``ranker``'s model inputs (``core.feature_specs.dummy_batch``)."""
    return feature_specs.dummy_batch(ranker.embedding.feature_info())
