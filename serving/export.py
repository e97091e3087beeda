"""Export: a SavedModel for TF Serving, validated by the gate, then published (the ``export``
stage, ``pipeline/stages/export.py``, picks the model and records the result).

Steps: pick the trained model (``--model``, else ``export.serve_model``, falling back to the
teacher when no student exists); build ``ServingModule`` (TF Transform layer + Keras serving
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
"""
from __future__ import annotations

import logging
import os
import shutil
import types

import tensorflow as tf

from core.errors import ExportError
from core.config import weight_columns
from core.feature_specs import encode_raw_example, serving_feature_spec
from core.features import FeatureInfo, raw_columns_for
from core.run_dir import RunDir, read_json, write_json_atomic
from serving import versions
from serving.gate import run_gate
from serving.raw_examples import read_split, to_columns, to_instances
from serving.signatures import ServingModule, save_serving_module
from serving.warmup import MAX_WARMUP_RECORDS, write_warmup

log = logging.getLogger("serving.export")

METRIC_ROWS = 50_000  # cap on test rows the gate scores (the default run has ~20,000)


def read_tfrecords(pattern: str, spec: dict, limit: int) -> dict | None:
    """The transformed examples matching ``pattern`` as name -> ndarray (None when absent)."""
    files = sorted(tf.io.gfile.glob(pattern))
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


def model_features(cfg, run_dir: RunDir, role: str) -> list[str]:
    """The model features the ``role``'s trained model reads (empty: all): ``model.features``
    of its ``model_config.json`` when recorded, else the config's (``model.features`` for the
    teacher; ``distill.student.features``, or the teacher's, for the student)."""
    path = os.path.join(run_dir.model_dir(role), "model_config.json")
    if os.path.exists(path):
        recorded = (read_json(path, "model config").get("model") or {}).get("features")
        if recorded:
            return list(recorded)
    if role == "student":
        return list(cfg.distill.student.features or cfg.model.features)
    return list(cfg.model.features)


def export_model(cfg, run_dir: RunDir, role: str) -> dict:
    """Builds, gates and publishes one version; returns the blessing plus paths."""
    import tensorflow_transform as tft
    import tf_keras

    run_dir.require(run_dir.transform_output_dir, "preprocess")
    info = FeatureInfo.from_dict(read_json(run_dir.require(run_dir.feature_info_file, "preprocess"), "feature info"))
    chosen = model_features(cfg, run_dir, role)
    try:
        info = info.select(chosen)
    except ValueError as e:
        raise ExportError(f"the {role} model's features: {e}") from None
    columns = raw_columns_for(cfg, chosen)
    from core import artifact_checks

    tft_output = tft.TFTransformOutput(artifact_checks.require_transform_output(run_dir.transform_output_dir))
    model_path = artifact_checks.require_saved_model(os.path.join(run_dir.model_dir(role), "serving_model"),
                                                     "train" if role == "teacher" else "distill")
    keras_model = tf_keras.models.load_model(model_path, compile=False)
    task = cfg.export.classification_task or cfg.task_names[0]
    try:
        module = ServingModule(tft_output.transform_features_layer(), keras_model, serving_feature_spec(cfg, columns),
                               info.model_inputs, task, list_weights=weight_columns(cfg.data))
    except ValueError as e:
        raise ExportError(f"cannot build the serving module for the {role} model: {e}") from None

    name = cfg.export.model_name
    model_dir = os.path.join(run_dir.serving_base(cfg.export.base_dir), name)
    os.makedirs(model_dir, exist_ok=True)
    version = versions.next_version(model_dir)
    build = versions.build_dir(model_dir, version)
    shutil.rmtree(build, ignore_errors=True)
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
        write_json_atomic(os.path.join(build, versions.METRICS_FILE), blessing["metrics"])
        write_json_atomic(os.path.join(build, versions.BLESSED_FILE), blessing)
        final = versions.publish(build, model_dir, version)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    log.info("export: published %s", final)
    sample = (warm or test)[:1]
    example = to_instances(cfg, sample[:1], columns)[0] if sample else None  # lists padded to max_length
    return {"blessing": blessing, "version_dir": final, "version": version, "example": example, "columns": columns}
