"""Shared fakes for the serving tests: a tiny run directory built without the other stages.

``build_fake_run`` writes what preprocess and train would: raw CSV rows, a real
``tft.TFTransformOutput`` (vocabularies + z-scores, analysed by TF Transform on Beam in
memory), ``feature_info.json``, transformed test TFRecords keyed by ``impression_id`` and a
small tf_keras functional serving model with the contract's inputs and outputs. The model's
click score depends on the features, so its AUC against labels drawn from it is well above
0.5. ``build_tiny_savedmodel`` writes a minimal TF2 SavedModel (``serving_default`` over
``examples``) for server tests that need no TF Transform.
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


def _analyze(cfg, frame: pd.DataFrame, out_dir: str) -> None:
    import tensorflow as tf
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import schema_utils

    spec = {k: tf.io.FixedLenFeature([], v.dtype) for k, v in serving_feature_spec(cfg).items()}
    spec.update({t: tf.io.FixedLenFeature([], tf.int64) for t in ("click", "conversion")})
    records = [_raw_record(row) for row in frame.to_dict("records")]
    for r, row in zip(records, frame.to_dict("records")):
        r["click"], r["conversion"] = int(row["click"]), int(row["conversion"])
    from tensorflow_transform.tf_metadata import dataset_metadata
    import apache_beam as beam

    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(spec))

    with beam.Pipeline(runner="DirectRunner") as p:  # noqa: F841
        with tft_beam.Context(temp_dir=tempfile.mkdtemp(), force_tf_compat_v1=False):
            data = p | beam.Create(records)
            (_, transform_fn) = ((data, metadata)
                                 | tft_beam.AnalyzeAndTransformDataset(_preprocessing_fn))
            _ = transform_fn | tft_beam.WriteTransformFn(out_dir)


def _raw_record(row: dict) -> dict:
    rec = {c: str(row[c]) for c in CATEGORICAL}
    rec.update({c: float(row[c]) for c in NUMERIC})
    return rec


def build_keras_model(info: FeatureInfo, seed: int = 0, rating_weight: float = 2.0):
    """A tiny functional model with the serving contract: dict in, ``<t>_logit/_probability`` out."""
    import tf_keras as keras

    keras.utils.set_random_seed(seed)
    inputs, parts = {}, []
    for name, card in info.categorical.items():
        inputs[name] = keras.Input(shape=(), dtype="int64", name=name)
        parts.append(keras.layers.Embedding(card, 2, name=f"emb_{name}")(inputs[name]))
    for name in info.numeric:
        inputs[name] = keras.Input(shape=(), dtype="float32", name=name)
        parts.append(keras.layers.Reshape((1,))(inputs[name]))
    x = keras.layers.Concatenate()(parts)
    outputs = {}
    for i, task in enumerate(info.tasks):
        # item_rating is numeric index 4; a fixed positive weight on it makes the score informative.
        init = np.zeros((x.shape[-1], 1), np.float32)
        init[len(info.categorical) * 2 + 4, 0] = rating_weight - i
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
    out = {k: v.numpy() for k, v in layer(raw).items()}
    path = run_dir.split_pattern(split).replace("*", "00000-of-00001")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path, options="GZIP") as w:
        for i in range(len(frame)):
            feats = {}
            for k, v in out.items():
                if v.dtype.kind == "i":
                    feats[k] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v[i])]))
                else:
                    feats[k] = tf.train.Feature(float_list=tf.train.FloatList(value=[float(v[i])]))
            feats["impression_id"] = tf.train.Feature(
                bytes_list=tf.train.BytesList(value=[frame.impression_id.iloc[i].encode()]))
            w.write(tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString())


def build_fake_run(cfg, root: str, rows: int = 240, roles=("teacher",)) -> RunDir:
    """A run directory with raw data, TFT output, feature info, test split and serving models."""
    import tensorflow_transform as tft

    run_dir = RunDir(root)
    frame = fake_raw_frame(rows)
    os.makedirs(run_dir.raw_data_dir, exist_ok=True)
    frame.to_csv(os.path.join(run_dir.raw_data_dir, "part-00000.csv"), index=False)
    _analyze(cfg, frame, run_dir.transform_output_dir)
    tft_out = tft.TFTransformOutput(run_dir.transform_output_dir)
    info = FeatureInfo(
        categorical={c: tft_out.vocabulary_size_by_name(c) + 1 for c in CATEGORICAL},
        numeric=list(NUMERIC), tasks=["click", "conversion"], passthrough=["p_click", "p_conversion"],
    )
    write_json_atomic(run_dir.feature_info_file, info.to_dict())
    write_transformed_split(run_dir, run_dir.transform_output_dir, frame.iloc[: rows // 2])
    for seed, role in enumerate(roles):
        model = build_keras_model(info, seed)
        model.save(os.path.join(run_dir.model_dir(role), "serving_model"))
        write_json_atomic(os.path.join(run_dir.model_dir(role), "model_config.json"),
                          {"role": role, "tasks": info.tasks, "feature_info": info.to_dict()})
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
    return load_config(os.path.join(REPO, "configs", "default.yaml"), ["export.min_auc={}", *overrides])


def publish_tiny(base: str, version: int, scale: float, name: str = "tiny") -> str:
    """Builds a tiny SavedModel in a hidden dir and renames it into place, as export does."""
    model_dir = os.path.join(base, name)
    os.makedirs(model_dir, exist_ok=True)
    tmp = os.path.join(model_dir, f".tmp-{version}")
    build_tiny_savedmodel(tmp, scale)
    os.rename(tmp, os.path.join(model_dir, str(version)))
    return os.path.join(model_dir, str(version))
