"""Shared fakes for the serving tests: a tiny run directory built without the other stages.

``build_fake_run`` writes what preprocess and train would: raw CSV rows, a real
``tft.TFTransformOutput`` (vocabularies + z-scores, analysed by TF Transform on Beam in
memory), ``feature_info.json``, transformed test TFRecords keyed by ``impression_id`` and a
small tf_keras functional serving model with the contract's inputs and outputs. The model's
click score depends on the features, so its AUC against labels drawn from it is well above
0.5. ``build_tiny_savedmodel`` writes a minimal TF2 SavedModel (``serving_default`` over
``examples``) for server tests that need no TF Transform.

List features (issue 13): ``list_config()`` is the serving config with ``LISTS`` (a
sequence ``hist_items`` sharing ``item_id``'s vocabulary and a weighted multi-valued
``item_tags`` with the parallel column ``item_tag_weights``); ``build_fake_run(cfg, root,
lists=True)`` writes raw rows with those columns (CSV ``|``-joined lists), a TF Transform
output that turns them into padded int64 ids (``PAD_ID``) and float32 weights, and a model
that pools them (masked, weighted mean) into its score. The transform and model are the
pipeline's own (``pipeline.preprocess.transform``, ``models.builder``) when those handle
``data.lists`` and ``use_pipeline=True``; otherwise small hand-written stand-ins with the
same contract (``core.features`` / ``core.feature_specs``).
"""
from __future__ import annotations

import os
import tempfile

import numpy as np
import pandas as pd

from core.config import load_config
from tests.conftest import REPO
from core.feature_specs import serving_feature_spec
from core.features import FeatureInfo, label_key
from core.run_dir import RunDir, write_json_atomic

CATEGORICAL = ["user_id", "item_id", "item_category", "device", "hour"]
NUMERIC = ["price", "user_activity", "user_tenure_days", "item_popularity", "item_rating"]
# data.lists of list_config(): a behaviour sequence sharing item_id's table and weighted tags.
LISTS = ("data.lists=[{name: hist_items, kind: sequence, shares: item_id, max_length: 6, order: recent_last}, "
         "{name: item_tags, kind: multi_valued, max_length: 4, pooling: sum, weights: item_tag_weights}]")
LIST_COLUMNS = ["hist_items", "item_tags"]
WEIGHT_COLUMNS = {"item_tags": "item_tag_weights"}


def fake_raw_frame(n: int, seed: int = 0) -> pd.DataFrame:
    """Raw synthetic rows with the generate stage's columns; labels follow a known score."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "impression_id": [f"imp{seed}_{i}" for i in range(n)],
        "user_id": [f"u{k}" for k in rng.integers(0, 20, n)],
        "item_id": [f"i{k}" for k in rng.integers(0, 15, n)],
        "item_category": [f"c{k}" for k in rng.integers(0, 4, n)],
        "device": rng.choice(["ios", "android", "web"], n),
        "hour": rng.integers(0, 24, n),
        "price": rng.uniform(1, 100, n).round(3),
        "user_activity": rng.uniform(0, 5, n).round(3),
        "user_tenure_days": rng.uniform(0, 900, n).round(1),
        "item_popularity": rng.uniform(0, 50, n).round(3),
        "item_rating": rng.uniform(1, 5, n).round(2),
    })
    score = (df.item_rating - 3.0) + 0.5 * (df.device == "ios")
    p_click = 1 / (1 + np.exp(-2 * score))
    df["p_click"] = p_click.round(4)
    df["click"] = (rng.uniform(size=n) < p_click).astype(int)
    df["p_conversion"] = (p_click * 0.3).round(4)
    df["conversion"] = ((rng.uniform(size=n) < 0.3) & (df.click == 1)).astype(int)
    return df


def fake_list_frame(n: int, seed: int = 0, max_history: int = 9) -> pd.DataFrame:
    """``fake_raw_frame`` plus ``hist_items`` (0 to ``max_history`` recent items,
    ``|``-joined), ``item_tags`` (0-3 tags) and ``item_tag_weights`` (one weight per tag, 0.0
    among them); clicks are more likely when the item is in the history or carries tag ``t1``."""
    df = fake_raw_frame(n, seed)
    rng = np.random.default_rng(seed + 100)
    hist, tags, weights = [], [], []
    for item in df.item_id:
        k = int(rng.integers(0, max_history + 1))
        h = [f"i{j}" for j in rng.integers(0, 15, k)]
        if k and rng.uniform() < 0.5:
            h[-1] = item
        hist.append(h)
        t = sorted({f"t{j}" for j in rng.integers(0, 6, int(rng.integers(0, 4)))})
        tags.append(t)
        weights.append([float(rng.choice([0.0, 0.5, 1.0, 2.0])) for _ in t])
    in_hist = np.array([item in h for item, h in zip(df.item_id, hist)])
    has_t1 = np.array(["t1" in t for t in tags])
    score = (df.item_rating - 3.0) + 0.5 * (df.device == "ios") + 1.5 * in_hist + 1.0 * has_t1
    p_click = 1 / (1 + np.exp(-2 * score))
    df["p_click"] = p_click.round(4)
    df["click"] = (rng.uniform(size=n) < p_click).astype(int)
    df["p_conversion"] = (p_click * 0.3).round(4)
    df["conversion"] = ((rng.uniform(size=n) < 0.3) & (df.click == 1)).astype(int)
    df["hist_items"] = ["|".join(h) for h in hist]
    df["item_tags"] = ["|".join(t) for t in tags]
    df["item_tag_weights"] = ["|".join(repr(w) for w in ws) for ws in weights]
    return df


# Small real rankers for the list fakes built with the pipeline's pieces.
SMALL_MODEL = ["model.embedding_dim=4", "model.bottom_units=[8]", "model.tower_units=[4]", "model.cross_layers=0"]


def list_config(*overrides):
    """``serving_config`` with the fake's list features (``LISTS``) and a small model."""
    return serving_config(LISTS, *SMALL_MODEL, *overrides)


def split_lists(frame: pd.DataFrame) -> dict:
    """The list columns of a ``fake_list_frame`` as Python lists (weights as floats)."""
    out = {c: [v.split("|") if isinstance(v, str) and v else [] for v in frame[c]] for c in LIST_COLUMNS}
    out.update({w: [[float(x) for x in v.split("|")] if isinstance(v, str) and v else [] for v in frame[w]]
                for w in WEIGHT_COLUMNS.values()})
    return out


def _preprocessing_fn(inputs):
    import tensorflow as tf
    import tensorflow_transform as tft

    out = {}
    for c in CATEGORICAL:
        out[c] = tft.compute_and_apply_vocabulary(inputs[c], num_oov_buckets=1, vocab_filename=c)
    for c in NUMERIC:
        out[c] = tft.scale_to_z_score(inputs[c])
    for t in ("click", "conversion"):
        if t in inputs:
            out[label_key(t)] = tf.cast(inputs[t], tf.float32)
    return out


def _padded(sparse, width: int, keep_last: bool, default):
    """A ``SparseTensor`` list as ``[batch, width]``: its first (or, ``keep_last``, its last)
    ``width`` values, left-aligned, padded with ``default``."""
    import tensorflow as tf

    ragged = tf.RaggedTensor.from_sparse(sparse)
    if keep_last:
        ragged = ragged[:, -width:]
    else:
        ragged = ragged[:, :width]
    dense = ragged.to_tensor(default_value=default, shape=[None, width])
    return tf.ensure_shape(dense, [None, width])


def make_list_preprocessing_fn(cfg):
    """A hand-written stand-in for ``pipeline.preprocess.transform`` with ``data.lists``:
    ``_preprocessing_fn`` plus every list as padded ids (its own vocabulary, or its
    ``shares`` owner's, computed over the owner's and the sharing lists' values) and weighted
    lists' ``<list>__weights``. Each output reads only its own raw column (the vocabulary is
    an asset), so the served layer transforms any subset of the columns."""
    import tensorflow as tf
    import tensorflow_transform as tft

    from core.config import table_owner
    from core.features import PAD_ID, list_weights_key

    lists = list(cfg.data.lists)
    shared = {}
    for f in lists:
        owner = table_owner(cfg.data, f.name)
        if owner != f.name:
            shared.setdefault(owner, []).append(f.name)

    def fn(inputs):
        out = {}
        vocabs = {}
        for c in CATEGORICAL:
            values = [inputs[c]] + [inputs[n].values for n in shared.get(c, [])]
            vocabs[c] = tft.vocabulary(tf.concat(values, 0) if len(values) > 1 else values[0], vocab_filename=c)
            out[c] = tft.apply_vocabulary(inputs[c], vocabs[c], num_oov_buckets=1)
        for c in NUMERIC:
            out[c] = tft.scale_to_z_score(inputs[c])
        for f in lists:
            owner = table_owner(cfg.data, f.name)
            if owner not in vocabs:
                vocabs[owner] = tft.vocabulary(inputs[owner], vocab_filename=owner)
            ids = tft.apply_vocabulary(inputs[f.name], vocabs[owner], num_oov_buckets=1)
            keep_last = f.kind == "sequence" and f.order == "recent_last"
            out[f.name] = _padded(ids, f.max_length, keep_last, tf.constant(PAD_ID, tf.int64))
            if f.weights and f.weights != "tokens":
                out[list_weights_key(f.name)] = _padded(inputs[f.weights], f.max_length, keep_last, 0.0)
        for t in ("click", "conversion"):
            if t in inputs:
                out[label_key(t)] = tf.cast(inputs[t], tf.float32)
        return out

    return fn


def _analyze(cfg, frame: pd.DataFrame, out_dir: str, preprocessing_fn=None) -> None:
    import tensorflow as tf
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import schema_utils

    spec = {k: v if isinstance(v, tf.io.VarLenFeature) else tf.io.FixedLenFeature([], v.dtype)
            for k, v in serving_feature_spec(cfg).items()}
    spec.update({t: tf.io.FixedLenFeature([], tf.int64) for t in ("click", "conversion")})
    records = [_raw_record(row) for row in frame.to_dict("records")]
    lists = split_lists(frame) if cfg.data.lists else {}
    for i, (r, row) in enumerate(zip(records, frame.to_dict("records"))):
        r["click"], r["conversion"] = int(row["click"]), int(row["conversion"])
        for c, values in lists.items():
            r[c] = np.asarray(values[i], dtype=object if c in LIST_COLUMNS else np.float32)
    from tensorflow_transform.tf_metadata import dataset_metadata
    import apache_beam as beam

    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(spec))

    with beam.Pipeline(runner="DirectRunner") as p:  # noqa: F841
        with tft_beam.Context(temp_dir=tempfile.mkdtemp(), force_tf_compat_v1=False):
            data = p | beam.Create(records)
            (_, transform_fn) = ((data, metadata)
                                 | tft_beam.AnalyzeAndTransformDataset(preprocessing_fn or _preprocessing_fn))
            _ = transform_fn | tft_beam.WriteTransformFn(out_dir)


def _raw_record(row: dict) -> dict:
    rec = {c: str(row[c]) for c in CATEGORICAL}
    rec.update({c: float(row[c]) for c in NUMERIC})
    return rec


def sparse_lists(lists: list, dtype):
    """A ``SparseTensor`` ``[len(lists), longest]`` of Python lists (what parsing gives)."""
    import tensorflow as tf

    indices = [[i, j] for i, values in enumerate(lists) for j in range(len(values))]
    flat = [v for values in lists for v in values]
    width = max((len(v) for v in lists), default=0)
    return tf.sparse.SparseTensor(tf.constant(indices, tf.int64, shape=[len(indices), 2]),
                                  tf.constant(flat, dtype, shape=[len(flat)]), [len(lists), width])


def build_keras_model(info: FeatureInfo, seed: int = 0, rating_weight: float = 2.0, list_weight: float = 1.0):
    """A tiny functional model with the serving contract: dict in, ``<t>_logit/_probability`` out.

    List inputs (``info.lists``) are embedded (a shared list uses its table's layer) and
    pooled over their non-padding ids, weighted by ``<list>__weights`` when weighted (mean,
    or sum with ``pooling: sum``); the tower reads the pooled vectors with ``list_weight``."""
    import tensorflow as tf
    import tf_keras as keras

    from core.features import list_weights_key

    keras.utils.set_random_seed(seed)
    inputs, parts, tables = {}, [], {}
    for name, card in info.categorical.items():
        inputs[name] = keras.Input(shape=(), dtype="int64", name=name)
        tables[name] = keras.layers.Embedding(card, 2, name=f"emb_{name}")
        parts.append(tables[name](inputs[name]))
    for name in info.numeric:
        inputs[name] = keras.Input(shape=(), dtype="float32", name=name)
        parts.append(keras.layers.Reshape((1,))(inputs[name]))
    numeric_end = sum(p.shape[-1] for p in parts)
    for name, li in info.lists.items():
        ids = inputs[name] = keras.Input(shape=(li.length,), dtype="int64", name=name)
        table = li.table or name
        if table not in tables:
            tables[table] = keras.layers.Embedding(li.cardinality, 2, name=f"emb_{table}")
        mask = tf.cast(tf.greater_equal(ids, 0), tf.float32)
        if li.weighted:
            key = list_weights_key(name)
            inputs[key] = keras.Input(shape=(li.length,), dtype="float32", name=key)
            mask = mask * inputs[key]
        emb = tables[table](tf.maximum(ids, 0))
        pooled = tf.reduce_sum(emb * tf.expand_dims(mask, -1), axis=1)
        if li.pooling != "sum":
            pooled = pooled / tf.maximum(tf.reduce_sum(mask, axis=1, keepdims=True), 1.0)
        parts.append(pooled)
    x = keras.layers.Concatenate()(parts)
    outputs = {}
    for i, task in enumerate(info.tasks):
        # A fixed positive weight on item_rating (after the 2-wide embeddings) makes the score informative.
        init = np.zeros((x.shape[-1], 1), np.float32)
        if "item_rating" in info.numeric:
            init[len(info.categorical) * 2 + info.numeric.index("item_rating"), 0] = rating_weight - i
        init[numeric_end:, 0] = list_weight
        dense = keras.layers.Dense(1, name=f"{task}_tower", kernel_initializer=keras.initializers.Constant(init))
        logit = keras.layers.Reshape((), name=f"{task}_logit")(dense(x))
        outputs[f"{task}_logit"] = logit
        outputs[f"{task}_probability"] = keras.layers.Activation("sigmoid", name=f"{task}_probability")(logit)
    return keras.Model(inputs, outputs)


def write_transformed_split(run_dir: RunDir, tft_dir: str, frame: pd.DataFrame, split: str = "test") -> None:
    """Writes the rows as transformed gzip TFRecords (with ``impression_id`` as passthrough key)."""
    import tensorflow as tf
    import tensorflow_transform as tft

    layer = tft.TFTransformOutput(tft_dir).transform_features_layer()
    raw = {c: tf.constant(frame[c].astype(str).values) for c in CATEGORICAL}
    raw.update({c: tf.constant(frame[c].values.astype(np.float32)) for c in NUMERIC})
    raw.update({t: tf.constant(frame[t].values.astype(np.int64)) for t in ("click", "conversion")})
    if "hist_items" in frame:
        for c, values in split_lists(frame).items():
            raw[c] = sparse_lists(values, tf.string if c in LIST_COLUMNS else tf.float32)
    out = {k: v.numpy() for k, v in layer(raw).items()}
    path = run_dir.split_pattern(split).replace("*", "00000-of-00001")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path, options="GZIP") as w:
        for i in range(len(frame)):
            feats = {}
            for k, v in out.items():
                values = np.reshape(v[i], [-1]).tolist()
                if v.dtype.kind == "i":
                    feats[k] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(x) for x in values]))
                else:
                    feats[k] = tf.train.Feature(float_list=tf.train.FloatList(value=[float(x) for x in values]))
            feats["impression_id"] = tf.train.Feature(
                bytes_list=tf.train.BytesList(value=[frame.impression_id.iloc[i].encode()]))
            w.write(tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString())


def _list_info(cfg, tft_out) -> dict:
    from core.config import table_owner
    from core.features import ListInfo

    out = {}
    for f in cfg.data.lists:
        owner = table_owner(cfg.data, f.name)
        out[f.name] = ListInfo(cardinality=tft_out.vocabulary_size_by_name(owner) + 1, length=f.max_length,
                               pooling=f.pooling, weighted=bool(f.weights), table=owner, target=f.target,
                               kind=f.kind)
    return out


def _typed_records(cfg, path: str) -> list[dict]:
    """The typed records (``RecordSchema``, labels included) of a raw CSV, in file order."""
    from core.records import RecordSchema
    from serving.raw_examples import iter_raw_records

    schema = RecordSchema(cfg, require_labels=True)
    return [schema.typed(r["values"]) for r in iter_raw_records(path, "csv", cfg)]


def _analyze_typed(cfg, records: list[dict], out_dir: str) -> None:
    """The pipeline's own ``preprocessing_fn`` analysed (TF Transform on Beam, in memory)
    over typed records, written to ``out_dir``."""
    import apache_beam as beam
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

    from core.feature_specs import raw_tft_feature_spec
    from pipeline.preprocess.transform import make_preprocessing_fn

    spec = raw_tft_feature_spec(cfg)
    instances = [{k: (np.asarray(v, dtype=object) if isinstance(v, list) and k in spec and spec[k].dtype.name ==
                      "string" else np.asarray(v, np.float32) if isinstance(v, list) else v)
                  for k, v in r.items() if k in spec} for r in records]
    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(spec))
    with beam.Pipeline(runner="DirectRunner") as p:
        with tft_beam.Context(temp_dir=tempfile.mkdtemp(), force_tf_compat_v1=False):
            data = p | beam.Create(instances)
            (_, transform_fn) = ((data, metadata) | tft_beam.AnalyzeAndTransformDataset(make_preprocessing_fn(cfg)))
            _ = transform_fn | tft_beam.WriteTransformFn(out_dir)


def _write_typed_split(cfg, run_dir: RunDir, records: list[dict], ids: list[str], split: str = "test") -> None:
    """The typed records transformed by the run's TF Transform layer as gzip TFRecords."""
    import tensorflow as tf
    import tensorflow_transform as tft

    from serving.raw_examples import to_tensors

    layer = tft.TFTransformOutput(run_dir.transform_output_dir).transform_features_layer()
    items = [{"features": r} for r in records]
    raw = to_tensors(cfg, items)
    for c in [t.label for t in cfg.data.tasks] + list(cfg.data.passthrough):
        raw[c] = tf.constant([float(r[c]) for r in records], tf.float32)
    out = {k: v.numpy() for k, v in layer(raw).items()}
    path = run_dir.split_pattern(split).replace("*", "00000-of-00001")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path, options="GZIP") as w:
        for i in range(len(records)):
            feats = {}
            for k, v in out.items():
                values = np.reshape(v[i], [-1]).tolist()
                if v.dtype.kind == "i":
                    feats[k] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(x) for x in values]))
                else:
                    feats[k] = tf.train.Feature(float_list=tf.train.FloatList(value=[float(x) for x in values]))
            feats["impression_id"] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[ids[i].encode()]))
            w.write(tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString())


def _pipeline_models(cfg, run_dir: RunDir, info: FeatureInfo, roles, features: dict) -> None:
    """Untrained ``models.builder.build_ranker`` serving models (fixed seeds) per role."""
    import dataclasses

    from models.builder import build_ranker

    for seed, role in enumerate(roles):
        chosen = list((features or {}).get(role) or [])
        model_cfg = dataclasses.replace(cfg.model, features=chosen)
        model = build_ranker(model_cfg, info, cfg.data.tasks, cfg.data.funnel, seed=seed + 1)
        model.serving_model().save(os.path.join(run_dir.model_dir(role), "serving_model"))
        write_json_atomic(os.path.join(run_dir.model_dir(role), "model_config.json"),
                          {"role": role, "model": dataclasses.asdict(model_cfg), "tasks": info.tasks,
                           "feature_info": info.select(chosen).to_dict()})


def build_fake_run(cfg, root: str, rows: int = 240, roles=("teacher",), lists: bool = False,
                   features: dict | None = None, use_pipeline: bool = True, max_history: int = 9) -> RunDir:
    """A run directory with raw data, TFT output, feature info, test split and serving models.

    Args:
      lists: raw rows with the list columns of ``list_config()`` (``cfg`` must configure
        them; ``fake_list_frame``). With ``use_pipeline`` (the default) the TF Transform
        graph is the pipeline's (``pipeline.preprocess.transform.make_preprocessing_fn`` over
        the typed records, ``feature_info_from_output``) and the models are untrained
        ``models.builder.build_ranker`` rankers; without, the hand-written
        ``make_list_preprocessing_fn`` and ``build_keras_model``.
      features: role -> the model features that role's model reads (a subset, e.g. a student
        that skips ``hist_items``); its ``model_config.json`` records them.
      max_history: the longest ``hist_items`` of ``fake_list_frame``.
    """
    import tensorflow_transform as tft

    run_dir = RunDir(root)
    frame = fake_list_frame(rows, max_history=max_history) if lists else fake_raw_frame(rows)
    os.makedirs(run_dir.raw_data_dir, exist_ok=True)
    csv_path = os.path.join(run_dir.raw_data_dir, "part-00000.csv")
    frame.to_csv(csv_path, index=False)
    if lists and use_pipeline:
        from pipeline.preprocess.job import feature_info_from_output

        records = _typed_records(cfg, csv_path)
        _analyze_typed(cfg, records, run_dir.transform_output_dir)
        info = feature_info_from_output(cfg, run_dir.transform_output_dir)
        write_json_atomic(run_dir.feature_info_file, info.to_dict())
        half = rows // 2
        _write_typed_split(cfg, run_dir, records[:half], list(frame.impression_id[:half]))
        _pipeline_models(cfg, run_dir, info, roles, features or {})
        return run_dir
    _analyze(cfg, frame, run_dir.transform_output_dir, make_list_preprocessing_fn(cfg) if lists else None)
    tft_out = tft.TFTransformOutput(run_dir.transform_output_dir)
    info = FeatureInfo(
        categorical={c: tft_out.vocabulary_size_by_name(c) + 1 for c in CATEGORICAL},
        numeric=list(NUMERIC), tasks=["click", "conversion"], passthrough=["p_click", "p_conversion"],
        lists=_list_info(cfg, tft_out) if lists else {},
    )
    write_json_atomic(run_dir.feature_info_file, info.to_dict())
    write_transformed_split(run_dir, run_dir.transform_output_dir, frame.iloc[: rows // 2])
    for seed, role in enumerate(roles):
        chosen = (features or {}).get(role) or []
        role_info = info.select(chosen)
        model = build_keras_model(role_info, seed)
        model.save(os.path.join(run_dir.model_dir(role), "serving_model"))
        config = {"role": role, "tasks": role_info.tasks, "feature_info": role_info.to_dict()}
        if chosen:
            config["model"] = {"features": list(chosen)}
        write_json_atomic(os.path.join(run_dir.model_dir(role), "model_config.json"), config)
    return run_dir


def build_tiny_savedmodel(path: str, scale: float = 1.0) -> str:
    """A minimal SavedModel: ``serving_default(examples)`` -> click/conversion probabilities.

    The example carries one float feature ``x``; click = sigmoid(scale * x) and conversion =
    click / 2, so tests can tell versions apart by ``scale``.
    """
    import tensorflow as tf

    class _Tiny(tf.Module):
        def __init__(self):
            super().__init__()
            self.scale = tf.Variable(scale, dtype=tf.float32)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def serve(self, examples):
            x = tf.io.parse_example(examples, {"x": tf.io.FixedLenFeature([], tf.float32)})["x"]
            p = tf.sigmoid(self.scale * x)
            return {"click_probability": p, "conversion_probability": p / 2.0}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def raw(self, x):
            return {"click_probability": tf.sigmoid(self.scale * x)}

    m = _Tiny()
    tf.saved_model.save(m, path, signatures={"serving_default": m.serve, "predict_raw": m.raw})
    return path


def tiny_example(x: float) -> bytes:
    import tensorflow as tf

    return tf.train.Example(features=tf.train.Features(feature={
        "x": tf.train.Feature(float_list=tf.train.FloatList(value=[x]))})).SerializeToString()


def serving_config(*overrides):
    """The default config on the fakes' one-value-per-column rows (no list features unless an
    override, e.g. ``list_config``'s, declares them)."""
    return load_config(os.path.join(REPO, "configs", "default.yaml"), ["export.min_auc={}", "data.lists=[]", *overrides])


def publish_tiny(base: str, version: int, scale: float, name: str = "tiny") -> str:
    """Builds a tiny SavedModel in a hidden dir and publishes it as export does
    (``serving.versions.publish``: a rename locally, a copy with saved_model.pb last elsewhere)."""
    from core import fs
    from serving import versions

    model_dir = fs.join(base, name)
    fs.makedirs(model_dir)
    tmp = versions.build_dir(model_dir, version)
    build_tiny_savedmodel(tmp, scale)
    return versions.publish(tmp, model_dir, version)


# The features of the list fake's student: it skips the sequence (hist_items) and the
# columns only the teacher reads, so its export takes fewer raw columns.
STUDENT_FEATURES = ["user_id", "item_id", "device", "price", "item_rating", "item_tags"]
_LIST_RUNS: dict = {}


def exported_list_run(tmp_path_factory, rows: int = 240):
    """A fake run with list features (``build_fake_run(lists=True)``, the pipeline's TF
    Transform and rankers) whose teacher is exported as ``ranker`` and whose student
    (``STUDENT_FEATURES``) as ``student``, both blessed by the gate. Built once per test
    session (shared by the serving and batch-prediction tests); read-only.

    Returns:
      ``SimpleNamespace(cfg, student_cfg, run_dir, base, teacher, student)``: the configs,
      the ``RunDir``, the serving base directory and the two version directories.
    """
    import types

    from pipeline.stages.export import run as run_export

    if rows not in _LIST_RUNS:
        cfg = list_config()
        student_cfg = list_config("export.model_name=student", "export.serve_model=student")
        run_dir = build_fake_run(cfg, str(tmp_path_factory.mktemp("list_run")), rows=rows, roles=("teacher", "student"),
                                 lists=True, features={"student": STUDENT_FEATURES})
        import yaml

        from core.config import config_to_dict
        from core.run_dir import write_text_atomic

        write_text_atomic(run_dir.config_file, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))  # as the CLI does
        teacher = run_export(cfg, run_dir, types.SimpleNamespace(model="teacher")).artifacts["version_dir"]
        student = run_export(student_cfg, run_dir, types.SimpleNamespace(model="student")).artifacts["version_dir"]
        _LIST_RUNS[rows] = types.SimpleNamespace(cfg=cfg, student_cfg=student_cfg, run_dir=run_dir,
                                                 base=run_dir.serving_base(), teacher=teacher, student=student)
    return _LIST_RUNS[rows]
