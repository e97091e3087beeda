"""Pooling of padded id lists: weighted sum / mean / sqrtn (``ListPooling``) and DIN target
attention (``TargetAttention``).

Both read the value embeddings of a list padded to a fixed width ``L``, ``e`` of shape
``(batch, L, d)``, and a 0/1 ``mask`` ``(batch, L)`` (1 on a real value, 0 on padding; the
embedding looks padding up at id 0 and masks it, ``models.embedding``). Padding never
contributes: its embedding may be anything (finite) without changing the output, and a list
that is all padding (an empty list) pools to zeros, never NaN.
"""
from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

from models.mlp import check_units

POOLINGS = ("sum", "mean", "sqrtn")
EPS = 1e-8  # the smallest denominator of mean / sqrtn: an empty list pools to 0 / EPS = 0


def _effective_weights(mask, weights, dtype):
    """``m_j w_j`` (``m_j`` without weights), ``(batch, L)``."""
    m = tf.cast(mask, dtype)
    return m if weights is None else m * tf.cast(weights, dtype)


@keras.utils.register_keras_serializable(package="models")
class ListPooling(keras.layers.Layer):
    """Pools the embeddings of a padded list into one vector.

    With embeddings ``e_j`` (``j = 1..L``), mask ``m_j`` in {0, 1} and weights ``w_j`` (all 1
    when not given)::

        sum   = sum_j m_j w_j e_j
        mean  = sum / max(sum_j m_j w_j, eps)
        sqrtn = sum / sqrt(max(sum_j m_j w_j^2, eps))

    (``eps = 1e-8``), so an empty list (all ``m_j = 0``) gives zeros. ``sqrtn`` is
    TensorFlow's ``combiner="sqrtn"``: with unit weights the sum over ``sqrt(count)``.

    Example:

    >>> e = tf.ones([2, 3, 4])
    >>> ListPooling("mean")(e, mask=tf.constant([[1, 1, 0], [0, 0, 0]])).numpy()[:, 0]
    array([1., 0.], dtype=float32)

    Args:
      mode: ``sum`` | ``mean`` | ``sqrtn``.

    Call arguments:
      embeddings: float ``(batch, L, d)``.
      mask: bool or 0/1 ``(batch, L)``: 1 on a value, 0 on padding.
      weights: optional float ``(batch, L)``, per-value weights ``w_j``.

    Returns:
      float ``(batch, d)``.

    Raises:
      ValueError: an unknown mode.
    """

    def __init__(self, mode: str = "mean", **kwargs):
        super().__init__(**kwargs)
        if mode not in POOLINGS:
            raise ValueError(f"`mode` must be one of {POOLINGS}. Received: mode={mode!r}")
        self.mode = mode

    def call(self, embeddings, mask, weights=None):
        w = _effective_weights(mask, weights, embeddings.dtype)  # (batch, L)
        total = tf.einsum("bl,bld->bd", w, embeddings)  # one batched matmul
        if self.mode == "sum":
            return total
        if self.mode == "mean":
            denom = tf.maximum(tf.reduce_sum(w, axis=1, keepdims=True), EPS)
        else:  # sqrtn: w = m w  ->  m w^2 = w^2 (m is 0/1)
            denom = tf.sqrt(tf.maximum(tf.reduce_sum(tf.square(w), axis=1, keepdims=True), EPS))
        return total / denom

    def compute_mask(self, inputs, mask=None):
        return None  # the output (batch, d) carries no mask; ``mask`` is an argument, not a Keras mask

    def compute_output_shape(self, input_shape):
        shape = tf.TensorShape(input_shape)
        return tf.TensorShape([shape[0], shape[-1]])

    def get_config(self):
        config = super().get_config()
        config.update({"mode": self.mode})
        return config


@keras.utils.register_keras_serializable(package="models")
class TargetAttention(keras.layers.Layer):
    """DIN target attention (Zhou et al. 2018, "Deep Interest Network for Click-Through Rate
    Prediction"): a sequence's keys weighted by their relevance to a query item.

    For a query ``q`` (the target item's embedding, from the same table as the sequence) and
    keys ``k_j``::

        a_j = MLP([q, k_j, q - k_j, q * k_j])      (a scalar per position; last layer linear)
        out = sum_j m_j w_j a_j k_j

    with the mask ``m_j`` (padding has ``a_j`` multiplied by 0) and optional weights ``w_j``
    (1 when not given). As in DIN there is no softmax over the positions: the scores are not
    normalised, so the output keeps the intensity of the user's interest (and no softmax ever
    runs over padding). The MLP's hidden layers use ``activation`` (default ReLU, standing in
    for DIN's PReLU/Dice).

    The first layer, ``[q, k, q - k, q k] W + b`` with ``W = [W_q; W_k; W_d; W_p]`` (4d x h),
    is computed as ``q (W_q + W_d) + [k, q k] [W_k - W_d; W_p] + b``: the query's part once
    per row instead of once per position, the same function with half the multiplications.

    Example:

    >>> att = TargetAttention([8])
    >>> att(tf.zeros([2, 4]), tf.zeros([2, 5, 4]), mask=tf.ones([2, 5])).shape
    TensorShape([2, 4])

    Args:
      hidden_units: widths of the attention MLP's hidden layers (default ``[36]``, DIN's).
      activation: their activation (a Keras activation name).

    Call arguments:
      query: float ``(batch, d)``.
      keys: float ``(batch, L, d)``.
      mask: bool or 0/1 ``(batch, L)``: 1 on a value, 0 on padding.
      weights: optional float ``(batch, L)``, multiplying ``a_j``.

    Returns:
      float ``(batch, d)``.
    """

    def __init__(self, hidden_units=(36,), activation: str = "relu", **kwargs):
        super().__init__(**kwargs)
        self.hidden_units = check_units(list(hidden_units), "hidden_units")
        if not self.hidden_units:
            raise ValueError("`hidden_units` must name at least one hidden layer. Received: hidden_units=[]")
        self.activation = activation
        self._activation = keras.activations.get(activation)
        self._hidden = [keras.layers.Dense(u, activation=activation, name=f"dense_{i + 1}")
                        for i, u in enumerate(self.hidden_units[1:])]
        self._score = keras.layers.Dense(1, name="score")

    def build(self, input_shape):
        d = tf.TensorShape(input_shape)[-1]
        if d is None:
            raise ValueError(f"the query's last dimension must be known. Received: input_shape={input_shape}")
        d, h = int(d), self.hidden_units[0]
        self.d = d
        # The first layer's kernel over [q, k, q - k, q * k]: rows [0,d) q, [d,2d) k, [2d,3d) q-k, [3d,4d) q*k.
        self.kernel = self.add_weight(name="kernel", shape=(4 * d, h), initializer="glorot_uniform", trainable=True)
        self.bias = self.add_weight(name="bias", shape=(h,), initializer="zeros", trainable=True)
        super().build(input_shape)

    def scores(self, query, keys):
        """``a_j`` before the mask, ``(batch, L)``."""
        d = self.d
        w_q, w_k, w_d, w_p = (self.kernel[i * d:(i + 1) * d] for i in range(4))
        query = tf.cast(query, self.kernel.dtype)
        keys = tf.cast(keys, self.kernel.dtype)
        per_row = tf.matmul(query, w_q + w_d) + self.bias  # (batch, h)
        per_key = tf.concat([keys, query[:, None, :] * keys], axis=-1)  # (batch, L, 2d)
        h = self._activation(tf.einsum("blc,ch->blh", per_key, tf.concat([w_k - w_d, w_p], axis=0))
                             + per_row[:, None, :])
        for dense in self._hidden:
            h = dense(h)
        return tf.squeeze(self._score(h), axis=-1)

    def call(self, query, keys, mask, weights=None):
        a = self.scores(query, keys) * _effective_weights(mask, weights, self.kernel.dtype)  # (batch, L)
        return tf.einsum("bl,bld->bd", a, tf.cast(keys, self.kernel.dtype))

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"hidden_units": list(self.hidden_units), "activation": self.activation})
        return config
