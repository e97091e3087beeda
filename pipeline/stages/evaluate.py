"""``python -m pipeline evaluate``: every trained role (teacher, student) on the test split."""
from __future__ import annotations

import logging
import os

from core.config import ROLES
from core.errors import InputError
from core.features import label_key
from pipeline.stages.base import StageResult, stage

log = logging.getLogger("pipeline.stages.evaluate")


def _report(results: dict, oracle: dict) -> str:
    lines = []
    for role, tasks in results.items():
        for task, m in tasks.items():
            line = f"- {role} / {task}: AUC {m['auc']:.4f}, logloss {m['logloss']:.4f}, calibration {m['calibration']:.3f}"
            if "gauc" in m:
                line += f", GAUC {m['gauc']:.4f}"
            if "oracle_auc" in m:
                line += f"; oracle AUC {m['oracle_auc']:.4f}, gap {m['oracle_gap']:+.4f}"
                line += " (within 0.01)" if m["oracle_gap"] <= 0.01 else " (more than 0.01 below the oracle)"
            lines.append(line)
    if oracle:
        lines.append("")
        lines.append("The oracle AUC scores the generator's true probability; the gap is oracle AUC - model AUC.")
    return "\n".join(lines)


@stage("evaluate", "evaluate trained models on the test split (AUC, logloss, calibration, GAUC, oracle gap)")
def run(cfg, run_dir, opts) -> StageResult:
    from models import metrics as M
    from models import model_io, plots
    from models.evaluation import evaluate_predictions, predict_split
    from models.outputs import eval_output_key

    roles = [r for r in ROLES if model_io.has_serving_model(run_dir.model_dir(r))]
    if not roles:
        raise InputError(f"no trained model under {run_dir.root}; run `python -m pipeline train` first")
    results, curves = {}, {t: {} for t in cfg.task_names}
    rows = 0
    for role in roles:
        model_cfg, tasks, funnel, info = model_io.load_model_config(run_dir.model_dir(role), run_dir.role_stage(role))
        model = model_io.load_serving_model(run_dir.model_dir(role), run_dir.role_stage(role))
        arrays = predict_split(model, run_dir.split_pattern("test"), info)
        rows = len(arrays[label_key(tasks[0].name)])
        results[role] = evaluate_predictions(arrays, tasks, model_cfg, funnel, cfg.data.oracle,
                                             use_groups=bool(cfg.data.group_column))
        for t in tasks:
            curves[t.name][role] = M.reliability(arrays[label_key(t.name)], arrays[eval_output_key(t.name, model_cfg, funnel)])
            col = cfg.data.oracle.get(t.name)
            if col and col in arrays and "oracle" not in curves[t.name]:
                curves[t.name]["oracle"] = M.reliability(arrays[label_key(t.name)], arrays[col])
        log.info("evaluated %s on %d test examples: %s", role, rows,
                 {t: round(m["auc"], 4) for t, m in results[role].items()})
    plot_paths = []
    for task, c in curves.items():
        path = plots.reliability_diagram(c, os.path.join(run_dir.plots_dir, f"calibration_{task}.png"), f"reliability: {task}")
        plot_paths.append(os.path.relpath(path, run_dir.root))
    return StageResult(rows=rows, models=results, metrics={"roles": roles}, plots=plot_paths, report=_report(results, cfg.data.oracle))
