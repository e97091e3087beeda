"""Multi-task backbones: one input vector -> one representation per task.

* ``SharedBottom``: one MLP whose output every task reads.
* ``MMoE`` (Ma et al. 2018): experts shared by all tasks, one softmax gate per task.
* ``PLE`` (Tang et al. 2020): stacked CGC layers with shared and task-specific experts.

The per-task representation is what the task's main tower and its self-auxiliary tower
read (for MMoE/PLE: that task's gated mixture of experts).
"""
from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

from core.registries import BACKBONES
from models.mlp import MLP, check_units


def _check_count(value, name, lo=1):
    if int(value) < lo:
        raise ValueError(f"`{name}` must be >= {lo}. Received: {name}={value}")
    return int(value)


@keras.utils.register_keras_serializable(package="models")
class SharedBottom(keras.layers.Layer):
    """``h = MLP(x)``; every task gets ``h``.

    Args:
      num_tasks: number of per-task outputs (>= 1).
      units: widths of the shared MLP.
      dropout, l2: regularization of the MLP.

    Returns:
      a list of ``num_tasks`` tensors ``(batch, units[-1])`` (the same tensor).
    """

    def __init__(self, num_tasks: int, units, dropout: float = 0.0, l2: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.num_tasks = _check_count(num_tasks, "num_tasks")
        self.bottom = MLP(check_units(units, "units"), dropout=dropout, l2=l2, name="bottom")

    def call(self, x, training=None):
        h = self.bottom(x, training=training)
        return [h] * self.num_tasks

    def get_config(self):
        config = super().get_config()
        config.update({"num_tasks": self.num_tasks, "units": list(self.bottom.units),
                       "dropout": self.bottom.dropout, "l2": self.bottom.l2})
        return config


def _mix(gate_logits, experts):
    """Softmax-weighted sum of experts: gate ``(b, n)``, experts list of ``(b, d)`` -> ``(b, d)``."""
    weights = tf.nn.softmax(gate_logits, axis=-1)
    stacked = tf.stack(experts, axis=1)  # (b, n, d)
    return tf.reduce_sum(stacked * tf.expand_dims(weights, -1), axis=1)


@keras.utils.register_keras_serializable(package="models")
class MMoE(keras.layers.Layer):
    """Multi-gate mixture of experts: ``h_t = sum_i softmax(W_t x)_i f_i(x)``.

    Args:
      num_tasks: number of tasks (one gate each).
      num_experts: number of shared experts (>= 1).
      expert_units: widths of each expert MLP.
      dropout, l2: regularization of the experts.

    Returns:
      a list of ``num_tasks`` tensors ``(batch, expert_units[-1])``.
    """

    def __init__(self, num_tasks: int, num_experts: int, expert_units, dropout: float = 0.0, l2: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.num_tasks = _check_count(num_tasks, "num_tasks")
        self.num_experts = _check_count(num_experts, "num_experts")
        self.expert_units = check_units(expert_units, "expert_units")
        if not self.expert_units:
            raise ValueError("`expert_units` must not be empty. Received: expert_units=[]")
        self.dropout, self.l2 = float(dropout), float(l2)
        self.experts = [MLP(self.expert_units, dropout, l2, name=f"expert_{i}") for i in range(self.num_experts)]
        self.gates = [keras.layers.Dense(self.num_experts, name=f"gate_{t}") for t in range(self.num_tasks)]

    def call(self, x, training=None):
        experts = [e(x, training=training) for e in self.experts]
        return [_mix(g(x), experts) for g in self.gates]

    def get_config(self):
        config = super().get_config()
        config.update({"num_tasks": self.num_tasks, "num_experts": self.num_experts,
                       "expert_units": list(self.expert_units), "dropout": self.dropout, "l2": self.l2})
        return config


@keras.utils.register_keras_serializable(package="models")
class PLE(keras.layers.Layer):
    """Progressive layered extraction: ``levels`` CGC layers.

    At each level, task ``t``'s gate mixes its own ``num_specific`` experts and the
    ``num_shared`` shared experts; below the last level a shared gate mixes all experts
    into the next level's shared input. Experts of level ``l`` read task ``t``'s (or the
    shared) output of level ``l - 1``.

    Args:
      num_tasks: number of tasks.
      num_shared: shared experts per level (>= 1).
      num_specific: task-specific experts per task per level (>= 0).
      expert_units: widths of each expert MLP.
      levels: number of CGC layers (>= 1).
      dropout, l2: regularization of the experts.

    Returns:
      a list of ``num_tasks`` tensors ``(batch, expert_units[-1])``.
    """

    def __init__(self, num_tasks: int, num_shared: int, num_specific: int, expert_units, levels: int = 1,
                 dropout: float = 0.0, l2: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.num_tasks = _check_count(num_tasks, "num_tasks")
        self.num_shared = _check_count(num_shared, "num_shared")
        self.num_specific = _check_count(num_specific, "num_specific", lo=0)
        self.levels = _check_count(levels, "levels")
        self.expert_units = check_units(expert_units, "expert_units")
        if not self.expert_units:
            raise ValueError("`expert_units` must not be empty. Received: expert_units=[]")
        self.dropout, self.l2 = float(dropout), float(l2)
        mk = lambda name: MLP(self.expert_units, self.dropout, self.l2, name=name)  # noqa: E731
        self.shared_experts = [[mk(f"l{l}_shared_{i}") for i in range(self.num_shared)] for l in range(self.levels)]
        self.task_experts = [[[mk(f"l{l}_task{t}_{i}") for i in range(self.num_specific)] for t in range(self.num_tasks)]
                             for l in range(self.levels)]
        self.task_gates = [[keras.layers.Dense(self.num_specific + self.num_shared, name=f"l{l}_gate_task{t}")
                            for t in range(self.num_tasks)] for l in range(self.levels)]
        self.shared_gates = [keras.layers.Dense(self.num_tasks * self.num_specific + self.num_shared, name=f"l{l}_gate_shared")
                             for l in range(self.levels - 1)]

    def call(self, x, training=None):
        task_inputs, shared_input = [x] * self.num_tasks, x
        for l in range(self.levels):
            shared = [e(shared_input, training=training) for e in self.shared_experts[l]]
            specific = [[e(task_inputs[t], training=training) for e in self.task_experts[l][t]] for t in range(self.num_tasks)]
            outputs = [_mix(self.task_gates[l][t](task_inputs[t]), specific[t] + shared) for t in range(self.num_tasks)]
            if l < self.levels - 1:
                every = [e for s in specific for e in s] + shared
                shared_input = _mix(self.shared_gates[l](shared_input), every)
            task_inputs = outputs
        return task_inputs

    def get_config(self):
        config = super().get_config()
        config.update({"num_tasks": self.num_tasks, "num_shared": self.num_shared, "num_specific": self.num_specific,
                       "expert_units": list(self.expert_units), "levels": self.levels,
                       "dropout": self.dropout, "l2": self.l2})
        return config


def backbone_from_config(model_cfg, num_tasks: int) -> keras.layers.Layer:
    """The backbone registered as ``model_cfg.backbone`` in ``core.registries.BACKBONES``."""
    return BACKBONES.get(model_cfg.backbone)(model_cfg, num_tasks)


@BACKBONES.register("shared_bottom", "one MLP every task reads (model.bottom_units)")
def _shared_bottom(model_cfg, num_tasks: int) -> SharedBottom:
    return SharedBottom(num_tasks, model_cfg.bottom_units, model_cfg.dropout, model_cfg.l2, name="backbone")


@BACKBONES.register("mmoe", "shared experts, one softmax gate per task (model.experts)")
def _mmoe(model_cfg, num_tasks: int) -> MMoE:
    e = model_cfg.experts
    return MMoE(num_tasks, e.num_shared, e.units, model_cfg.dropout, model_cfg.l2, name="backbone")


@BACKBONES.register("ple", "stacked CGC layers of shared and task-specific experts (model.experts)")
def _ple(model_cfg, num_tasks: int) -> PLE:
    e = model_cfg.experts
    return PLE(num_tasks, e.num_shared, e.num_specific, e.units, e.levels, model_cfg.dropout, model_cfg.l2,
               name="backbone")
