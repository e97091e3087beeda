"""MLP: the dense ReLU stack every backbone, expert and tower is made of."""
from __future__ import annotations

import tf_keras as keras


def check_units(units, name: str = "units") -> list[int]:
    """Validates a list of layer widths; raises ValueError naming ``name`` and the value."""
    if not isinstance(units, (list, tuple)) or any(int(u) < 1 for u in units):
        raise ValueError(f"`{name}` must be a list of positive layer widths. Received: {name}={units!r}")
    return [int(u) for u in units]


@keras.utils.register_keras_serializable(package="models")
class MLP(keras.layers.Layer):
    """``x -> relu(W_k ... relu(W_1 x))`` with optional dropout after each layer.

    Example:

    >>> MLP([32, 16])(tf.zeros([4, 10])).shape
    TensorShape([4, 16])

    Args:
      units: widths of the hidden layers, each >= 1 (empty: the identity).
      dropout: dropout rate after each layer, in [0, 1).
      l2: L2 penalty on the kernels.

    Raises:
      ValueError: a width < 1 or a dropout rate outside [0, 1).
    """

    def __init__(self, units, dropout: float = 0.0, l2: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.units = check_units(units)
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1). Received: dropout={dropout}")
        self.dropout = float(dropout)
        self.l2 = float(l2)
        reg = keras.regularizers.l2(self.l2) if self.l2 > 0 else None
        self._dense = [keras.layers.Dense(u, activation="relu", kernel_regularizer=reg, name=f"dense_{i}")
                       for i, u in enumerate(self.units)]
        self._dropout = [keras.layers.Dropout(self.dropout) for _ in self.units] if self.dropout > 0 else []

    def call(self, x, training=None):
        for i, dense in enumerate(self._dense):
            x = dense(x)
            if self._dropout:
                x = self._dropout[i](x, training=training)
        return x

    def get_config(self):
        config = super().get_config()
        config.update({"units": list(self.units), "dropout": self.dropout, "l2": self.l2})
        return config
