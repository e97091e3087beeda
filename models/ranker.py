"""MultiTaskRanker: embedding + backbone + one main tower per task (+ self-auxiliary towers).

The model wires layers and asks one ``tfrs.tasks.Ranking`` per task for its loss:

    loss = sum_t w_t [ L_t(main_t) + gamma * L_t(aux_t) ]  (+ ``extra_loss``, e.g. KD terms)

where ``aux_t`` is a much smaller tower reading the same per-task representation as
``main_t`` (Wang et al. 2020), trained on the same label and loss with no stop-gradient,
so its gradient flows into the shared layers. Funnel specifics (``funnel = (parent,
child)``): in ESMM mode the child's loss is on pCTCVR = pCTR x pCVR over all impressions;
with ``masked_child_loss`` the child's own head (pCVR) is trained on parent-positive rows
only. Aux towers exist only here: ``serving_model()`` wires the main towers alone.

Subclasses (the distilled student) override ``extra_loss`` or pass ``loss_hook``.
"""
from __future__ import annotations

from typing import Callable, Optional

import tensorflow as tf
import tensorflow_recommenders as tfrs
import tf_keras as keras

from models.outputs import CTCVR, logit_key, probability_key
from models.towers import FunnelProduct
from core.features import WEIGHT_KEY, label_key


class DefinedAUC(keras.metrics.AUC):
    """``keras.metrics.AUC`` that is NaN, not 0.0, where the AUC is undefined: when the
    (weighted) labels seen hold a single class, all 0 or all 1. Keras returns 0.0 there,
    which reads as a model ranking every pair wrong and drags a mean AUC down."""

    def result(self):
        positives = self.true_positives[0] + self.false_negatives[0]  # at the lowest threshold: all rows
        negatives = self.false_positives[0] + self.true_negatives[0]
        defined = tf.logical_and(positives > 0, negatives > 0)
        return tf.where(defined, super().result(), tf.constant(float("nan"), self.dtype))


def ranking_task(name: str, with_metrics: bool = True) -> tfrs.tasks.Ranking:
    """A Ranking task with per-example binary cross-entropy on logits and an AUC metric
    (``DefinedAUC``: NaN on labels of one class)."""
    loss = keras.losses.BinaryCrossentropy(from_logits=True, reduction=keras.losses.Reduction.NONE)
    metrics = [DefinedAUC(from_logits=True, name=f"{name}_auc")] if with_metrics else []
    return tfrs.tasks.Ranking(loss=loss, metrics=metrics, name=f"{name}_task")


class MultiTaskRanker(tfrs.models.Model):
    """A multi-task ranking model with optional self-auxiliary towers.

    Args:
      embedding: features dict -> vector (``FeatureEmbedding``).
      interaction: optional vector -> vector layer between the embedding and the backbone
        (``CrossNetwork``); None: the embedding feeds the backbone directly.
      backbone: vector -> list of per-task representations (``SharedBottom``/``MMoE``/``PLE``).
      towers: task -> main ``Tower``.
      task_weights: task -> loss weight ``w_t`` (>= 0); its key order is the task order.
      aux_towers: task -> auxiliary ``Tower`` (empty/None: no aux towers).
      aux_gamma: weight ``gamma`` of the aux losses (>= 0).
      funnel: ``(parent, child)`` task names, or None.
      esmm: predict the child per impression as pCTCVR = pCTR x pCVR (needs ``funnel``).
      masked_child_loss: train the child's own head on parent-positive rows only.
      loss_hook: optional ``f(model, inputs, forward_outputs, training) -> scalar`` added
        to the loss (per-replica average, like the task losses).

    Raises:
      ValueError: towers / weights disagree, a negative weight or gamma, or esmm /
        masked_child_loss without a funnel of two known tasks.
    """

    def __init__(self, embedding, backbone, towers: dict, task_weights: dict, aux_towers: Optional[dict] = None,
                 aux_gamma: float = 0.0, funnel: Optional[tuple] = None, esmm: bool = False,
                 masked_child_loss: bool = False, loss_hook: Optional[Callable] = None,
                 interaction=None, **kwargs):
        super().__init__(**kwargs)
        self.task_names = list(task_weights)
        if sorted(towers) != sorted(self.task_names):
            raise ValueError(f"`towers` must have one tower per task {self.task_names}. Received towers for {sorted(towers)}")
        if any(w < 0 for w in task_weights.values()):
            raise ValueError(f"Task weights must be >= 0. Received: task_weights={task_weights}")
        if aux_gamma < 0:
            raise ValueError(f"`aux_gamma` must be >= 0. Received: aux_gamma={aux_gamma}")
        aux_towers = dict(aux_towers or {})
        if aux_towers and sorted(aux_towers) != sorted(self.task_names):
            raise ValueError(f"`aux_towers` must be empty or have one tower per task {self.task_names}. Received: {sorted(aux_towers)}")
        if (esmm or masked_child_loss) and (funnel is None or any(t not in self.task_names for t in funnel)):
            raise ValueError(f"`esmm`/`masked_child_loss` need `funnel`=(parent, child) naming tasks in {self.task_names}. Received: funnel={funnel}")
        self.embedding = embedding
        self.interaction = interaction
        self.backbone = backbone
        self.towers = towers
        self.aux_towers = aux_towers
        self.task_weights = {t: float(w) for t, w in task_weights.items()}
        self.aux_gamma = float(aux_gamma)
        self.funnel = tuple(funnel) if funnel is not None else None
        self.esmm = bool(esmm)
        self.masked_child_loss = bool(masked_child_loss)
        self.loss_hook = loss_hook
        self.funnel_product = FunnelProduct(name="funnel_product") if self.esmm else None
        self.ranking_tasks = {t: ranking_task(t) for t in self.task_names}
        self.aux_ranking_tasks = {t: ranking_task(f"aux_{t}", with_metrics=False) for t in self.aux_towers}
        # Logged as "loss": the epoch mean (train) / split mean (validation) of the objective.
        self.loss_tracker = keras.metrics.Mean(name="loss")

    # ------------------------------------------------------------------ forward
    def task_representations(self, features, training=False) -> dict:
        """task -> the tensor its main (and aux) tower reads, ``(batch, d_t)``."""
        x = self.embedding(features)  # (batch, embedding.output_dim)
        if self.interaction is not None:
            x = self.interaction(x)
        reps = self.backbone(x, training=training)
        return dict(zip(self.task_names, reps))

    def _heads(self, logits: dict) -> dict:
        """Main logits -> the serving outputs (logits and probabilities, plus pCTCVR in ESMM)."""
        out = {}
        for t in self.task_names:
            out[logit_key(t)] = logits[t]
            out[probability_key(t)] = tf.sigmoid(logits[t])
        if self.esmm:
            parent, child = self.funnel
            ctcvr = self.funnel_product([logits[parent], logits[child]])
            out[logit_key(CTCVR)] = ctcvr
            out[probability_key(CTCVR)] = tf.sigmoid(ctcvr)
        return out

    def forward(self, features, training=False) -> dict:
        """Everything the losses need: ``representations``, main ``logits``, ``aux_logits``, ``outputs``."""
        reps = self.task_representations(features, training=training)
        logits = {t: self.towers[t](reps[t], training=training) for t in self.task_names}
        aux_logits = {t: self.aux_towers[t](reps[t], training=training) for t in self.aux_towers}
        return {"representations": reps, "logits": logits, "aux_logits": aux_logits, "outputs": self._heads(logits)}

    def call(self, features, training=False):
        return self.forward(features, training=training)["outputs"]

    # ------------------------------------------------------------------ losses
    def _task_terms(self, task: str, logits: dict, labels: dict, weight):
        """[(labels, logits, sample_weight)] the loss of ``task`` is the sum over."""
        if self.funnel is None or task != self.funnel[1] or not (self.esmm or self.masked_child_loss):
            return [(labels[task], logits[task], weight)]
        parent, child = self.funnel
        terms = []
        if self.esmm:
            terms.append((labels[child], self.funnel_product([logits[parent], logits[child]]), weight))
        if self.masked_child_loss:
            terms.append((labels[child], logits[child], weight * labels[parent]))
        return terms

    def _loss(self, task, ranking, logits, labels, weight, training, compute_metrics):
        total = 0.0
        for i, (y, z, w) in enumerate(self._task_terms(task, logits, labels, weight)):
            per_example = ranking(labels=y[:, None], predictions=z[:, None], sample_weight=w[:, None],
                                  training=training, compute_metrics=compute_metrics and i == 0)
            total += tf.nn.compute_average_loss(per_example)
        return total

    def supervised_loss(self, inputs, fwd, training=False):
        """``sum_t w_t [L_t(main) + gamma L_t(aux)]`` (updates the per-task AUC metrics)."""
        labels = {t: tf.cast(inputs[label_key(t)], tf.float32) for t in self.task_names}
        weight = tf.cast(inputs[WEIGHT_KEY], tf.float32) if WEIGHT_KEY in inputs else tf.ones_like(labels[self.task_names[0]])
        loss = 0.0
        for t in self.task_names:
            task_loss = self._loss(t, self.ranking_tasks[t], fwd["logits"], labels, weight, training, True)
            if t in self.aux_towers and self.aux_gamma > 0:
                task_loss += self.aux_gamma * self._loss(t, self.aux_ranking_tasks[t], fwd["aux_logits"], labels, weight, training, False)
            loss += self.task_weights[t] * task_loss
        return loss

    def extra_loss(self, inputs, fwd, training=False):
        """Additional loss terms; the default applies ``loss_hook`` if given, else 0."""
        if self.loss_hook is None:
            return 0.0
        return self.loss_hook(self, inputs, fwd, training)

    def compute_loss(self, inputs, training=False):
        fwd = self.forward(inputs, training=training)
        loss = self.supervised_loss(inputs, fwd, training) + self.extra_loss(inputs, fwd, training)
        self.loss_tracker.update_state(loss)
        return loss

    # ------------------------------------------------------------------ steps
    # Both steps return exactly the model's metrics (tfrs adds the last batch's loss terms).
    # With matching keys Keras replaces the per-replica step values by the metrics read across
    # all replicas and workers at the end of each epoch and evaluation; with extra keys it
    # keeps the step values, summed over the workers under MultiWorkerMirroredStrategy (an
    # AUC of 1.06 was logged that way).
    def train_step(self, inputs):
        self.gradient_step(inputs)
        return self.get_metrics_result()

    def test_step(self, inputs):
        self.evaluation_step(inputs)
        return self.get_metrics_result()

    def gradient_step(self, inputs) -> None:
        """One optimizer step on ``compute_loss`` + the layers' regularization losses (as
        ``tfrs.models.Model.train_step``); updates the loss and AUC metrics."""
        with tf.GradientTape() as tape:
            loss = self.compute_loss(inputs, training=True)
            total = loss + tf.reduce_sum([tf.reduce_sum(x) for x in self.losses])
        gradients = tape.gradient(total, self.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))

    def evaluation_step(self, inputs) -> None:
        """Updates the loss and AUC metrics on a batch (no gradient)."""
        self.compute_loss(inputs, training=False)

    # ------------------------------------------------------------------ executions
    # Keras runs several steps per execution as `for _ in tf.range(n): outputs = step()`.
    # Its loop variables are undefined before that loop, so AutoGraph traces the whole step
    # twice: once to learn them, once as the loop body; and every step computes the metric
    # results (an AUC's over 200 thresholds) that only the last step's are kept of. These
    # functions run the steps (metric updates only) in a tf.while_loop and read the results
    # once after it: the same steps, counters and outputs, the step traced once
    # (bench/train_profile.py).
    def make_train_function(self, force=False):
        if self.train_function is not None and not force:
            return self.train_function
        if not self._one_trace_loop():
            return super().make_train_function(force)
        self.train_function = self.train_tf_function = self._execution_function(self.gradient_step, self._train_counter)
        return self.train_function

    def make_test_function(self, force=False):
        if self.test_function is not None and not force:
            return self.test_function
        if not self._one_trace_loop():
            return super().make_test_function(force)
        self.test_function = self._execution_function(self.evaluation_step, self._test_counter)
        return self.test_function

    def _one_trace_loop(self) -> bool:
        """Several steps per execution, compiled, on one worker (the metric results are read
        in cross-replica context), no coordinator; else Keras' own loop."""
        spe = self._steps_per_execution
        return (spe is not None and int(spe.numpy()) > 1 and not self.autotune_steps_per_execution
                and not self.run_eagerly and not self.jit_compile and self._cluster_coordinator is None
                and not self.distribute_strategy.extended._in_multi_worker_mode())

    def _execution_function(self, step, counter):
        """A tf.function running ``steps_per_execution`` steps of ``step`` on an iterator
        (one ``strategy.run`` each, counted by ``counter`` once done) and returning the
        metric results after the last: what Keras' loop returns."""

        def run_step(data):
            step(data)
            counter.assign_add(1)  # after the step's updates (automatic control dependencies)

        def execution(iterator):
            def body(i):
                self.distribute_strategy.run(run_step, args=(next(iterator),))
                return (i + 1,)

            tf.while_loop(lambda i: i < self._steps_per_execution, body,
                          (tf.constant(0, self._steps_per_execution.dtype),))
            return self.get_metrics_result()

        # No AutoGraph: the ranker's steps are plain TensorFlow ops, and converting every
        # function they call cost more than half of the trace (census: 2.7 s vs 1.2 s to the
        # first finished execution); Python control flow on a tensor fails the trace loudly.
        return tf.function(execution, reduce_retracing=True, autograph=False)

    # ------------------------------------------------------------------ serving
    def serving_inputs(self) -> dict:
        """Keras Inputs of the serving model (``core.feature_specs.serving_keras_inputs``):
        those of the features the embedding reads (``FeatureEmbedding.feature_info``), so a
        model on a feature subset (``model.features``) takes only its subset.

        Returns:
          dict name -> symbolic tensor: int64 ids ``(None,)`` of the categorical features,
          int64 ``(None, L)`` list ids (and float32 ``(None, L)`` weights of weighted lists),
          float32 ``(None,)`` numerics, float32 ``(None, bins)`` PLE encodings.
        """
        from core.feature_specs import serving_keras_inputs

        return serving_keras_inputs(self.embedding.feature_info())

    def serving_model(self, name: str = "serving_model") -> keras.Model:
        """The functional inference model: main towers only (shares this model's weights)."""
        inputs = self.serving_inputs()
        reps = self.task_representations(inputs, training=False)
        logits = {t: self.towers[t](reps[t], training=False) for t in self.task_names}
        outputs = self._heads(logits)
        outputs = {k: keras.layers.Activation("linear", name=k)(v) for k, v in outputs.items()}
        return keras.Model(inputs, outputs, name=name)
