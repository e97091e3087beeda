"""The ``export`` stage: SavedModel for TF Serving, validated by the gate, then published.

Steps: pick the trained model (``--model``, else ``export.serve_model``, falling back to the
teacher when no student exists); build ``ServingModule`` (TF Transform layer + Keras serving
model) and save it with its signatures into ``<base>/<model_name>/.tmp-<version>``; write
the warmup requests from validation rows; run the gate (``serving.gate``) on test rows; write
``assets.extra/metrics.json`` and ``BLESSED``; rename the build directory to
``<base>/<model_name>/<version>``. A failed gate removes the build directory and raises
``GateFailedError``: nothing is published.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import types

import models  # noqa: F401
import tensorflow as tf

from pipeline.errors import ExportError
from pipeline.features import FeatureInfo, serving_feature_spec
from pipeline.report import pyplot, save_figure
from pipeline.run_dir import RunDir, read_json, write_json_atomic
from serving import versions
from serving.gate import run_gate
from serving.raw_examples import read_split, to_example
from serving.signatures import ServingModule, save_serving_module
from serving.warmup import write_warmup

log = logging.getLogger("serving.export")

METRIC_ROWS = 50_000  # cap on test rows the gate scores (the default run has ~20,000)


def choose_role(cfg, run_dir: RunDir, requested: str | None) -> str:
    """``requested``, else ``export.serve_model``; the teacher when the student is absent."""
    role = requested or cfg.export.serve_model
    path = os.path.join(run_dir.model_dir(role), "serving_model")
    if os.path.exists(path):
        return role
    if requested is None and role == "student":
        teacher = os.path.join(run_dir.model_dir("teacher"), "serving_model")
        if os.path.exists(teacher):
            log.info("export: no student model at %s; exporting the teacher instead", path)
            return "teacher"
        run_dir.require(teacher, "train")  # neither model exists: training comes first
    run_dir.require(path, "train" if role == "teacher" else "distill")
    return role


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


def _plot(run_dir: RunDir, blessing: dict, name: str, version: int) -> str:
    metrics = blessing["checks"]["metrics"]
    tasks = list(metrics["tasks"])
    cand = [metrics["tasks"][t]["auc"] or 0.0 for t in tasks]
    prev = [metrics["previous"].get(t) or 0.0 for t in tasks]
    fig, ax = pyplot().subplots(figsize=(5, 3))
    x = range(len(tasks))
    ax.bar([i - 0.2 for i in x], cand, 0.4, label=f"candidate v{version}")
    ax.bar([i + 0.2 for i in x], prev, 0.4, label="published before")
    for i, t in enumerate(tasks):
        if t in metrics["min_auc"]:
            ax.hlines(metrics["min_auc"][t], i - 0.4, i + 0.4, colors="red", label="min AUC" if i == 0 else None)
    ax.set_xticks(list(x), tasks)
    ax.set_ylim(0.4, 1.0)
    ax.set_ylabel("test AUC (serving_default)")
    ax.set_title(f"export gate: {name}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return os.path.relpath(save_figure(fig, os.path.join(run_dir.plots_dir, "export_gate_auc.png")), run_dir.root)


def _message(cfg, run_dir: RunDir, name: str, version: int, final: str, role: str, example: dict | None) -> str:
    host, rest, grpc_port = cfg.serving.host, cfg.serving.rest_port, cfg.serving.grpc_port
    instance = json.dumps({"signature_name": "predict_raw", "instances": [example]}) if example else "{}"
    return (f"published {name} version {version} ({role}), blessed: {final}\n"
            f"serve it:   python -m pipeline serve --run-dir {run_dir.root}\n"
            f"query REST: curl -s -X POST http://{host}:{rest}/v1/models/{name}:predict -d '{instance}'\n"
            f"query gRPC: python -m serving.client --grpc {host}:{grpc_port} --model {name} --run-dir {run_dir.root} --rows 3")


def export_model(cfg, run_dir: RunDir, role: str) -> dict:
    """Builds, gates and publishes one version; returns the blessing plus paths."""
    import tensorflow_transform as tft
    import tf_keras

    run_dir.require(run_dir.transform_output_dir, "preprocess")
    info = FeatureInfo.from_dict(read_json(run_dir.require(run_dir.feature_info_file, "preprocess"), "feature info"))
    from pipeline import artifact_checks

    tft_output = tft.TFTransformOutput(artifact_checks.require_transform_output(run_dir.transform_output_dir))
    model_path = artifact_checks.require_saved_model(os.path.join(run_dir.model_dir(role), "serving_model"),
                                                     "train" if role == "teacher" else "distill")
    keras_model = tf_keras.models.load_model(model_path, compile=False)
    task = cfg.export.classification_task or cfg.task_names[0]
    try:
        module = ServingModule(tft_output.transform_features_layer(), keras_model, serving_feature_spec(cfg),
                               info.model_inputs, task)
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
        if cfg.export.warmup_examples:
            write_warmup(build, [to_example(cfg, r["features"]) for r in warm], name)
        test = read_split(cfg, pattern, fmt, "test", METRIC_ROWS)
        tfrecords = read_tfrecords(run_dir.split_pattern("test"), tft_output.transformed_feature_spec(), METRIC_ROWS)
        prev_version, prev_metrics = versions.published_metrics(model_dir)
        blessing = run_gate(cfg, build, tft_layer=module.tft_layer, keras_model=keras_model, info=info,
                            eval_keys=_eval_keys(cfg, module.output_names), test_records=test, tfrecords=tfrecords,
                            warmup_requests=len(warm) if cfg.export.warmup_examples else 0,
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
    example = {c: sample[0]["features"][c] for c in cfg.data.categorical + cfg.data.numeric} if sample else None
    return {"blessing": blessing, "version_dir": final, "version": version, "example": example}


def run_stage(cfg, run_dir: RunDir, opts) -> dict:
    role = choose_role(cfg, run_dir, getattr(opts, "model", None))
    out = export_model(cfg, run_dir, role)
    blessing, version = out["blessing"], out["version"]
    name = cfg.export.model_name
    metrics = {"version": version, "role": role, "skew_max_abs_diff": blessing["checks"]["skew"]["max_abs_diff"],
               "warmup_requests": blessing["checks"]["warmup"]["requests"]}
    for t, m in blessing["metrics"].items():
        metrics[f"{t}_auc"] = m["auc"]
    plot = _plot(run_dir, blessing, name, version)
    report = "\n".join([
        f"Published `{name}` version {version} ({role} model) at `{out['version_dir']}` after the gate:",
        "",
        "| check | result |", "|---|---|",
        f"| load (TF1 session loader) | {', '.join(blessing['checks']['load']['signatures'])} |",
        f"| warmup | {blessing['checks']['warmup']['requests']} requests replayed |",
        f"| skew | max abs diff {blessing['checks']['skew']['max_abs_diff']:.2g} over "
        f"{blessing['checks']['skew']['rows']} rows; {blessing['checks']['skew']['tfrecord_rows_matched']} TFRecord rows matched |",
        "| metrics | " + ", ".join(f"{t} AUC {m['auc']:.4f}" if m["auc"] is not None else f"{t} AUC n/a"
                                for t, m in blessing["metrics"].items()) + " |",
        "", f"![export gate]({plot})",
    ])
    return {"rows": next(iter(blessing["metrics"].values()))["rows"], "metrics": metrics,
            "artifacts": {"version_dir": out["version_dir"], "blessing": os.path.join(out["version_dir"], versions.BLESSED_FILE)},
            "plots": [plot], "report": report,
            "message": _message(cfg, run_dir, name, version, out["version_dir"], role, out["example"])}
