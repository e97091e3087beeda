"""Teacher vs DeepCTR's SharedBottom / MMOE / PLE on the same census-income rows, several seeds.

Usage (after ``python -m pipeline preprocess --config configs/census_income.yaml --run-dir RUN``)::

    python bench/teacher_vs_deepctr.py --run-dir RUN [--seeds 1 2 3] [--epochs 6] \\
        [--peer-python /work/.venv-deepctr/bin/python]

Every model trains on the run's train split, early-stops on the validation split (mean
AUC, best weights restored) and is scored on the test split. The peers run in a separate
virtualenv with DeepCTR (it is a dependency of this benchmark only, never of the package):
this script exports the splits to an ``.npz`` and re-invokes itself there with
``--peer-worker``. Without a working DeepCTR, ``--peer-python`` pointing nowhere or
``--reimplement`` uses small re-implementations of DeepCTR's models with DeepCTR's default
hyperparameters instead, labelled "re-implementation" in the table.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

# DeepCTR 0.9.4 defaults (deepctr/models/multitask/*.py) and its census-income example
# (embedding_dim=4, adam, binary cross-entropy, batch 256).
PEERS = {
    "SharedBottom": {"bottom_dnn_hidden_units": (256, 128), "tower_dnn_hidden_units": (64,)},
    "MMOE": {"num_experts": 3, "expert_dnn_hidden_units": (256, 128), "tower_dnn_hidden_units": (64,)},
    "PLE": {"shared_expert_num": 1, "specific_expert_num": 1, "num_levels": 2, "expert_dnn_hidden_units": (256,),
            "tower_dnn_hidden_units": (64,)},
}
PEER_EMBEDDING_DIM, PEER_BATCH, L2_EMB = 4, 256, 1e-5


# ----------------------------------------------------------------------------- peer side
def _reimplemented(name, sparse, dense, vocab, num_tasks, seed):
    """DeepCTR's models rebuilt with tf_keras: embeddings (dim 4, l2 1e-5) + dense inputs ->
    backbone -> towers -> sigmoid, same defaults as ``PEERS``."""
    import tf_keras as keras

    keras.utils.set_random_seed(seed)
    L = keras.layers
    inputs = {n: keras.Input((1,), name=n, dtype="int64") for n in sparse}
    inputs.update({n: keras.Input((1,), name=n) for n in dense})
    emb = [L.Flatten()(L.Embedding(vocab[n], PEER_EMBEDDING_DIM, embeddings_regularizer=keras.regularizers.l2(L2_EMB))(inputs[n]))
           for n in sparse]
    x = L.Concatenate()(emb + [inputs[n] for n in dense])

    def dnn(h, units):
        for u in units:
            h = L.Dense(u, activation="relu")(h)
        return h

    def mix(gate_in, experts):
        g = L.Dense(len(experts), activation="softmax", use_bias=False)(gate_in)
        stacked = L.Lambda(lambda e: keras.backend.stack(e, axis=1))(experts)
        return L.Lambda(lambda a: keras.backend.sum(a[0] * keras.backend.expand_dims(a[1], -1), axis=1))([stacked, g])

    p = PEERS[name]
    if name == "SharedBottom":
        reps = [dnn(x, p["bottom_dnn_hidden_units"])] * num_tasks
    elif name == "MMOE":
        experts = [dnn(x, p["expert_dnn_hidden_units"]) for _ in range(p["num_experts"])]
        reps = [mix(x, experts) for _ in range(num_tasks)]
    else:
        task_in, shared_in = [x] * num_tasks, x
        for level in range(p["num_levels"]):
            spec = [[dnn(task_in[t], p["expert_dnn_hidden_units"]) for _ in range(p["specific_expert_num"])] for t in range(num_tasks)]
            shared = [dnn(shared_in, p["expert_dnn_hidden_units"]) for _ in range(p["shared_expert_num"])]
            outs = [mix(task_in[t], spec[t] + shared) for t in range(num_tasks)]
            if level < p["num_levels"] - 1:
                shared_in = mix(shared_in, [e for s in spec for e in s] + shared)
            task_in = outs
        reps = task_in
    outs = [L.Dense(1, activation="sigmoid", use_bias=False)(dnn(r, p["tower_dnn_hidden_units"])) for r in reps]
    return keras.Model(inputs, outs)


def _deepctr(name, sparse, dense, vocab, num_tasks, seed):
    from deepctr.feature_column import DenseFeat, SparseFeat
    from deepctr.models import MMOE, PLE, SharedBottom

    cols = [SparseFeat(n, vocabulary_size=vocab[n], embedding_dim=PEER_EMBEDDING_DIM) for n in sparse]
    cols += [DenseFeat(n, 1) for n in dense]
    cls = {"SharedBottom": SharedBottom, "MMOE": MMOE, "PLE": PLE}[name]
    return cls(cols, task_types=["binary"] * num_tasks, task_names=[f"task_{i}" for i in range(num_tasks)],
               seed=seed, **PEERS[name])


def peer_worker(data_path: str, out_path: str, name: str, seed: int, epochs: int, reimplement: bool) -> None:
    """Trains one peer on the exported splits and writes its test AUCs as JSON."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tensorflow as tf
    from sklearn.metrics import roc_auc_score

    d = np.load(data_path, allow_pickle=True)
    meta = json.loads(str(d["meta"]))
    sparse, dense, tasks, vocab = meta["sparse"], meta["dense"], meta["tasks"], meta["vocab"]
    split = lambda s: ({n: d[f"{s}/{n}"] for n in sparse + dense}, [d[f"{s}/label_{t}"] for t in tasks])  # noqa: E731
    (xtr, ytr), (xva, yva), (xte, yte) = split("train"), split("validation"), split("test")
    tf.keras.utils.set_random_seed(seed)
    build = _reimplemented if reimplement else _deepctr
    model = build(name, sparse, dense, vocab, len(tasks), seed)
    model.compile("adam", loss=["binary_crossentropy"] * len(tasks))

    class ValAuc(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            preds = model.predict(xva, batch_size=4096, verbose=0)
            logs["val_auc_mean"] = float(np.mean([roc_auc_score(y, p.ravel()) for y, p in zip(yva, preds)]))

    stop = tf.keras.callbacks.EarlyStopping("val_auc_mean", mode="max", patience=2, restore_best_weights=True)
    start = time.perf_counter()
    history = model.fit(xtr, ytr, batch_size=PEER_BATCH, epochs=epochs, verbose=2, callbacks=[ValAuc(), stop])
    seconds = time.perf_counter() - start
    preds = model.predict(xte, batch_size=4096, verbose=0)
    with open(out_path, "w") as f:
        json.dump({**{t: float(roc_auc_score(y, p.ravel())) for t, y, p in zip(tasks, yte, preds)},
                   **_speed(seconds, len(history.epoch), len(ytr[0]))}, f)


def _speed(fit_seconds: float, epochs: int, train_rows: int) -> dict:
    """Training speed of one fit (validation callbacks included, as each side runs them)."""
    return {"fit_seconds": fit_seconds, "epochs_run": epochs,
            "examples_per_second": epochs * train_rows / max(fit_seconds, 1e-9)}


# ----------------------------------------------------------------------------- our side
def export_splits(run_dir, info, path: str) -> int:
    """Writes the train/validation/test splits as numpy arrays (the same rows every model
    sees); returns the number of training rows."""
    from models.inputs import make_dataset

    arrays = {}
    for split in ("train", "validation", "test"):
        chunks = {}
        for batch in make_dataset(run_dir.split_pattern(split), info, 8192):
            for k, v in batch.items():
                chunks.setdefault(k, []).append(v.numpy())
        arrays.update({f"{split}/{k}": np.concatenate(v) for k, v in chunks.items()})
    meta = {"sparse": list(info.categorical), "dense": list(info.numeric), "tasks": list(info.tasks), "vocab": info.categorical}
    np.savez(path, meta=json.dumps(meta), **arrays)
    return len(arrays[f"train/label_{info.tasks[0]}"])


def run_teacher(cfg, run_dir, info, seed: int, epochs: int, train_rows: int) -> dict:
    import dataclasses

    import tf_keras as keras

    from models.builder import build_ranker
    from models.evaluation import evaluate_predictions, predict_split
    from models.inputs import make_dataset
    from models.training import train_model

    keras.backend.clear_session()
    t = dataclasses.replace(cfg.training, seed=seed, verbose=0)
    model = build_ranker(cfg.model, info, cfg.data.tasks, cfg.data.funnel, seed=seed)
    start = time.perf_counter()
    fixed_steps = t.steps_per_epoch is not None
    train_ds = make_dataset(run_dir.split_pattern("train"), info, t.batch_size, shuffle=True,
                            shuffle_buffer=t.shuffle_buffer, seed=seed, repeat=fixed_steps)
    val_ds = make_dataset(run_dir.split_pattern("validation"), info, t.batch_size)
    result = train_model(model, train_ds, val_ds, t, None, tasks=cfg.task_names, epochs=epochs,
                         train_rows=None if fixed_steps else train_rows, name="bench")
    seconds = time.perf_counter() - start
    arrays = predict_split(model.serving_model(), run_dir.split_pattern("test"), info)
    aucs = {t: m["auc"] for t, m in evaluate_predictions(arrays, cfg.data.tasks, cfg.model, cfg.data.funnel, use_groups=False).items()}
    return {**aucs, **_speed(seconds, len(result.epochs), train_rows)}


def run_peer(python: str, data: str, name: str, seed: int, epochs: int, reimplement: bool) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    cmd = [python, os.path.abspath(__file__), "--peer-worker", name, "--data", data, "--out", out,
           "--seed", str(seed), "--epochs", str(epochs)] + (["--reimplement"] if reimplement else [])
    # DeepCTR checks PyPI for a newer version on import: point that request at a closed
    # loopback port so the benchmark never leaves the machine.
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2",
               HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9", NO_PROXY="")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} (seed {seed}) failed:\n{proc.stderr[-3000:]}")
    with open(out) as f:
        return json.load(f)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run-dir", help="a preprocessed census-income run directory")
    ap.add_argument("--config", default=os.path.join(os.path.dirname(__file__), "..", "configs", "census_income.yaml"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="one training per model per seed")
    ap.add_argument("--epochs", type=int, default=6, help="maximum epochs of every model (early stopping on val AUC)")
    ap.add_argument("--peer-python", default="/work/.venv-deepctr/bin/python",
                    help="python of the virtualenv holding DeepCTR; ignored with --reimplement")
    ap.add_argument("--reimplement", action="store_true", help="use the DeepCTR re-implementations instead of DeepCTR")
    ap.add_argument("--output", help="JSON results file (default: <run-dir>/bench_teacher_vs_deepctr.json)")
    ap.add_argument("--peer-worker", metavar="MODEL", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.peer_worker:
        peer_worker(args.data, args.out, args.peer_worker, args.seed, args.epochs, args.reimplement)
        return 0
    if not args.run_dir:
        ap.error("--run-dir is required")
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from models.model_io import load_feature_info
    from core.config import load_config
    from core.run_dir import RunDir, write_json_atomic

    cfg, run_dir = load_config(args.config), RunDir(args.run_dir)
    info = load_feature_info(run_dir.feature_info_file)
    reimplement = args.reimplement or not os.path.exists(args.peer_python)
    python = sys.executable if reimplement else args.peer_python
    label = "re-implementation of DeepCTR" if reimplement else "DeepCTR"
    data = os.path.join(run_dir.root, "bench_splits.npz")
    train_rows = export_splits(run_dir, info, data)
    results = {f"teacher ({cfg.model.backbone}, aux {'on' if cfg.model.aux.enabled else 'off'})": [
        run_teacher(cfg, run_dir, info, s, args.epochs, train_rows) for s in args.seeds]}
    for name in PEERS:
        results[f"{name} ({label})"] = [run_peer(python, data, name, s, args.epochs, reimplement) for s in args.seeds]
    print("| model | " + " | ".join(f"test AUC {t} (mean ± std over seeds {args.seeds})" for t in info.tasks) + " |")
    print("|---|" + "---|" * len(info.tasks))
    for name, runs in results.items():
        cells = [f"{np.mean([r[t] for r in runs]):.4f} ± {np.std([r[t] for r in runs]):.4f}" for t in info.tasks]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\n| model | training examples / s (mean over seeds; fit incl. per-epoch validation) | epochs run | fit seconds |")
    print("|---|---|---|---|")
    for name, runs in results.items():
        print(f"| {name} | {np.mean([r['examples_per_second'] for r in runs]):,.0f} | "
              f"{np.mean([r['epochs_run'] for r in runs]):.1f} | {np.mean([r['fit_seconds'] for r in runs]):.1f} |")
    write_json_atomic(args.output or os.path.join(run_dir.root, "bench_teacher_vs_deepctr.json"),
                      {"seeds": args.seeds, "epochs": args.epochs, "peers": label, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
