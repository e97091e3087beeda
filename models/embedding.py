"""FeatureEmbedding: a dict of transformed features -> one dense input vector."""
from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

from core.features import ListInfo, list_weights_key
from models.numeric_embedding import PiecewiseLinearEmbedding
from models.pooling import ListPooling, TargetAttention

ATTENTION = "attention"


def _list_dict(name: str, value) -> dict:
    """A ``ListInfo`` (or its dict) as a normalised dict, ``table`` filled in."""
    info = value if isinstance(value, ListInfo) else ListInfo(**dict(value))
    d = info.to_dict()
    d["cardinality"], d["length"] = int(d["cardinality"]), int(d["length"])
    d["weighted"] = bool(d["weighted"])
    d["table"] = d["table"] or name
    return d


@keras.utils.register_keras_serializable(package="models")
class FeatureEmbedding(keras.layers.Layer):
    """Embeds every model feature and concatenates the parts into one vector.

    The output is, in this order::

        concat(E_c[c] for categorical c,                  (batch, d_c) each
               pool_l(E_t(l)[ids_l]) for list l,          (batch, d_t(l)) each
               x_1 .. x_m for numerics,                   (batch, m)
               relu(PLE(x_p) W_p + b_p) for '<n>_ple' p)  (batch, embedding_dim) each

    * A categorical feature ``c`` (incl. hashed ids, crosses and ``<n>_bucket``) has its own
      ``n_c x d_c`` table, ``d_c = min(embedding_dim, n_c)`` (a 3-category feature never gets
      more dimensions than categories).
    * A list ``l`` (``core.features.ListInfo``: ids ``(batch, L)`` padded with ``PAD_ID``)
      looks its ids up in the table of ``ListInfo.table``: a shared list uses its owner's
      table (``hist_items`` and ``item_id``: the same rows); an owner
      that is not a feature of this layer still gets its table, sized by the list's
      cardinality. Padding (any negative id) is looked up at ``max(id, 0)`` and masked out.
      Pooling: ``ListPooling`` (sum | mean | sqrtn, weighted by ``<l>__weights`` when the list
      is weighted) or, for ``pooling: attention``, ``TargetAttention`` queried by the embedding
      of ``ListInfo.target`` (a categorical feature using the same table).
    * Numerics are used as they come (already normalised).
    * A piecewise-linear encoding ``<n>_ple`` ``(batch, bins)`` is embedded by
      ``PiecewiseLinearEmbedding`` (a per-feature linear map + ReLU, width ``embedding_dim``);
      the features with the same number of bins share one batched layer.

    Tables of the same width are row blocks of one variable (``embeddings_<d>d``, table
    ``t`` at rows ``[offset_t, offset_t + n_t)``; ``table(t)`` reads its block): each width is
    read by one gather per call, over every categorical feature and list of its tables, and
    updated by one sparse gradient, instead of one of each per feature (a census teacher
    with 32 categorical features traced ~3,300 ops per train step, 2,048 of them Adam
    updates of the separate tables). Ids must lie in ``[0, n_t)``, as preprocess writes them.

    Example:

    >>> layer = FeatureEmbedding({"device": 4}, ["price"], embedding_dim=8)
    >>> layer({"device": tf.constant([0, 3]), "price": tf.constant([0.1, -1.0])}).shape
    TensorShape([2, 5])

    Args:
      cardinalities: categorical feature name -> number of ids (vocabulary + OOV), >= 1.
      numeric: names of the float features.
      embedding_dim: the embedding width (capped per table as above; PLE width).
      l2: L2 penalty on the embedding tables.
      lists: list feature name -> ``ListInfo`` or its dict (``FeatureInfo.lists``).
      piecewise: ``'<n>_ple'`` -> number of bins (``FeatureInfo.piecewise``).
      attention_units: hidden widths of the target-attention MLP (``TargetAttention``).
      attention_activation: their activation.
      ple_activation: the activation after the PLE linear map (``relu``; ``linear`` for none).

    Call arguments:
      features: dict name -> tensor: ``(batch,)`` int64 ids / float32 values, ``(batch, L)``
        int64 list ids and float32 list weights, ``(batch, bins)`` float32 PLE; extra keys
        (labels, weights) are ignored.

    Returns:
      float32 tensor ``(batch, output_dim)``.

    Raises:
      ValueError: no features, a cardinality < 1, embedding_dim < 1, a list larger than its
        table, or an attention list whose target is not a categorical feature with its table.
    """

    def __init__(self, cardinalities: dict, numeric: list, embedding_dim: int, l2: float = 0.0, lists=None,
                 piecewise=None, attention_units=(36,), attention_activation: str = "relu",
                 ple_activation: str = "relu", **kwargs):
        super().__init__(**kwargs)
        cardinalities, numeric = dict(cardinalities or {}), list(numeric or [])
        lists, piecewise = dict(lists or {}), dict(piecewise or {})
        if not cardinalities and not numeric and not lists and not piecewise:
            raise ValueError("FeatureEmbedding needs at least one categorical, list, numeric or PLE feature. "
                             "Received: cardinalities={}, numeric=[]")
        if embedding_dim < 1:
            raise ValueError(f"`embedding_dim` must be >= 1. Received: embedding_dim={embedding_dim}")
        for name, n in cardinalities.items():
            if int(n) < 1:
                raise ValueError(f"Cardinality of categorical feature '{name}' must be >= 1. Received: {n}")
        self.cardinalities = {str(k): int(v) for k, v in cardinalities.items()}
        self.numeric = [str(n) for n in numeric]
        self.embedding_dim = int(embedding_dim)
        self.l2 = float(l2)
        self.lists = {str(k): _list_dict(str(k), v) for k, v in lists.items()}
        self.piecewise = {str(k): int(v) for k, v in piecewise.items()}
        self.attention_units = [int(u) for u in attention_units]
        self.attention_activation = attention_activation
        self.ple_activation = ple_activation

        # Tables: every categorical feature's, then those of lists whose owner is not one.
        tables = dict(self.cardinalities)
        for name, li in self.lists.items():
            if li["cardinality"] < 1 or li["length"] < 1:
                raise ValueError(f"List feature '{name}' needs cardinality >= 1 and length >= 1. Received: {li}")
            t = li["table"]
            if t in self.cardinalities:
                if li["cardinality"] > self.cardinalities[t]:
                    raise ValueError(f"List feature '{name}' has {li['cardinality']} ids but shares the table of "
                                     f"'{t}', which has {self.cardinalities[t]}")
            else:
                tables[t] = max(tables.get(t, 0), li["cardinality"])
            if li["pooling"] == ATTENTION:
                if li["target"] not in self.cardinalities or li["target"] != t:
                    raise ValueError(f"List feature '{name}' attends with target {li['target']!r}, which must be a "
                                     f"categorical feature of this embedding using the list's table '{t}'. "
                                     f"Received: categorical={sorted(self.cardinalities)}")
            elif li["pooling"] not in ("sum", "mean", "sqrtn"):
                raise ValueError(f"List feature '{name}': unknown pooling {li['pooling']!r}")
        for name, bins in self.piecewise.items():
            if bins < 1:
                raise ValueError(f"PLE feature '{name}' needs >= 1 bins. Received: {bins}")
        self.tables = tables
        reg = keras.regularizers.l2(self.l2) if self.l2 > 0 else None
        # One variable per table width; each table a block of its rows (first-appearance order).
        widths: dict[int, list] = {}
        offsets = {}
        for name, n in tables.items():
            block = widths.setdefault(self.table_dim(name), [])
            offsets[name] = sum(tables[t] for t in block)
            block.append(name)
        self._offsets = offsets
        self._embeddings = {
            f"{d}d": keras.layers.Embedding(sum(tables[t] for t in block), d, embeddings_regularizer=reg,
                                            name=f"embeddings_{d}d")
            for d, block in widths.items()
        }
        # One lookup per width: (variable key, [(table, categorical features, lists)] it reads).
        lookups = []
        for d, block in widths.items():
            reads = [(t, [t] if t in self.cardinalities else [], [n for n, li in self.lists.items() if li["table"] == t])
                     for t in block]
            lookups.append((f"{d}d", reads))
        self._lookups = lookups
        self._pooling = {n: (TargetAttention(self.attention_units, self.attention_activation, name=f"attention_{n}")
                             if li["pooling"] == ATTENTION else ListPooling(li["pooling"], name=f"pool_{n}"))
                         for n, li in self.lists.items()}
        groups: dict[int, list] = {}
        for name, bins in self.piecewise.items():
            groups.setdefault(bins, []).append(name)
        self._ple_groups = list(groups.items())  # [(bins, [names])], in first-appearance order
        self._ple = [PiecewiseLinearEmbedding(self.embedding_dim, activation=self.ple_activation,
                                              name=f"piecewise_linear_{bins}") for bins, _ in self._ple_groups]

    @classmethod
    def from_feature_info(cls, feature_info, embedding_dim: int, l2: float = 0.0, **kwargs) -> "FeatureEmbedding":
        """The embedding of every model feature ``feature_info`` (``core.features.FeatureInfo``)
        describes: categorical, lists, numerics and PLE (select a subset first with
        ``FeatureInfo.select``)."""
        return cls(feature_info.categorical, feature_info.numeric, embedding_dim, l2=l2,
                   lists={k: v.to_dict() for k, v in feature_info.lists.items()},
                   piecewise=dict(feature_info.piecewise), **kwargs)

    def feature_info(self):
        """The ``core.features.FeatureInfo`` of this layer's inputs (no tasks): its
        ``model_inputs`` are the tensors ``call`` reads, ``serving_keras_inputs`` their Inputs."""
        from core.features import FeatureInfo

        return FeatureInfo(categorical=dict(self.cardinalities), numeric=list(self.numeric),
                           lists={n: ListInfo(**li) for n, li in self.lists.items()},
                           piecewise=dict(self.piecewise))

    def table_dim(self, table: str) -> int:
        """Width of a table: ``min(embedding_dim, cardinality)``."""
        return min(self.embedding_dim, self.tables[table])

    def table_variable(self, table: str):
        """The variable holding ``table`` (shared with the other tables of its width)."""
        return self._embeddings[f"{self.table_dim(table)}d"].embeddings

    def table(self, table: str) -> tf.Tensor:
        """The rows of ``table``: ``(n_table, table_dim)``."""
        start = self._offsets[table]
        return self.table_variable(table)[start:start + self.tables[table]]

    @property
    def output_dim(self) -> int:
        return (sum(self.table_dim(n) for n in self.cardinalities)
                + sum(self.table_dim(li["table"]) for li in self.lists.values())
                + len(self.numeric) + self.embedding_dim * len(self.piecewise))

    def _input_names(self) -> list:
        names = list(self.cardinalities)
        for n, li in self.lists.items():
            names.append(n)
            if li["weighted"]:
                names.append(list_weights_key(n))
        return names + self.numeric + list(self.piecewise)

    def call(self, features):
        missing = [n for n in self._input_names() if n not in features]
        if missing:
            raise ValueError(f"FeatureEmbedding: input features {missing} are missing. Received keys: {sorted(features)}")
        embedded, masks = {}, {}
        for key, reads in self._lookups:
            ids, sizes, names = [], [], []
            for table, cats, lists in reads:
                offset = tf.constant(self._offsets[table], tf.int64)
                for c in cats:  # (batch,) -> (batch, 1)
                    ids.append(tf.reshape(tf.cast(features[c], tf.int64), [-1, 1]) + offset)
                    sizes.append(1)
                    names.append(c)
                for n in lists:  # (batch, L)
                    raw = tf.cast(features[n], tf.int64)
                    masks[n] = raw >= 0  # PAD_ID (-1) and any other negative id is padding
                    ids.append(tf.maximum(raw, 0) + offset)
                    sizes.append(self.lists[n]["length"])
                    names.append(n)
            looked_up = self._embeddings[key](tf.concat(ids, axis=1) if len(ids) > 1 else ids[0])  # (batch, sum sizes, d)
            parts = tf.split(looked_up, sizes, axis=1) if len(ids) > 1 else [looked_up]
            for name, part in zip(names, parts):
                embedded[name] = tf.squeeze(part, axis=1) if name in self.cardinalities else part
        out = [embedded[c] for c in self.cardinalities]
        for n, li in self.lists.items():
            weights = tf.cast(features[list_weights_key(n)], tf.float32) if li["weighted"] else None
            if li["pooling"] == ATTENTION:
                out.append(self._pooling[n](embedded[li["target"]], embedded[n], mask=masks[n], weights=weights))
            else:
                out.append(self._pooling[n](embedded[n], mask=masks[n], weights=weights))
        if self.numeric:
            out.append(tf.stack([tf.cast(features[n], tf.float32) for n in self.numeric], axis=-1))
        for layer, (bins, names) in zip(self._ple, self._ple_groups):
            x = tf.stack([tf.cast(features[n], tf.float32) for n in names], axis=1)  # (batch, F, bins)
            out.append(tf.reshape(layer(x), [-1, len(names) * self.embedding_dim]))
        return tf.concat(out, axis=-1) if len(out) > 1 else out[0]

    def get_config(self):
        config = super().get_config()
        config.update({"cardinalities": dict(self.cardinalities), "numeric": list(self.numeric),
                       "embedding_dim": self.embedding_dim, "l2": self.l2,
                       "lists": {n: dict(li) for n, li in self.lists.items()}, "piecewise": dict(self.piecewise),
                       "attention_units": list(self.attention_units),
                       "attention_activation": self.attention_activation, "ple_activation": self.ple_activation})
        return config
