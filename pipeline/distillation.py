"""Distillation (``python -m pipeline distill``): score the data with the teacher on Beam, distil a compact student.

1. The teacher-scoring job (``pipeline.teacher_scoring``) adds ``teacher_logit_<task>`` to the
   train and validation splits (``scores/``), on the runner of ``cfg.preprocess.beam``.
2. For each seed of ``cfg.distill.seeds``: the student (``cfg.distill.student``) trained with
   ``cfg.distill.mode`` (``DistilledRanker``) and the same student without KD (mode ``none``),
   same steps and seed; with ``cfg.distill.ablation`` every other mode too. With
   ``feature_alignment_weight > 0`` the KD student also aligns its representation with the
   frozen teacher's (online mode; the teacher is rebuilt from its model_config.json).
3. The KD student of the first seed is saved as ``student/serving_model`` (main towers only,
   no adaptors): from then on it is what ``export`` publishes by default.
4. Everything is scored on the test split; the distillation table (mean ± std over seeds,
   parameters, batch-1 latency, share of the AUC gap closed) goes to summary.json, the report
   and ``plots/distillation.png``.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os

from models import model_io
from models.builder import build_ranker, model_features
from models.distillation import DistilledRanker
from core import feature_specs
from models.distribute import get_strategy
from models.evaluation import evaluate_predictions, predict_split
from models.inputs import list_shards, make_dataset, split_source
from models.outputs import CTCVR, esmm_child, logit_key
from models.training import train_model
from pipeline import distill_report
from pipeline.beam_options import pipeline_options
from core.errors import DataValidationError, InputError
from pipeline.stages.base import StageResult
from pipeline.teacher_scoring import TeacherModelHandler, score_splits

log = logging.getLogger("pipeline.stages.distill")

TEACHER, STUDENT = "teacher", "student"
KD_ROW, NOKD_ROW = "student_kd", "student_no_kd"


def teacher_handler(cfg, run_dir) -> TeacherModelHandler:
    """The scoring job's model handler for the trained teacher of ``run_dir``."""
    model_cfg, tasks, funnel, info = model_io.load_model_config(run_dir.model_dir(TEACHER), run_dir.role_stage(TEACHER))
    child = esmm_child(model_cfg, funnel)
    outputs = {t.name: logit_key(CTCVR) if t.name == child else logit_key(t.name) for t in tasks}
    # Dtype and shape of every input the teacher reads (lists [length], PLE [bins]).
    types = feature_specs.model_input_types(model_features(model_cfg, info))
    return TeacherModelHandler(model_io.serving_model_dir(run_dir.model_dir(TEACHER)), types, outputs,
                               batch_size=cfg.distill.score_batch_size)


def score_with_teacher(cfg, run_dir) -> dict:
    """Runs the scoring job over train and validation; split -> row counts."""
    patterns = {s: run_dir.split_pattern(s) for s in ("train", "validation")}
    for pattern in patterns.values():
        list_shards(pattern)
    counts = score_splits(patterns, run_dir.scores_dir, teacher_handler(cfg, run_dir),
                          options=pipeline_options(cfg.preprocess.beam, job_name=None),
                          num_shards=cfg.preprocess.num_shards)
    dead = sum(c["rows_dead_letter"] for c in counts.values())
    total = sum(c["rows_in"] for c in counts.values())
    if total and dead / total > cfg.preprocess.max_dead_letter_fraction:
        raise DataValidationError(f"teacher scoring dead-lettered {dead} of {total} records "
                                  f"(see {os.path.join(run_dir.scores_dir, 'dead_letters')})")
    return counts


def scores_pattern(run_dir, split: str) -> str:
    """Glob of the scored shards of ``split`` (the teacher-scoring job's output)."""
    return os.path.join(run_dir.scores_dir, f"{split}-*.tfrecord.gz")


def load_frozen_teacher(run_dir):
    """The teacher as a ``MultiTaskRanker`` (for its representations), weights from its serving model."""
    model_cfg, tasks, funnel, info = model_io.load_model_config(run_dir.model_dir(TEACHER), run_dir.role_stage(TEACHER))
    teacher = build_ranker(model_cfg, info, tasks, funnel)
    saved = model_io.load_serving_model(run_dir.model_dir(TEACHER), run_dir.role_stage(TEACHER))
    rebuilt = teacher.serving_model()
    for layer in rebuilt.layers:
        if layer.weights:
            layer.set_weights(saved.get_layer(layer.name).get_weights())
    teacher.trainable = False
    return teacher


class _Trainer:
    """Trains students of one architecture with a fixed step budget on the scored data.

    The student reads ``distill.student.features`` (any subset of the teacher's; empty: all),
    so its batches parse only those, plus the teacher's features when the frozen teacher
    runs online (feature alignment) on the same batches."""

    def __init__(self, cfg, run_dir, info, n_train: int, teacher=None, n_validation: int | None = None):
        self.cfg, self.run_dir, self.info, self.teacher = cfg, run_dir, info, teacher
        self.rows = {"train": n_train, "validation": n_validation}
        self._sources = {}  # (split, parsed features) -> shards or the split in memory, shared by the students
        self.tasks = cfg.data.tasks
        self.steps = cfg.training.steps_per_epoch or max(1, math.ceil(n_train / cfg.training.batch_size))
        self.student_info = model_features(cfg.distill.student, info)
        # The online teacher reads its own features from the student's batches (a superset).
        self.online_info = teacher.embedding.feature_info() if teacher is not None else None

    def _batch_info(self, online: bool):
        """The FeatureInfo the training batches are parsed with."""
        if not online:
            return self.student_info
        names = set(self.student_info.features) | set(self.online_info.features)
        return self.info.select([n for n in self.info.features if n in names])

    def _source(self, split: str, batch_info, names: list):
        """The scored split as ``training.cache`` decides, loaded once for all students."""
        key = (split, tuple(batch_info.features))
        if key not in self._sources:
            t = self.cfg.training
            self._sources[key] = split_source(scores_pattern(self.run_dir, split), batch_info, t.cache, t.cache_max_mb,
                                              rows=self.rows[split], teacher_logits=names,
                                              multi_worker=t.distribute.strategy == "multi_worker",
                                              what=f"scored {split} split")
        return self._sources[key]

    def train(self, mode: str, seed: int, save: bool, align: bool):
        """Trains one student; with ``save``, writes it to ``student/`` (resuming from its backup)."""
        t = dataclasses.replace(self.cfg.training, seed=int(seed))
        d = self.cfg.distill
        kwargs = dict(mode=mode, alpha=d.alpha, temperature=d.temperature)
        online = align and d.feature_alignment_weight > 0
        if online:
            kwargs.update(teacher=self.teacher, alignment_weight=d.feature_alignment_weight)
        with get_strategy(t.distribute).scope():
            model = build_ranker(d.student, self.info, self.tasks, self.cfg.data.funnel, seed=seed,
                                 cls=DistilledRanker, **kwargs)
        names = [x.name for x in self.tasks]
        batch_info = self._batch_info(online and self.teacher is not None)
        train_scores, val_scores = scores_pattern(self.run_dir, "train"), scores_pattern(self.run_dir, "validation")
        train_ds = make_dataset(self._source("train", batch_info, names), batch_info, t.batch_size,
                                teacher_logits=names, shuffle=True, shuffle_buffer=t.shuffle_buffer, seed=seed,
                                repeat=True)
        val_ds = make_dataset(self._source("validation", batch_info, names), batch_info, t.batch_size,
                              teacher_logits=names)
        log.info("student: mode=%s seed=%d (%s)", mode, seed, "saved as the student" if save else "for the table")
        model_dir = self.run_dir.model_dir(STUDENT) if save else None
        result = train_model(model, train_ds, val_ds, t, model_dir, tasks=names, steps_per_epoch=self.steps,
                             validation_rows=self.rows["validation"], backup=save, name=STUDENT,
                             shard_patterns=[train_scores, val_scores])
        if save:
            result.artifacts = model_io.save_trained(model_dir, model, result, role=STUDENT, model_cfg=d.student,
                                                     feature_info=self.info, tasks=self.tasks,
                                                     funnel=self.cfg.data.funnel)
        return model, result

    def evaluate(self, serving_model, model_cfg) -> dict:
        arrays = predict_split(serving_model, self.run_dir.split_pattern("test"), model_features(model_cfg, self.info))
        return evaluate_predictions(arrays, self.tasks, model_cfg, self.cfg.data.funnel, self.cfg.data.oracle,
                                    use_groups=bool(self.cfg.data.group_column))


def _modes(cfg) -> list[tuple[str, str]]:
    """(row name, mode) of every student to train per seed: KD, no-KD, then the ablation."""
    rows = [(KD_ROW, cfg.distill.mode), (NOKD_ROW, "none")]
    if cfg.distill.ablation:
        for mode in ("kd", "label_smoothing", "reweight"):
            if mode != cfg.distill.mode:
                rows.append((f"student_{mode}", mode))
    return rows


class _OwnInputs:
    """A serving model called with only the inputs it declares (a student on a feature subset
    takes fewer than the batch holds)."""

    def __init__(self, model):
        self._model, self._names = model, list(model.input_names)

    def __call__(self, x, training=False):
        return self._model({k: x[k] for k in self._names}, training=training)


def _size_and_speed(run_dir, info, teacher_model, student_model, rows: list) -> tuple[dict, dict, dict]:
    """Parameters and median latencies (batch 1 and batch ``BATCH``) of the serving models, per table row."""
    batch = next(iter(make_dataset(run_dir.split_pattern("validation"), info, distill_report.BATCH)))
    models_ = {TEACHER: teacher_model, STUDENT: student_model}
    fed = {k: _OwnInputs(m) for k, m in models_.items()}
    lat1 = distill_report.latency_ms(fed, {n: batch[n][:1] for n in info.model_inputs})
    latb = distill_report.latency_ms(fed, {n: batch[n] for n in info.model_inputs})
    params, latency, latency_batch = {}, {}, {}
    for row in rows:
        key = TEACHER if row == TEACHER else STUDENT
        params[row] = int(models_[key].count_params())
        latency[row], latency_batch[row] = round(lat1[key], 4), round(latb[key], 4)
    return params, latency, latency_batch


def distill(cfg, run_dir) -> StageResult:
    """Scores, trains the students, compares them; the ``distill`` stage's result."""
    run_dir.require(model_io.serving_model_dir(run_dir.model_dir(TEACHER)), "train")
    if not cfg.distill.seeds:
        raise InputError("distill.seeds: at least one seed is required")
    info = model_io.load_feature_info(run_dir.feature_info_file)
    counts = score_with_teacher(cfg, run_dir)
    teacher = load_frozen_teacher(run_dir) if cfg.distill.feature_alignment_weight > 0 else None
    trainer = _Trainer(cfg, run_dir, info, counts["train"]["rows_scored"], teacher,
                       n_validation=counts["validation"]["rows_scored"])

    t_cfg, _, _, _ = model_io.load_model_config(run_dir.model_dir(TEACHER), run_dir.role_stage(TEACHER))
    teacher_model = model_io.load_serving_model(run_dir.model_dir(TEACHER), run_dir.role_stage(TEACHER))
    runs = {TEACHER: [trainer.evaluate(teacher_model, t_cfg)]}
    saved, rows = None, 0
    for i, seed in enumerate(cfg.distill.seeds):
        for row, mode in _modes(cfg):
            save = i == 0 and row == KD_ROW
            model, result = trainer.train(mode, seed, save=save, align=(row == KD_ROW))
            rows += result.rows
            serving = model.serving_model()
            runs.setdefault(row, []).append(trainer.evaluate(serving, cfg.distill.student))
            if save:
                saved = (serving, result)
            log.info("%s seed %d: %s", row, seed, {t: round(m["auc"], 4) for t, m in runs[row][-1].items()})

    student_model = model_io.load_serving_model(run_dir.model_dir(STUDENT), run_dir.role_stage(STUDENT))
    params, latency, latency_batch = _size_and_speed(run_dir, info, teacher_model, student_model, list(runs))
    tasks = cfg.task_names
    table = distill_report.distillation_table(runs, tasks, params, latency, latency_batch)
    gaps = distill_report.gap_closed(table, tasks, TEACHER, KD_ROW, NOKD_ROW)
    plot = distill_report.bar_chart(table, tasks, os.path.join(run_dir.plots_dir, "distillation.png"),
                                    f"distillation: mode={cfg.distill.mode}, alpha={cfg.distill.alpha}, "
                                    f"T={cfg.distill.temperature}, {len(cfg.distill.seeds)} seed(s)")
    text = distill_report.markdown(table, tasks, gaps, KD_ROW, NOKD_ROW)
    d = cfg.distill
    header = (f"Student `{d.student.backbone}` (embedding {d.student.embedding_dim}, bottom {d.student.bottom_units}, "
              f"towers {d.student.tower_units}) distilled with mode `{d.mode}`, alpha={d.alpha}, T={d.temperature}, "
              f"feature alignment lambda={d.feature_alignment_weight}; seeds {list(d.seeds)}, "
              f"{trainer.steps} steps/epoch x up to {cfg.training.epochs} epochs. Test split; "
              f"{params[TEACHER] / params[KD_ROW]:.1f}x fewer parameters, "
              f"{latency[TEACHER] / latency[KD_ROW]:.2f}x lower batch-1 latency and "
              f"{latency_batch[TEACHER] / latency_batch[KD_ROW]:.2f}x lower batch-{distill_report.BATCH} latency "
              "than the teacher (median of 200 interleaved in-process calls of the serving models).\n\n")
    metrics = {"table": table, "gap_closed": gaps, "seeds": list(d.seeds), "mode": d.mode,
               "params": params, "latency_ms": latency, "param_ratio": round(params[TEACHER] / params[KD_ROW], 3),
               "latency_ms_batch": latency_batch, "latency_ratio": round(latency[TEACHER] / latency[KD_ROW], 3),
               "latency_ratio_batch": round(latency_batch[TEACHER] / latency_batch[KD_ROW], 3), "scoring": counts,
               "kd_beats_no_kd": {t: table[KD_ROW][t]["auc_mean"] > table[NOKD_ROW][t]["auc_mean"] for t in tasks}}
    return StageResult(rows=rows, metrics=metrics, models={STUDENT: runs[KD_ROW][0]}, artifacts={**saved[1].artifacts, "scores": run_dir.scores_dir}, plots=[os.path.relpath(plot, run_dir.root)], report=header + text, message=f"student saved to {saved[1].artifacts.get('serving_model')}")
