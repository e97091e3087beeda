"""Where the train stage's time goes: one teacher training on a preprocessed run, taken apart.
Data: --run-dir, a preprocessed run directory (the default run, or any).

Usage::

    python bench/train_profile.py --run-dir RUN --config configs/census_income.yaml \\
        [--set model.aux.enabled=false ...] [--steps 300] [--json out.json]

Prints, for the config's teacher on the run's train split:

* **stage parts**: the train stage's own steps timed one by one: the input set-up
  (``training_datasets``: counting or loading the split), building the model, each epoch of
  ``fit`` split into its training steps and its validation, saving the serving model and
  the training plot.
* **input pipeline alone**: one epoch of the training batches as the stage reads them, no
  model (examples/s), with the split streamed from its gzip shards and held in memory.
* **train step alone**: ``fit`` on one batch held in memory and repeated (no input
  pipeline): with ``steps_per_execution`` 1 and the configured value, and without the AUC
  metrics, so the per-step cost of Python dispatch and of the metrics shows as a difference.
* **op profile**: TensorFlow op time of ``--steps`` training steps (``tf.profiler`` trace of
  the real input pipeline and train step), summed by what the op belongs to (embedding
  lookups and their gradients, dense layers, optimizer updates, metrics, loss, input
  parsing) as share of the op time.

Times are wall seconds on this machine; compare the rows of one run with each other.
"""
from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _Clock:
    """A Keras callback that records when each epoch and each validation begins and ends."""

    def __new__(cls):
        import tf_keras as keras

        class Clock(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.marks = []

            def _mark(self, what):
                self.marks.append((what, time.perf_counter()))

            def on_epoch_begin(self, epoch, logs=None):
                self._mark("epoch_begin")

            def on_test_begin(self, logs=None):
                self._mark("test_begin")

            def on_test_end(self, logs=None):
                self._mark("test_end")

            def on_epoch_end(self, epoch, logs=None):
                self._mark("epoch_end")

        return Clock()


def _epoch_parts(marks) -> list[dict]:
    out, begin, test = [], None, None
    for what, t in marks:
        if what == "epoch_begin":
            begin = t
        elif what == "test_begin":
            test = t
        elif what == "test_end" and begin is not None:
            out.append({"train_steps": test - begin, "validation": t - test, "test_end": t})
        elif what == "epoch_end" and out:
            out[-1]["callbacks"] = t - out[-1].pop("test_end")
    return out


def stage_parts(cfg, run_dir) -> dict:
    """The train stage's steps (``pipeline.stages.train.train_role``), timed one by one."""
    import tf_keras as keras

    from models import model_io, plots
    from models.builder import build_ranker, model_features
    from models.training import train_model
    from pipeline.stages.train import training_datasets

    keras.backend.clear_session()
    parts = {}
    t0 = time.perf_counter()
    info = model_io.load_feature_info(run_dir.feature_info_file)
    data = training_datasets(cfg, run_dir, model_features(cfg.model, info))
    parts["input set-up"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    model = build_ranker(cfg.model, info, cfg.data.tasks, cfg.data.funnel, seed=cfg.training.seed)
    parts["build model"] = time.perf_counter() - t0
    clock = _Clock()
    with tempfile.TemporaryDirectory() as model_dir:
        t0 = time.perf_counter()
        result = train_model(model, data.epoch_batches, data.validation, cfg.training, model_dir,
                             tasks=cfg.task_names, train_rows=data.train_rows, validation_rows=data.validation_rows,
                             name="profile", callbacks=[clock], verbose=0)
        parts["fit (all epochs)"] = time.perf_counter() - t0
        begins = [t for w, t in clock.marks if w == "epoch_begin"]
        ends = [t for w, t in clock.marks if w == "epoch_end"]
        parts["fit outside the epochs"] = parts["fit (all epochs)"] - sum(b - a for a, b in zip(begins, ends))
        for i, e in enumerate(_epoch_parts(clock.marks)):
            parts[f"epoch {i + 1}: training steps"] = e["train_steps"]
            parts[f"epoch {i + 1}: validation"] = e["validation"]
            parts[f"epoch {i + 1}: end-of-epoch callbacks"] = e.get("callbacks", 0.0)
        t0 = time.perf_counter()
        model_io.save_trained(model_dir, model, result, role="teacher", model_cfg=cfg.model, feature_info=info,
                              tasks=cfg.data.tasks, funnel=cfg.data.funnel)
        parts["save serving model"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        plots.training_curves(result.history, cfg.task_names, os.path.join(model_dir, "curves.png"), "profile")
        parts["plot"] = time.perf_counter() - t0
    return {"seconds": parts, "train_rows": result.rows // max(1, len(result.epochs)),
            "val_auc": {k: v for k, v in result.best_metrics.items() if k.startswith("val_") and "auc" in k}}


def input_alone(cfg, run_dir, cache: str) -> dict:
    """One epoch of training batches, no model: seconds of the set-up and of the epoch."""
    import dataclasses

    from models import model_io
    from models.builder import model_features
    from pipeline.stages.train import training_datasets

    cfg = dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, cache=cache))
    info = model_io.load_feature_info(run_dir.feature_info_file)
    t0 = time.perf_counter()
    data = training_datasets(cfg, run_dir, model_features(cfg.model, info))
    setup = time.perf_counter() - t0
    rows, t0 = 0, time.perf_counter()
    for batch in data.epoch_batches(0):
        rows += int(next(iter(batch.values())).shape[0])
    return {"set-up seconds": setup, "epoch seconds": time.perf_counter() - t0, "rows": rows}


def step_alone(cfg, run_dir, steps: int, steps_per_execution: int, metrics: bool) -> float:
    """Seconds per training step of ``fit`` on one in-memory batch repeated (after a warm-up)."""
    import dataclasses

    import tensorflow as tf
    import tf_keras as keras

    from models import model_io
    from models.builder import build_ranker, model_features
    from models.inputs import make_dataset

    keras.backend.clear_session()
    info = model_io.load_feature_info(run_dir.feature_info_file)
    batch = next(iter(make_dataset(run_dir.split_pattern("train"), model_features(cfg.model, info),
                                   cfg.training.batch_size, drop_remainder=True)))
    model = build_ranker(cfg.model, info, cfg.data.tasks, cfg.data.funnel, seed=1)
    if not metrics:
        for task in model.ranking_tasks.values():
            task._ranking_metrics = []
    model.compile(optimizer=keras.optimizers.Adam(1e-3), steps_per_execution=steps_per_execution)
    data = tf.data.Dataset.from_tensors(batch).repeat()
    model.fit(data, steps_per_epoch=steps_per_execution * 4, epochs=1, verbose=0)  # trace + warm-up
    del dataclasses
    t0 = time.perf_counter()
    n = max(steps_per_execution, steps // steps_per_execution * steps_per_execution)
    model.fit(data, steps_per_epoch=n, epochs=1, verbose=0)
    return (time.perf_counter() - t0) / n


def _category(name: str) -> str:
    low = name.lower()
    if "parseexample" in low or "iterator" in low or "dataset" in low:
        return "input (parse, iterator)"
    if "adam" in low or "/update" in low or "resourceapply" in low or "assignvariable" in low or "resourcescatter" in low:
        return "optimizer updates"
    if "auc" in low or "metric" in low or "mean/" in low or "loss_tracker" in low:
        return "metrics"
    if "embedding" in low:
        return "embedding lookups (+ gradients)" if "gradient" in low else "embedding lookups"
    if "task" in low or "loss" in low or "binary_crossentropy" in low:
        return "loss"
    if "matmul" in low or "dense" in low or "relu" in low or "biasadd" in low or "backbone" in low or "tower" in low:
        return "dense layers (+ gradients)"
    return "other"


def op_profile(cfg, run_dir, steps: int) -> dict:
    """TensorFlow op time of ``steps`` training steps of the real pipeline, by category."""
    import tensorflow as tf
    import tf_keras as keras
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    from models import model_io
    from models.builder import build_ranker, model_features
    from models.training import make_optimizer
    from pipeline.stages.train import training_datasets

    keras.backend.clear_session()
    info = model_io.load_feature_info(run_dir.feature_info_file)
    batches = training_datasets(cfg, run_dir, model_features(cfg.model, info)).epoch_batches
    model = build_ranker(cfg.model, info, cfg.data.tasks, cfg.data.funnel, seed=1)
    model.compile(optimizer=make_optimizer(cfg.training, 1000), steps_per_execution=cfg.training.steps_per_execution)
    data = batches(0).repeat()
    spe = cfg.training.steps_per_execution
    model.fit(data, steps_per_epoch=spe * 4, epochs=1, verbose=0)
    logdir = tempfile.mkdtemp(prefix="train_profile_")
    tf.profiler.experimental.start(logdir)
    t0 = time.perf_counter()
    model.fit(data, steps_per_epoch=max(spe, steps // spe * spe), epochs=1, verbose=0)
    wall = time.perf_counter() - t0
    tf.profiler.experimental.stop()
    space = xplane_pb2.XSpace()
    with open(sorted(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True))[-1], "rb") as f:
        space.ParseFromString(f.read())
    by_category, by_type = collections.Counter(), collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):  # op events; tf_data lines hold nested iterator spans
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if ":" not in name or "::" in name:  # not an op ("ExecutorState::Process")
                    continue
                seconds = event.duration_ps * 1e-12
                by_category[_category(name)] += seconds
                by_type[name.rsplit(":", 1)[1]] += seconds
    total = sum(by_category.values()) or 1.0
    return {"wall seconds": wall, "steps": max(spe, steps // spe * spe), "op seconds": total,
            "share by category": {k: v / total for k, v in by_category.most_common()},
            "top op types (seconds)": dict(by_type.most_common(15))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run-dir", required=True, help="a preprocessed run directory")
    ap.add_argument("--config", default=os.path.join(REPO, "configs", "default.yaml"))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config overrides")
    ap.add_argument("--steps", type=int, default=300, help="training steps of the step and op measurements")
    ap.add_argument("--skip", nargs="*", default=[], choices=["stage", "input", "step", "ops"])
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    from core.config import load_config
    from core.run_dir import RunDir

    cfg = load_config(args.config, ["training.verbose=0", *args.set])
    run_dir = RunDir(args.run_dir)
    out = {"config": args.config, "overrides": args.set}
    if "stage" not in args.skip:
        out["stage parts"] = stage_parts(cfg, run_dir)
        print("## stage parts (seconds)")
        for k, v in out["stage parts"]["seconds"].items():
            print(f"  {k:<32} {v:8.2f}")
        print(f"  validation AUC: {out['stage parts']['val_auc']}")
    if "input" not in args.skip:
        out["input alone"] = {c: input_alone(cfg, run_dir, c) for c in ("stream", "memory")}
        print("## input pipeline alone, one epoch")
        for c, r in out["input alone"].items():
            print(f"  {c:<8} set-up {r['set-up seconds']:6.2f} s, epoch {r['epoch seconds']:6.2f} s, "
                  f"{r['rows'] / r['epoch seconds']:10,.0f} examples/s")
    if "step" not in args.skip:
        spe = cfg.training.steps_per_execution
        rows = {}
        for label, (k, m) in {"steps_per_execution 1, AUC metrics": (1, True),
                              "steps_per_execution 1, no metrics": (1, False),
                              f"steps_per_execution {max(spe, 32)}, AUC metrics": (max(spe, 32), True),
                              f"steps_per_execution {max(spe, 32)}, no metrics": (max(spe, 32), False)}.items():
            rows[label] = step_alone(cfg, run_dir, args.steps, k, m)
        out["train step alone (seconds per step)"] = rows
        print(f"## train step alone, one in-memory batch of {cfg.training.batch_size}")
        for k, v in rows.items():
            print(f"  {k:<40} {v * 1e3:7.2f} ms/step  {cfg.training.batch_size / v:10,.0f} examples/s")
    if "ops" not in args.skip:
        out["op profile"] = op_profile(cfg, run_dir, args.steps)
        p = out["op profile"]
        print(f"## op profile: {p['steps']} steps in {p['wall seconds']:.2f} s wall, {p['op seconds']:.2f} s of ops")
        for k, v in p["share by category"].items():
            print(f"  {k:<36} {v:6.1%}")
        print("  top op types:", ", ".join(f"{k} {v:.2f}s" for k, v in p["top op types (seconds)"].items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
