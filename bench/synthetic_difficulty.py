"""Measures how hard the default synthetic data is: oracle vs a full-size vs a small model.

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

    python bench/synthetic_difficulty.py                       # default config, ~3-5 min on 2 cores
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


def to_inputs(frame: pd.DataFrame) -> dict:
    out = {c: frame[c].astype(str).to_numpy() for c in CATEGORICAL if c != "hour"}
    out["hour"] = frame["hour"].to_numpy(np.int64)
    for c in NUMERIC:
        v = frame[c].to_numpy(np.float32)
        out[c] = np.log1p(v) if c in LOG1P else v
    return out


def build_model(train: pd.DataFrame, shape: dict, seed: int):
    import tensorflow as tf
    import tf_keras as keras

    keras.utils.set_random_seed(seed)
    x = to_inputs(train)
    inputs, parts = {}, []
    for c in CATEGORICAL:
        dtype = tf.int64 if c == "hour" else tf.string
        inputs[c] = keras.Input(shape=(), dtype=dtype, name=c)
        lookup_cls = keras.layers.IntegerLookup if c == "hour" else keras.layers.StringLookup
        lookup = lookup_cls(vocabulary=np.unique(x[c]), num_oov_indices=1, name=f"{c}_lookup")
        emb = keras.layers.Embedding(lookup.vocabulary_size(), shape["embedding_dim"], name=f"{c}_embedding")
        parts.append(emb(lookup(inputs[c])))
    numeric = []
    for c in NUMERIC:
        inputs[c] = keras.Input(shape=(), dtype=tf.float32, name=c)
        norm = keras.layers.Normalization(axis=None, name=f"{c}_norm")
        norm.adapt(x[c])
        numeric.append(keras.layers.Reshape((1,))(norm(inputs[c])))
    h = keras.layers.Concatenate()(parts + numeric)
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


def train_and_score(name, train, val, test, epochs, batch_size, seed) -> dict:
    import tf_keras as keras

    start = time.monotonic()
    model = build_model(train, SHAPES[name], seed)
    labels = lambda f: {t: f[t].to_numpy(np.float32) for t in TASKS}  # noqa: E731
    model.fit(
        to_inputs(train), labels(train), validation_data=(to_inputs(val), labels(val)),
        batch_size=batch_size, epochs=epochs, verbose=2, shuffle=True,
        callbacks=[keras.callbacks.EarlyStopping(patience=1, restore_best_weights=True)],
    )
    logits = model.predict(to_inputs(test), batch_size=8192, verbose=0)
    result = {t: auc(test[t], logits[t]) for t in TASKS}
    result["params"] = int(model.count_params())
    result["seconds"] = time.monotonic() - start
    log.info("%s model: %s", name, result)
    return result


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
    p.add_argument("--json", help="also write the results to this JSON file")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    overrides = list(args.overrides) + ([f"synthetic.rows={args.rows}"] if args.rows else [])
    cfg = load_config(args.config, overrides)

    start = time.monotonic()
    train, val, test = load_data(cfg, args.extra_test_rows)
    gen_seconds = time.monotonic() - start
    oracle = {t: auc(test[t], test[f"p_{t}"]) for t in TASKS}
    results = {"oracle": oracle}
    for name in args.models.split(","):
        results[name] = train_and_score(name, train, val, test, args.epochs, args.batch_size, args.seed)

    s = cfg.synthetic
    print(f"\nsynthetic: rows={s.rows} users={s.num_users} items={s.num_items} latent_dim={s.latent_dim} "
          f"interaction_scale={s.interaction_scale} task_correlation={s.task_correlation}")
    print(f"train/val/test rows: {len(train)}/{len(val)}/{len(test)}; "
          f"rates in train: click {train.click.mean():.4f}, conversion {train.conversion.mean():.4f}; "
          f"test positives: click {int(test.click.sum())}, conversion {int(test.conversion.sum())}")
    print(f"{'task':<12}{'oracle':>8}{'full':>8}{'small':>8}{'full-small':>12}{'oracle-full':>13}")
    for t in TASKS:
        full, small = results.get("full", {}).get(t, float("nan")), results.get("small", {}).get(t, float("nan"))
        print(f"{t:<12}{oracle[t]:>8.4f}{full:>8.4f}{small:>8.4f}{full - small:>12.4f}{oracle[t] - full:>13.4f}")
    wall = {name: round(r["seconds"], 1) for name, r in results.items() if name != "oracle"}
    print(f"wall time: generate {gen_seconds:.1f} s, training+scoring {wall}, total {time.monotonic() - start:.1f} s")
    if args.json:
        write_json_atomic(args.json, {"synthetic": dataclasses.asdict(s), "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
