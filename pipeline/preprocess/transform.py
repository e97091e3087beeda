"""The TF Transform ``preprocessing_fn``: the graph that runs in preprocessing and in the served model.

Inputs are the typed records of ``core.feature_specs.raw_tft_feature_spec`` (single-valued
columns dense ``(batch,)``; list columns and their weight columns ``SparseTensor``s
``(batch, None)``, as ``tf.io.parse_example`` gives them from ``VarLenFeature``s). Outputs
(names, dtypes and shapes per ``core.feature_specs.transformed_feature_spec``):

  * categorical ``c`` (int64 ``(batch,)``): a missing value (``MISSING_CATEGORY``) is first
    mapped to the token ``MISSING_TOKEN`` (a category of its own), then

    - with a vocabulary (the default): ``tft.vocabulary`` over the training split with
      ``vocab.min_count`` (frequency threshold), ``vocab.top_k`` and ``vocab.oov_buckets``,
      then ``tft.apply_vocabulary``: ids in ``[0, vocab size + oov buckets)``. When lists
      share ``c``'s table (``shares: c``) the vocabulary is computed over ``c``'s values AND
      every sharing list's values, so one value has one id in all of them;
    - hashed (``data.hash_buckets: {c: N}``): ``tf.strings.to_hash_bucket_fast(salt + value, N)``
      with ``salt = data.hash_salt``: FarmHash64, the same id in every run, process and
      runner, no vocabulary pass; ids in ``[0, N)``.

  * list ``l`` (``data.lists``): its values get ids like a categorical: from its own table
    (its vocabulary over its values, and those of lists sharing it, or its hash buckets) or,
    with ``shares: X``, from ``X``'s (``core.config.table_owner``: ``X``'s vocabulary or
    ``X``'s hashing). Then the list is truncated to ``L = max_length`` values: a
    ``multi_valued`` list and a ``sequence`` with ``order: recent_first`` keep their FIRST
    ``L`` values, a ``sequence`` with ``order: recent_last`` its LAST ``L`` (the most recent),
    in their order. Output ``l``: int64 ``(batch, L)``, the ids left-aligned and padded with
    ``PAD_ID`` (-1) on the right; an empty list is all ``PAD_ID``.
    With ``weights``, also ``l__weights`` (``core.features.list_weights_key``): float32
    ``(batch, L)``, the weight of each kept value (truncated like the ids), 0 on padding.
    ``weights: tokens``: each value is a ``value:weight`` token split at its LAST ``:`` in
    the graph (``value`` gets the id, ``tf.strings.to_number(weight)`` the weight; the same
    split as ``core.records``, and a served model parses the same tokens);
    ``weights: <column>``: the parallel float column, one weight per value.

  * cross ``x`` (``data.crosses``, named ``core.config.cross_name``): int64 ``(batch,)``
    ``tf.strings.to_hash_bucket_fast(join([salt, a, b, ...], separator="\\x1f"), N)`` of the
    crossed columns' raw strings (missing values mapped to ``MISSING_TOKEN`` first);
    ``N = hash_buckets``.

  * numeric ``n``: float32 ``(batch,)``, z-score (``tft.scale_to_z_score``), after a signed
    ``log1p`` (``sign(x) * log1p(|x|)``, equal to log1p for x >= 0 and defined for every x)
    where listed in ``numeric.log1p``; with ``numeric.quantile_buckets > 0`` also int64
    ``n_bucket`` (``tft.bucketize`` on the same value).

  * ``numeric.piecewise_linear_bins = B > 0``: also ``n_ple``, float32 ``(batch, B)``, the
    piecewise-linear encoding of Gorishniy et al. 2022 ("On Embeddings for Numerical Features
    in Tabular Deep Learning") of the same (log1p'd) value ``x``. Bin edges
    ``b_0 <= b_1 <= ... <= b_B``: ``b_0 = tft.min(x)``, ``b_B = tft.max(x)`` and the ``B - 1``
    approximate quantile boundaries ``tft.quantiles(x, B, epsilon)`` (``epsilon =
    min(1 / B, 0.01)``, as ``tft.bucketize``) between them, over the training split. For bin
    ``i = 1..B`` of width ``w_i = b_i - b_{i-1}``::

        e_i = clip((x - b_{i-1}) / w_i, 0, 1)      if w_i > 0
        e_i = 1 if x >= b_i else 0                 if w_i = 0  (merged boundaries)

    i.e. 1 for the bins entirely below ``x``, the fraction of the bin holding ``x``, 0 above.
    Choices: the first and last bins are clipped on the outside too (every component is in
    ``[0, 1]``; a served value below the training minimum encodes as all zeros, one above
    the maximum as all ones), and boundaries that coincide (census-income's many zeros
    give several equal quantiles) are kept as zero-width bins that act as a step at the
    boundary (the limit of the ramp as its width goes to 0), so the width is always ``B``
    and the encoding stays monotone (non-decreasing in ``x`` in every component).

  * ``label_<task>``, ``example_weight`` (1.0 without a weight column), ``group_id`` (a
    fingerprint of the group column), passthrough columns as float32.

Every output depends only on its own raw columns (a shared vocabulary is an analysis-time
constant), so a serving request carrying only the features still transforms (TFT drops
outputs whose inputs are absent), and a model reading a subset of the features needs only
their raw columns.
"""
from __future__ import annotations

import contextlib

import tensorflow as tf
import tensorflow_transform as tft

from core.config import WEIGHTS_TOKENS, cross_name, table_owner
from core.features import (BUCKET_SUFFIX, GROUP_KEY, MISSING_CATEGORY, PAD_ID, PLE_SUFFIX, WEIGHT_KEY, label_key,
                           list_weights_key)

MISSING_TOKEN = "__MISSING__"
CROSS_SEPARATOR = "\x1f"  # joins the salt and a cross's values before hashing (ASCII unit separator)
_GROUP_BUCKETS = 2**62


def vocabulary_name(column: str) -> str:
    """File name of a categorical column's (or a list's own) vocabulary in the transform output's assets."""
    return f"vocab_{column}"


def signed_log1p(x):
    return tf.sign(x) * tf.math.log1p(tf.abs(x))


def ple_epsilon(bins: int) -> float:
    """The quantile error tolerance of the piecewise-linear encoding (``tft.bucketize``'s default)."""
    return min(1.0 / bins, 0.01)


def hash_ids(values, buckets: int, salt: str = ""):
    """``to_hash_bucket_fast(salt + value, buckets)``: the ids of a hashed feature (int64)."""
    if salt:
        values = tf.strings.join([salt, values])
    return tf.strings.to_hash_bucket_fast(values, buckets)


def cross_ids(columns: list, buckets: int, salt: str = ""):
    """The hashed cross of the (missing-mapped) string tensors ``columns`` (int64)."""
    joined = tf.strings.join([tf.fill(tf.shape(columns[0]), salt)] + list(columns), separator=CROSS_SEPARATOR)
    return tf.strings.to_hash_bucket_fast(joined, buckets)


def split_weight_tokens(tokens):
    """``value:weight`` tokens -> (values, float32 weights), split at the LAST ``:``.

    An empty token gets value ``''`` and weight 0: preprocess dead-letters empty tokens, so in
    the graph the only one is what TF Transform feeds for an absent list column (one ``''``
    per row) when a model that does not read the list is served without it; a
    ``to_number('')`` there would fail every request."""
    values = tf.strings.regex_replace(tokens, ":[^:]*$", "")
    text = tf.strings.regex_replace(tokens, "^.*:", "")
    weights = tf.strings.to_number(tf.where(tf.equal(tokens, ""), tf.constant("0"), text), tf.float32)
    return values, weights


def piecewise_linear(x, edges, bins: int):
    """The piecewise-linear encoding (module docstring) of ``x`` ``(batch,)`` over the sorted
    bin ``edges`` ``(bins + 1,)``: float32 ``(batch, bins)``."""
    edges = tf.reshape(tf.cast(edges, tf.float32), [bins + 1])
    left, right = edges[:-1], edges[1:]
    width = right - left
    x = tf.expand_dims(tf.cast(x, tf.float32), -1)
    ramp = tf.clip_by_value((x - left) / tf.where(width > 0, width, tf.ones_like(width)), 0.0, 1.0)
    step = tf.cast(x >= right, tf.float32)
    return tf.reshape(tf.where(width > 0, ramp, step), [-1, bins])


def _missing_mapped(x):
    return tf.where(tf.equal(x, MISSING_CATEGORY), tf.constant(MISSING_TOKEN), x)


def ragged_from_parsed(sparse):
    """A parsed list as a ``RaggedTensor`` ``(batch, None)``.

    ``sparse`` is what parsing a variable-length feature gives (and what TF Transform feeds
    the analysis): row-major, the column indices of each row ``0..n-1``. For such input this
    equals ``tf.RaggedTensor.from_sparse``, built from the row ids alone, without the ops that
    re-check the ordering on every served request (two asserts in ``tf.cond``s and ~20 slices
    and comparisons per list)."""
    return tf.RaggedTensor.from_value_rowids(sparse.values, sparse.indices[:, 0], nrows=sparse.dense_shape[0],
                                             validate=False)


def apply_vocabulary(values, vocabulary, oov_buckets: int, vocab_filename: str):
    """``tft.apply_vocabulary(values, vocabulary, num_oov_buckets=oov_buckets)``: int64 ids,
    a value's line in the vocabulary file, an out-of-vocabulary value ``size + hash % oov_buckets``.

    With one OOV bucket (the default) every out-of-vocabulary value gets ``size``, so the
    lookup is one table op and a select against the vocabulary size (an analysis-time
    constant, ``tft.experimental.get_vocabulary_size_by_name``) instead of the table op, a
    string hash, a table-size op, an add, a compare and a select: the same ids."""
    if oov_buckets != 1:
        return tft.apply_vocabulary(values, vocabulary, num_oov_buckets=oov_buckets)
    size = tft.experimental.get_vocabulary_size_by_name(vocab_filename)

    def lookup(x, path):
        with contextlib.ExitStack() as stack:
            if tf.inside_function() and (isinstance(path, (str, bytes)) or
                                         (tf.is_tensor(path) and not tf.is_symbolic_tensor(path))):
                # The final transform graph gets the vocabulary's path as a constant: the
                # table is created (and its file read) once, outside the function, as
                # TF Transform does for its own tables; inside it, every call would re-read it.
                stack.enter_context(tf.init_scope())
            table = tf.lookup.StaticHashTable(tf.lookup.TextFileInitializer(
                path, key_dtype=x.dtype, key_index=tf.lookup.TextFileIndex.WHOLE_LINE, value_dtype=tf.int64,
                value_index=tf.lookup.TextFileIndex.LINE_NUMBER), default_value=-1)
        found = table.lookup(x)
        return tf.where(found < 0, tf.cast(size, tf.int64), found), size + 1

    return tft.apply_vocabulary(values, vocabulary, lookup_fn=lookup)


def z_score(x):
    """``tft.scale_to_z_score(x)`` of a dense float ``x``: ``(x - mean) / std`` over the
    training split, ``x - mean`` where ``std`` is 0. The zero guard is applied to the
    analysis-time constant (``std`` replaced by 1), not per value, so a served request runs a
    subtract and a divide; the values are TF Transform's bit for bit (a division by 1 is exact)."""
    mean, var = tft.mean(x), tft.var(x)
    std = tf.sqrt(var)
    return (tf.cast(x, mean.dtype) - mean) / tf.where(tf.not_equal(std, 0), std, tf.ones_like(std))


def _pad(ragged, length: int, default):
    return ragged.to_tensor(default_value=tf.constant(default, ragged.dtype), shape=[None, length])


def make_preprocessing_fn(cfg):
    """The ``preprocessing_fn(inputs) -> outputs`` for ``cfg`` (see the module docstring)."""
    d = cfg.data
    vocab = cfg.preprocess.vocab
    numeric_cfg = cfg.preprocess.numeric
    categorical = list(d.categorical)
    numeric = list(d.numeric)
    lists = list(d.lists)
    hashed = dict(d.hash_buckets)
    salt = d.hash_salt
    crosses = [(cross_name(c), list(c.columns), c.hash_buckets) for c in d.crosses]
    log1p = set(numeric_cfg.log1p)
    buckets = numeric_cfg.quantile_buckets
    ple_bins = numeric_cfg.piecewise_linear_bins
    tasks = [(t.name, t.label) for t in d.tasks]
    weight, group, passthrough = d.weight_column, d.group_column, list(d.passthrough)
    # Each table (a categorical, or a list that shares nothing) and the lists that use it.
    owners = categorical + [f.name for f in lists if table_owner(d, f.name) == f.name]
    sharers = {o: [f.name for f in lists if f.name != o and table_owner(d, f.name) == o] for o in owners}

    def preprocessing_fn(inputs):
        outputs = {}
        dense = {c: _missing_mapped(inputs[c]) for c in categorical}
        # list name -> (ragged values, ragged float32 weights or None)
        ragged = {}
        for f in lists:
            values = ragged_from_parsed(inputs[f.name])
            weights = None
            if f.weights == WEIGHTS_TOKENS:
                v, w = split_weight_tokens(values.flat_values)
                values, weights = values.with_flat_values(v), values.with_flat_values(w)
            elif f.weights:
                weights = tf.cast(ragged_from_parsed(inputs[f.weights]), tf.float32)
            ragged[f.name] = (values, weights)

        def flat(name):
            return dense[name] if name in dense else ragged[name][0].flat_values

        ids = {}  # feature -> int64 ids of ``flat(feature)``
        for owner in owners:
            members = [owner] + sharers[owner]
            if owner in hashed:
                for m in members:
                    ids[m] = hash_ids(flat(m), hashed[owner], salt)
                continue
            analysed = [flat(m) for m in members]
            vocabulary = tft.vocabulary(
                tf.concat(analysed, axis=0) if len(analysed) > 1 else analysed[0],
                top_k=vocab.top_k, frequency_threshold=vocab.min_count if vocab.min_count > 1 else None,
                vocab_filename=vocabulary_name(owner))
            for m in members:
                ids[m] = apply_vocabulary(flat(m), vocabulary, vocab.oov_buckets, vocabulary_name(owner))

        for c in categorical:
            outputs[c] = ids[c]
        for f in lists:
            values, weights = ragged[f.name]
            kept = values.with_flat_values(ids[f.name])
            L = f.max_length
            if f.kind == "sequence" and f.order == "recent_last":
                kept = kept[:, -L:]
                weights = weights[:, -L:] if weights is not None else None
            else:
                kept = kept[:, :L]
                weights = weights[:, :L] if weights is not None else None
            outputs[f.name] = _pad(kept, L, PAD_ID)
            if weights is not None:
                outputs[list_weights_key(f.name)] = _pad(weights, L, 0.0)
        for name, columns, n in crosses:
            outputs[name] = cross_ids([dense[c] for c in columns], n, salt)
        for n in numeric:
            x = tf.cast(inputs[n], tf.float32)
            if n in log1p:
                x = signed_log1p(x)
            outputs[n] = z_score(x)
            if buckets > 0:
                outputs[n + BUCKET_SUFFIX] = tft.bucketize(x, buckets)
            if ple_bins > 0:
                inner = tf.reshape(tft.quantiles(x, ple_bins, ple_epsilon(ple_bins)), [-1])
                edges = tf.sort(tf.concat([tf.reshape(tft.min(x), [1]), inner, tf.reshape(tft.max(x), [1])], 0))
                outputs[n + PLE_SUFFIX] = piecewise_linear(x, edges, ple_bins)
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


def piecewise_features(cfg) -> dict[str, int]:
    """``<numeric>_ple`` -> number of bins, when a piecewise-linear encoding is configured."""
    b = cfg.preprocess.numeric.piecewise_linear_bins
    return {n + PLE_SUFFIX: b for n in cfg.data.numeric} if b > 0 else {}


def cross_features(cfg) -> dict[str, int]:
    """``<cross>`` -> its hash buckets."""
    return {cross_name(c): c.hash_buckets for c in cfg.data.crosses}
