"""CrossNetwork: explicit feature crosses (DCN-v2) between the embedding and the backbone."""
from __future__ import annotations

from typing import Optional

import tensorflow_recommenders as tfrs
import tf_keras as keras


@keras.utils.register_keras_serializable(package="models")
class CrossNetwork(keras.layers.Layer):
    """A stack of DCN-v2 cross layers: ``x_{l+1} = x_0 * (W_l x_l + b_l) + x_l``.

    An MLP learns multiplicative feature interactions (e.g. a user x item affinity
    ``<u, i>``) only slowly; a cross layer represents every pairwise product of input
    coordinates directly, so ``<u, i>`` is one linear read-out of its output.

    Example:

    >>> cross = CrossNetwork(num_layers=2, projection_dim=16)
    >>> cross(tf.ones([4, 40])).shape
    TensorShape([4, 40])

    Args:
      num_layers: number of cross layers (>= 1).
      projection_dim: rank of each ``W_l`` (``None``: full rank).
      l2: L2 penalty on the cross kernels.

    Input shape: ``(batch, d)``.  Output shape: ``(batch, d)``.

    Raises:
      ValueError: num_layers < 1 or projection_dim < 1.
    """

    def __init__(self, num_layers: int, projection_dim: Optional[int] = None, l2: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if int(num_layers) < 1:
            raise ValueError(f"`num_layers` must be >= 1. Received: num_layers={num_layers}")
        if projection_dim is not None and int(projection_dim) < 1:
            raise ValueError(f"`projection_dim` must be >= 1 or None. Received: projection_dim={projection_dim}")
        self.num_layers = int(num_layers)
        self.projection_dim = None if projection_dim is None else int(projection_dim)
        self.l2 = float(l2)
        reg = keras.regularizers.l2(self.l2) if self.l2 > 0 else None
        self.crosses = [tfrs.layers.dcn.Cross(projection_dim=self.projection_dim, kernel_regularizer=reg, name=f"cross_{i}")
                        for i in range(self.num_layers)]

    def call(self, x0):
        x = x0
        for cross in self.crosses:
            x = cross(x0, x)
        return x

    def get_config(self):
        config = super().get_config()
        config.update({"num_layers": self.num_layers, "projection_dim": self.projection_dim, "l2": self.l2})
        return config
