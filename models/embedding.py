"""FeatureEmbedding: a dict of transformed features -> one dense input vector."""
from __future__ import annotations

import tensorflow as tf
import tf_keras as keras


@keras.utils.register_keras_serializable(package="models")
class FeatureEmbedding(keras.layers.Layer):
    """Embeds categorical ids and concatenates them with the numeric features.

    For categorical features ``c_1..c_k`` with cardinalities ``n_i`` and numerics
    ``x_1..x_m`` it computes ``concat(E_1[c_1], ..., E_k[c_k], x_1, ..., x_m)`` where
    ``E_i`` is an ``n_i x d_i`` table and ``d_i = min(embedding_dim, n_i)`` (a 3-category
    feature never gets more dimensions than categories).

    Example:

    >>> layer = FeatureEmbedding({"device": 4}, ["price"], embedding_dim=8)
    >>> layer({"device": tf.constant([0, 3]), "price": tf.constant([0.1, -1.0])}).shape
    TensorShape([2, 5])

    Args:
      cardinalities: categorical feature name -> number of ids (vocabulary + OOV), >= 1.
      numeric: names of the float features, used as they come (already normalised).
      embedding_dim: the embedding width of every categorical feature (capped as above).
      l2: L2 penalty on the embedding tables.

    Call arguments:
      features: dict name -> tensor of shape ``(batch,)`` (int64 ids / float32 values);
        extra keys (labels, weights) are ignored.

    Returns:
      float32 tensor ``(batch, output_dim)``.

    Raises:
      ValueError: no features, a cardinality < 1, or embedding_dim < 1.
    """

    def __init__(self, cardinalities: dict, numeric: list, embedding_dim: int, l2: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if not cardinalities and not numeric:
            raise ValueError("FeatureEmbedding needs at least one categorical or numeric feature. Received: cardinalities={}, numeric=[]")
        if embedding_dim < 1:
            raise ValueError(f"`embedding_dim` must be >= 1. Received: embedding_dim={embedding_dim}")
        for name, n in cardinalities.items():
            if int(n) < 1:
                raise ValueError(f"Cardinality of categorical feature '{name}' must be >= 1. Received: {n}")
        self.cardinalities = {str(k): int(v) for k, v in cardinalities.items()}
        self.numeric = [str(n) for n in numeric]
        self.embedding_dim = int(embedding_dim)
        self.l2 = float(l2)
        reg = keras.regularizers.l2(self.l2) if self.l2 > 0 else None
        self._embeddings = {
            name: keras.layers.Embedding(n, min(self.embedding_dim, n), embeddings_regularizer=reg, name=f"embedding_{name}")
            for name, n in self.cardinalities.items()
        }

    @classmethod
    def from_feature_info(cls, feature_info, embedding_dim: int, l2: float = 0.0, **kwargs) -> "FeatureEmbedding":
        """The embedding of every model input ``feature_info`` (``core.features.FeatureInfo``) describes."""
        return cls(feature_info.categorical, feature_info.numeric, embedding_dim, l2=l2, **kwargs)

    @property
    def output_dim(self) -> int:
        return sum(min(self.embedding_dim, n) for n in self.cardinalities.values()) + len(self.numeric)

    def call(self, features):
        missing = [n for n in list(self.cardinalities) + self.numeric if n not in features]
        if missing:
            raise ValueError(f"FeatureEmbedding: input features {missing} are missing. Received keys: {sorted(features)}")
        parts = [self._embeddings[n](tf.cast(features[n], tf.int64)) for n in self.cardinalities]
        parts += [tf.expand_dims(tf.cast(features[n], tf.float32), -1) for n in self.numeric]
        return tf.concat(parts, axis=-1) if len(parts) > 1 else parts[0]

    def get_config(self):
        config = super().get_config()
        config.update({"cardinalities": dict(self.cardinalities), "numeric": list(self.numeric),
                       "embedding_dim": self.embedding_dim, "l2": self.l2})
        return config
