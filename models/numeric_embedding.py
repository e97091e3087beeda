"""Embeddings of numeric features from their piecewise-linear encoding (Gorishniy et al. 2022,
"On Embeddings for Numerical Features in Tabular Deep Learning").

The transform writes ``<n>_ple``, the piecewise-linear encoding of numeric ``n`` over ``T``
quantile bins ``[b_{t-1}, b_t)``: component ``t`` is 1 for a bin wholly below ``x``, 0 for a
bin wholly above it and ``(x - b_{t-1}) / (b_t - b_{t-1})`` in the bin holding ``x``. This
layer is the paper's "PLE-linear-ReLU" embedding (``Q-LR``, the quantile version): a
separate linear map per feature followed by a ReLU.
"""
from __future__ import annotations

import tensorflow as tf
import tf_keras as keras


@keras.utils.register_keras_serializable(package="models")
class PiecewiseLinearEmbedding(keras.layers.Layer):
    """Per-feature ``z_f = act(PLE(x_f) W_f + b_f)`` for ``F`` features with ``T`` bins each.

    One batched contraction for all features (``einsum('bft,ftu->bfu')``), not one Dense per
    feature: ``W`` is ``(F, T, units)`` and ``b`` ``(F, units)``.

    Example:

    >>> layer = PiecewiseLinearEmbedding(units=8)
    >>> layer(tf.zeros([4, 3, 10])).shape   # 3 features, 10 bins each
    TensorShape([4, 3, 8])
    >>> PiecewiseLinearEmbedding(units=8)(tf.zeros([4, 10])).shape  # one feature
    TensorShape([4, 8])

    Args:
      units: the embedding width per feature (>= 1).
      activation: ``relu`` (PLE-linear-ReLU, the default) or any Keras activation name
        (``linear``: the paper's PLE-linear).
      l2: L2 penalty on ``W``.

    Call arguments:
      inputs: float ``(batch, F, T)`` (or ``(batch, T)``: one feature).

    Returns:
      float ``(batch, F, units)`` (``(batch, units)`` for a 2-D input).
    """

    def __init__(self, units: int, activation: str = "relu", l2: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if isinstance(units, bool) or int(units) < 1:
            raise ValueError(f"`units` must be >= 1. Received: units={units!r}")
        self.units = int(units)
        self.activation = activation
        self._activation = keras.activations.get(activation)
        self.l2 = float(l2)

    def build(self, input_shape):
        shape = tf.TensorShape(input_shape)
        if shape.rank not in (2, 3) or shape[-1] is None or (shape.rank == 3 and shape[1] is None):
            raise ValueError(f"expected (batch, features, bins) or (batch, bins) with known sizes. "
                             f"Received: input_shape={input_shape}")
        features = 1 if shape.rank == 2 else int(shape[1])
        reg = keras.regularizers.l2(self.l2) if self.l2 > 0 else None
        self.kernel = self.add_weight(name="kernel", shape=(features, int(shape[-1]), self.units),
                                      initializer="glorot_uniform", regularizer=reg, trainable=True)
        self.bias = self.add_weight(name="bias", shape=(features, self.units), initializer="zeros", trainable=True)
        super().build(input_shape)

    def call(self, inputs):
        x = tf.cast(inputs, self.kernel.dtype)
        if x.shape.rank == 2:
            return self._activation(tf.matmul(x, self.kernel[0]) + self.bias[0])
        return self._activation(tf.einsum("bft,ftu->bfu", x, self.kernel) + self.bias)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)[:-1].concatenate([self.units])

    def get_config(self):
        config = super().get_config()
        config.update({"units": self.units, "activation": self.activation, "l2": self.l2})
        return config
