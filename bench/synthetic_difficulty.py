"""Measures how hard the default synthetic data is: oracle vs a full-size vs a small model,
and what the behaviour history (``hist_items``) and the item tags (``item_tags``) are worth.

Generates the default config's synthetic rows in memory (``pipeline.synthetic.generator.iter_chunks``),
splits them 80/10/10 (train / validation / test; ``--extra-test-rows`` more rows of the same
seed are appended to the test set so its AUCs are less noisy), and trains two multi-task
shared-bottom models directly on the raw columns in plain tf_keras (StringLookup /
IntegerLookup + Embedding per categorical column, log1p + Normalization for numerics):

  * full-size (the default teacher's shape): embeddings 16, bottom [256, 128], towers [64]
  * small (the default student's shape):     embeddings 4,  bottom [32],      towers [8]

Both heads predict per impression (click, and conversion = click and convert). It prints,
per task, the oracle AUC (true probability vs label), both models' AUC, the full-vs-small
margin, the full model's gap to the oracle, and wall times. This is a measuring instrument,
not the pipeline's model code.

The oracle's terms (``oracle_terms``; ``--oracle-only`` prints just this, in seconds): the
test set's click and conversion AUC of the true probability recomputed with a term left out
of the click affinity (``click_model.World.logits(x, terms)``: the history's repeat part, its
category part, the whole history, the tags, both), of the tag term with the expected
relevance weights (what user_id and item_id alone tell), and of the history term replaced by its
conditional mean given what a model sees (estimated on the same rows, so slightly
optimistic): (user_id, item_category), what a model without the history could at best
learn of it; the counts of exact and same-category matches among the last
``--max-length`` items, what a target-attention (DIN) pooling can represent; and the share
of same-category items among them, roughly what a mean of the history's embeddings can.

``--variants`` (comma-separated; each ``none``, ``mean`` or ``attention``, optionally
``+tags``, or just ``tags``) trains the models once per variant and prints their AUCs side
by side. ``mean`` / ``attention`` add the history: its last ``--max-length`` items share
item_id's lookup and embedding, pooled by a masked mean or by DIN target attention (an MLP
over [q, k, q - k, q * k] of the target item's and each history item's embedding, masked,
summed, no softmax); ``tags`` adds the tags as a relevance-weighted mean of tag embeddings.
``--cross-layers 3`` puts the default teacher's DCN-v2 cross layers before the bottom MLP
(products of embeddings, e.g. user x tag preferences, which a plain MLP learns poorly).

    python bench/synthetic_difficulty.py                       # default config, ~3-5 min on 2 cores
    python bench/synthetic_difficulty.py --oracle-only         # the oracle's terms, ~30 s
    python bench/synthetic_difficulty.py --models full --variants none,mean,attention,attention+tags
    python bench/synthetic_difficulty.py --rows 50000 --epochs 2 --set synthetic.latent_dim=12
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from core.run_dir import write_json_atomic  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from core.config import load_config  # noqa: E402
from pipeline.synthetic import click_model  # noqa: E402
from pipeline.synthetic.click_model import BLOCK_ROWS, World  # noqa: E402
from pipeline.synthetic.generator import iter_chunks  # noqa: E402

CATEGORICAL = ["user_id", "item_id", "item_category", "device", "hour"]
NUMERIC = ["price", "user_activity", "user_tenure_days", "item_popularity", "item_rating"]
LOG1P = ["price", "user_activity", "user_tenure_days", "item_popularity"]
TASKS = ["click", "conversion"]
SHAPES = {
    "full": {"embedding_dim": 16, "bottom": [256, 128], "tower": [64]},
    "small": {"embedding_dim": 4, "bottom": [32], "tower": [8]},
}
log = logging.getLogger("bench")


def load_data(cfg, extra_test_rows: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Rows of the config's generator split 80/10/10, plus extra test rows of the same seed."""
    s = cfg.synthetic
    total = s.rows + extra_test_rows
    s_all = dataclasses.replace(s, rows=total, chunk_rows=max(s.chunk_rows, 100_000))
    frame = pd.concat(list(iter_chunks(s_all)), ignore_index=True)
    n_train, n_val = int(0.8 * s.rows), int(0.1 * s.rows)
    return frame.iloc[:n_train], frame.iloc[n_train:n_train + n_val], frame.iloc[n_train + n_val:]


def _padded_lists(series: pd.Series, max_length: int, keep_last: bool) -> np.ndarray:
    """A list column (its "|"-joined field) as an (n, max_length) str array, "" for padding:
    the last ``max_length`` values of a sequence (keep_last) or the first of a set."""
    out = np.full((len(series), max_length), "", dtype=object)
    for k, field in enumerate(series.to_numpy(dtype=object)):
        if field:
            values = field.split("|")
            values = values[-max_length:] if keep_last else values[:max_length]
            out[k, :len(values)] = values
    return out


def to_inputs(frame: pd.DataFrame, variant: dict | None = None) -> dict:
    variant = variant or {}
    out = {c: frame[c].astype(str).to_numpy() for c in CATEGORICAL if c != "hour"}
    out["hour"] = frame["hour"].to_numpy(np.int64)
    for c in NUMERIC:
        v = frame[c].to_numpy(np.float32)
        out[c] = np.log1p(v) if c in LOG1P else v
    if variant.get("history"):
        out["hist_items"] = _padded_lists(frame["hist_items"], variant["max_length"], keep_last=True).astype(str)
    if variant.get("tags"):
        tokens = _padded_lists(frame["item_tags"], click_model.TAGS_PER_ITEM_MAX, keep_last=False)
        out["item_tags"] = np.array([[t.split(":")[0] for t in row] for row in tokens], dtype=str)
        out["item_tag_weights"] = np.array([[float(t.split(":")[1]) if t else 0.0 for t in row] for row in tokens], np.float32)
    return out


def _history_pooling(kind: str):
    """The masked pooling of a history's embeddings: mean, or DIN target attention."""
    import tensorflow as tf
    import tf_keras as keras

    class Pool(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            if kind == "attention":
                self.hidden = keras.layers.Dense(36, activation="relu")
                self.score = keras.layers.Dense(1)

        def call(self, query, keys, mask):  # (b, d), (b, L, d), (b, L)
            mask = tf.cast(mask, keys.dtype)[..., None]
            if kind == "mean":
                return tf.reduce_sum(keys * mask, axis=1) / tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)
            q = tf.broadcast_to(query[:, None, :], tf.shape(keys))
            weight = self.score(self.hidden(tf.concat([q, keys, q - keys, q * keys], axis=-1)))
            return tf.reduce_sum(weight * mask * keys, axis=1)

    return Pool(name=f"history_{kind}")


def build_model(train: pd.DataFrame, shape: dict, seed: int, variant: dict | None = None):
    import tensorflow as tf
    import tf_keras as keras

    variant = variant or {}
    keras.utils.set_random_seed(seed)
    x = to_inputs(train)
    inputs, parts, embedded = {}, [], {}
    for c in CATEGORICAL:
        dtype = tf.int64 if c == "hour" else tf.string
        inputs[c] = keras.Input(shape=(), dtype=dtype, name=c)
        lookup_cls = keras.layers.IntegerLookup if c == "hour" else keras.layers.StringLookup
        lookup = lookup_cls(vocabulary=np.unique(x[c]), num_oov_indices=1, name=f"{c}_lookup")
        emb = keras.layers.Embedding(lookup.vocabulary_size(), shape["embedding_dim"], name=f"{c}_embedding")
        embedded[c] = (lookup, emb)
        parts.append(emb(lookup(inputs[c])))
    if variant.get("history"):  # shares item_id's vocabulary and embedding table
        lookup, emb = embedded["item_id"]
        hist = inputs["hist_items"] = keras.Input(shape=(variant["max_length"],), dtype=tf.string, name="hist_items")
        keys = emb(lookup(hist))
        pool = _history_pooling(variant["history"])
        parts.append(pool(emb(lookup(inputs["item_id"])), keys, tf.not_equal(hist, "")))
    if variant.get("tags"):
        tags = inputs["item_tags"] = keras.Input(shape=(click_model.TAGS_PER_ITEM_MAX,), dtype=tf.string, name="item_tags")
        weights = inputs["item_tag_weights"] = keras.Input(shape=(click_model.TAGS_PER_ITEM_MAX,), name="item_tag_weights")
        lookup = keras.layers.StringLookup(vocabulary=[f"t{k}" for k in range(click_model.NUM_TAGS)], name="tag_lookup")
        e = keras.layers.Embedding(lookup.vocabulary_size(), shape["embedding_dim"], name="tag_embedding")(lookup(tags))
        w = weights[..., None]
        parts.append(tf.reduce_sum(e * w, axis=1) / tf.maximum(tf.reduce_sum(w, axis=1), 1e-6))
    numeric = []
    for c in NUMERIC:
        inputs[c] = keras.Input(shape=(), dtype=tf.float32, name=c)
        norm = keras.layers.Normalization(axis=None, name=f"{c}_norm")
        norm.adapt(x[c])
        numeric.append(keras.layers.Reshape((1,))(norm(inputs[c])))
    h = keras.layers.Concatenate()(parts + numeric)
    x0 = h
    for k in range(variant.get("cross_layers", 0)):  # DCN-v2: x_{l+1} = x0 * (W x_l + b) + x_l
        h = x0 * keras.layers.Dense(x0.shape[-1], name=f"cross_{k}")(h) + h
    for units in shape["bottom"]:
        h = keras.layers.Dense(units, activation="relu")(h)
    outputs = {}
    for t in TASKS:
        g = h
        for units in shape["tower"]:
            g = keras.layers.Dense(units, activation="relu", name=f"{t}_tower_{units}")(g)
        outputs[t] = keras.layers.Reshape((), name=t)(keras.layers.Dense(1, name=f"{t}_logit")(g))
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.Adam(2e-3),
        loss={t: keras.losses.BinaryCrossentropy(from_logits=True) for t in TASKS},
    )
    return model


def auc(y, p) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p))


def train_and_score(name, train, val, test, epochs, batch_size, seed, variant: dict | None = None) -> dict:
    variant = variant or {}
    import tf_keras as keras

    start = time.monotonic()
    model = build_model(train, SHAPES[name], seed, variant)
    labels = lambda f: {t: f[t].to_numpy(np.float32) for t in TASKS}  # noqa: E731
    model.fit(
        to_inputs(train, variant), labels(train), validation_data=(to_inputs(val, variant), labels(val)),
        batch_size=batch_size, epochs=epochs, verbose=2, shuffle=True,
        callbacks=[keras.callbacks.EarlyStopping(patience=1, restore_best_weights=True)],
    )
    logits = model.predict(to_inputs(test, variant), batch_size=8192, verbose=0)
    result = {t: auc(test[t], logits[t]) for t in TASKS}
    result["params"] = int(model.count_params())
    result["seconds"] = time.monotonic() - start
    log.info("%s model %s: %s", name, variant, result)
    return result


def parse_variant(text: str, max_length: int, cross_layers: int = 0) -> dict:
    """"none" | "mean" | "attention", optionally "+tags" (or just "tags")."""
    words = set(text.split("+"))
    history = next((w for w in words if w in ("mean", "attention")), None)
    unknown = words - {"none", "mean", "attention", "tags"}
    if unknown:
        raise SystemExit(f"--variants: unknown {sorted(unknown)} in {text!r} (none|mean|attention[+tags])")
    return {"history": history, "tags": "tags" in words, "max_length": max_length, "cross_layers": cross_layers}


def _conditional_mean(values: np.ndarray, *keys: np.ndarray) -> np.ndarray:
    """E[values | keys] per row, estimated on the rows themselves."""
    _, group = np.unique(np.stack(keys, axis=1), axis=0, return_inverse=True)
    group = group.ravel()
    return (np.bincount(group, values) / np.bincount(group))[group]


def oracle_terms(s, start: int, stop: int, max_length: int, click=None, conversion=None) -> dict:
    """The AUCs of the true probabilities of rows [start, stop) with terms left out or replaced
    (module docstring), for click and conversion; labels drawn as the generator draws them."""
    world = World.create(s)
    terms = {  # name -> the optional terms kept in the click affinity
        "oracle (all terms)": click_model.TERMS,
        "- history repeat part": ("category", "tags"),
        "- history category part": ("repeat", "tags"),
        "- history": ("tags",),
        "- tags": ("repeat", "category"),
        "tags -> E[T | user_id, item_id] (tags' weights unseen)": ("repeat", "category", "expected_tags"),
        "- history - tags": (),
    }
    got = {k: ([], []) for k in terms}
    labels, side = ([], []), {k: [] for k in ("h", "user", "category", "repeat_w", "category_w", "length_w")}
    no_history = ([], [])
    for block in range(start // BLOCK_ROWS, -(-stop // BLOCK_ROWS)):
        x, _ = world.draw_block(block)
        rows = slice(max(start - block * BLOCK_ROWS, 0), min(stop - block * BLOCK_ROWS, BLOCK_ROWS))
        cols = world.impressions(block)
        labels[0].append(cols["click"][rows])
        labels[1].append(cols["conversion"][rows])
        for name, kept in terms.items():
            p_click, p_conversion = world.probabilities(x, kept)
            got[name][0].append(p_click[rows])
            got[name][1].append(p_conversion[rows])
        zc, zv = world.logits(x, ("tags",))
        no_history[0].append(zc[rows])
        no_history[1].append(zv[rows])
        side["h"].append(((world.history_raw(x) - world.history_mean) / world.history_std)[rows])
        side["user"].append(x["user"][rows])
        side["category"].append(world.item_category[x["item"]][rows])
        window = x["age"] < max_length  # what a model reading the last max_length items sees
        row, hist, item = x["row"][window], x["hist"][window], x["item"]
        n = len(item)
        side["repeat_w"].append(np.bincount(row, hist == item[row], minlength=n)[rows])
        side["category_w"].append(np.bincount(row, world.item_category[hist] == world.item_category[item[row]], minlength=n)[rows])
        side["length_w"].append(np.bincount(row, minlength=n)[rows])
    y = [np.concatenate(v) for v in labels]
    if click is not None:
        assert np.array_equal(y[0], np.asarray(click)) and np.array_equal(y[1], np.asarray(conversion)), "rows misaligned"
    side = {k: np.concatenate(v) for k, v in side.items()}
    out = {name: {"click": auc(y[0], np.concatenate(p[0])), "conversion": auc(y[1], np.concatenate(p[1]))}
           for name, p in got.items()}
    # The history term replaced by its conditional mean given what a model could see.
    zc, zv = (np.concatenate(v) for v in no_history)
    a, rho, weight = world.interaction_scale, world.task_correlation, click_model._HISTORY_WEIGHT
    share = np.where(side["length_w"] > 0, np.round(10 * side["category_w"] / np.maximum(side["length_w"], 1)), -1)
    proxies = {
        "history -> E[H | user_id, item_category] (no history)": (side["user"], side["category"]),
        f"history -> E[H | same-category share of last {max_length}, item_category] (~mean pooling)": (share, side["category"]),
        f"history -> E[H | exact, same-category matches in last {max_length}] (~attention)": (np.minimum(side["repeat_w"], 5), side["category_w"]),
    }
    for name, keys in proxies.items():
        h = _conditional_mean(side["h"], *keys)
        p_click = 1.0 / (1.0 + np.exp(-(zc + a * weight * h)))
        p_cvr = 1.0 / (1.0 + np.exp(-(zv + a * rho * weight * h)))
        out[name] = {"click": auc(y[0], p_click), "conversion": auc(y[1], p_click * p_cvr)}
    return out


def print_oracle_terms(table: dict, rows: int) -> None:
    print(f"\noracle AUC with terms left out or replaced ({rows:,} test rows; biases not re-solved, AUC does not care)")
    full = table["oracle (all terms)"]
    width = max(len(k) for k in table) + 2
    print(f"{'':<{width}}{'click':>8}{'Δ':>8}{'conv':>8}{'Δ':>8}")
    for name, r in table.items():
        print(f"{name:<{width}}{r['click']:>8.4f}{r['click'] - full['click']:>+8.4f}"
              f"{r['conversion']:>8.4f}{r['conversion'] - full['conversion']:>+8.4f}")


def main(argv=None) -> int:
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=os.path.join(repo, "configs", "default.yaml"))
    p.add_argument("--rows", type=int, help="synthetic rows (default: synthetic.rows of the config)")
    p.add_argument("--extra-test-rows", type=int, default=100_000, help="extra held-out rows (default 100000)")
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--seed", type=int, default=1, help="model initialisation seed")
    p.add_argument("--models", default="full,small", help="comma-separated subset of full,small")
    p.add_argument("--variants", default="none",
                   help="comma-separated model inputs beyond the columns above: none | mean | attention, "
                        "each optionally +tags (e.g. none,mean,attention,attention+tags)")
    p.add_argument("--max-length", type=int, default=20, help="history items a model reads (the last N)")
    p.add_argument("--cross-layers", type=int, default=0,
                   help="DCN-v2 cross layers before the bottom MLP (the default teacher has 3)")
    p.add_argument("--oracle-only", action="store_true", help="only the oracle's terms (no training)")
    p.add_argument("--json", help="also write the results to this JSON file")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    overrides = list(args.overrides) + ([f"synthetic.rows={args.rows}"] if args.rows else [])
    cfg = load_config(args.config, overrides)
    variants = {v: parse_variant(v, args.max_length, args.cross_layers) for v in args.variants.split(",")}

    start = time.monotonic()
    s = cfg.synthetic
    if args.oracle_only:
        n_test = s.rows - int(0.8 * s.rows) - int(0.1 * s.rows) + args.extra_test_rows
        stop = s.rows + args.extra_test_rows
        table = oracle_terms(s, stop - n_test, stop, args.max_length)
        print_oracle_terms(table, n_test)
        print(f"wall time {time.monotonic() - start:.1f} s")
        if args.json:
            write_json_atomic(args.json, {"synthetic": dataclasses.asdict(s), "oracle_terms": table})
        return 0
    train, val, test = load_data(cfg, args.extra_test_rows)
    gen_seconds = time.monotonic() - start
    oracle = {t: auc(test[t], test[f"p_{t}"]) for t in TASKS}
    results = {"oracle": oracle}
    table = oracle_terms(s, len(train) + len(val), len(train) + len(val) + len(test), args.max_length,
                         test["click"], test["conversion"])
    results["oracle_terms"] = table
    for name in args.models.split(","):
        for label, variant in variants.items():
            key = name if label == "none" else f"{name}[{label}]"
            results[key] = train_and_score(name, train, val, test, args.epochs, args.batch_size, args.seed, variant)

    print(f"\nsynthetic: rows={s.rows} users={s.num_users} items={s.num_items} latent_dim={s.latent_dim} "
          f"interaction_scale={s.interaction_scale} task_correlation={s.task_correlation}")
    print(f"train/val/test rows: {len(train)}/{len(val)}/{len(test)}; "
          f"rates in train: click {train.click.mean():.4f}, conversion {train.conversion.mean():.4f}; "
          f"test positives: click {int(test.click.sum())}, conversion {int(test.conversion.sum())}")
    print(f"{'task':<12}{'oracle':>8}{'full':>8}{'small':>8}{'full-small':>12}{'oracle-full':>13}")
    for t in TASKS:
        full, small = results.get("full", {}).get(t, float("nan")), results.get("small", {}).get(t, float("nan"))
        print(f"{t:<12}{oracle[t]:>8.4f}{full:>8.4f}{small:>8.4f}{full - small:>12.4f}{oracle[t] - full:>13.4f}")
    trained = [k for k in results if k not in ("oracle", "oracle_terms")]
    if len(variants) > 1 or "none" not in variants:
        print(f"\n{'model [inputs]':<28}" + "".join(f"{t:>12}" for t in TASKS) + f"{'params':>10}{'seconds':>9}")
        for k in trained:
            r = results[k]
            print(f"{k:<28}" + "".join(f"{r[t]:>12.4f}" for t in TASKS) + f"{r['params']:>10}{r['seconds']:>9.0f}")
    print_oracle_terms(table, len(test))
    wall = {name: round(results[name]["seconds"], 1) for name in trained}
    print(f"wall time: generate {gen_seconds:.1f} s, training+scoring {wall}, total {time.monotonic() - start:.1f} s")
    if args.json:
        write_json_atomic(args.json, {"synthetic": dataclasses.asdict(s), "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
