"""Renders ``report.md`` from ``summary.json``: stages, per-model metrics, stage sections, plots."""
from __future__ import annotations

import os

from core.run_dir import RunDir, Summary

_METRIC_ORDER = ["auc", "oracle_auc", "oracle_gap", "gauc", "logloss", "calibration", "mean_prediction", "mean_label"]


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def _models_table(models: dict) -> list[str]:
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
    rows.append("| model | task | " + " | ".join(metric_names) + " |")
    rows.append("|---|---|" + "---|" * len(metric_names))
    for model, tasks in models.items():
        for task, metrics in tasks.items():
            if not isinstance(metrics, dict):
                continue
            rows.append(f"| {model} | {task} | " + " | ".join(_fmt(metrics.get(m, "")) for m in metric_names) + " |")
    return rows


def render(summary: dict, title: str) -> str:
    lines = [f"# Run report: {title}", ""]
    stages = summary.get("stages", {})
    if stages:
        lines += ["## Stages", "", "| stage | status | wall time (s) | rows |", "|---|---|---|---|"]
        for name, s in stages.items():
            lines.append(f"| {name} | {s.get('status')} | {s.get('wall_seconds', '')} | {s.get('rows', '')} |")
        lines.append("")
    if summary.get("models"):
        lines += ["## Models (test split)", ""] + _models_table(summary["models"]) + [""]
    for name, s in stages.items():
        if s.get("report"):
            lines += [f"## {name}", "", s["report"].rstrip(), ""]
        if s.get("status") == "failed" and s.get("error"):
            lines += [f"## {name} (failed)", "", f"    {s['error']}", ""]
    plots = summary.get("plots", [])
    if plots:
        lines += ["## Plots", ""]
        for p in plots:
            lines.append(f"![{os.path.splitext(os.path.basename(p))[0]}]({p})")
            lines.append("")
    return "\n".join(lines)


def write_report(run_dir: RunDir) -> str:
    summary = Summary(run_dir).load()
    text = render(summary, summary.get("config", {}).get("name", os.path.basename(run_dir.root)))
    tmp = run_dir.report_file + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, run_dir.report_file)
    return run_dir.report_file
