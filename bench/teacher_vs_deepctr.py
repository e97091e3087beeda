"""Training speed of our train stage vs DeepCTR's SharedBottom / MMoE / PLE, side by side.

Usage, on a preprocessed run directory (``python -m pipeline preprocess --config CONFIG
--run-dir RUN``) and with the config it was preprocessed with::

    # census-income (the default --config)
    python bench/teacher_vs_deepctr.py --run-dir RUN [--models SharedBottom MMoE PLE] \\
        [--repeats 3] [--epochs 2] [--peer-python /work/.venv-deepctr/bin/python]
    # the default synthetic data
    python bench/teacher_vs_deepctr.py --run-dir RUN --config configs/default.yaml [...]

For each model it alternates the two systems ``--repeats`` times (ours, DeepCTR; then
DeepCTR, ours; ...), each run in a fresh process, so machine noise hits both, and prints a
markdown table: training examples/s of each side (median [min, max]), their ratio per
alternation (ours / DeepCTR, median [min, max]), the mean test AUC per task and the peak RSS
of each side. Every run is written to ``--output`` (default
``<run-dir>/bench_teacher_vs_deepctr.json``); a progress line per run goes to stderr.

* **Ours** is timed as a user runs it: the run directory's ``preprocess/`` is copied into a
  fresh run directory and the whole train stage
  (``pipeline.stages.train.train_role``: input set-up, build, ``fit`` with per-epoch
  validation, saving, plot) is timed; examples/s = the stage's rows (epochs x train rows) /
  its seconds; and so is its ``fit`` alone (``models.training.train_model`` with per-epoch
  validation, on the splits the stage has already read into memory when
  ``training.cache`` holds them, else streamed from their shards), like for like with
  DeepCTR's ``fit`` on arrays already in memory. The config's input and execution settings (``training.steps_per_execution``,
  ``training.shuffle_buffer``, caching ...) are kept; only the model and the optimizer are set
  to DeepCTR's (``COMMON_OVERRIDES``, ``MODELS``). The test split is scored with the saved
  serving model afterwards, outside the timed region.
* **DeepCTR** 0.9.4 runs in a virtualenv of its own (a dependency of this benchmark only,
  never of the package; create it with ``python3 -m venv /work/.venv-deepctr &&
  /work/.venv-deepctr/bin/pip install tensorflow==2.21.0 tf-keras==2.21.0 deepctr==0.9.4
  pandas scikit-learn``): the splits are exported once to an ``.npz`` (not timed) and this
  script re-invokes itself there; ``model.fit`` (with a per-epoch validation AUC callback) is
  timed. Without that virtualenv the script stops with an error naming it; only with
  ``--reimplement`` do small re-implementations of DeepCTR's models with its default
  hyperparameters run instead (labelled so in every line and in the JSON).

Both sides read only the categorical and numeric features (DeepCTR has no equivalent of our
list features or piecewise-linear encodings), train ``--epochs`` epochs of batch 256 with Adam
(learning rate 1e-3) and the same seed per alternation, and report ``ru_maxrss`` of their
process as peak RSS. Times are wall seconds on this machine.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EMBEDDING_DIM, BATCH, L2_EMB, LEARNING_RATE = 4, 256, 1e-5, 1e-3
# Early stopping never triggers within the benchmark's few epochs (both sides).
PATIENCE = 100

# Per model: DeepCTR 0.9.4's class and defaults (deepctr/models/multitask/*.py; its
# census-income example: embedding_dim 4, adam, binary cross-entropy, batch 256) and our
# equivalent config. Not exactly equivalent: our MMoE/PLE gates have a bias (DeepCTR's
# softmax gates none); our tables of features with fewer ids than the embedding dim are
# narrower (min(dim, ids), e.g. 3 for a 3-id feature; DeepCTR: always 4); initialisers differ
# (DeepCTR: glorot_normal). Our tower's logit Dense has a bias, DeepCTR's has none but its
# PredictionLayer adds one: the same.
MODELS = {
    "SharedBottom": {
        "deepctr": "SharedBottom",
        "peer": {"bottom_dnn_hidden_units": (256, 128), "tower_dnn_hidden_units": (64,)},
        "ours": ["model.backbone=shared_bottom", "model.bottom_units=[256, 128]", "model.tower_units=[64]"],
    },
    "MMoE": {
        "deepctr": "MMOE",
        "peer": {"num_experts": 3, "expert_dnn_hidden_units": (256, 128), "tower_dnn_hidden_units": (64,)},
        "ours": ["model.backbone=mmoe", "model.experts.num_shared=3", "model.experts.units=[256, 128]",
                 "model.tower_units=[64]"],
    },
    "PLE": {
        "deepctr": "PLE",
        "peer": {"shared_expert_num": 1, "specific_expert_num": 1, "num_levels": 2,
                 "expert_dnn_hidden_units": (256,), "tower_dnn_hidden_units": (64,)},
        "ours": ["model.backbone=ple", "model.experts.num_shared=1", "model.experts.num_specific=1",
                 "model.experts.levels=2", "model.experts.units=[256]", "model.tower_units=[64]"],
    },
}

# DeepCTR's defaults that every model of ours gets: no aux towers, cross layers, dropout,
# kernel L2 or funnel losses; L2 1e-5 on the embedding tables; plain Adam 1e-3 (no decay);
# one pass over the train split per epoch. Input and execution settings stay the config's.
COMMON_OVERRIDES = [
    "model.aux.enabled=false", f"model.embedding_dim={EMBEDDING_DIM}", "model.cross_layers=0",
    "model.dropout=0.0", "model.l2=0.0", f"model.embedding_l2={L2_EMB:f}", "model.esmm=false",
    "model.masked_child_loss=false",
    f"training.batch_size={BATCH}", f"training.learning_rate={LEARNING_RATE}", "training.lr_decay_rate=1.0",
    "training.steps_per_epoch=null", "training.verbose=0", f"training.early_stopping_patience={PATIENCE}",
]


def _peak_rss_mb() -> float:
    """This process's peak resident set size in MB (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----------------------------------------------------------------------------- DeepCTR side
def _reimplemented(name, sparse, dense, vocab, num_tasks, seed):
    """DeepCTR's models rebuilt with tf_keras: embeddings (dim 4, l2 1e-5) + dense inputs ->
    backbone -> towers -> sigmoid, with the defaults of ``MODELS``."""
    import tf_keras as keras

    keras.utils.set_random_seed(seed)
    L = keras.layers
    inputs = {n: keras.Input((1,), name=n, dtype="int64") for n in sparse}
    inputs.update({n: keras.Input((1,), name=n) for n in dense})
    emb = [L.Flatten()(L.Embedding(vocab[n], EMBEDDING_DIM, embeddings_regularizer=keras.regularizers.l2(L2_EMB))(inputs[n]))
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

    p = MODELS[name]["peer"]
    if name == "SharedBottom":
        reps = [dnn(x, p["bottom_dnn_hidden_units"])] * num_tasks
    elif name == "MMoE":
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
    outs = [L.Dense(1, activation="sigmoid")(dnn(r, p["tower_dnn_hidden_units"])) for r in reps]
    return keras.Model(inputs, outs)


def _deepctr(name, sparse, dense, vocab, num_tasks, seed):
    """DeepCTR's own model ``name`` with the defaults of ``MODELS``."""
    import deepctr.models
    from deepctr.feature_column import DenseFeat, SparseFeat

    cols = [SparseFeat(n, vocabulary_size=vocab[n], embedding_dim=EMBEDDING_DIM) for n in sparse]
    cols += [DenseFeat(n, 1) for n in dense]
    cls = getattr(deepctr.models, MODELS[name]["deepctr"])
    return cls(cols, task_types=["binary"] * num_tasks, task_names=[f"task_{i}" for i in range(num_tasks)],
               seed=seed, l2_reg_embedding=L2_EMB, **MODELS[name]["peer"])


def peer_worker(data_path: str, name: str, seed: int, epochs: int, reimplement: bool) -> dict:
    """Trains one DeepCTR model on the exported splits: fit seconds and speed, test AUCs, peak RSS."""
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
    model.compile(tf.keras.optimizers.Adam(LEARNING_RATE), loss=["binary_crossentropy"] * len(tasks))

    class ValAuc(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            preds = model.predict(xva, batch_size=4096, verbose=0)
            logs["val_auc_mean"] = float(np.mean([roc_auc_score(y, p.ravel()) for y, p in zip(yva, preds)]))

    stop = tf.keras.callbacks.EarlyStopping("val_auc_mean", mode="max", patience=PATIENCE, restore_best_weights=True)
    start = time.perf_counter()
    history = model.fit(xtr, ytr, batch_size=BATCH, epochs=epochs, verbose=0, callbacks=[ValAuc(), stop])
    seconds = time.perf_counter() - start
    rss = _peak_rss_mb()
    preds = model.predict(xte, batch_size=4096, verbose=0)
    rows = len(history.epoch) * len(ytr[0])
    return {"seconds": seconds, "timed": "model.fit", "rows": rows, "epochs_run": len(history.epoch),
            "examples_per_second": rows / seconds, "peak_rss_mb": rss,
            "auc": {t: float(roc_auc_score(y, p.ravel())) for t, y, p in zip(tasks, yte, preds)}}


# ----------------------------------------------------------------------------- our side
def bench_features(info) -> list[str]:
    """The features both sides read: ``info``'s categorical and numeric ones."""
    return list(info.categorical) + list(info.numeric)


def our_overrides(name: str, features: list[str], epochs: int) -> list[str]:
    """The ``--set`` overrides of our model ``name`` (``COMMON_OVERRIDES`` + ``MODELS``)."""
    return COMMON_OVERRIDES + MODELS[name]["ours"] + [f"model.features=[{', '.join(features)}]",
                                                      f"training.epochs={epochs}"]


def ours_worker(config: str, source_run: str, name: str, seed: int, epochs: int) -> dict:
    """Runs our train stage for model ``name`` in a fresh copy of ``source_run``'s preprocess
    output: stage seconds and speed, peak RSS, then (untimed) the saved model's test AUCs."""
    from core.config import load_config
    from core.run_dir import RunDir
    from models import model_io
    from models.evaluation import evaluate_predictions, predict_split
    from pipeline.stages.train import ROLE, train_role

    from models import training

    source = RunDir(source_run)
    features = bench_features(model_io.load_feature_info(source.feature_info_file))
    cfg = load_config(config, our_overrides(name, features, epochs) + [f"training.seed={seed}"])
    fit = training.train_model
    fit_seconds = []

    def timed_fit(*args, **kwargs):  # the stage's fit (with per-epoch validation), as DeepCTR's is timed
        t0 = time.perf_counter()
        try:
            return fit(*args, **kwargs)
        finally:
            fit_seconds.append(time.perf_counter() - t0)

    training.train_model = timed_fit
    with tempfile.TemporaryDirectory(prefix="bench_run_") as root:
        run_dir = RunDir(root)
        shutil.copytree(source.preprocess_dir, run_dir.preprocess_dir)
        start = time.perf_counter()
        result = train_role(cfg, run_dir, ROLE, cfg.model)
        seconds = time.perf_counter() - start
        rss = _peak_rss_mb()
        model_dir, stage = run_dir.model_dir(ROLE), run_dir.role_stage(ROLE)
        model_cfg, tasks, funnel, info = model_io.load_model_config(model_dir, stage)
        arrays = predict_split(model_io.load_serving_model(model_dir, stage), run_dir.split_pattern("test"), info)
        metrics = evaluate_predictions(arrays, tasks, model_cfg, funnel, use_groups=False)
    return {"seconds": seconds, "timed": "train stage", "rows": result.rows, "fit_seconds": fit_seconds[0],
            "fit_examples_per_second": result.rows / fit_seconds[0],
            "epochs_run": result.metrics["epochs_run"], "examples_per_second": result.rows / seconds,
            "peak_rss_mb": rss, "auc": {t: float(m["auc"]) for t, m in metrics.items()}}


def export_splits(run_dir, info, path: str) -> None:
    """Writes the train/validation/test splits' features (``info``'s categorical and numeric)
    and labels as numpy arrays to ``path``: the rows DeepCTR trains and is scored on."""
    from core.features import label_key
    from models.inputs import make_dataset

    keep = list(info.categorical) + list(info.numeric) + [label_key(t) for t in info.tasks]
    arrays = {}
    for split in ("train", "validation", "test"):
        chunks = {k: [] for k in keep}
        for batch in make_dataset(run_dir.split_pattern(split), info, 8192):
            for k in keep:
                chunks[k].append(batch[k].numpy())
        arrays.update({f"{split}/{k}": np.concatenate(v) for k, v in chunks.items()})
    meta = {"sparse": list(info.categorical), "dense": list(info.numeric), "tasks": list(info.tasks),
            "vocab": info.categorical}
    np.savez(path, meta=json.dumps(meta), **arrays)


# ----------------------------------------------------------------------------- driver
def run_worker(python: str, args: list[str], env: dict, what: str) -> dict:
    """Runs this script as a worker (``python this.py --worker ... --out FILE``); its result."""
    fd, out = tempfile.mkstemp(suffix=".json", prefix="bench_worker_")
    os.close(fd)
    try:
        proc = subprocess.run([python, os.path.abspath(__file__), *args, "--out", out],
                              capture_output=True, text=True, env=env, cwd=REPO)
        if proc.returncode != 0:
            raise RuntimeError(f"{what} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
        with open(out) as f:
            return json.load(f)
    finally:
        os.remove(out)


def peer_env() -> dict:
    """The DeepCTR worker's environment: Keras 2, and DeepCTR's version check on import (a
    request to PyPI) sent to a closed loopback port so the benchmark never leaves the machine."""
    return dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2",
                HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9", NO_PROXY="")


def alternate(name: str, repeats: int, ours_args, peer_args, peer_python: str, peer_label: str) -> dict:
    """``repeats`` alternations of our run and DeepCTR's for model ``name`` (ours first on even
    repeats, DeepCTR first on odd ones), seed ``repeat + 1`` on both sides; a progress line
    per run on stderr."""
    runs = {"ours": [], "peer": []}
    for r in range(repeats):
        seed = ["--seed", str(r + 1), "--model", name]
        sides = [("ours", sys.executable, ["--worker", "ours", *ours_args, *seed], dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")),
                 ("peer", peer_python, ["--worker", "peer", *peer_args, *seed], peer_env())]
        for side, python, args, env in sides if r % 2 == 0 else sides[::-1]:
            run = run_worker(python, args, env, f"{name} {side} (repeat {r + 1})")
            runs[side].append({"repeat": r + 1, "seed": r + 1, **run})
            print(f"{name:<12} {'ours' if side == 'ours' else peer_label} repeat {r + 1}/{repeats}: {run['seconds']:7.1f} s, "
                  f"{run['examples_per_second']:9,.0f} examples/s, AUC "
                  + ", ".join(f"{t} {v:.4f}" for t, v in run["auc"].items()), file=sys.stderr, flush=True)
    runs["ratios"] = [o["examples_per_second"] / p["examples_per_second"] for o, p in zip(runs["ours"], runs["peer"])]
    runs["fit_ratios"] = [o["fit_examples_per_second"] / p["examples_per_second"] for o, p in zip(runs["ours"], runs["peer"])]
    return runs


def _spread(values, fmt: str) -> str:
    """``median [min, max]`` of ``values``."""
    return f"{statistics.median(values):{fmt}} [{min(values):{fmt}}, {max(values):{fmt}}]"


def markdown_table(results: dict, tasks: list[str], peer_label: str) -> str:
    """One row per model: both sides' examples/s, their ratio per alternation, AUCs, peak RSS."""
    lines = [f"| model | ours ex/s: stage | ours ex/s: fit | {peer_label} ex/s: fit | ratio per alternation: "
             f"our stage / {peer_label} | ratio: our fit / {peer_label} | "
             f"test AUC ours / {peer_label} (mean) | peak RSS MB ours / {peer_label} (max) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, runs in results.items():
        ours, peer = runs["ours"], runs["peer"]
        auc = ", ".join(f"{t} {np.mean([r['auc'][t] for r in ours]):.4f} / {np.mean([r['auc'][t] for r in peer]):.4f}"
                        for t in tasks)
        lines.append(f"| {name} | {_spread([r['examples_per_second'] for r in ours], ',.0f')} | "
                     f"{_spread([r['fit_examples_per_second'] for r in ours], ',.0f')} | "
                     f"{_spread([r['examples_per_second'] for r in peer], ',.0f')} | "
                     f"{_spread(runs['ratios'], '.2f')} | {_spread(runs['fit_ratios'], '.2f')} | {auc} | "
                     f"{max(r['peak_rss_mb'] for r in ours):,.0f} / {max(r['peak_rss_mb'] for r in peer):,.0f} |")
    return "\n".join(lines)


def bench(args) -> int:
    """Exports the splits, alternates the two sides per model, prints the table, writes the JSON."""
    reimplement = args.reimplement
    if not reimplement and not os.path.exists(args.peer_python):
        print(f"error: --peer-python {args.peer_python} does not exist: the real DeepCTR cannot run. Create that "
              "virtualenv (see this script's docstring), point --peer-python at one, or pass --reimplement to "
              "compare with the re-implementations instead (reported as such)", file=sys.stderr)
        return 2
    sys.path.insert(0, REPO)
    from core.run_dir import RunDir, write_json_atomic
    from models.model_io import load_feature_info

    run_dir = RunDir(args.run_dir)
    info = load_feature_info(run_dir.feature_info_file)
    features = bench_features(info)
    peer_python = sys.executable if reimplement else args.peer_python
    peer_label = "DeepCTR re-implementation" if reimplement else "DeepCTR"
    config = os.path.abspath(args.config)
    with tempfile.TemporaryDirectory(prefix="bench_teacher_vs_deepctr_") as scratch:
        data = os.path.join(scratch, "splits.npz")
        export_splits(run_dir, info.select(features), data)
        ours_args = ["--config", config, "--run-dir", run_dir.root, "--epochs", str(args.epochs)]
        peer_args = ["--data", data, "--epochs", str(args.epochs)] + (["--reimplement"] if reimplement else [])
        results = {name: alternate(name, args.repeats, ours_args, peer_args, peer_python, peer_label) for name in args.models}
    print(f"{os.path.basename(args.config)} on {run_dir.root}: epochs {args.epochs}, batch {BATCH}, "
          f"{len(info.categorical)} categorical + {len(info.numeric)} numeric features, {args.repeats} alternations; "
          f"ours: the whole train stage, and its fit; {peer_label}: model.fit (fits with per-epoch validation)\n")
    print(markdown_table(results, list(info.tasks), peer_label))
    output = args.output or os.path.join(run_dir.root, "bench_teacher_vs_deepctr.json")
    write_json_atomic(output, {
        "config": config, "run_dir": run_dir.root, "epochs": args.epochs, "repeats": args.repeats,
        "peer": peer_label, "features": features,
        "ours_overrides": {name: our_overrides(name, features, args.epochs) for name in args.models},
        "results": results})
    print(f"\nraw runs: {output}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run-dir", help="a run directory preprocessed with --config (default config: census-income "
                                      "from ../shared/data/census_income_kdd/, which this benchmark reads)")
    ap.add_argument("--config", default=os.path.join(REPO, "configs", "census_income.yaml"),
                    help="the pipeline config the run directory was preprocessed with")
    ap.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    ap.add_argument("--repeats", type=int, default=3, help="alternations of the two sides per model")
    ap.add_argument("--epochs", type=int, default=2, help="training epochs of every run")
    ap.add_argument("--peer-python", default="/work/.venv-deepctr/bin/python",
                    help="python of the virtualenv holding DeepCTR (must exist unless --reimplement)")
    ap.add_argument("--reimplement", action="store_true",
                    help="compare with small re-implementations of DeepCTR's models, not DeepCTR itself")
    ap.add_argument("--output", help="JSON of every run (default: <run-dir>/bench_teacher_vs_deepctr.json)")
    ap.add_argument("--worker", choices=["ours", "peer"], help=argparse.SUPPRESS)
    ap.add_argument("--model", choices=list(MODELS), help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.repeats < 1 or args.epochs < 1:
        ap.error("--repeats and --epochs must be >= 1")
    if args.worker == "peer":
        result = peer_worker(args.data, args.model, args.seed, args.epochs, args.reimplement)
    elif args.worker == "ours":
        sys.path.insert(0, REPO)
        result = ours_worker(args.config, args.run_dir, args.model, args.seed, args.epochs)
    elif not args.run_dir:
        ap.error("--run-dir is required")
    else:
        return bench(args)
    with open(args.out, "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
