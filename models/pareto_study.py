"""The Pareto study: a grid of task weightings x seeds, with and without self-auxiliary towers.

For a two-task config, each grid point trains a ranker with task weights ``(w, 1 - w)``
for ``cfg.pareto.epochs`` epochs and scores it on the test split. Per arm (towers on/off)
and seed, the non-dominated (AUC task 1, AUC task 2) points form a frontier whose
hypervolume against ``cfg.pareto.reference_point`` summarises it; the report gives the
mean and standard deviation of the hypervolume over seeds.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Mapping, Optional

import numpy as np

import tf_keras as keras

from models.builder import build_ranker, model_features
from models.evaluation import evaluate_predictions, predict_split
from models.inputs import count_examples, make_dataset
from models.pareto import hypervolume, pareto_front
from models.training import train_model
from core.errors import ConfigError

log = logging.getLogger("models.pareto")
ARMS = {"without aux towers": False, "with aux towers": True}


def check_study(cfg) -> list:
    """The two TaskConfigs of the study; ConfigError when the config cannot run it."""
    if len(cfg.data.tasks) != 2:
        raise ConfigError(f"pareto: needs exactly two tasks, got {cfg.task_names}")
    bad = [w for w in cfg.pareto.first_task_weights if not 0.0 <= w <= 1.0]
    if bad or not cfg.pareto.first_task_weights:
        raise ConfigError(f"pareto.first_task_weights: expected values in [0, 1], got {cfg.pareto.first_task_weights}")
    if not cfg.pareto.seeds:
        raise ConfigError("pareto.seeds: at least one seed is required")
    return list(cfg.data.tasks)


def run_point(cfg, info, splits: Mapping[str, str], aux: bool, weight: float, seed: int,
              train_rows: Optional[int] = None) -> dict:
    """Trains one grid point and returns its test AUCs.

    Args:
      cfg: the PipelineConfig (``pareto``, ``model``, ``training`` and ``data`` sections).
      info: the FeatureInfo of the transformed examples.
      splits: split name -> glob of its transformed TFRecord shards, for ``train``,
        ``validation`` and ``test``.
      aux: train with the self-auxiliary towers.
      weight: the first task's loss weight (the second gets ``1 - weight``).
      seed: model, shuffle and training seed.
      train_rows: examples in the train split (counted when None).

    Returns:
      dict with ``aux``, ``weight``, ``seed``, ``best_epoch`` and the test AUCs ``auc_1``, ``auc_2``.
    """
    t1, t2 = check_study(cfg)
    tasks = [dataclasses.replace(t1, weight=weight), dataclasses.replace(t2, weight=1.0 - weight)]
    model_cfg = dataclasses.replace(cfg.model, backbone=cfg.pareto.backbone,
                                    aux=dataclasses.replace(cfg.model.aux, enabled=aux))
    t = dataclasses.replace(cfg.training, seed=seed)
    keras.backend.clear_session()
    model = build_ranker(model_cfg, info, tasks, cfg.data.funnel, seed=seed)
    info = model_features(model_cfg, info)  # parse only the features the model reads
    repeat = t.steps_per_epoch is not None
    train_ds = make_dataset(splits["train"], info, t.batch_size, shuffle=True, shuffle_buffer=t.shuffle_buffer,
                            seed=seed, repeat=repeat)
    val_ds = make_dataset(splits["validation"], info, t.batch_size)
    if train_rows is None and not repeat:
        train_rows = count_examples(splits["train"])
    result = train_model(model, train_ds, val_ds, t, None, tasks=[x.name for x in tasks], train_rows=train_rows,
                         epochs=cfg.pareto.epochs, backup=False, verbose=0, name="pareto",
                         shard_patterns=[splits["train"], splits["validation"]])
    arrays = predict_split(model.serving_model(), splits["test"], info)
    m = evaluate_predictions(arrays, tasks, model_cfg, cfg.data.funnel, use_groups=False)
    return {"aux": aux, "weight": weight, "seed": seed, "best_epoch": result.best_epoch,
            "auc_1": m[t1.name]["auc"], "auc_2": m[t2.name]["auc"]}


def run_grid(cfg, info, splits: Mapping[str, str]) -> list[dict]:
    """Every (arm, weight, seed) point, logging progress.

    Args:
      cfg: the PipelineConfig.
      info: the FeatureInfo of the transformed examples.
      splits: split name -> glob of its shards (``train``, ``validation``, ``test``).

    Returns:
      one ``run_point`` row per point, arms outermost, then weights, then seeds.
    """
    check_study(cfg)
    train_rows = None if cfg.training.steps_per_epoch else count_examples(splits["train"])
    grid = [(aux, w, s) for aux in ARMS.values() for w in cfg.pareto.first_task_weights for s in cfg.pareto.seeds]
    rows = []
    for i, (aux, w, s) in enumerate(grid, 1):
        rows.append(run_point(cfg, info, splits, aux, w, s, train_rows=train_rows))
        log.info("pareto %d/%d: aux=%s w=%.2f seed=%d -> AUC %.4f / %.4f", i, len(grid), aux, w, s,
                 rows[-1]["auc_1"], rows[-1]["auc_2"])
    return rows


def summarize(rows: list[dict], reference) -> dict:
    """Per arm: mean/std AUCs per weight, hypervolume per seed (mean, std) and of the mean points."""
    out = {}
    for arm, aux in ARMS.items():
        mine = [r for r in rows if r["aux"] == aux]
        weights = sorted({r["weight"] for r in mine})
        seeds = sorted({r["seed"] for r in mine})
        per_weight = []
        for w in weights:
            pts = np.array([(r["auc_1"], r["auc_2"]) for r in mine if r["weight"] == w])
            per_weight.append({"weight": w, "auc_1_mean": float(pts[:, 0].mean()), "auc_1_std": float(pts[:, 0].std()),
                               "auc_2_mean": float(pts[:, 1].mean()), "auc_2_std": float(pts[:, 1].std())})
        hv = [hypervolume([(r["auc_1"], r["auc_2"]) for r in mine if r["seed"] == s], reference) for s in seeds]
        mean_pts = [(p["auc_1_mean"], p["auc_2_mean"]) for p in per_weight]
        out[arm] = {"per_weight": per_weight, "hypervolume_per_seed": hv, "hypervolume_mean": float(np.mean(hv)),
                    "hypervolume_std": float(np.std(hv)), "hypervolume_of_mean_points": hypervolume(mean_pts, reference),
                    "front": pareto_front(mean_pts).tolist()}
    return out


def verdict(summary: dict) -> str:
    """One plain sentence: did the towers improve the frontier on this data?"""
    on, off = summary["with aux towers"], summary["without aux towers"]
    diff = on["hypervolume_mean"] - off["hypervolume_mean"]
    spread = float(np.hypot(on["hypervolume_std"], off["hypervolume_std"]))
    if diff > spread and diff > 0:
        return f"Yes: the self-auxiliary towers improved the frontier (hypervolume +{diff:.5f}, more than the seed spread {spread:.5f})."
    if diff > 0:
        return f"Not conclusively: the towers raised the mean hypervolume by {diff:.5f}, within the seed spread ({spread:.5f})."
    return f"No: the towers did not improve the frontier (hypervolume {diff:+.5f}; seed spread {spread:.5f})."
