"""Fake transformed data in a RunDir layout, for tests that must not wait for preprocessing.

``fake_run`` writes a few hundred transformed tf.Examples per the contract of
core/features.py (int64 ids, float32 numerics, label_<task>, example_weight, group_id,
passthrough oracle probabilities) as gzip TFRecord shards, plus feature_info.json. The
labels follow a known logistic model so a small model learns something in one epoch.
"""
import os

import numpy as np
import tensorflow as tf

from core.features import FeatureInfo
from core.run_dir import RunDir, write_json_atomic

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CARDINALITIES = {"user_id": 21, "item_id": 11, "item_category": 4, "device": 4, "hour": 25}
NUMERIC = ["price", "user_activity", "user_tenure_days", "item_popularity", "item_rating"]
TINY = ["model.embedding_dim=4", "model.bottom_units=[16]", "model.tower_units=[8]",
        "model.experts.units=[8]", "model.experts.num_shared=2", "training.epochs=1",
        "training.batch_size=64", "training.verbose=0", "training.shuffle_buffer=256"]


def fake_examples(n: int, seed: int) -> dict:
    """Columns of ``n`` transformed examples; click/conversion drawn from known probabilities."""
    rng = np.random.default_rng(seed)
    cols = {k: rng.integers(0, c, n).astype(np.int64) for k, c in CARDINALITIES.items()}
    cols.update({k: rng.normal(size=n).astype(np.float32) for k in NUMERIC})
    user_effect = np.linspace(-1.5, 1.5, CARDINALITIES["user_id"])[cols["user_id"]]
    z_click = -1.0 + user_effect + 0.8 * cols["price"]
    p_click = 1 / (1 + np.exp(-z_click))
    p_cvr = 1 / (1 + np.exp(-(-0.5 + 0.8 * cols["user_activity"])))
    click = (rng.random(n) < p_click).astype(np.float32)
    conversion = (click * (rng.random(n) < p_cvr)).astype(np.float32)
    cols.update({"label_click": click, "label_conversion": conversion,
                 "example_weight": np.ones(n, np.float32), "group_id": cols["user_id"] * 7919,
                 "p_click": p_click.astype(np.float32), "p_conversion": (p_click * p_cvr).astype(np.float32)})
    return cols


def write_split(pattern: str, cols: dict, shards: int) -> None:
    n = len(next(iter(cols.values())))
    os.makedirs(os.path.dirname(pattern), exist_ok=True)
    for s in range(shards):
        path = pattern.replace("*", f"{s:05d}-of-{shards:05d}")
        with tf.io.TFRecordWriter(path, options="GZIP") as w:
            for i in range(s, n, shards):
                feats = {}
                for k, v in cols.items():
                    if v.dtype == np.int64:
                        feats[k] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v[i])]))
                    else:
                        feats[k] = tf.train.Feature(float_list=tf.train.FloatList(value=[float(v[i])]))
                w.write(tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString())


def make_fake_run(root: str, sizes=(768, 256, 256)) -> tuple:
    run_dir = RunDir(root)
    for i, (split, n) in enumerate(zip(("train", "validation", "test"), sizes)):
        write_split(run_dir.split_pattern(split), fake_examples(n, seed=i), shards=2 if split == "train" else 1)
    info = FeatureInfo(categorical=dict(CARDINALITIES), numeric=list(NUMERIC), tasks=["click", "conversion"],
                       passthrough=["p_click", "p_conversion"], has_weight=False, has_group=True)
    write_json_atomic(run_dir.feature_info_file, info.to_dict())
    return run_dir, info
