"""The feature contract: every ``tf.io`` spec, Keras ``Input``, dummy batch and ``tf.Example`` encoding.

The one module that turns the schema (the ``PipelineConfig``'s data section and the
``core.features.FeatureInfo`` of a preprocessing run) into the artefacts preprocessing,
training, distillation and serving exchange. Every feature is a scalar per example: a parsed
batch is a dict name -> tensor of shape ``(batch,)``.

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

from core.config import PipelineConfig
from core.features import GROUP_KEY, MISSING_CATEGORY, WEIGHT_KEY, FeatureInfo, label_key, teacher_logit_key

INT64, FLOAT32, STRING = "int64", "float32", "string"


def _scalar(dtype, default_value=None):
    """``tf.io.FixedLenFeature([], dtype)``: one value per example (required without a default)."""
    import tensorflow as tf

    return tf.io.FixedLenFeature([], tf.as_dtype(dtype), default_value=default_value)


def raw_tft_feature_spec(cfg: PipelineConfig) -> dict:
    """Spec of the typed raw records TF Transform analyses and transforms.

    Returns:
      dict raw column name -> ``tf.io.FixedLenFeature([], dtype)`` (no defaults: every
      column is present in a typed record): categorical columns ``tf.string``; numeric,
      label, weight and passthrough columns ``tf.float32``; the group column ``tf.string``
      (unless it is also a feature column). A column listed twice keeps its first dtype.
    """
    d = cfg.data
    spec = {c: _scalar(STRING) for c in d.categorical}
    spec.update({c: _scalar(FLOAT32) for c in d.numeric})
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

      * ``<categorical>`` (incl. ``<numeric>_bucket``): ``tf.int64`` id in ``[0, cardinality)``;
      * ``<numeric>``: ``tf.float32``;
      * ``label_<task>``: ``tf.float32`` 0/1;
      * ``example_weight``: ``tf.float32``, default 1.0 (examples written without a weight);
      * ``group_id``: ``tf.int64``, when ``feature_info.has_group``;
      * ``<passthrough>``: ``tf.float32``.
    """
    spec = {n: _scalar(INT64) for n in feature_info.categorical}
    spec.update({n: _scalar(FLOAT32) for n in feature_info.numeric})
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


def serving_feature_spec(cfg: PipelineConfig) -> dict:
    """Spec of a serving request's raw ``tf.Example`` (features only: no labels, weight or group).

    Returns:
      dict raw column name -> ``tf.io.FixedLenFeature([], dtype)``: categorical columns
      ``tf.string`` with default ``MISSING_CATEGORY`` (a missing value is a category of its
      own); numeric columns ``tf.float32``, required (a missing one fails the request).
    """
    spec = {c: _scalar(STRING, default_value=MISSING_CATEGORY) for c in cfg.data.categorical}
    spec.update({c: _scalar(FLOAT32) for c in cfg.data.numeric})
    return spec


def model_input_dtypes(feature_info: FeatureInfo) -> dict[str, str]:
    """Model input name -> dtype name: ``"int64"`` per categorical id, ``"float32"`` per numeric.

    The inputs of the Keras ranker (``FeatureInfo.model_inputs``, in that order); needs no
    TensorFlow.
    """
    dtypes = {n: INT64 for n in feature_info.categorical}
    dtypes.update({n: FLOAT32 for n in feature_info.numeric})
    return dtypes


def model_input_spec(feature_dtypes: Mapping[str, str]) -> dict:
    """Parsing spec of the model inputs of transformed (or scored) examples.

    Args:
      feature_dtypes: name -> dtype name (``model_input_dtypes``).

    Returns:
      dict name -> ``tf.io.FixedLenFeature([], dtype)`` (required).
    """
    return {name: _scalar(dtype) for name, dtype in feature_dtypes.items()}


def serving_keras_inputs(feature_info: FeatureInfo) -> dict:
    """Keras ``Input``s of the serving model, one per model input.

    Returns:
      dict name -> ``tf_keras.Input(shape=(), dtype=..., name=name)``: symbolic tensors of
      shape ``(None,)``, ``tf.int64`` for categorical ids and ``tf.float32`` for numerics.
    """
    import tensorflow as tf
    import tf_keras as keras

    return {n: keras.Input(shape=(), dtype=tf.as_dtype(d), name=n) for n, d in model_input_dtypes(feature_info).items()}


SpecLike = Union[FeatureInfo, Mapping[str, object]]


def dummy_batch(spec: SpecLike, batch_size: int = 2) -> dict:
    """A batch of default values, to create variables or trace a graph.

    Args:
      spec: a ``FeatureInfo`` (its model inputs, ``model_input_dtypes``) or a mapping name ->
        anything with a ``dtype`` (a ``tf.io`` feature, a ``tf.TensorSpec``) or a dtype (name).
      batch_size: rows.

    Returns:
      dict name -> tensor ``(batch_size,)`` of that dtype: ``""`` for strings, 0 otherwise.
    """
    import tensorflow as tf

    if isinstance(spec, FeatureInfo):
        spec = model_input_dtypes(spec)
    batch = {}
    for name, s in spec.items():
        dtype = tf.as_dtype(getattr(s, "dtype", s))
        batch[name] = tf.constant([""] * batch_size) if dtype == tf.string else tf.zeros([batch_size], dtype)
    return batch


def encode_raw_example(cfg: PipelineConfig, typed: Mapping) -> bytes:
    """The serialized raw ``tf.Example`` a serving client sends for a typed record.

    Args:
      cfg: the config (its categorical and numeric columns).
      typed: raw column name -> Python value (``RecordSchema.typed``); extra keys (labels,
        weight, group, passthrough) are left out.

    Returns:
      bytes of a ``tf.Example`` with one ``bytes_list`` (UTF-8 ``str(value)``) per categorical
      and one ``float_list`` per numeric column: what ``serving_feature_spec(cfg)`` parses.
    """
    from tensorflow.core.example import example_pb2, feature_pb2

    feats = {}
    for c in cfg.data.categorical:
        feats[c] = feature_pb2.Feature(bytes_list=feature_pb2.BytesList(value=[str(typed[c]).encode("utf-8")]))
    for c in cfg.data.numeric:
        feats[c] = feature_pb2.Feature(float_list=feature_pb2.FloatList(value=[float(typed[c])]))
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
        entry = {"dtype": f.dtype.name, "shape": list(f.shape)}
        if f.default_value is not None:
            d = f.default_value
            entry["default_value"] = d.decode() if isinstance(d, bytes) else d
        out[name] = entry
    return out
