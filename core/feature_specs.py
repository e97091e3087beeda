"""The feature contract: every ``tf.io`` spec, Keras ``Input``, dummy batch and ``tf.Example`` encoding.

The one module that turns the schema (the ``PipelineConfig``'s data section and the
``core.features.FeatureInfo`` of a preprocessing run) into the artefacts preprocessing,
training, distillation and serving exchange. A single-valued feature is a scalar per example
(a parsed batch holds ``(batch,)``); a list feature is variable-length in the raw data
(``tf.io.VarLenFeature``: a ``SparseTensor``) and fixed-width, padded, in the transformed data
(``(batch, max_length)``); a piecewise-linear encoding is ``(batch, bins)``.

* ``raw_tft_feature_spec(cfg)``: the typed raw records TF Transform analyses; raw
  categoricals and the group column string, numerics, labels, weight and passthrough float32.
* ``transformed_feature_spec(info)``: the transformed examples training reads; categorical
  ids and ``group_id`` int64, numerics, ``label_<task>``, ``example_weight``, passthrough float32.
* ``scored_feature_spec(info, tasks)``: the scored examples distillation reads; the
  transformed features plus ``teacher_logit_<task>`` float32 (``add_teacher_logits`` writes them).
* ``serving_feature_spec(cfg)``: a serving request's raw ``tf.Example``; categoricals string
  (default ``MISSING_CATEGORY``), numerics float32 (``encode_raw_example`` writes one).
* ``model_input_dtypes(info)`` / ``model_input_spec`` / ``serving_keras_inputs(info)``: the
  Keras model's inputs; categorical ids int64, numerics float32.
* ``dummy_batch(spec)``: a batch of default values of any of the above.

A new feature kind is added here (its specs), in the transform
(``pipeline/preprocess/transform.py``) and in the embedding (``models/embedding.py``).

TensorFlow (and tf_keras) are imported inside the functions: importing this module does not
load them (``python -m pipeline --help`` stays light).
"""
from __future__ import annotations

from typing import Iterable, Mapping, Union

from core.config import PipelineConfig, weight_columns
from core.features import (GROUP_KEY, MISSING_CATEGORY, PAD_ID, WEIGHT_KEY, FeatureInfo, label_key, list_weights_key,
                           teacher_logit_key)

INT64, FLOAT32, STRING = "int64", "float32", "string"


def _scalar(dtype, default_value=None):
    """``tf.io.FixedLenFeature([], dtype)``: one value per example (required without a default)."""
    import tensorflow as tf

    return tf.io.FixedLenFeature([], tf.as_dtype(dtype), default_value=default_value)


def _fixed(dtype, width: int, default_value=None):
    """``tf.io.FixedLenFeature([width], dtype)``: a padded list or an encoding vector."""
    import tensorflow as tf

    return tf.io.FixedLenFeature([width], tf.as_dtype(dtype), default_value=default_value)


def _var_len(dtype):
    """``tf.io.VarLenFeature(dtype)``: any number of values (a ``SparseTensor`` when parsed)."""
    import tensorflow as tf

    return tf.io.VarLenFeature(tf.as_dtype(dtype))


def _raw_list_specs(cfg: PipelineConfig) -> dict:
    """List columns: ``VarLenFeature(string)``; their weight columns ``VarLenFeature(float32)``."""
    spec = {f.name: _var_len(STRING) for f in cfg.data.lists}
    spec.update({column: _var_len(FLOAT32) for column in weight_columns(cfg.data).values()})
    return spec


def raw_tft_feature_spec(cfg: PipelineConfig) -> dict:
    """Spec of the typed raw records TF Transform analyses and transforms.

    Returns:
      dict raw column name -> ``tf.io.FixedLenFeature([], dtype)`` (no defaults: every
      column is present in a typed record): categorical columns ``tf.string``; numeric,
      label, weight and passthrough columns ``tf.float32``; the group column ``tf.string``
      (unless it is also a feature column). A column listed twice keeps its first dtype.
      List columns ``tf.io.VarLenFeature(tf.string)``, their weight columns
      ``tf.io.VarLenFeature(tf.float32)``.
    """
    d = cfg.data
    spec = {c: _scalar(STRING) for c in d.categorical}
    spec.update({c: _scalar(FLOAT32) for c in d.numeric})
    spec.update(_raw_list_specs(cfg))
    for t in d.tasks:
        spec[t.label] = _scalar(FLOAT32)
    if d.weight_column:
        spec[d.weight_column] = _scalar(FLOAT32)
    if d.group_column and d.group_column not in spec:
        spec[d.group_column] = _scalar(STRING)
    for c in d.passthrough:
        spec.setdefault(c, _scalar(FLOAT32))
    return spec


def transformed_feature_spec(feature_info: FeatureInfo) -> dict:
    """Spec of the transformed examples (the preprocess TFRecords and the transform graph's output).

    Returns:
      dict name -> ``tf.io.FixedLenFeature([], dtype)``:

      * ``<categorical>`` (incl. ``<numeric>_bucket`` and crosses): ``tf.int64`` id in
        ``[0, cardinality)``;
      * ``<list>``: ``FixedLenFeature([length], tf.int64)``, padded with ``PAD_ID``;
        ``<list>__weights``: ``FixedLenFeature([length], tf.float32)`` when weighted;
      * ``<numeric>``: ``tf.float32``; ``<numeric>_ple``: ``FixedLenFeature([bins], tf.float32)``;
      * ``label_<task>``: ``tf.float32`` 0/1;
      * ``example_weight``: ``tf.float32``, default 1.0 (examples written without a weight);
      * ``group_id``: ``tf.int64``, when ``feature_info.has_group``;
      * ``<passthrough>``: ``tf.float32``.
    """
    spec = {n: _scalar(INT64) for n in feature_info.categorical}
    for name, info in feature_info.lists.items():
        spec[name] = _fixed(INT64, info.length)
        if info.weighted:
            spec[list_weights_key(name)] = _fixed(FLOAT32, info.length)
    spec.update({n: _scalar(FLOAT32) for n in feature_info.numeric})
    spec.update({n: _fixed(FLOAT32, bins) for n, bins in feature_info.piecewise.items()})
    spec.update({label_key(t): _scalar(FLOAT32) for t in feature_info.tasks})
    spec[WEIGHT_KEY] = _scalar(FLOAT32, default_value=1.0)
    if feature_info.has_group:
        spec[GROUP_KEY] = _scalar(INT64)
    spec.update({n: _scalar(FLOAT32) for n in feature_info.passthrough})
    return spec


def scored_feature_spec(feature_info: FeatureInfo, tasks: Iterable[str]) -> dict:
    """Spec of the scored examples the students train on (``scores/<split>-*.tfrecord.gz``).

    Args:
      feature_info: the transformed features.
      tasks: names of the tasks whose teacher logit is parsed (empty: none).

    Returns:
      ``transformed_feature_spec(feature_info)`` plus ``teacher_logit_<task>``:
      ``tf.io.FixedLenFeature([], tf.float32)`` (required) per task.
    """
    spec = transformed_feature_spec(feature_info)
    spec.update({teacher_logit_key(t): _scalar(FLOAT32) for t in tasks})
    return spec


def serving_feature_spec(cfg: PipelineConfig, columns: Iterable[str] | None = None) -> dict:
    """Spec of a serving request's raw ``tf.Example`` (features only: no labels, weight or group).

    Args:
      cfg: the config.
      columns: the raw columns the served model reads (default: every feature column; a
        student that skips features needs fewer).

    Returns:
      dict raw column name -> spec: categorical columns ``FixedLenFeature([], tf.string)``
      with default ``MISSING_CATEGORY`` (a missing value is a category of its own); numeric
      columns ``FixedLenFeature([], tf.float32)``, required (a missing one fails the
      request); list columns ``VarLenFeature(tf.string)`` (a ``bytes_list`` of any length,
      absent = empty) and their weight columns ``VarLenFeature(tf.float32)``.
    """
    spec = {c: _scalar(STRING, default_value=MISSING_CATEGORY) for c in cfg.data.categorical}
    spec.update({c: _scalar(FLOAT32) for c in cfg.data.numeric})
    spec.update(_raw_list_specs(cfg))
    if columns is not None:
        keep = set(columns)
        spec = {k: v for k, v in spec.items() if k in keep}
    return spec


def model_input_types(feature_info: FeatureInfo) -> dict[str, tuple[str, list[int]]]:
    """Model input name -> (dtype name, per-example shape), in ``FeatureInfo.model_inputs``
    order: categorical ids ``("int64", [])``, lists ``("int64", [length])`` and their weights
    ``("float32", [length])``, numerics ``("float32", [])``, PLE ``("float32", [bins])``.
    Needs no TensorFlow; picklable (the scoring job ships it to workers)."""
    spec = {n: (INT64, []) for n in feature_info.categorical}
    for name, info in feature_info.lists.items():
        spec[name] = (INT64, [info.length])
        if info.weighted:
            spec[list_weights_key(name)] = (FLOAT32, [info.length])
    spec.update({n: (FLOAT32, []) for n in feature_info.numeric})
    spec.update({n: (FLOAT32, [bins]) for n, bins in feature_info.piecewise.items()})
    return spec


def model_input_dtypes(feature_info: FeatureInfo) -> dict[str, str]:
    """Model input name -> dtype name (``model_input_types`` without the shapes)."""
    return {n: dtype for n, (dtype, _) in model_input_types(feature_info).items()}


def model_input_spec(feature_types: Mapping[str, object]) -> dict:
    """Parsing spec of the model inputs of transformed (or scored) examples.

    Args:
      feature_types: name -> ``(dtype name, shape)`` (``model_input_types``) or a dtype name
        (a scalar).

    Returns:
      dict name -> ``tf.io.FixedLenFeature(shape, dtype)`` (required).
    """
    import tensorflow as tf

    out = {}
    for name, t in feature_types.items():
        dtype, shape = (t, []) if isinstance(t, str) else t
        out[name] = tf.io.FixedLenFeature(list(shape), tf.as_dtype(dtype))
    return out


def serving_keras_inputs(feature_info: FeatureInfo) -> dict:
    """Keras ``Input``s of the serving model, one per model input.

    Returns:
      dict name -> ``tf_keras.Input(shape=shape, dtype=..., name=name)`` per
      ``model_input_types``: ``(None,)`` for scalars, ``(None, width)`` for lists and PLE.
    """
    import tensorflow as tf
    import tf_keras as keras

    return {n: keras.Input(shape=tuple(shape), dtype=tf.as_dtype(d), name=n)
            for n, (d, shape) in model_input_types(feature_info).items()}


SpecLike = Union[FeatureInfo, Mapping[str, object]]


def dummy_batch(spec: SpecLike, batch_size: int = 2) -> dict:
    """A batch of default values, to create variables or trace a graph.

    Args:
      spec: a ``FeatureInfo`` (its model inputs, ``model_input_types``) or a mapping name ->
        anything with a ``dtype`` (a ``tf.io`` feature, a ``tf.TensorSpec``) or a dtype (name).
      batch_size: rows.

    Returns:
      dict name -> tensor of that dtype, ``""`` for strings and 0 otherwise, except a list
      model input, which is all ``PAD_ID`` (empty lists): ``(batch_size,) + shape`` for a
      ``FeatureInfo`` or a ``FixedLenFeature`` / ``TensorSpec`` of that shape (a
      ``TensorSpec``'s ``None`` dimensions are 1); an empty ``SparseTensor``
      ``[batch_size, 0]`` for a ``VarLenFeature``.
    """
    import tensorflow as tf

    lists = set()
    if isinstance(spec, FeatureInfo):
        lists = set(spec.lists)
        spec = {n: tf.TensorSpec([None] + shape, tf.as_dtype(d)) for n, (d, shape) in model_input_types(spec).items()}
    batch = {}
    for name, s in spec.items():
        dtype = tf.as_dtype(getattr(s, "dtype", s))
        if isinstance(s, tf.io.VarLenFeature):
            batch[name] = tf.sparse.SparseTensor(tf.zeros([0, 2], tf.int64), tf.zeros([0], dtype), [batch_size, 0])
            continue
        shape = [batch_size] + [1 if d is None else d for d in list(getattr(s, "shape", []) or [])[
            1 if isinstance(s, tf.TensorSpec) else 0:]]
        if dtype == tf.string:
            batch[name] = tf.fill(shape, "")
        else:
            batch[name] = tf.fill(shape, tf.constant(PAD_ID if name in lists else 0, dtype))
    return batch


def encode_raw_example(cfg: PipelineConfig, typed: Mapping) -> bytes:
    """The serialized raw ``tf.Example`` a serving client sends for a typed record.

    Args:
      cfg: the config (its categorical, numeric and list columns).
      typed: raw column name -> Python value (``RecordSchema.typed``); extra keys (labels,
        weight, group, passthrough) are left out.

    Returns:
      bytes of a ``tf.Example`` with one ``bytes_list`` (UTF-8 ``str(value)``) per categorical,
      one ``float_list`` per numeric column, a ``bytes_list`` of every value per list column
      and a ``float_list`` per list weight column: what ``serving_feature_spec(cfg)`` parses.
    """
    from tensorflow.core.example import example_pb2, feature_pb2

    feats = {}
    for c in cfg.data.categorical:
        feats[c] = feature_pb2.Feature(bytes_list=feature_pb2.BytesList(value=[str(typed[c]).encode("utf-8")]))
    for c in cfg.data.numeric:
        feats[c] = feature_pb2.Feature(float_list=feature_pb2.FloatList(value=[float(typed[c])]))
    for f in cfg.data.lists:
        values = [str(v).encode("utf-8") for v in typed[f.name]]
        feats[f.name] = feature_pb2.Feature(bytes_list=feature_pb2.BytesList(value=values))
    for column in weight_columns(cfg.data).values():
        feats[column] = feature_pb2.Feature(float_list=feature_pb2.FloatList(value=[float(w) for w in typed[column]]))
    return example_pb2.Example(features=feature_pb2.Features(feature=feats)).SerializeToString()


def add_teacher_logits(serialized: bytes, logits: Mapping[str, float]) -> bytes:
    """A serialized transformed example with ``teacher_logit_<task>`` float features set.

    Args:
      serialized: a transformed ``tf.Example``.
      logits: task -> the teacher's logit.

    Returns:
      the example, re-serialized: what ``scored_feature_spec`` parses.
    """
    from tensorflow.core.example import example_pb2

    example = example_pb2.Example.FromString(serialized)
    for task, logit in logits.items():
        example.features.feature[teacher_logit_key(task)].float_list.value[:] = [logit]
    return example.SerializeToString()


def feature_spec_to_json(spec: Mapping) -> dict:
    """A ``tf.io`` FixedLenFeature spec as JSON: name -> ``{dtype, shape, default_value?}``.

    ``dtype`` is the dtype name (``"string"``, ``"float32"``, ``"int64"``), ``shape`` a list
    (``[]`` for scalars); a bytes default is decoded to str.
    """
    out = {}
    for name, f in spec.items():
        if not hasattr(f, "shape"):  # VarLenFeature
            out[name] = {"dtype": f.dtype.name, "shape": [None], "var_len": True}
            continue
        entry = {"dtype": f.dtype.name, "shape": list(f.shape)}
        if getattr(f, "default_value", None) is not None:
            d = f.default_value
            entry["default_value"] = d.decode() if isinstance(d, bytes) else d
        out[name] = entry
    return out
