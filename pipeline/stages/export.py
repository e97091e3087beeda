"""``python -m pipeline export``: the trained teacher or student through ``serving.export``
(signatures, warmup, the validation gate) into the serving base directory, published as the
next version only when blessed. ``best_under_budget`` (``--model`` or ``export.serve_model``)
publishes the KD student of distill's frontier with the best mean test AUC whose serving p50
is within ``export.latency_budget_ms`` (``serving.export.best_under_budget``)."""
from __future__ import annotations

import json
import logging

from core import fs
from core.config import BEST_UNDER_BUDGET, SERVE_MODELS
from core.errors import ConfigError
from core.figures import pyplot, save_figure
from core.run_dir import RunDir
from pipeline.stages.base import StageResult, stage

log = logging.getLogger("pipeline.stages.export")


def _arguments(p) -> None:
    p.add_argument("--model", choices=list(SERVE_MODELS),
                   help="which trained model to export (default: export.serve_model, or the teacher when no student "
                        f"exists); {BEST_UNDER_BUDGET}: the best KD student within export.latency_budget_ms")


@stage("export", "export a SavedModel for TF Serving through the validation gate",
       arguments=_arguments,
       reads=("preprocess", "train", "distill"))
def run(cfg, run_dir: RunDir, opts) -> StageResult:
    from serving import versions
    from serving.export import export_model

    role, trained_dir, selection = choose_model(cfg, run_dir, getattr(opts, "model", None))
    out = export_model(cfg, run_dir, role, trained_dir, selection)
    blessing, version = out["blessing"], out["version"]
    name = cfg.export.model_name
    metrics = {"version": version, "role": role, "skew_max_abs_diff": blessing["checks"]["skew"]["max_abs_diff"],
               "warmup_requests": blessing["checks"]["warmup"]["requests"]}
    if selection is not None:
        metrics.update({"student_size": selection["size"], "selection": selection})
    for t, m in blessing["metrics"].items():
        metrics[f"{t}_auc"] = m["auc"]
    plot = _plot(run_dir, blessing, name, version)
    chosen = f"student `{selection['size']}`, {selection['reason']}" if selection else f"{role} model"
    report = "\n".join([
        f"Published `{name}` version {version} ({chosen}) at `{out['version_dir']}` after the gate:",
        "",
        "| check | result |", "|---|---|",
        f"| load (TF1 session loader) | {', '.join(blessing['checks']['load']['signatures'])} |",
        f"| inputs | {len(out['columns'])} raw columns: {', '.join(out['columns'])} |",
        f"| warmup | {blessing['checks']['warmup']['requests']} requests replayed |",
        f"| skew | max abs diff {blessing['checks']['skew']['max_abs_diff']:.2g} over "
        f"{blessing['checks']['skew']['rows']} rows; {blessing['checks']['skew']['tfrecord_rows_matched']} TFRecord rows matched |",
        "| metrics | " + ", ".join(f"{t} AUC {m['auc']:.4f}" if m["auc"] is not None else f"{t} AUC n/a"
                                for t, m in blessing["metrics"].items()) + " |",
        "", f"![export gate]({plot})",
    ])
    return StageResult(rows=next(iter(blessing["metrics"].values()))["rows"], metrics=metrics, artifacts={"version_dir": out["version_dir"], "blessing": fs.join(out["version_dir"], versions.BLESSED_FILE)}, plots=[plot], report=report, message=_message(cfg, run_dir, name, version, out["version_dir"],
                                                       role if selection is None else f"student {selection['size']}: "
                                                       f"{selection['reason']}", out["example"]),
                       extra={"rows_unit": "test examples (gate)", "raw_columns": out["columns"]})


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
    return fs.relative(save_figure(fig, fs.join(run_dir.plots_dir, "export_gate_auc.png")), run_dir.root)


def _message(cfg, run_dir: RunDir, name: str, version: int, final: str, role: str, example: dict | None) -> str:
    host, rest, grpc_port = cfg.serving.host, cfg.serving.rest_port, cfg.serving.grpc_port
    instance = json.dumps({"signature_name": "predict_raw", "instances": [example]}) if example else "{}"
    return (f"export: published {name} version {version} ({role}), blessed -> {final}\n"
            f"serve it:   python -m pipeline serve --run-dir {run_dir.root}\n"
            f"query REST: curl -s -X POST http://{host}:{rest}/v1/models/{name}:predict -d '{instance}'\n"
            f"query gRPC: python -m serving.client --grpc {host}:{grpc_port} --model {name} --run-dir {run_dir.root} --rows 3")


def choose_model(cfg, run_dir: RunDir, requested: str | None) -> tuple[str, str | None, dict | None]:
    """(role, trained model directory or None for the role's own, selection record or None).

    ``requested`` (``--model``), else ``export.serve_model``: a role goes through
    ``choose_role``; ``best_under_budget`` picks from distill's recorded frontier
    (``serving.export.best_under_budget``) and needs ``export.latency_budget_ms``."""
    from models import model_io
    from serving.export import best_under_budget, frontier

    choice = requested or cfg.export.serve_model
    if choice != BEST_UNDER_BUDGET:
        return choose_role(cfg, run_dir, requested), None, None
    budget = cfg.export.latency_budget_ms
    if budget is None:
        raise ConfigError(f"export.latency_budget_ms: required with --model {BEST_UNDER_BUDGET}")
    found = frontier(run_dir)
    chosen, selection = best_under_budget(found["models"], budget, found.get("batch_size"))
    path = run_dir.path(chosen["model_dir"])
    run_dir.require(model_io.serving_model_dir(path), "distill")
    log.info("export: %s", selection["reason"])
    return "student", path, selection


def choose_role(cfg, run_dir: RunDir, requested: str | None) -> str:
    """``requested``, else ``export.serve_model``; the teacher when the student is absent."""
    from models import model_io

    role = requested or cfg.export.serve_model
    path = model_io.serving_model_dir(run_dir.model_dir(role))
    if fs.exists(path):  # complete or not: export names what is wrong with it
        return role
    if requested is None and role == "student":
        teacher = model_io.serving_model_dir(run_dir.model_dir("teacher"))
        if fs.exists(teacher):
            log.info("export: no student model at %s; exporting the teacher instead", path)
            return "teacher"
        run_dir.require(teacher, "train")  # neither model exists: training comes first
    run_dir.require(path, "train" if role == "teacher" else "distill")
    return role
