"""Fake transformed data in a RunDir layout, for tests that must not wait for preprocessing.

``fake_run`` writes a few hundred transformed tf.Examples per the contract of
core/features.py (int64 ids, float32 numerics, label_<task>, example_weight, group_id,
passthrough oracle probabilities) as gzip TFRecord shards, plus feature_info.json. The
labels follow a known logistic model so a small model learns something in one epoch.

``make_fake_run(..., lists=True)`` adds the list features of issue 13 as preprocessing
writes them: ``hist_items`` (a sequence, most recent last, ``HIST_LENGTH`` ids of
``item_id``'s table, left-aligned, padded with ``PAD_ID``; attention-pooled with target
``item_id``) and ``item_tags`` (multi-valued, ``TAGS_LENGTH`` ids of its own table with
``item_tags__weights``, 0 on padding); the click logit then also rises when the impression's
item is in the user's history. ``ple_bins=B`` adds ``<numeric>_ple`` float32 ``[B]``
piecewise-linear encodings. The defaults write exactly what they always did.
"""
import os

import numpy as np
import tensorflow as tf

from core.features import PAD_ID, FeatureInfo, ListInfo, list_weights_key
from core.run_dir import RunDir, write_json_atomic

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CARDINALITIES = {"user_id": 21, "item_id": 11, "item_category": 4, "device": 4, "hour": 25}
NUMERIC = ["price", "user_activity", "user_tenure_days", "item_popularity", "item_rating"]
TINY = ["data.lists=[]", "model.embedding_dim=4", "model.bottom_units=[16]", "model.tower_units=[8]",
        "model.experts.units=[8]", "model.experts.num_shared=2", "training.epochs=1",
        "training.batch_size=64", "training.verbose=0", "training.shuffle_buffer=256"]
HIST_LENGTH, TAGS_LENGTH, NUM_TAGS = 6, 3, 9
HISTORY_SIGNAL = 1.5  # click logit added when item_id is in hist_items


def list_infos() -> dict:
    """The ``FeatureInfo.lists`` of ``make_fake_run(..., lists=True)``."""
    return {
        "hist_items": ListInfo(cardinality=CARDINALITIES["item_id"], length=HIST_LENGTH, pooling="attention",
                               weighted=False, table="item_id", target="item_id", kind="sequence"),
        "item_tags": ListInfo(cardinality=NUM_TAGS + 1, length=TAGS_LENGTH, pooling="mean", weighted=True,
                              table="item_tags", kind="multi_valued"),
    }


def _padded_ids(rng, n: int, length: int, cardinality: int, max_len: int) -> np.ndarray:
    ids = np.full((n, length), PAD_ID, np.int64)
    lengths = rng.integers(0, max_len + 1, n)
    for i, k in enumerate(np.minimum(lengths, length)):
        ids[i, :k] = rng.integers(0, cardinality, k)
    return ids


def _ple(x: np.ndarray, bins: int) -> np.ndarray:
    edges = np.quantile(x, np.linspace(0, 1, bins + 1))
    left, width = edges[:-1], np.maximum(np.diff(edges), 1e-12)
    return np.clip((x[:, None] - left) / width, 0.0, 1.0).astype(np.float32)


def fake_examples(n: int, seed: int, lists: bool = False, ple_bins: int = 0) -> dict:
    """Columns of ``n`` transformed examples; click/conversion drawn from known probabilities.

    A list column is a ``(n, length)`` array (int64 ids / float32 weights), a PLE column
    ``(n, bins)`` float32."""
    rng = np.random.default_rng(seed)
    cols = {k: rng.integers(0, c, n).astype(np.int64) for k, c in CARDINALITIES.items()}
    cols.update({k: rng.normal(size=n).astype(np.float32) for k in NUMERIC})
    user_effect = np.linspace(-1.5, 1.5, CARDINALITIES["user_id"])[cols["user_id"]]
    z_click = -1.0 + user_effect + 0.8 * cols["price"]
    if lists or ple_bins:
        extra = np.random.default_rng(seed + 10_000)  # the default columns' draws stay as they were
        if lists:
            hist = _padded_ids(extra, n, HIST_LENGTH, CARDINALITIES["item_id"], HIST_LENGTH + 2)
            tags = _padded_ids(extra, n, TAGS_LENGTH, NUM_TAGS + 1, TAGS_LENGTH)
            cols["hist_items"], cols["item_tags"] = hist, tags
            cols[list_weights_key("item_tags")] = np.where(tags >= 0, extra.uniform(0.1, 1.0, tags.shape),
                                                           0.0).astype(np.float32)
            z_click = z_click + HISTORY_SIGNAL * (hist == cols["item_id"][:, None]).any(axis=1)
        for k in NUMERIC if ple_bins else ():
            cols[k + "_ple"] = _ple(cols[k], ple_bins)
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
                    values = v[i].tolist() if v.ndim == 2 else [v[i].item()]
                    if v.dtype == np.int64:
                        feats[k] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(x) for x in values]))
                    else:
                        feats[k] = tf.train.Feature(float_list=tf.train.FloatList(value=[float(x) for x in values]))
                w.write(tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString())


def make_fake_run(root: str, sizes=(768, 256, 256), lists: bool = False, ple_bins: int = 0) -> tuple:
    """A RunDir with transformed train/validation/test splits and feature_info.json;
    ``lists`` / ``ple_bins``: see the module docstring."""
    run_dir = RunDir(root)
    for i, (split, n) in enumerate(zip(("train", "validation", "test"), sizes)):
        write_split(run_dir.split_pattern(split), fake_examples(n, seed=i, lists=lists, ple_bins=ple_bins),
                    shards=2 if split == "train" else 1)
    info = FeatureInfo(categorical=dict(CARDINALITIES), numeric=list(NUMERIC), tasks=["click", "conversion"],
                       passthrough=["p_click", "p_conversion"], has_weight=False, has_group=True,
                       lists=list_infos() if lists else {},
                       piecewise={f"{k}_ple": ple_bins for k in NUMERIC} if ple_bins else {})
    write_json_atomic(run_dir.feature_info_file, info.to_dict())
    return run_dir, info
