"""The distillation table: per-model, per-task AUC/logloss over seeds, size, latency, gap closed.

``distillation_table`` aggregates the per-seed test metrics of every model (teacher, KD
student, no-KD student, ablation modes) into mean and standard deviation; ``gap_closed`` is
``(AUC_kd - AUC_nokd) / (AUC_teacher - AUC_nokd)`` per task on the means; ``markdown`` and
``bar_chart`` render it for the report and ``plots/``. ``latency_ms`` times serving models
the way a server runs them (a traced ``tf.function``, in-process).

The frontier (test AUC against serving cost): ``frontier_entry`` makes one model's record
(teacher, or a student size with or without KD: its AUC per task and their mean, parameters,
serving p50/p90/p99 in TF Serving's path), ``mark_pareto`` flags the models no other beats
on both mean AUC and p50, ``frontier_plot`` draws AUC against p50 (one panel per task) and
``frontier_markdown`` the table.
"""
from __future__ import annotations

import math
import time

import numpy as np

from core.figures import pyplot, save_figure

METRICS = ("auc", "logloss")
BATCH = 512  # the second latency column: compute-bound, where the model size shows


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample std; the std is None for one value (a spread over one seed is unknown, not 0)."""
    arr = np.asarray([v for v in values if v is not None and not math.isnan(v)], np.float64)
    if arr.size == 0:
        return float("nan"), float("nan")
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else None


def distillation_table(runs: dict, tasks: list[str], params: dict, latency_ms: dict, latency_ms_batch: dict) -> dict:
    """``runs``: model -> list (one per seed) of {task: {metric: value}} -> the table dict.

    Returns ``{model: {"seeds": n, "params": p, "latency_ms": batch-1 ms, "latency_ms_batch":
    ms per batch of ``BATCH``, task: {auc_mean, auc_std, logloss_mean, logloss_std}}}``; the
    stds are None for a model trained with one seed.
    """
    table = {}
    for model, per_seed in runs.items():
        row = {"seeds": len(per_seed), "params": params.get(model), "latency_ms": latency_ms.get(model),
               "latency_ms_batch": latency_ms_batch.get(model)}
        for task in tasks:
            cell = {}
            for m in METRICS:
                mean, std = _mean_std([r[task][m] for r in per_seed])
                cell[f"{m}_mean"], cell[f"{m}_std"] = round(mean, 5), None if std is None else round(std, 5)
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
    """The table as markdown (mean ± std over seeds; the mean alone, marked "1 seed", for one
    seed), then the gap-closed line."""
    head = f"| model | seeds | params | batch-1 latency (ms) | batch-{BATCH} latency (ms) | " + " | ".join(
        f"{t} AUC | {t} logloss" for t in tasks) + " |"
    lines = [head, "|---|---|---|---|---|" + "---|---|" * len(tasks)]
    for model, row in table.items():
        cells = []
        for t in tasks:
            c = row[t]
            cells += [_mean_cell(c, "auc", row["seeds"]), _mean_cell(c, "logloss", row["seeds"])]
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


def _mean_cell(cell: dict, metric: str, seeds: int) -> str:
    std = cell.get(f"{metric}_std")
    if std is None:
        return f"{cell[f'{metric}_mean']:.4f} ({seeds} seed)" if seeds == 1 else f"{cell[f'{metric}_mean']:.4f}"
    return f"{cell[f'{metric}_mean']:.4f} ± {std:.4f}"


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
            seeds = table[name].get("seeds", 0)
            label = f"{name} ({seeds} seed{'s' if seeds != 1 else ''})"
            yerr = None if any(s is None for s in stds) else stds  # no error bar over one seed
            ax.bar(x + (i - (len(names) - 1) / 2) * width, means, width, yerr=yerr, capsize=3, label=label)
        vals = [table[n][t][f"{metric}_mean"] for n in names for t in tasks]
        lo, hi = min(vals), max(vals)
        pad = max(1e-3, (hi - lo) * 0.5)
        ax.set_ylim(max(0.0, lo - pad), hi + pad)
        ax.set_xticks(x, tasks)
        ax.set_title(f"test {metric} (mean; ± std where trained with several seeds)")
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


def _auc(metrics: dict, task: str):
    v = (metrics.get(task) or {}).get("auc")
    return None if v is None or math.isnan(v) else round(float(v), 5)


def frontier_entry(size: str | None, kd: bool | None, mode: str | None, params: int, latency: dict, metrics: dict,
                   tasks: list[str], architecture: dict, epochs: int | None, model_dir: str | None) -> dict:
    """One model of the frontier.

    Args:
      size: the student size (``core.config.student_sizes``), or None for the teacher.
      kd: True for the size's KD student, False for its no-KD student, None for the teacher.
      mode: the KD mode it was trained with ("none" without KD; None for the teacher).
      params: its parameter count; latency: its serving stats ({"p50_ms", "p90_ms", "p99_ms", "n"}).
      metrics: its test metrics {task: {"auc", ...}}; tasks: the task names.
      architecture: {"embedding_dim", "bottom_units", "tower_units", "skipped_features" (the
        teacher's features it does not read)}; epochs: the epochs it
        trained for (early stopping may end a run before its maximum; None if unrecorded).
      model_dir: where it is saved, relative to the run (None when not saved).

    Returns:
      ``{"name", "size", "kd", "mode", "params", "p50_ms", "p90_ms", "p99_ms", "n", "auc": {task:
      AUC or None}, "auc_mean" (mean of the defined AUCs, None if none), "epochs", "model_dir",
      **architecture}``; ``name`` is "teacher", "<size>_kd" or "<size>_no_kd".
    """
    auc = {t: _auc(metrics, t) for t in tasks}
    defined = [v for v in auc.values() if v is not None]
    name = "teacher" if kd is None else f"{size}_{'kd' if kd else 'no_kd'}"
    return {"name": name, "size": size, "kd": kd, "mode": mode, "params": int(params),
            **{k: latency[k] for k in ("p50_ms", "p90_ms", "p99_ms", "n")},
            "auc": auc, "auc_mean": round(float(np.mean(defined)), 5) if defined else None,
            "epochs": None if epochs is None else int(epochs), "model_dir": model_dir, **architecture}


def mark_pareto(entries: list[dict]) -> list[dict]:
    """Copies of ``entries`` with ``"pareto"``: True when no other entry has a p50 <= and a
    mean AUC >= its own with one of them strictly better (False without a mean AUC)."""
    out = []
    for e in entries:
        a, t = e["auc_mean"], e["p50_ms"]
        dominated = a is None or any(
            o is not e and o["auc_mean"] is not None and o["p50_ms"] <= t and o["auc_mean"] >= a
            and (o["p50_ms"] < t or o["auc_mean"] > a) for o in entries)
        out.append({**e, "pareto": not dominated})
    return out


def _features_label(e: dict) -> str:
    """"all", or which of the teacher's features the model does not read."""
    skipped = e.get("skipped_features") or []
    return "all" if not skipped else "without " + ", ".join(skipped)


def _size_label(e: dict) -> str:
    features = "" if not e.get("skipped_features") else f"; {_features_label(e)}"
    return (f"{e['size']} (emb {e['embedding_dim']}, bottom {e['bottom_units']}, towers {e['tower_units']}"
            f"{features}; {e['params']:,} params)")


def frontier_plot(entries: list[dict], tasks: list[str], path: str, settings: dict) -> str:
    """Test AUC (y) against serving p50 (x, ms) of every entry, one panel per task.

    The teacher is a black star; each student size has its colour, its KD student a filled
    circle and its no-KD student a hollow square at the same p50 (same architecture), joined
    by a thin line (the KD gain); the grey dashed steps join the models on that task's Pareto
    front (no other model faster and better). The x axis starts at 0 ms (so cost ratios
    read true); the y axis spans the AUCs shown with a margin."""
    plt = pyplot()
    from matplotlib.lines import Line2D

    fig, axes = plt.subplots(1, len(tasks), figsize=(6.5 * len(tasks), 5), squeeze=False)
    sizes = list(dict.fromkeys(e["size"] for e in entries if e["kd"] is not None))
    colors = {s: plt.get_cmap("tab10")(i % 10) for i, s in enumerate(sizes)}
    x_max = max(e["p50_ms"] for e in entries) * 1.15
    for ax, task in zip(axes[0], tasks):
        shown = [e for e in entries if e["auc"][task] is not None]
        for s in sizes:
            kd = next((e for e in shown if e["size"] == s and e["kd"]), None)
            no = next((e for e in shown if e["size"] == s and e["kd"] is False), None)
            if kd and no:
                ax.plot([no["p50_ms"], kd["p50_ms"]], [no["auc"][task], kd["auc"][task]], color=colors[s], lw=0.8)
            if kd:
                ax.scatter(kd["p50_ms"], kd["auc"][task], marker="o", s=60, color=colors[s], zorder=3)
                ax.annotate(f"{s} KD {kd['auc'][task]:.4f}", (kd["p50_ms"], kd["auc"][task]), fontsize=7,
                            xytext=(5, 4), textcoords="offset points")
            if no:
                ax.scatter(no["p50_ms"], no["auc"][task], marker="s", s=50, facecolors="none",
                           edgecolors=[colors[s]], zorder=3)
                ax.annotate(f"{s} no KD {no['auc'][task]:.4f}", (no["p50_ms"], no["auc"][task]), fontsize=7,
                            xytext=(5, -10), textcoords="offset points")
        for e in shown:
            if e["kd"] is None:
                ax.scatter(e["p50_ms"], e["auc"][task], marker="*", s=160, color="black", zorder=4)
                ax.annotate(f"teacher {e['auc'][task]:.4f} ({e['params']:,} params)", (e["p50_ms"], e["auc"][task]),
                            fontsize=7, xytext=(5, 4), textcoords="offset points")
        front, best = [], -1.0
        for e in sorted(shown, key=lambda e: (e["p50_ms"], -e["auc"][task])):
            if e["auc"][task] > best:
                front.append(e)
                best = e["auc"][task]
        if len(front) > 1:
            ax.step([e["p50_ms"] for e in front], [e["auc"][task] for e in front], where="post", color="grey",
                    ls="--", lw=1, zorder=1)
        values = [e["auc"][task] for e in shown]
        if values:
            lo, hi = min(values), max(values)
            pad = max(0.002, (hi - lo) * 0.15)
            ax.set_ylim(lo - pad, hi + pad)
        ax.set_xlim(0.0, x_max)
        ax.set_xlabel(f"serving p50 (ms), batch {settings['batch_size']}: TF1 session, serving_default, "
                      f"{settings['threads']} thread")
        ax.set_ylabel(f"test AUC ({task})")
        ax.set_title(f"{task}: test AUC vs serving p50")
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], marker="*", color="black", ls="", markersize=11, label="teacher"),
               Line2D([], [], marker="o", color="grey", ls="", label="student with KD"),
               Line2D([], [], marker="s", color="grey", mfc="none", ls="", label="student without KD (same p50)"),
               Line2D([], [], color="grey", ls="--", label="Pareto front of the task")]
    by_size = {e["size"]: e for e in entries if e["kd"]}
    handles += [Line2D([], [], marker="o", color=colors[s], ls="", label=_size_label(by_size[s]))
                for s in sizes if s in by_size]
    fig.subplots_adjust(wspace=0.3)
    fig.legend(handles=handles, fontsize=8, loc="upper center", ncol=3, bbox_to_anchor=(0.5, 0.0))
    fig.suptitle(f"test AUC against serving cost: p50 of {settings['calls']} calls at batch {settings['batch_size']} "
                 f"(serialized raw tf.Examples, TF1 session, {settings['threads']} thread, models interleaved)",
                 fontsize=9)
    return save_figure(fig, path)


def frontier_markdown(entries: list[dict], tasks: list[str], settings: dict) -> str:
    """The frontier as a markdown table (teacher first, then by parameters, KD before no-KD),
    the KD-vs-no-KD mean AUC difference per size and what was measured how."""
    order = sorted(entries, key=lambda e: (e["kd"] is not None, e["params"], e["kd"] is False))
    lines = [
        f"Serving cost: p50 / p90 of {settings['calls']} calls (after {settings['warmup']} warmup calls) at batch "
        f"{settings['batch_size']} in TF Serving's path: {settings['path']}; each model exported with the TF "
        f"Transform front end. A size's no-KD student has its KD student's architecture: timed once, same p50. "
        f"Test AUC of the first seed (the saved models); mean AUC = mean over the tasks.",
        "",
        "| model | KD | embedding | bottom | towers | features | epochs run | params | p50 ms | p90 ms | "
        + " | ".join(f"{t} AUC" for t in tasks) + " | mean AUC | Pareto |",
        "|---|---|---|---|---|---|---|---|---|---|" + "---|" * len(tasks) + "---|---|",
    ]
    for e in order:
        kd = "teacher" if e["kd"] is None else (e["mode"] if e["kd"] else "none")
        name = "teacher" if e["kd"] is None else e["size"]
        aucs = " | ".join(f"{e['auc'][t]:.4f}" if e["auc"][t] is not None else "n/a" for t in tasks)
        mean = f"{e['auc_mean']:.4f}" if e["auc_mean"] is not None else "n/a"
        lines.append(f"| {name} | {kd} | {e['embedding_dim']} | {e['bottom_units']} | {e['tower_units']} | "
                     f"{_features_label(e)} | "
                     f"{'' if e['epochs'] is None else e['epochs']} | {e['params']:,} | {e['p50_ms']:.3f} | {e['p90_ms']:.3f} | {aucs} | {mean} | "
                     f"{'yes' if e.get('pareto') else ''} |")
    gains = []
    for s in dict.fromkeys(e["size"] for e in entries if e["kd"] is not None):
        kd = next((e for e in entries if e["size"] == s and e["kd"]), None)
        no = next((e for e in entries if e["size"] == s and e["kd"] is False), None)
        if kd and no and kd["auc_mean"] is not None and no["auc_mean"] is not None:
            gains.append(f"{s} {kd['auc_mean'] - no['auc_mean']:+.4f}")
    if gains:
        lines += ["", "KD minus no-KD mean test AUC per size: " + ", ".join(gains) + "."]
    return "\n".join(lines)
