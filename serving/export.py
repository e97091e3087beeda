"""Export: a SavedModel for TF Serving, validated by the gate, then published (the ``export``
stage, ``pipeline/stages/export.py``, picks the model and records the result).

Steps: pick the trained model (``--model``, else ``export.serve_model``, falling back to the
teacher when no student exists; ``best_under_budget``: ``best_under_budget`` below); build ``ServingModule`` (TF Transform layer + Keras serving
model) and save it with its signatures into ``<base>/<model_name>/.tmp-<version>``; write
the warmup requests from validation rows; run the gate (``serving.gate``) on test rows; write
``assets.extra/metrics.json`` and ``BLESSED``; rename the build directory to
``<base>/<model_name>/<version>``. A failed gate removes the build directory and raises
``GateFailedError``: nothing is published.

A model that reads a subset of the features (``model.features`` of the teacher,
``distill.student.features`` of the student, as recorded in its ``model_config.json``) is
exported with the raw columns that subset needs (``core.features.raw_columns_for``) and
the model inputs of ``FeatureInfo.select``: its ``serving_default`` parses, and its
``predict_raw`` takes, only those columns.

``export.serve_model: best_under_budget`` publishes one of the KD students of distill's
frontier (``summary.json``, ``stages.distill.metrics.frontier``: every model's test AUC and
serving p50 at ``distill.latency_batch_size`` in TF Serving's path): the one with the best
mean test AUC whose p50 is within ``export.latency_budget_ms`` (``best_under_budget``); its
model directory is ``student/`` (the configured student) or ``students/<size>/``. The
blessing records the choice and why (``selection``).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import types

import tensorflow as tf

from core.errors import ExportError, InputError
from core.config import BEST_UNDER_BUDGET, weight_columns
from core.feature_specs import encode_raw_example, serving_feature_spec
from core.features import FeatureInfo, raw_columns_for
from core import fs
from core.run_dir import RunDir, Summary, read_json, write_json_atomic
from serving import versions
from serving.gate import run_gate
from serving.raw_examples import read_split, to_columns, to_instances
from serving.signatures import ServingModule, save_serving_module
from serving.warmup import MAX_WARMUP_RECORDS, write_warmup

log = logging.getLogger("serving.export")

METRIC_ROWS = 50_000  # cap on test rows the gate scores (the default run has ~20,000)


def read_tfrecords(pattern: str, spec: dict, limit: int) -> dict | None:
    """The transformed examples matching ``pattern`` as name -> ndarray (None when absent)."""
    files = fs.glob(pattern)
    if not files:
        return None
    ds = tf.data.TFRecordDataset(files, compression_type="GZIP").take(limit).batch(4096)
    ds = ds.map(lambda x: tf.io.parse_example(x, spec))
    parts = list(ds.as_numpy_iterator())
    if not parts:
        return None
    import numpy as np

    return {k: np.concatenate([p[k] for p in parts]) for k in spec}


def _eval_keys(cfg, output_names: list[str]) -> dict:
    """Task -> the output scored against its per-impression label (``models.outputs``)."""
    from models.outputs import CTCVR, eval_output_key, probability_key

    esmm = types.SimpleNamespace(esmm=probability_key(CTCVR) in output_names)
    return {t: eval_output_key(t, esmm, cfg.data.funnel) for t in cfg.task_names}


def model_features(cfg, run_dir: RunDir, role: str, model_dir: str | None = None) -> list[str]:
    """The model features the ``role``'s trained model reads (empty: all): ``model.features``
    of its ``model_config.json`` (in ``model_dir``, default ``run_dir.model_dir(role)``) when
    recorded, else the config's (``model.features`` for the teacher;
    ``distill.student.features``, or the teacher's, for the student)."""
    path = fs.join(model_dir or run_dir.model_dir(role), "model_config.json")
    if fs.exists(path):
        recorded = (read_json(path, "model config").get("model") or {}).get("features")
        if recorded:
            return list(recorded)
    if role == "student":
        return list(cfg.distill.student.features or cfg.model.features)
    return list(cfg.model.features)


@dataclasses.dataclass
class ServingParts:
    """What an export of one trained model is built from (``serving_parts``).

    ``module``: the ``ServingModule`` (TF Transform layer + Keras serving model);
    ``keras_model``: the loaded serving model; ``info``: the ``FeatureInfo`` of the features it
    reads; ``columns``: the raw columns its signatures take; ``feature_spec``: their parsing
    spec (``serving_feature_spec``); ``tft_output``: the run's ``TFTransformOutput``."""

    module: ServingModule
    keras_model: object
    info: FeatureInfo
    columns: list
    feature_spec: dict
    tft_output: object


def serving_parts(cfg, run_dir: RunDir, role: str, model_dir: str | None = None, keras_model=None) -> ServingParts:
    """The ``ServingModule`` of the ``role``'s trained model (in ``model_dir``, default
    ``run_dir.model_dir(role)``) over the run's TF Transform output, restricted to the raw
    columns its features need; nothing is written. ``keras_model``: that model's serving
    model if this process has loaded it already (default: loaded from ``model_dir``), so the
    module wraps the very model that was evaluated and one copy is held. ``InputError``
    naming the stage to run when an input is missing, ``ExportError`` when the module cannot
    be built."""
    import tensorflow_transform as tft
    import tf_keras

    from core import artifact_checks

    model_dir = model_dir or run_dir.model_dir(role)
    run_dir.require(run_dir.transform_output_dir, "preprocess")
    info = FeatureInfo.from_dict(read_json(run_dir.require(run_dir.feature_info_file, "preprocess"), "feature info"))
    chosen = model_features(cfg, run_dir, role, model_dir)
    try:
        info = info.select(chosen)
    except ValueError as e:
        raise ExportError(f"the {role} model's features: {e}") from None
    columns = raw_columns_for(cfg, chosen)
    tft_output = tft.TFTransformOutput(artifact_checks.require_transform_output(run_dir.transform_output_dir))
    model_path = artifact_checks.require_saved_model(fs.published(fs.join(model_dir, "serving_model")),
                                                     "train" if role == "teacher" else "distill")
    if keras_model is None:
        keras_model = tf_keras.models.load_model(model_path, compile=False)
    task = cfg.export.classification_task or cfg.task_names[0]
    spec = serving_feature_spec(cfg, columns)
    try:
        module = ServingModule(tft_output.transform_features_layer(), keras_model, spec,
                               info.model_inputs, task, list_weights=weight_columns(cfg.data))
    except ValueError as e:
        raise ExportError(f"cannot build the serving module for the {role} model: {e}") from None
    return ServingParts(module, keras_model, info, columns, spec, tft_output)


def frontier(run_dir: RunDir) -> dict:
    """distill's AUC-vs-serving-cost frontier as recorded in summary.json
    (``stages.distill.metrics.frontier``): ``{"batch_size", "calls", "path", "models": [...]}``.
    ``InputError`` naming the stage to re-run when distill did not finish or recorded none."""
    run_dir.check_stage("distill")
    entry = Summary(run_dir).load()["stages"].get("distill") or {}
    found = (entry.get("metrics") or {}).get("frontier")
    if not found or not found.get("models"):
        raise InputError(f"{run_dir.summary_file}: distill recorded no AUC-vs-serving-cost frontier (a run distilled "
                         f"before distill.sizes existed, or not distilled); re-run `python -m pipeline distill "
                         f"--run-dir {run_dir.root}`")
    return found


def best_under_budget(models: list[dict], budget_ms: float, batch_size: int | None = None) -> tuple[dict, dict]:
    """The frontier's KD student with the best mean test AUC whose serving p50 <= ``budget_ms``.

    Args:
      models: frontier entries (``pipeline.distillation``): ``name``, ``kd`` (True for a KD
        student), ``model_dir`` (relative to the run; None when not saved), ``p50_ms``,
        ``auc_mean`` (None when undefined).
      budget_ms: the largest p50 allowed (ms).
      batch_size: the p50's batch size, for the messages.

    Returns:
      (the chosen entry, the selection record for the blessing: rule, budget, chosen name,
      its p50 and mean AUC, the candidates under budget and over it, and the reason).
      Ties in mean AUC go to the lower p50.

    Raises:
      ExportError: no saved KD student has a defined mean AUC, or none is within the budget
        (the message names the fastest one's p50 and the budget).
    """
    at = f" at batch {batch_size}" if batch_size else ""
    candidates = [m for m in models if m.get("kd") and m.get("model_dir") and m.get("auc_mean") is not None
                  and not math.isnan(m["auc_mean"])]
    if not candidates:
        raise ExportError(f"export.serve_model: {BEST_UNDER_BUDGET}: distill's frontier holds no saved KD student "
                          f"with a test AUC; re-run distill")
    under = [m for m in candidates if m["p50_ms"] <= budget_ms]
    if not under:
        fastest = min(candidates, key=lambda m: m["p50_ms"])
        raise ExportError(f"export.serve_model: {BEST_UNDER_BUDGET}: no KD student's serving p50{at} is within "
                          f"export.latency_budget_ms={budget_ms:g} ms; the fastest, {fastest['name']}, takes "
                          f"{fastest['p50_ms']:.3f} ms")
    chosen = max(under, key=lambda m: (m["auc_mean"], -m["p50_ms"]))
    selection = {
        "rule": BEST_UNDER_BUDGET, "latency_budget_ms": budget_ms, "batch_size": batch_size,
        "chosen": chosen["name"], "size": chosen.get("size"), "model_dir": chosen["model_dir"],
        "p50_ms": chosen["p50_ms"], "auc_mean": chosen["auc_mean"],
        "under_budget": {m["name"]: {"p50_ms": m["p50_ms"], "auc_mean": m["auc_mean"]} for m in under},
        "over_budget": {m["name"]: {"p50_ms": m["p50_ms"], "auc_mean": m["auc_mean"]}
                        for m in candidates if m not in under},
        "reason": (f"highest mean test AUC ({chosen['auc_mean']:.4f}) of the {len(under)} KD student(s) whose "
                   f"serving p50{at} is within {budget_ms:g} ms (its p50: {chosen['p50_ms']:.3f} ms)"),
    }
    return chosen, selection


def export_model(cfg, run_dir: RunDir, role: str, trained_dir: str | None = None,
                 selection: dict | None = None) -> dict:
    """Builds, gates and publishes one version; returns the blessing plus paths.

    ``trained_dir``: the trained model's directory (default ``run_dir.model_dir(role)``; a
    student size's ``students/<name>``); ``selection``: why this model (``best_under_budget``),
    recorded in the blessing."""
    parts = serving_parts(cfg, run_dir, role, trained_dir)
    module, keras_model, info, columns, tft_output = (parts.module, parts.keras_model, parts.info, parts.columns,
                                                      parts.tft_output)

    name = cfg.export.model_name
    model_dir = fs.join(run_dir.serving_base(cfg.export.base_dir), name)
    fs.makedirs(model_dir)
    version = versions.next_version(model_dir)
    build = versions.build_dir(model_dir, version)
    fs.rmtree(build)
    pattern, fmt = run_dir.raw_input(cfg)
    try:
        log.info("export: saving %s model as %s version %d into %s", role, name, version, build)
        save_serving_module(module, build)
        warm = read_split(cfg, pattern, fmt, "validation", cfg.export.warmup_examples)
        # A model with list features also warms predict_raw once (its padded -> sparse path),
        # within TF Serving's 1000 warmup records.
        raw_warmup = to_columns(cfg, warm, columns) if warm and module.list_columns else None
        singles = warm[:MAX_WARMUP_RECORDS - 1] if raw_warmup is not None else warm
        if cfg.export.warmup_examples:
            write_warmup(build, [encode_raw_example(cfg, r["features"]) for r in singles], name,
                         raw_inputs=raw_warmup,
                         raw_dtypes={k: v.dtype for k, v in serving_feature_spec(cfg, columns).items()})
        test = read_split(cfg, pattern, fmt, "test", METRIC_ROWS)
        tfrecords = read_tfrecords(run_dir.split_pattern("test"), tft_output.transformed_feature_spec(), METRIC_ROWS)
        prev_version, prev_metrics = versions.published_metrics(model_dir)
        blessing = run_gate(cfg, build, tft_layer=module.tft_layer, keras_model=keras_model, info=info,
                            eval_keys=_eval_keys(cfg, module.output_names), test_records=test, tfrecords=tfrecords,
                            warmup_requests=(len(singles) + (raw_warmup is not None)
                                             if cfg.export.warmup_examples else 0),
                            previous_metrics=prev_metrics)
        blessing.update({"model_name": name, "version": version, "role": role, "previous_version": prev_version})
        if trained_dir is not None:
            blessing["trained_model"] = fs.relative(fs.absolute(trained_dir), run_dir.root)
        if selection is not None:
            blessing["selection"] = selection
        write_json_atomic(fs.join(build, versions.METRICS_FILE), blessing["metrics"])
        write_json_atomic(fs.join(build, versions.BLESSED_FILE), blessing)
        final = versions.publish(build, model_dir, version)
    except BaseException:
        fs.rmtree(build)
        raise
    log.info("export: published %s", final)
    sample = (warm or test)[:1]
    example = to_instances(cfg, sample[:1], columns)[0] if sample else None  # lists padded to max_length
    return {"blessing": blessing, "version_dir": final, "version": version, "example": example, "columns": columns}
