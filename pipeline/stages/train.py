"""``python -m pipeline train``: the multi-task teacher (with self-auxiliary towers by default)."""
from __future__ import annotations

import os

from pipeline.stages.base import StageResult, stage

ROLE = "teacher"


def train_role(cfg, run_dir, role: str = ROLE, model_cfg=None) -> StageResult:
    """Builds a ranker from ``model_cfg`` (default ``cfg.model``) under the configured
    strategy, trains it and returns the stage result."""
    from models import model_io, multi_worker, plots
    from models.builder import build_ranker
    from models.distribute import get_strategy
    from models.training import train_model

    model_cfg = model_cfg or cfg.model
    run_dir.require(run_dir.feature_info_file, "preprocess")
    info = model_io.load_feature_info(run_dir)
    with get_strategy(cfg.training.distribute).scope():
        model = build_ranker(model_cfg, info, cfg.data.tasks, cfg.data.funnel, seed=cfg.training.seed)
    result = train_model(cfg, run_dir, role, model, model_cfg=model_cfg, feature_info=info)
    if not multi_worker.is_chief():  # the chief writes the artifacts, plot and report
        kind, index = multi_worker.task()
        return StageResult(rows=result.rows, metrics={"epochs_run": len(result.epochs), "params": result.params}, message=f"{role}: {kind} {index} done; the chief wrote the artifacts", record=False)
    plot = plots.training_curves(result.history, cfg.task_names, os.path.join(run_dir.plots_dir, f"{role}_training.png"),
                                 f"{role}: {model_cfg.backbone}, aux towers {'on' if model_cfg.aux.enabled else 'off'}")
    val = {k: round(v, 5) for k, v in result.best_metrics.items() if k.startswith("val_") and "auc" in k}
    metrics = {"best_epoch": result.best_epoch, "epochs_run": len(result.epochs), "params": result.params, **val}
    lines = [f"{role}: backbone `{model_cfg.backbone}`, aux towers "
             f"{f'{model_cfg.aux.kind} (gamma={model_cfg.aux.gamma})' if model_cfg.aux.enabled else 'off'}, "
             f"esmm={model_cfg.esmm}, masked_child_loss={model_cfg.masked_child_loss}; {result.params:,} parameters.",
             f"Best epoch {result.best_epoch} of {len(result.epochs)} run; validation: "
             + ", ".join(f"{k}={v:.4f}" for k, v in val.items()) + "."]
    return StageResult(rows=result.rows, metrics=metrics, artifacts=result.artifacts, plots=[os.path.relpath(plot, run_dir.root)], report="\n".join(lines), message=f"{role} saved to {result.artifacts.get('serving_model')}")


@stage("train", "train the multi-task teacher with self-auxiliary towers")
def run(cfg, run_dir, opts) -> StageResult:
    return train_role(cfg, run_dir, ROLE, cfg.model)
