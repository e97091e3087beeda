"""The distillation table: per-model, per-task AUC/logloss over seeds, size, latency, gap closed.

``distillation_table`` aggregates the per-seed test metrics of every model (teacher, KD
student, no-KD student, ablation modes) into mean and standard deviation; ``gap_closed`` is
``(AUC_kd - AUC_nokd) / (AUC_teacher - AUC_nokd)`` per task on the means; ``markdown`` and
``bar_chart`` render it for the report and ``plots/``. ``latency_ms`` times serving models
the way a server runs them (a traced ``tf.function``, in-process).
"""
from __future__ import annotations

import math
import time

import numpy as np

from core.figures import pyplot, save_figure

METRICS = ("auc", "logloss")
BATCH = 512  # the second latency column: compute-bound, where the model size shows


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray([v for v in values if v is not None and not math.isnan(v)], np.float64)
    if arr.size == 0:
        return float("nan"), float("nan")
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def distillation_table(runs: dict, tasks: list[str], params: dict, latency_ms: dict, latency_ms_batch: dict) -> dict:
    """``runs``: model -> list (one per seed) of {task: {metric: value}} -> the table dict.

    Returns ``{model: {"seeds": n, "params": p, "latency_ms": batch-1 ms, "latency_ms_batch":
    ms per batch of ``BATCH``, task: {auc_mean, auc_std, logloss_mean, logloss_std}}}``.
    """
    table = {}
    for model, per_seed in runs.items():
        row = {"seeds": len(per_seed), "params": params.get(model), "latency_ms": latency_ms.get(model),
               "latency_ms_batch": latency_ms_batch.get(model)}
        for task in tasks:
            cell = {}
            for m in METRICS:
                mean, std = _mean_std([r[task][m] for r in per_seed])
                cell[f"{m}_mean"], cell[f"{m}_std"] = round(mean, 5), round(std, 5)
            row[task] = cell
        table[model] = row
    return table


def gap_closed(table: dict, tasks: list[str], teacher: str, kd: str, nokd: str) -> dict:
    """task -> share of the teacher-vs-no-KD AUC gap the KD student closes (None if no gap)."""
    out = {}
    for t in tasks:
        a_t, a_kd, a_no = (table[m][t]["auc_mean"] for m in (teacher, kd, nokd))
        gap = a_t - a_no
        out[t] = round((a_kd - a_no) / gap, 4) if abs(gap) > 1e-9 else None
    return out


def markdown(table: dict, tasks: list[str], gaps: dict, kd: str, nokd: str) -> str:
    """The table as markdown (mean ± std over seeds), then the gap-closed line."""
    head = f"| model | seeds | params | batch-1 latency (ms) | batch-{BATCH} latency (ms) | " + " | ".join(
        f"{t} AUC | {t} logloss" for t in tasks) + " |"
    lines = [head, "|---|---|---|---|---|" + "---|---|" * len(tasks)]
    for model, row in table.items():
        cells = []
        for t in tasks:
            c = row[t]
            cells += [f"{c['auc_mean']:.4f} ± {c['auc_std']:.4f}", f"{c['logloss_mean']:.4f} ± {c['logloss_std']:.4f}"]
        params = f"{row['params']:,}" if row.get("params") else ""
        lat = " | ".join(f"{row[k]:.3f}" if row.get(k) else "" for k in ("latency_ms", "latency_ms_batch"))
        lines.append(f"| {model} | {row['seeds']} | {params} | {lat} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Share of the teacher-vs-no-KD AUC gap closed by KD ((AUC_kd - AUC_nokd) / (AUC_teacher - AUC_nokd)): "
                 + ", ".join(f"{t} {g:.2f}" if g is not None else f"{t} n/a (no gap)" for t, g in gaps.items()) + ".")
    beats = [t for t in tasks if table[kd][t]["auc_mean"] > table[nokd][t]["auc_mean"]]
    lines.append(f"KD student beats the no-KD student (mean AUC) on {len(beats)}/{len(tasks)} tasks"
                 + (f": {', '.join(beats)}." if beats else "."))
    return "\n".join(lines)


def bar_chart(table: dict, tasks: list[str], path: str, title: str) -> str:
    """Grouped bars: per task, each model's mean AUC and logloss with the std as error bars."""
    names = list(table)
    fig, axes = pyplot().subplots(1, 2, figsize=(12, 4))
    width = 0.8 / max(1, len(names))
    x = np.arange(len(tasks))
    for ax, metric in zip(axes, METRICS):
        for i, name in enumerate(names):
            means = [table[name][t][f"{metric}_mean"] for t in tasks]
            stds = [table[name][t][f"{metric}_std"] for t in tasks]
            ax.bar(x + (i - (len(names) - 1) / 2) * width, means, width, yerr=stds, capsize=3, label=name)
        vals = [table[n][t][f"{metric}_mean"] for n in names for t in tasks]
        lo, hi = min(vals), max(vals)
        pad = max(1e-3, (hi - lo) * 0.5)
        ax.set_ylim(max(0.0, lo - pad), hi + pad)
        ax.set_xticks(x, tasks)
        ax.set_title(f"test {metric} (mean ± std over seeds)")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    return save_figure(fig, path)


def latency_ms(serving_models: dict, example: dict, calls: int = 200, warmup: int = 20) -> dict:
    """name -> median wall time (ms) of one call of each serving model on ``example``.

    Each model runs as a traced ``tf.function`` (as a server runs its graph), in-process; the
    calls are interleaved round-robin so background load affects every model alike.
    """
    import tensorflow as tf

    fns = {name: tf.function(lambda x, m=m: m(x, training=False)) for name, m in serving_models.items()}
    times = {name: [] for name in fns}
    for i in range(warmup + calls):
        for name, fn in fns.items():
            start = time.perf_counter()
            out = fn(example)
            next(iter(out.values())).numpy()
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t) * 1000.0) for name, t in times.items()}
