"""``python -m pipeline train``: the multi-task teacher (with self-auxiliary towers by default)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from core import fs
from pipeline.stages.base import StageResult, stage

ROLE = "teacher"


@dataclass
class TrainingData:
    """The batches a ranker trains on (``training_datasets``)."""

    epoch_batches: Callable  # epoch (0-based) -> that epoch's training batches
    validation: object  # the validation batches (tf.data.Dataset)
    train_rows: Optional[int]  # examples in one pass over the train split; None: fixed steps per epoch
    validation_rows: Optional[int]  # examples in the validation split, if known
    in_memory: bool  # the splits are held in memory (training.cache)


def training_datasets(cfg, run_dir, info) -> TrainingData:
    """The training batches per epoch and the validation batches of ``run_dir``'s splits.

    Epoch e's batches are shuffled with ``epoch_seed(training.seed, e)``: a killed run resumed
    from its backup reads at every epoch what an uninterrupted one reads there. One pass over
    the train split per epoch, or ``training.steps_per_epoch`` batches of the repeated split.
    The splits are read from their shards or held in memory, as ``training.cache`` decides
    (``models.inputs.split_source``; the same batches either way); their sizes come from
    preprocess's ``stats.json``."""
    from models.inputs import count_examples, epoch_seed, make_dataset, split_source

    t = cfg.training
    multi = t.distribute.strategy == "multi_worker"
    train_rows, val_rows = run_dir.split_rows("train"), run_dir.split_rows("validation")
    train = split_source(run_dir.split_pattern("train"), info, t.cache, t.cache_max_mb, rows=train_rows,
                         multi_worker=multi, what="train split")
    val = split_source(run_dir.split_pattern("validation"), info, t.cache, t.cache_max_mb, rows=val_rows,
                       multi_worker=multi, what="validation split")
    in_memory = not isinstance(train, str)
    if in_memory:
        train_rows = train.rows
    if not isinstance(val, str):
        val_rows = val.rows
    fixed_steps = t.steps_per_epoch is not None  # else an epoch is one pass over the split
    if train_rows is None and not fixed_steps:
        train_rows = count_examples(train)

    def epoch_batches(epoch: int):
        return make_dataset(train, info, t.batch_size, shuffle=True, shuffle_buffer=t.shuffle_buffer,
                            seed=epoch_seed(t.seed, epoch), repeat=fixed_steps)

    return TrainingData(epoch_batches, make_dataset(val, info, t.batch_size), None if fixed_steps else train_rows,
                        val_rows, in_memory)


def train_role(cfg, run_dir, role: str = ROLE, model_cfg=None) -> StageResult:
    """Builds a ranker from ``model_cfg`` (default ``cfg.model``) under the configured
    strategy, trains it on the train split (validating on the validation split), saves it
    into ``run_dir.model_dir(role)`` and returns the stage result."""
    from models import model_io, multi_worker, plots
    from models.builder import build_ranker, model_features
    from models.distribute import get_strategy
    from models.training import train_model

    model_cfg = model_cfg or cfg.model
    t = cfg.training
    run_dir.require(run_dir.feature_info_file, "preprocess")
    info = model_io.load_feature_info(run_dir.feature_info_file)
    with get_strategy(t.distribute).scope():
        model = build_ranker(model_cfg, info, cfg.data.tasks, cfg.data.funnel, seed=t.seed)
    train_split, val_split = run_dir.split_pattern("train"), run_dir.split_pattern("validation")
    # Parse only what the model reads (model.features; labels, weight, passthrough are kept).
    data = training_datasets(cfg, run_dir, model_features(model_cfg, info))
    model_dir = run_dir.model_dir(role)
    result = train_model(model, data.epoch_batches, data.validation, t, model_dir, tasks=cfg.task_names,
                         train_rows=data.train_rows, validation_rows=data.validation_rows, name=role,
                         shard_patterns=[train_split, val_split])
    # Every worker saves (the save may run collective ops); only the chief's copy is kept.
    result.artifacts = model_io.save_trained(model_dir, model, result, role=role, model_cfg=model_cfg,
                                             feature_info=info, tasks=cfg.data.tasks, funnel=cfg.data.funnel)
    if not multi_worker.is_chief():  # the chief writes the artifacts, plot and report
        kind, index = multi_worker.task()
        return StageResult(rows=result.rows, metrics={"epochs_run": len(result.epochs), "params": result.params}, message=f"{role}: {kind} {index} done; the chief wrote the artifacts", record=False)
    plot = plots.training_curves(result.history, cfg.task_names, fs.join(run_dir.plots_dir, f"{role}_training.png"),
                                 f"{role}: {model_cfg.backbone}, aux towers {'on' if model_cfg.aux.enabled else 'off'}")
    # An undefined AUC (a task with one label class in the split) stays None, never a number.
    val = {k: (None if v is None else round(v, 5)) for k, v in result.best_metrics.items()
           if k.startswith("val_") and "auc" in k}
    metrics = {"best_epoch": result.best_epoch, "epochs_run": len(result.epochs), "params": result.params, **val}
    lines = [f"{role}: backbone `{model_cfg.backbone}`, aux towers "
             f"{f'{model_cfg.aux.kind} (gamma={model_cfg.aux.gamma})' if model_cfg.aux.enabled else 'off'}, "
             f"esmm={model_cfg.esmm}, masked_child_loss={model_cfg.masked_child_loss}; {result.params:,} parameters.",
             f"Best epoch {result.best_epoch} of {len(result.epochs)} run"
             + (f" (resumed from the backup at epoch {result.resumed_epoch + 1})" if result.resumed_epoch else "")
             + "; validation: " + ", ".join(f"{k}={'undefined' if v is None else f'{v:.4f}'}" for k, v in val.items())
             + "."]
    return StageResult(rows=result.rows, metrics=metrics, artifacts=result.artifacts, plots=[fs.relative(plot, run_dir.root)], report="\n".join(lines), message=f"train: {role}, {result.rows:,} training rows, best epoch {result.best_epoch} of {len(result.epochs)}"
                       + (f" ({', '.join(f'{k} {v:.4f}' for k, v in val.items() if v is not None)})" if val else "")
                       + f" -> {result.artifacts.get('serving_model')}")


@stage("train", "train the multi-task teacher with self-auxiliary towers", reads=("preprocess",))
def run(cfg, run_dir, opts) -> StageResult:
    return train_role(cfg, run_dir, ROLE, cfg.model)
