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
4. Every extra student size of ``distill.sizes`` (``core.config.student_sizes``) is trained
   with ``cfg.distill.mode`` and without KD, on the first seed, for ``distill.size_epochs``
   epochs; its KD student is saved as ``students/<size>/serving_model``.
5. Everything is scored on the test split; the distillation table (mean ± std over seeds,
   parameters, batch-1 latency, share of the AUC gap closed) goes to summary.json, the report
   and ``plots/distillation.png``.
6. The frontier: the teacher and the KD student of every size are exported with the TF
   Transform front end (``serving.export.serving_parts``; no warmup, no gate) into a scratch
   directory and timed in TF Serving's path (``serving.serving_cost.session_latency_ms``: a
   TF1 session, one thread, ``serving_default`` on ``distill.latency_batch_size`` serialized
   raw test examples, the models interleaved). Test AUC against that p50 for every model
   (the no-KD student of a size has its KD student's architecture, so its p50) goes to
   ``plots/distill_frontier.png``, the report and ``metrics["frontier"]``, which
   ``export.serve_model: best_under_budget`` reads. The teacher's and the configured
   student's parse / transform / model times at batch 1, 64 and 512 in the same path
   (``serving.serving_cost.breakdown_ms``) go to the report and ``metrics["serving_breakdown"]``.
"""
from __future__ import annotations

import dataclasses
import logging
import math

from models import model_io
from models.builder import build_ranker, model_features
from models.distillation import DistilledRanker
from core import feature_specs, fs
from models.distribute import get_strategy
from models.evaluation import evaluate_predictions, predict_split
from models.inputs import list_shards, make_dataset, split_source
from models.outputs import CTCVR, esmm_child, logit_key
from models.training import train_model
from pipeline import distill_report
from pipeline.progress import StageProgress
from pipeline.beam_options import pipeline_options
from core.config import CONFIGURED_STUDENT, model_feature_names, student_sizes
from core.errors import DataValidationError, InputError
from core.run_dir import read_json
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
    rows = [run_dir.split_rows(s) for s in patterns]
    with StageProgress("distill: teacher scoring", total=sum(rows) if None not in rows else None):
        counts = score_splits(patterns, run_dir.scores_dir, teacher_handler(cfg, run_dir),
                              options=pipeline_options(cfg.preprocess.beam, job_name=None),
                              num_shards=cfg.preprocess.num_shards)
    dead = sum(c["rows_dead_letter"] for c in counts.values())
    total = sum(c["rows_in"] for c in counts.values())
    if total and dead / total > cfg.preprocess.max_dead_letter_fraction:
        raise DataValidationError(f"teacher scoring dead-lettered {dead} of {total} records "
                                  f"(see {fs.join(run_dir.scores_output, 'dead_letters')})")
    return counts


def scores_pattern(run_dir, split: str) -> str:
    """Glob of the scored shards of ``split`` (the teacher-scoring job's output)."""
    return fs.join(run_dir.scores_output, f"{split}-*.tfrecord.gz")


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

    Each student reads its own ``features`` (``distill.student`` and every ``distill.sizes``
    entry: any subset of the teacher's; empty: all), so the batches parse the union of what
    the students read (one copy of a split in memory for all of them; a model ignores the
    other columns), plus the teacher's features when the frozen teacher runs online
    (feature alignment) on the same batches."""

    def __init__(self, cfg, run_dir, info, n_train: int, teacher=None, n_validation: int | None = None):
        self.cfg, self.run_dir, self.info, self.teacher = cfg, run_dir, info, teacher
        self.rows = {"train": n_train, "validation": n_validation}
        self._sources = {}  # (split, parsed features) -> shards or the split in memory, shared by the students
        self.tasks = cfg.data.tasks
        self.steps = cfg.training.steps_per_epoch or max(1, math.ceil(n_train / cfg.training.batch_size))
        read = {f for _, m in student_sizes(cfg.distill) for f in model_features(m, info).features}
        self.student_info = info.select([n for n in info.features if n in read])
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

    def train(self, mode: str, seed: int, save: bool, align: bool, model_cfg=None, save_dir: str | None = None,
              epochs: int | None = None, label: str = STUDENT):
        """Trains one student of ``model_cfg`` (default ``distill.student``) for ``epochs``
        (default ``training.epochs``); with ``save``, writes it to ``save_dir`` (default
        ``student/``), resuming from its backup there."""
        t = dataclasses.replace(self.cfg.training, seed=int(seed))
        d = self.cfg.distill
        model_cfg = model_cfg or d.student
        kwargs = dict(mode=mode, alpha=d.alpha, temperature=d.temperature)
        online = align and d.feature_alignment_weight > 0
        if online:
            kwargs.update(teacher=self.teacher, alignment_weight=d.feature_alignment_weight)
        with get_strategy(t.distribute).scope():
            model = build_ranker(model_cfg, self.info, self.tasks, self.cfg.data.funnel, seed=seed,
                                 cls=DistilledRanker, **kwargs)
        names = [x.name for x in self.tasks]
        batch_info = self._batch_info(online and self.teacher is not None)
        train_scores, val_scores = scores_pattern(self.run_dir, "train"), scores_pattern(self.run_dir, "validation")
        train_ds = make_dataset(self._source("train", batch_info, names), batch_info, t.batch_size,
                                teacher_logits=names, shuffle=True, shuffle_buffer=t.shuffle_buffer, seed=seed,
                                repeat=True)
        val_ds = make_dataset(self._source("validation", batch_info, names), batch_info, t.batch_size,
                              teacher_logits=names)
        model_dir = (save_dir or self.run_dir.model_dir(STUDENT)) if save else None
        log.info("%s: mode=%s seed=%d (%s)", label, mode, seed, f"saved to {model_dir}" if save else "for the table")
        result = train_model(model, train_ds, val_ds, t, model_dir, tasks=names, steps_per_epoch=self.steps,
                             validation_rows=self.rows["validation"], epochs=epochs, backup=save, name=label,
                             shard_patterns=[train_scores, val_scores])
        if save:
            result.artifacts = model_io.save_trained(model_dir, model, result, role=STUDENT, model_cfg=model_cfg,
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


def _clear_stale_sizes(run_dir, names: list[str]) -> None:
    """Removes ``students/<name>`` directories of sizes no longer configured (a frontier
    recorded now never names them; export must not find a student of another config)."""
    root = run_dir.students_dir
    for entry in fs.listdir(root):
        if entry not in names and not entry.startswith("."):
            log.info("distill: removing %s (not in distill.sizes)", fs.join(root, entry))
            fs.rmtree(fs.join(root, entry))


def _train_sizes(cfg, run_dir, trainer) -> dict:
    """Trains each extra size of ``distill.sizes`` with KD (saved as ``students/<size>``) and
    without, on the first seed. size -> {"model_cfg", "epochs", "rows", "kd", "no_kd" (test
    metrics), "epochs_kd", "epochs_no_kd" (epochs run), "model_dir", "serving" (the KD serving model)}."""
    d = cfg.distill
    extra = [(n, m) for n, m in student_sizes(d) if n != CONFIGURED_STUDENT]
    _clear_stale_sizes(run_dir, [n for n, _ in extra])
    epochs = d.size_epochs or cfg.training.epochs
    seed = d.seeds[0]
    out = {}
    for name, model_cfg in extra:
        entry = {"model_cfg": model_cfg, "epochs": epochs, "rows": 0, "model_dir": run_dir.student_size_dir(name)}
        for row, mode in ((KD_ROW, d.mode), (NOKD_ROW, "none")):
            kd = row == KD_ROW
            model, result = trainer.train(mode, seed, save=kd, align=kd, model_cfg=model_cfg,
                                          save_dir=entry["model_dir"], epochs=epochs, label=f"student {name}")
            entry["rows"] += result.rows
            entry["epochs_kd" if kd else "epochs_no_kd"] = len(result.epochs)
            serving = model.serving_model()
            entry["kd" if kd else "no_kd"] = trainer.evaluate(serving, model_cfg)
            if kd:
                entry["serving"] = serving
            log.info("size %s %s: %s", name, row, {t: round(m["auc"], 4) for t, m in entry["kd" if kd else "no_kd"].items()
                                                    if m.get("auc") is not None})
        out[name] = entry
    return out


BREAKDOWN_CALLS = 60  # timed calls per (model, stage, batch size) of the parse/transform/model breakdown


def serving_cost(cfg, run_dir, models: dict, breakdown: tuple = ()) -> tuple[dict, dict, dict | None]:
    """The serving p50 of each model in TF Serving's path at ``distill.latency_batch_size``,
    and the parse / transform / model breakdown of the ``breakdown`` models.

    ``models``: name -> (role, model directory, its serving model if this process loaded it
    already, else None). Each is exported with the run's TF Transform front end (``serving.export.serving_parts`` + ``save_serving_module``: every signature, no
    warmup, no gate) into ``run_dir.latency_exports_dir`` (removed afterwards), then all are
    timed together by ``serving.serving_cost.session_latency_ms`` on serialized raw test
    examples (``encode_raw_example`` of up to 4 batches of test rows, cycled); then
    ``serving.serving_cost.breakdown_ms`` times the ``breakdown`` ones (names of ``models``)
    at batch 1, 64 and 512 (``BREAKDOWN_CALLS`` calls). Returns (name -> {"p50_ms", "p90_ms",
    "p99_ms", "n"}, the measurement's settings, the breakdown or None)."""
    from core.feature_specs import encode_raw_example
    from serving.export import serving_parts
    from serving.raw_examples import read_split
    from serving.serving_cost import breakdown_ms, session_latency_ms
    from serving.signatures import save_serving_module

    d = cfg.distill
    rows = read_split(cfg, *run_dir.raw_input(cfg), "test", max(256, 4 * d.latency_batch_size))
    if not rows:
        raise InputError(f"no valid raw test rows in {run_dir.raw_input(cfg)[0]} to time the serving models with")
    serialized = [encode_raw_example(cfg, r["features"]) for r in rows]
    scratch = run_dir.latency_exports_dir
    fs.rmtree(scratch)
    try:
        dirs, modules = {}, {}
        for name, (role, model_dir, loaded) in models.items():
            dirs[name] = fs.join(scratch, name)
            module = serving_parts(cfg, run_dir, role, model_dir, keras_model=loaded).module
            save_serving_module(module, dirs[name])
            if name in breakdown:
                modules[name] = module
        log.info("distill: timing %s in a TF1 session (serving_default, batch %d, %d calls each, interleaved)",
                 ", ".join(dirs), d.latency_batch_size, d.latency_calls)
        stats = session_latency_ms(dirs, serialized, d.latency_batch_size, calls=d.latency_calls, threads=1)
        parts = None
        if modules:
            log.info("distill: parse / transform / model breakdown of %s at batch 1, 64, 512", ", ".join(modules))
            parts = breakdown_ms(modules, serialized, batch_sizes=(1, 64, 512), calls=BREAKDOWN_CALLS, threads=1,
                                 scratch_dir=scratch)
    finally:
        fs.rmtree(scratch)
    settings = {"batch_size": d.latency_batch_size, "calls": d.latency_calls, "warmup": 10, "threads": 1,
                "signature": "serving_default", "examples": len(serialized),
                "path": "TF1 session (tf.compat.v1 SavedModel loader, tag serve), one intra- and inter-op thread, "
                        "serving_default on serialized raw tf.Examples, models interleaved call by call"}
    return stats, settings, parts


def _epochs_run(model_dir: str) -> int | None:
    """Epochs the model in ``model_dir`` trained for (its metrics.json history; None if unrecorded)."""
    path = fs.join(model_dir, model_io.METRICS)
    if not fs.exists(path):
        return None
    history = (read_json(path, "metrics.json").get("history") or {}).get("loss")
    return len(history) if isinstance(history, list) else None


def _architecture(model_cfg, teacher_features: list[str]) -> dict:
    """The frontier's description of a model: its widths, and the teacher's features it skips."""
    read = set(model_cfg.features or teacher_features)
    return {"embedding_dim": model_cfg.embedding_dim, "bottom_units": list(model_cfg.bottom_units),
            "tower_units": list(model_cfg.tower_units),
            "skipped_features": [f for f in teacher_features if f not in read]}


def distill(cfg, run_dir) -> StageResult:
    """Scores, trains the students, compares them; the ``distill`` stage's result."""
    from serving.serving_cost import breakdown_table

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
    saved, rows, first_seed = None, 0, {}
    for i, seed in enumerate(cfg.distill.seeds):
        for row, mode in _modes(cfg):
            save = i == 0 and row == KD_ROW
            model, result = trainer.train(mode, seed, save=save, align=(row == KD_ROW))
            rows += result.rows
            if i == 0:
                first_seed[row] = result
            serving = model.serving_model()
            runs.setdefault(row, []).append(trainer.evaluate(serving, cfg.distill.student))
            if save:
                saved = (serving, result)
            log.info("%s seed %d: %s", row, seed, {t: round(m["auc"], 4) for t, m in runs[row][-1].items()})
    sizes = _train_sizes(cfg, run_dir, trainer)
    rows += sum(e["rows"] for e in sizes.values())

    student_model = model_io.load_serving_model(run_dir.model_dir(STUDENT), run_dir.role_stage(STUDENT))
    params, latency, latency_batch = _size_and_speed(run_dir, info, teacher_model, student_model, list(runs))
    tasks = cfg.task_names
    table = distill_report.distillation_table(runs, tasks, params, latency, latency_batch)
    gaps = distill_report.gap_closed(table, tasks, TEACHER, KD_ROW, NOKD_ROW)
    plot = distill_report.bar_chart(table, tasks, fs.join(run_dir.plots_dir, "distillation.png"),
                                    f"distillation: mode={cfg.distill.mode}, alpha={cfg.distill.alpha}, "
                                    f"T={cfg.distill.temperature}, {len(cfg.distill.seeds)} seed(s)")
    text = distill_report.markdown(table, tasks, gaps, KD_ROW, NOKD_ROW)
    d = cfg.distill

    # The frontier: every model's test AUC (first seed: the saved models) against its serving p50.
    timed = {TEACHER: (TEACHER, run_dir.model_dir(TEACHER), teacher_model),
             CONFIGURED_STUDENT: (STUDENT, run_dir.model_dir(STUDENT), student_model)}
    timed.update({name: (STUDENT, e["model_dir"], None) for name, e in sizes.items()})
    p50, settings, breakdown = serving_cost(cfg, run_dir, timed, breakdown=(TEACHER, CONFIGURED_STUDENT))
    teacher_features = list(t_cfg.features or model_feature_names(cfg))
    entries = [distill_report.frontier_entry(None, None, None, params[TEACHER], p50[TEACHER], runs[TEACHER][0],
                                             tasks, _architecture(t_cfg, teacher_features), _epochs_run(run_dir.model_dir(TEACHER)),
                                             TEACHER)]
    for name, model_cfg in student_sizes(d):
        if name == CONFIGURED_STUDENT:
            n_params, kd, no_kd, where = params[KD_ROW], runs[KD_ROW][0], runs[NOKD_ROW][0], STUDENT
            epochs = len(first_seed[KD_ROW].epochs), len(first_seed[NOKD_ROW].epochs)
        else:
            e = sizes[name]
            n_params, kd, no_kd = int(e["serving"].count_params()), e["kd"], e["no_kd"]
            epochs, where = (e["epochs_kd"], e["epochs_no_kd"]), fs.relative(e["model_dir"], run_dir.root)
        arch = _architecture(model_cfg, teacher_features)
        entries.append(distill_report.frontier_entry(name, True, d.mode, n_params, p50[name], kd, tasks, arch,
                                                     epochs[0], where))
        entries.append(distill_report.frontier_entry(name, False, "none", n_params, p50[name], no_kd, tasks, arch,
                                                     epochs[1], None))
    # teacher first, then the students small to large (KD before no-KD)
    entries = distill_report.mark_pareto([entries[0]] + sorted(entries[1:], key=lambda e: (e["params"], not e["kd"])))
    frontier = {**settings, "models": entries}
    frontier_plot = distill_report.frontier_plot(entries, tasks, fs.join(run_dir.plots_dir,
                                                                              "distill_frontier.png"), settings)
    frontier_text = distill_report.frontier_markdown(entries, tasks, settings)

    header = (f"Student `{d.student.backbone}` (embedding {d.student.embedding_dim}, bottom {d.student.bottom_units}, "
              f"towers {d.student.tower_units}) distilled with mode `{d.mode}`, alpha={d.alpha}, T={d.temperature}, "
              f"feature alignment lambda={d.feature_alignment_weight}; seeds {list(d.seeds)}, "
              f"{trainer.steps} steps/epoch x up to {cfg.training.epochs} epochs. Test split; "
              f"{params[TEACHER] / params[KD_ROW]:.1f}x fewer parameters, "
              f"{latency[TEACHER] / latency[KD_ROW]:.2f}x lower batch-1 latency and "
              f"{latency_batch[TEACHER] / latency_batch[KD_ROW]:.2f}x lower batch-{distill_report.BATCH} latency "
              "than the teacher (median of 200 interleaved in-process calls of the serving models).\n\n")
    report = (header + text + "\n\n### Test AUC against serving cost\n\n"
              + frontier_text + f"\n\n![AUC vs serving p50]({fs.relative(frontier_plot, run_dir.root)})\n"
              + "\n### Where the serving time goes: teacher and student\n\n"
              + f"p50 per batch size in TF Serving's path ({breakdown['path']}, {breakdown['threads']} thread, "
              + f"{breakdown['calls']} calls after {breakdown['warmup']} warmup calls). Method: {breakdown['method']}."
              + "\n\n" + breakdown_table(breakdown, [TEACHER, CONFIGURED_STUDENT]) + "\n")
    metrics = {"table": table, "gap_closed": gaps, "seeds": list(d.seeds), "mode": d.mode,
               "params": params, "latency_ms": latency, "param_ratio": round(params[TEACHER] / params[KD_ROW], 3),
               "latency_ms_batch": latency_batch, "latency_ratio": round(latency[TEACHER] / latency[KD_ROW], 3),
               "latency_ratio_batch": round(latency_batch[TEACHER] / latency_batch[KD_ROW], 3), "scoring": counts,
               "kd_beats_no_kd": {t: table[KD_ROW][t]["auc_mean"] > table[NOKD_ROW][t]["auc_mean"] for t in tasks},
               "frontier": frontier, "serving_breakdown": breakdown}
    artifacts = {**saved[1].artifacts, "scores": run_dir.scores_output,
                 **{f"student_{n}": model_io.serving_model_dir(e["model_dir"]) for n, e in sizes.items()}}
    plots = [fs.relative(plot, run_dir.root), fs.relative(frontier_plot, run_dir.root)]
    return StageResult(rows=rows, metrics=metrics, models={STUDENT: runs[KD_ROW][0]}, artifacts=artifacts,
                       plots=plots, report=report,
                       message=f"distill: {sum(c['rows_in'] for c in counts.values()):,} rows scored by the teacher; "
                       + "student (KD) test AUC " + ", ".join(f"{t} {table[KD_ROW][t]['auc_mean']:.4f}" for t in tasks)
                       + f", {latency[TEACHER] / latency[KD_ROW]:.1f}x faster than the teacher at batch 1"
                       + f" -> {saved[1].artifacts.get('serving_model')}"
                       + (f" (sizes {', '.join(sizes)} in {run_dir.students_dir})" if sizes else ""))
