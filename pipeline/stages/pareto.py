"""``python -m pipeline pareto``: task-weighting frontiers with and without self-auxiliary towers."""
from __future__ import annotations

import csv
import io

from core import fs
from core.run_dir import publish_dir, write_json_atomic
from pipeline.stages.base import StageResult, stage


def _plot(rows, summary, tasks, reference, path, seeds: int):
    from core.figures import pyplot, save_figure

    fig, ax = pyplot().subplots(figsize=(6, 5))
    for (arm, s), color in zip(summary.items(), ("tab:blue", "tab:orange")):
        aux = arm == "with aux towers"
        pts = [(r["auc_1"], r["auc_2"]) for r in rows if r["aux"] == aux]
        ax.scatter(*zip(*pts), color=color, alpha=0.35, s=18)
        front = s["front"]
        xs = [p[0] for p in front]
        ys = [p[1] for p in front]
        ax.step(xs, ys, where="post", color=color, marker="o",
                label=f"{arm}: HV {_spread(s['hypervolume_mean'], s['hypervolume_std'], seeds, 4)}")
    ax.set(xlabel=f"test AUC {tasks[0]}", ylabel=f"test AUC {tasks[1]}",
           title=f"Pareto frontiers (mean over seeds); reference {tuple(reference)}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def _spread(mean: float, std: float, seeds: int, digits: int) -> str:
    """``mean ± std``; over one seed the mean and "(1 seed)": a spread of one value is unknown, not 0."""
    if seeds == 1:
        return f"{mean:.{digits}f} (1 seed)"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _table(summary, tasks, seeds: int) -> list[str]:
    lines = [f"| arm | w({tasks[0]}) | AUC {tasks[0]} | AUC {tasks[1]} |", "|---|---|---|---|"]
    for arm, s in summary.items():
        for p in s["per_weight"]:
            lines.append(f"| {arm} | {p['weight']:.2f} | {_spread(p['auc_1_mean'], p['auc_1_std'], seeds, 4)} "
                         f"| {_spread(p['auc_2_mean'], p['auc_2_std'], seeds, 4)} |")
    return lines


@stage("pareto", "train a grid of task weightings with and without aux towers", in_run=False, reads=("preprocess",))
def run(cfg, run_dir, opts) -> StageResult:
    from models import model_io
    from models.pareto_study import check_study, run_grid, summarize, verdict

    tasks = [t.name for t in check_study(cfg)]
    info = model_io.load_feature_info(run_dir.feature_info_file)
    rows = run_grid(cfg, info, {s: run_dir.split_pattern(s) for s in ("train", "validation", "test")})
    p = cfg.pareto
    summary = summarize(rows, p.reference_point)
    with publish_dir(run_dir.path("pareto")) as tmp:
        points = io.StringIO(newline="")
        w = csv.DictWriter(points, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
        fs.write_atomic(fs.join(tmp, "points.csv"), points.getvalue())
        write_json_atomic(fs.join(tmp, "summary.json"), {"points": rows, "summary": summary})
    out_dir = fs.published(run_dir.path("pareto"))
    plot = _plot(rows, summary, tasks, p.reference_point, fs.join(run_dir.plots_dir, "pareto_frontiers.png"),
                 len(p.seeds))
    text = verdict(summary)
    report = [f"Backbone `{p.backbone}`, {p.epochs} epoch(s) per point, first-task weights {p.first_task_weights}, "
              f"seeds {p.seeds}; test-split AUCs (mean ± std over seeds). Hypervolume against reference point "
              f"{tuple(p.reference_point)}:", ""]
    for arm, s in summary.items():
        report.append(f"- {arm}: {_spread(s['hypervolume_mean'], s['hypervolume_std'], len(p.seeds), 5)} "
                      f"(per seed {[round(h, 5) for h in s['hypervolume_per_seed']]}; of the mean points {s['hypervolume_of_mean_points']:.5f})")
    report += ["", *_table(summary, tasks, len(p.seeds)), "", f"**{text}**"]
    metrics = {arm: {"hypervolume_mean": s["hypervolume_mean"], "hypervolume_std": s["hypervolume_std"]}
               for arm, s in summary.items()}
    return StageResult(rows=len(rows), metrics=metrics, artifacts={"pareto": out_dir}, plots=[fs.relative(plot, run_dir.root)], report="\n".join(report), message=f"pareto: {text} -> {out_dir}")
