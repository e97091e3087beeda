"""Task towers: an MLP ending in one logit. A self-auxiliary tower is the same with fewer units."""
from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

from models.mlp import MLP

AUX_PREFIX = "aux_tower_"
MAIN_PREFIX = "tower_"


@keras.utils.register_keras_serializable(package="models")
class Tower(keras.layers.Layer):
    """A task head: ``logit = w^T MLP(h) + b``, returned with shape ``(batch,)``.

    ``units=[]`` makes a linear head (``logit = w^T h + b``), the smallest self-auxiliary
    tower of Wang et al. 2020, "Small Towers Make Big Differences".

    Example:

    >>> Tower([8])(tf.zeros([3, 16])).shape
    TensorShape([3])

    Args:
      units: hidden widths before the logit (may be empty).
      dropout: dropout after each hidden layer.
      l2: L2 penalty on the kernels.

    Returns:
      the logit, float32 ``(batch,)``.
    """

    def __init__(self, units=(), dropout: float = 0.0, l2: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.mlp = MLP(list(units), dropout=dropout, l2=l2, name="mlp")
        reg = keras.regularizers.l2(l2) if l2 > 0 else None
        self.logit = keras.layers.Dense(1, kernel_regularizer=reg, name="logit")

    def call(self, x, training=None):
        return tf.squeeze(self.logit(self.mlp(x, training=training)), axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update({"units": list(self.mlp.units), "dropout": self.mlp.dropout, "l2": self.mlp.l2})
        return config


def aux_tower(task: str, aux_cfg) -> Tower:
    """The self-auxiliary tower of ``task`` from an ``AuxTowerConfig`` (linear or tiny MLP)."""
    units = [] if aux_cfg.kind == "linear" else list(aux_cfg.units)
    return Tower(units, name=f"{AUX_PREFIX}{task}")


@keras.utils.register_keras_serializable(package="models")
class FunnelProduct(keras.layers.Layer):
    """ESMM: from the parent (CTR) and child (CVR) logits, the logit of pCTCVR = pCTR x pCVR.

    Computed in log space: ``log p = log_sigmoid(a) + log_sigmoid(b)`` and
    ``logit = log p - log(1 - p)`` with a stable ``log1mexp``, so the loss can use logits
    without ``sigmoid(log(...))`` round trips.

    Call arguments:
      inputs: ``(parent_logit, child_logit)``, each ``(batch,)``.

    Returns:
      the pCTCVR logit, ``(batch,)``.
    """

    def call(self, inputs):
        parent_logit, child_logit = inputs
        log_p = tf.math.log_sigmoid(parent_logit) + tf.math.log_sigmoid(child_logit)
        log_p = tf.minimum(log_p, -1e-7)
        # log(1 - exp(x)) for x < 0 (Maechler 2012).
        log1mexp = tf.where(log_p > -0.6931472, tf.math.log(-tf.math.expm1(log_p)), tf.math.log1p(-tf.exp(log_p)))
        return log_p - log1mexp
