"""What the new feature kinds are worth on the synthetic data: test AUC and training speed of one
teacher with and without each kind, and with target attention vs mean pooling of the history.

Trains the teacher of ``configs/default.yaml`` (overridable with ``--set``) on a preprocessed run
directory (``python -m pipeline preprocess --run-dir R`` after ``generate``, or a finished default
run) in this process, once per (seed, variant), and scores each on the test split:

  ==============  ===============================================================
  variant         the teacher
  ==============  ===============================================================
  all             every model feature (history with the configured pooling)
  mean            the history pooled by its (masked) mean instead of attention
  no_history      without ``hist_items``
  no_tags         without ``item_tags``
  no_lists        without either (the features of the one-value-per-column data)
  ==============  ===============================================================

The variants read the same transformed data (a feature is left out with ``model.features``;
mean pooling is a model choice, the padded ids are the same). Seeds run in turn and the
variant order rotates per seed, so the machine's noise hits every variant. Prints per variant
the mean test AUC per task over the seeds with its min-max spread, the paired difference to
``all`` (mean and min-max over seeds), and the training examples per second (mean, spread).

Usage::

    python -m pipeline generate --run-dir /tmp/fk && python -m pipeline preprocess --run-dir /tmp/fk
    python bench/feature_kinds.py --run-dir /tmp/fk --seeds 1 2 3 --json /tmp/feature_kinds.json
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from core.config import load_config  # noqa: E402
from core.run_dir import RunDir  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HISTORY, TAGS = "hist_items", "item_tags"
VARIANTS = ("all", "mean", "no_history", "no_tags", "no_lists")


def variant_info(info, variant: str):
    """The feature info a variant's teacher reads (see the module docstring)."""
    if variant == "mean":
        info = copy.deepcopy(info)
        info.lists[HISTORY] = dataclasses.replace(info.lists[HISTORY], pooling="mean", target=None)
        return info
    drop = {"all": set(), "no_history": {HISTORY}, "no_tags": {TAGS}, "no_lists": {HISTORY, TAGS}}[variant]
    return info.select([f for f in info.features if f not in drop])


def train_and_score(cfg, run_dir: RunDir, info, seed: int) -> dict:
    """Trains one teacher on ``info``'s features; returns test AUCs, rows, seconds, examples/s."""
    from models.builder import build_ranker
    from models.evaluation import evaluate_predictions, predict_split
    from models.training import train_model
    from pipeline.stages.train import training_datasets

    t = dataclasses.replace(cfg.training, seed=seed)
    cfg = dataclasses.replace(cfg, training=t)
    model = build_ranker(cfg.model, info, cfg.data.tasks, cfg.data.funnel, seed=seed)
    data = training_datasets(cfg, run_dir, info)
    model_dir = tempfile.mkdtemp(prefix="feature_kinds_")
    try:
        start = time.monotonic()
        result = train_model(model, data.epoch_batches, data.validation, t, model_dir, tasks=cfg.task_names,
                             train_rows=data.train_rows, validation_rows=data.validation_rows, name="teacher")
        seconds = time.monotonic() - start
    finally:
        shutil.rmtree(model_dir, ignore_errors=True)
    arrays = predict_split(model.serving_model(), run_dir.split_pattern("test"), info)
    metrics = evaluate_predictions(arrays, cfg.data.tasks, cfg.model, cfg.data.funnel, cfg.data.oracle,
                                   use_groups=False)
    return {"auc": {task: round(float(m["auc"]), 5) for task, m in metrics.items()},
            "rows": result.rows, "seconds": round(seconds, 1), "examples_per_second": round(result.rows / seconds, 1),
            "params": result.params}


def _stats(values: list[float]) -> dict:
    return {"mean": round(sum(values) / len(values), 5), "min": round(min(values), 5), "max": round(max(values), 5)}


def summarize(runs: list[dict], tasks: list[str]) -> dict:
    """variant -> {task AUC stats, paired difference to 'all', examples/s stats}."""
    by = {}
    for r in runs:
        by.setdefault(r["variant"], {})[r["seed"]] = r
    out = {}
    for variant, seeds in by.items():
        entry = {"auc": {t: _stats([s["auc"][t] for s in seeds.values()]) for t in tasks},
                 "examples_per_second": _stats([s["examples_per_second"] for s in seeds.values()]),
                 "params": next(iter(seeds.values()))["params"]}
        if variant != "all" and "all" in by:
            paired = [k for k in seeds if k in by["all"]]
            entry["all_minus_this"] = {t: _stats([by["all"][k]["auc"][t] - seeds[k]["auc"][t] for k in paired])
                                       for t in tasks}
        out[variant] = entry
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", required=True, help="a preprocessed run directory with hist_items and item_tags")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from models import model_io

    cfg = load_config(os.path.join(REPO, "configs", "default.yaml"), ["training.verbose=0", *args.overrides])
    run_dir = RunDir(args.run_dir)
    info = model_io.load_feature_info(run_dir.feature_info_file)
    missing = [n for n in (HISTORY, TAGS) if n not in info.lists]
    if missing:
        print(f"error: {run_dir.feature_info_file} has no list feature(s) {missing}; preprocess with the default config")
        return 2
    runs = []
    for i, seed in enumerate(args.seeds):
        order = args.variants[i % len(args.variants):] + args.variants[:i % len(args.variants)]
        for variant in order:
            r = train_and_score(cfg, run_dir, variant_info(info, variant), seed)
            r.update(variant=variant, seed=seed)
            runs.append(r)
            print(f"seed {seed} {variant:>10}: " + ", ".join(f"{t} AUC {a:.4f}" for t, a in r["auc"].items())
                  + f"; {r['examples_per_second']:,.0f} examples/s ({r['seconds']:.0f} s)", flush=True)
    summary = summarize(runs, cfg.task_names)
    print(f"\n{len(args.seeds)} seeds; mean [min, max] over seeds; 'all - this' is paired by seed")
    for variant, e in summary.items():
        line = f"{variant:>10}: " + "; ".join(
            f"{t} {s['mean']:.4f} [{s['min']:.4f}, {s['max']:.4f}]" for t, s in e["auc"].items())
        if "all_minus_this" in e:
            line += " | all - this: " + "; ".join(
                f"{t} {s['mean']:+.4f} [{s['min']:+.4f}, {s['max']:+.4f}]" for t, s in e["all_minus_this"].items())
        eps = e["examples_per_second"]
        line += f" | {eps['mean']:,.0f} examples/s [{eps['min']:,.0f}, {eps['max']:,.0f}]"
        print(line)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"runs": runs, "summary": summary, "overrides": args.overrides}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
