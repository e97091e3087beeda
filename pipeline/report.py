"""Renders ``report.md`` from ``summary.json``: stages, per-model metrics, stage sections, plots.

Every stage entry has ``finished_at``. A section whose inputs were re-produced after it (an
upstream stage, directly or through others, finished later, or was started again and did not
finish) is marked stale in the stage table, in its heading, in the model table rows it wrote
and under its plots; re-running the stage refreshes it. The "rows" column says per stage what
it counts (records, or examples x epochs for training).
"""
from __future__ import annotations

import os
from datetime import datetime

from core import fs
from core.run_dir import RunDir, Summary


# What each stage's ``rows`` counts, unless its entry says it (``rows_unit``).
ROWS_UNIT = {
    "generate": "records written",
    "preprocess": "records read",
    "train": "examples x epochs",
    "evaluate": "test examples (each model)",
    "distill": "examples x epochs (all students)",
    "export": "test examples (gate)",
    "predict": "records read",
    "pareto": "trained models",
}

_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%z"

_METRIC_ORDER = ["auc", "oracle_auc", "oracle_gap", "gauc", "logloss", "calibration", "mean_prediction", "mean_label"]


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def _time(text):
    try:
        return datetime.strptime(text, _TIME_FORMAT) if text else None
    except (TypeError, ValueError):
        return None


def _inputs(name: str, entry: dict) -> list[str]:
    from pipeline.stages import STAGES  # the registrations declare what each stage reads

    inputs = list(STAGES.get(name).reads) if name in STAGES else []
    if name == "export" and (entry.get("metrics") or {}).get("role") == "teacher":
        inputs.remove("distill")
    return inputs


def _upstream(name: str, stages: dict) -> list[str]:
    """Every stage ``name``'s section depends on, nearest first (through the ones in between)."""
    seen, todo = [], _inputs(name, stages.get(name) or {})
    while todo:
        up = todo.pop(0)
        if up != name and up not in seen:
            seen.append(up)
            todo += _inputs(up, stages.get(up) or {})
    return seen


def staleness(stages: dict) -> dict:
    """stage -> why its section is stale ("train ran after this"), for stale sections only.

    A finished (``ok``) section is stale when an upstream stage finished after it, or was
    started again after it and has not finished or failed (its output is being replaced).
    Times are ``finished_at`` (``started_at`` for an unfinished attempt), to the second:
    two stages finishing within the same second count as not after each other.
    """
    out = {}
    for name in stages:
        reasons = _stale_reasons(name, stages)
        if reasons:
            out[name] = "; ".join(reasons)
    return out


def _stale_reasons(name: str, stages: dict, only=None) -> list[str]:
    """``staleness`` of one section, counting only the upstream stages in ``only`` (None: all)."""
    entry = stages.get(name)
    if not isinstance(entry, dict) or entry.get("status") != "ok":
        return []
    done = _time(entry.get("finished_at"))
    if done is None:
        return []
    reasons = []
    for up in _upstream(name, stages):
        if only is None or up in only:
            u = stages.get(up)
            if not isinstance(u, dict):
                continue
            status = u.get("status")
            when = _time(u.get("finished_at") if status in ("ok", "failed") else u.get("started_at"))
            if when is None or when <= done:
                continue
            if status == "ok":
                reasons.append(f"{up} ran after this")
            elif status == "failed":
                reasons.append(f"{up} was re-run after this and failed")
            else:
                reasons.append(f"{up} is being re-run ({status})")
    return reasons


def _rows(name: str, entry: dict) -> tuple[str, str]:
    rows = entry.get("rows")
    if rows is None or rows == "":
        return "", ""
    return (f"{rows:,}" if isinstance(rows, int) else str(rows)), entry.get("rows_unit") or ROWS_UNIT.get(name, "rows")


def _model_sources(stages: dict) -> dict:
    """model -> the stage whose entry last wrote its metrics (evaluate for the roles it
    scored, distill for the student), by ``finished_at``."""
    writers: dict = {}
    for name, entry in stages.items():
        if not isinstance(entry, dict) or entry.get("status") != "ok":
            continue
        roles = (entry.get("metrics") or {}).get("roles", []) if name == "evaluate" else (["student"] if name == "distill" else [])
        for role in roles:
            when = _time(entry.get("finished_at"))
            if role not in writers or (when and writers[role][1] and when > writers[role][1]):
                writers[role] = (name, when)
    return {role: w[0] for role, w in writers.items()}


# The stage that trains each model of the model table.
_TRAINED_BY = {"teacher": "train", "student": "distill"}


def _model_marks(models: dict, stages: dict) -> dict:
    """model -> why its metrics row is stale (the stage that wrote it ran before the model, or
    the data it was scored on, was re-produced), or ""."""
    sources, marks = _model_sources(stages), {}
    for model in models:
        source, trained_by = sources.get(model), _TRAINED_BY.get(model)
        chain = None if trained_by is None else {trained_by, *_upstream(trained_by, stages)}
        reasons = _stale_reasons(source, stages, chain) if source else []
        marks[model] = f"stale ({source}: {'; '.join(reasons)})" if reasons else ""
    return marks


def _models_table(models: dict, marks: dict | None = None) -> list[str]:
    rows = []
    metric_names: list[str] = []
    for tasks in models.values():
        for metrics in tasks.values():
            if isinstance(metrics, dict):
                for m in metrics:
                    if m not in metric_names:
                        metric_names.append(m)
    metric_names.sort(key=lambda m: (_METRIC_ORDER.index(m) if m in _METRIC_ORDER else len(_METRIC_ORDER), m))
    if not metric_names:
        return rows
    marks = marks or {}
    extra = any(marks.values())
    rows.append("| model | task | " + " | ".join(metric_names) + " |" + (" stale |" if extra else ""))
    rows.append("|---|---|" + "---|" * len(metric_names) + ("---|" if extra else ""))
    for model, tasks in models.items():
        for task, metrics in tasks.items():
            if not isinstance(metrics, dict):
                continue
            rows.append(f"| {model} | {task} | " + " | ".join(_fmt(metrics.get(m, "")) for m in metric_names) + " |"
                        + (f" {marks.get(model, '')} |" if extra else ""))
    return rows


def render(summary: dict, title: str) -> str:
    lines = [f"# Run report: {title}", ""]
    stages = {k: v for k, v in summary.get("stages", {}).items() if isinstance(v, dict)}
    stale = staleness(stages)
    if stages:
        lines += ["## Stages", "", "| stage | status | wall time (s) | rows | rows counted | finished at | up to date |",
                  "|---|---|---|---|---|---|---|"]
        for name, s in stages.items():
            rows, unit = _rows(name, s)
            fresh = f"**stale**: {stale[name]}" if name in stale else ("yes" if s.get("status") == "ok" else "")
            lines.append(f"| {name} | {s.get('status')} | {s.get('wall_seconds', '')} | {rows} | {unit} | "
                         f"{s.get('finished_at', '')} | {fresh} |")
        lines.append("")
        if stale:
            lines += ["A stale section was written before a stage it depends on ran again (its inputs were "
                      "re-produced after it); re-run the stage (`python -m pipeline <stage>`) to refresh it.", ""]
    if summary.get("models"):
        lines += ["## Models (test split)", ""] + _models_table(summary["models"], _model_marks(summary["models"], stages)) + [""]
    sections = []
    for name, s in stages.items():
        if s.get("report"):
            sections.append(s["report"])
            if name in stale:
                lines += [f"## {name} (stale: {stale[name]})", "",
                          f"> **Stale**: {stale[name]} (this section: {s.get('finished_at')}), so it may not "
                          f"describe the current outputs. Re-run `python -m pipeline {name}` to refresh it.", ""]
            else:
                lines += [f"## {name}", ""]
            lines += [s["report"].rstrip(), ""]
        if s.get("status") == "failed" and s.get("error"):
            lines += [f"## {name} (failed)", "", f"    {s['error']}", ""]
    # Plots a section shows are shown there, under its staleness mark; the others here.
    plots = [p for p in summary.get("plots", []) if not any(f"({p})" in text for text in sections)]
    if plots:
        lines += ["## Plots", ""]
        for p in plots:
            lines.append(f"![{os.path.splitext(os.path.basename(p))[0]}]({p})")
            lines.append("")
    return "\n".join(lines)


def write_report(run_dir: RunDir) -> str:
    summary = Summary(run_dir).load()
    text = render(summary, summary.get("config", {}).get("name", fs.basename(run_dir.root)))
    fs.write_atomic(run_dir.report_file, text)
    return run_dir.report_file
