"""Fake transformed data with every feature kind (lists, a weighted list, a cross, PLE), for
the model tests: the columns of ``tests/fakes/transformed_run.py`` plus

* ``hist_items``: a sequence of item ids (shares ``item_id``'s table), padded with ``PAD_ID``,
  attention-pooled with target ``item_id``; the click probability rises when the target item
  is in the history (so a model with it learns something);
* ``tags``: a weighted multi-valued list (``tags__weights``), sqrtn-pooled;
* ``device_x_hour``: a hashed cross (a categorical with its bucket count);
* ``price_ple``: a piecewise-linear encoding of ``price`` over 4 bins.
"""
import os

import numpy as np
import tensorflow as tf

from core.features import PAD_ID, FeatureInfo, ListInfo, list_weights_key
from core.run_dir import RunDir, write_json_atomic
from tests.fakes.transformed_run import CARDINALITIES, NUMERIC, fake_examples

HIST, TAGS, BINS = 6, 3, 4
CROSS = 17


def list_info() -> FeatureInfo:
    return FeatureInfo(
        categorical={**CARDINALITIES, "device_x_hour": CROSS}, numeric=list(NUMERIC),
        lists={"hist_items": ListInfo(CARDINALITIES["item_id"], HIST, "attention", False, "item_id", "item_id",
                                      "sequence"),
               "tags": ListInfo(5, TAGS, "sqrtn", True, "tags")},
        piecewise={"price_ple": BINS}, tasks=["click", "conversion"], passthrough=["p_click", "p_conversion"],
        has_weight=False, has_group=True)


def _padded(rng, n, width, cardinality):
    ids = np.full((n, width), PAD_ID, np.int64)
    lengths = rng.integers(0, width + 1, n)
    for i, k in enumerate(lengths):
        ids[i, :k] = rng.integers(0, cardinality, k)
    return ids


def list_examples(n: int, seed: int) -> dict:
    """Columns of ``n`` transformed examples with every kind; 2-D for lists and PLE."""
    rng = np.random.default_rng(seed + 100)
    cols = fake_examples(n, seed)
    cols["device_x_hour"] = (cols["device"] * 25 + cols["hour"]) % CROSS
    hist = _padded(rng, n, HIST, CARDINALITIES["item_id"])
    cols["hist_items"] = hist
    tags = _padded(rng, n, TAGS, 5)
    cols["tags"] = tags
    cols[list_weights_key("tags")] = np.where(tags >= 0, rng.uniform(0.5, 2.0, tags.shape), 0.0).astype(np.float32)
    edges = np.linspace(-2.0, 2.0, BINS + 1)
    x = cols["price"][:, None]
    cols["price_ple"] = np.clip((x - edges[:-1]) / (edges[1:] - edges[:-1]), 0.0, 1.0).astype(np.float32)
    # the signal: clicks are likelier when the target item is in the user's history
    seen = (hist == cols["item_id"][:, None]).any(axis=1)
    p = np.clip(cols["p_click"] + 0.4 * seen, 0.0, 0.98).astype(np.float32)
    cols["p_click"] = p
    cols["label_click"] = (rng.random(n) < p).astype(np.float32)
    cols["label_conversion"] = cols["label_click"] * cols["label_conversion"]
    return cols


def write_examples(path: str, cols: dict) -> None:
    n = len(next(iter(cols.values())))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path, options="GZIP") as w:
        for i in range(n):
            feats = {}
            for k, v in cols.items():
                row = np.atleast_1d(v[i])
                if v.dtype == np.int64:
                    feats[k] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(x) for x in row]))
                else:
                    feats[k] = tf.train.Feature(float_list=tf.train.FloatList(value=[float(x) for x in row]))
            w.write(tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString())


def make_list_run(root: str, sizes=(512, 128, 128)):
    """(RunDir, FeatureInfo) with train / validation / test shards of every kind."""
    run_dir = RunDir(root)
    for i, (split, n) in enumerate(zip(("train", "validation", "test"), sizes)):
        write_examples(run_dir.split_pattern(split).replace("*", "00000-of-00001"), list_examples(n, seed=i))
    info = list_info()
    write_json_atomic(run_dir.feature_info_file, info.to_dict())
    return run_dir, info
