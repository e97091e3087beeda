"""``python -m pipeline evaluate``: every trained role (teacher, student) on the test split."""
from __future__ import annotations

import logging

from core import fs
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


@stage("evaluate", "evaluate trained models on the test split (AUC, logloss, calibration, GAUC, oracle gap)",
       reads=("preprocess", "train", "distill"))
def run(cfg, run_dir, opts) -> StageResult:
    from models import metrics as M
    from models import model_io, plots
    from models.evaluation import evaluate_predictions, predict_split
    from models.outputs import eval_output_key

    roles = [r for r in ROLES if model_io.has_serving_model(run_dir.model_dir(r))]
    if not roles:
        raise InputError(f"no trained model under {run_dir.root}; run `python -m pipeline train` first")
    results, curves, oracle_curves = {}, {t: {} for t in cfg.task_names}, {}
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
            if col and col in arrays and t.name not in oracle_curves:
                oracle_curves[t.name] = M.reliability(arrays[label_key(t.name)], arrays[col])
        log.info("evaluated %s on %d test examples: %s", role, rows,
                 {t: round(m["auc"], 4) for t, m in results[role].items()})
    for task, c in oracle_curves.items():  # after every model: the reference, drawn last
        curves[task]["oracle"] = c
    plot_paths = []
    for task, c in curves.items():
        path = plots.reliability_diagram(c, fs.join(run_dir.plots_dir, f"calibration_{task}.png"),
                                         f"reliability: {task} (test split; {', '.join(c)})")
        plot_paths.append(fs.relative(path, run_dir.root))
    report = _report(results, cfg.data.oracle) + "\n\n" + _plots_report(curves, plot_paths)
    metrics = {"roles": roles, "calibration_curves": {task: list(c) for task, c in curves.items()}}
    aucs = "; ".join(f"{role} " + ", ".join(f"{t} {m.get('auc'):.4f}" for t, m in tasks_.items()
                                          if isinstance(m, dict) and m.get("auc") is not None)
                     for role, tasks_ in results.items())
    return StageResult(rows=rows, models=results, metrics=metrics, plots=plot_paths, report=report,
                       message=f"evaluate: test AUC {aucs} ({rows:,} test rows) -> {run_dir.report_file}",
                       extra={"rows_unit": "test examples (each model)"})


def _plots_report(curves: dict, plot_paths: list[str]) -> str:
    """The calibration plots in this stage's report section (so a staleness mark covers them)."""
    lines = ["Calibration per task (quantile bins of each model's prediction, 95% intervals; "
             "the diagonal is perfect calibration):", ""]
    for (task, c), path in zip(curves.items(), plot_paths):
        lines.append(f"![calibration {task}: {', '.join(c)}]({path})")
    return "\n".join(lines)
