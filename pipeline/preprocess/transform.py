"""The TF Transform ``preprocessing_fn``: the graph that runs in preprocessing and in the served model.

Inputs are the typed records of ``core.feature_specs.raw_tft_feature_spec``; outputs (names
and dtypes per ``core.feature_specs.transformed_feature_spec``; every output a scalar per example):

  * categorical ``c``: ``tft.compute_and_apply_vocabulary`` over the training split with
    ``vocab.min_count`` (frequency threshold), ``vocab.top_k`` and ``vocab.oov_buckets``;
    ids in ``[0, vocab size + oov buckets)``. A missing value (``MISSING_CATEGORY``) is
    mapped to the token ``MISSING_TOKEN`` first, so it is a category of its own.
  * numeric ``n``: z-score (``tft.scale_to_z_score``), after a signed ``log1p``
    (``sign(x) * log1p(|x|)``, equal to log1p for x >= 0 and defined for every x) where listed
    in ``numeric.log1p``; with ``numeric.quantile_buckets > 0`` also ``n_bucket``
    (``tft.bucketize`` on the same value).
  * ``label_<task>``, ``example_weight`` (1.0 without a weight column), ``group_id`` (a
    fingerprint of the group column), passthrough columns as float32.

Labels, weight, group and passthrough outputs depend only on their own raw columns, so a
serving request carrying only the features still transforms (TFT drops outputs whose inputs
are absent).
"""
from __future__ import annotations

import tensorflow as tf
import tensorflow_transform as tft

from core.features import BUCKET_SUFFIX, GROUP_KEY, MISSING_CATEGORY, WEIGHT_KEY, label_key

MISSING_TOKEN = "__MISSING__"
_GROUP_BUCKETS = 2**62


def vocabulary_name(column: str) -> str:
    """File name of a categorical column's vocabulary in the transform output's assets."""
    return f"vocab_{column}"


def signed_log1p(x):
    return tf.sign(x) * tf.math.log1p(tf.abs(x))


def make_preprocessing_fn(cfg):
    """The ``preprocessing_fn(inputs) -> outputs`` for ``cfg`` (see the module docstring)."""
    d = cfg.data
    vocab = cfg.preprocess.vocab
    numeric_cfg = cfg.preprocess.numeric
    categorical = list(d.categorical)
    numeric = list(d.numeric)
    log1p = set(numeric_cfg.log1p)
    buckets = numeric_cfg.quantile_buckets
    tasks = [(t.name, t.label) for t in d.tasks]
    weight, group, passthrough = d.weight_column, d.group_column, list(d.passthrough)

    def preprocessing_fn(inputs):
        outputs = {}
        for c in categorical:
            x = inputs[c]
            x = tf.where(tf.equal(x, MISSING_CATEGORY), tf.constant(MISSING_TOKEN), x)
            outputs[c] = tft.compute_and_apply_vocabulary(
                x, top_k=vocab.top_k, frequency_threshold=vocab.min_count if vocab.min_count > 1 else None,
                num_oov_buckets=vocab.oov_buckets, vocab_filename=vocabulary_name(c))
        for n in numeric:
            x = tf.cast(inputs[n], tf.float32)
            if n in log1p:
                x = signed_log1p(x)
            outputs[n] = tft.scale_to_z_score(x)
            if buckets > 0:
                outputs[n + BUCKET_SUFFIX] = tft.bucketize(x, buckets)
        for name, column in tasks:
            outputs[label_key(name)] = tf.cast(inputs[column], tf.float32)
        if weight:
            outputs[WEIGHT_KEY] = tf.cast(inputs[weight], tf.float32)
        else:
            outputs[WEIGHT_KEY] = tf.ones_like(outputs[label_key(tasks[0][0])])
        if group:
            outputs[GROUP_KEY] = tf.strings.to_hash_bucket_fast(inputs[group], _GROUP_BUCKETS)
        for c in passthrough:
            outputs[c] = tf.cast(inputs[c], tf.float32)
        return outputs

    return preprocessing_fn


def bucket_features(cfg) -> dict[str, int]:
    """``<numeric>_bucket`` -> number of buckets, when quantile buckets are configured."""
    b = cfg.preprocess.numeric.quantile_buckets
    return {n + BUCKET_SUFFIX: b for n in cfg.data.numeric} if b > 0 else {}
