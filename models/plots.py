"""PNG plots (matplotlib, Agg backend): training curves and reliability diagrams."""
from __future__ import annotations


from core.figures import pyplot, save_figure

plt = pyplot()


def training_curves(history: dict, tasks: list[str], path: str, title: str) -> str:
    """Loss and per-task AUC per epoch, train vs validation."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    epochs = range(1, 1 + max((len(v) for v in history.values()), default=0))
    for key in ("loss", "val_loss"):
        if key in history:
            axes[0].plot(epochs[:len(history[key])], history[key], marker="o", label=key)
    for t in list(tasks) + ["auc_mean"]:
        for prefix, style in (("", "--"), ("val_", "-")):
            key = f"{prefix}{t}_auc" if t != "auc_mean" else f"{prefix}auc_mean"
            if key in history:
                axes[1].plot(epochs[:len(history[key])], history[key], style, marker="o", label=key)
    axes[0].set(title="loss", xlabel="epoch")
    axes[1].set(title="AUC", xlabel="epoch")
    for ax in axes:
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return save_figure(fig, path)


def _wilson(rate: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson interval of a binomial rate observed over ``n`` examples."""
    denom = 1 + z * z / n
    centre = (rate + z * z / (2 * n)) / denom
    half = z * ((rate * (1 - rate) / n + z * z / (4 * n * n)) ** 0.5) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def reliability_diagram(curves: dict, path: str, title: str) -> str:
    """One line per model: observed positive rate against mean prediction per quantile bin.

    ``curves``: label (``teacher``, ``student``, ``oracle`` ...) -> ``metrics.reliability``
    dict (``mean_prediction``, ``observed_rate`` and, when given, ``count`` per bin). Linear
    axes from 0, the same scale on both (the diagonal is perfect calibration); a bin with no
    examples is not drawn, a bin with no positives is drawn at 0; with ``count`` each point
    carries its 95% (Wilson) interval and the legend the number of examples. A model whose
    curve has no bins is listed in the legend as such.
    """
    import math

    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    hi = 0.0
    for name, c in curves.items():
        counts = c.get("count") or [None] * len(c["mean_prediction"])
        pts = [(p, r, n) for p, r, n in zip(c["mean_prediction"], c["observed_rate"], counts)
               if n != 0 and math.isfinite(p) and math.isfinite(r)]
        style = {"linestyle": "--", "color": "0.45"} if name == "oracle" else {}
        if not pts:
            ax.plot([], [], marker="o", label=f"{name} (no bins)", **style)
            continue
        xs, ys, ns = zip(*pts)
        label = name if None in ns else f"{name} (n={sum(ns):,}, {len(ns)} bins)"
        if None in ns:
            ax.plot(xs, ys, marker="o", label=label, **style)
        else:
            bounds = [_wilson(r, n) for r, n in zip(ys, ns)]
            yerr = [[y - b[0] for y, b in zip(ys, bounds)], [b[1] - y for y, b in zip(ys, bounds)]]
            ax.errorbar(xs, ys, yerr=yerr, marker="o", markersize=4, capsize=2, label=label, **style)
        hi = max(hi, max(xs), max(ys))
    hi = min(1.0, 1.08 * hi) if hi > 0 else 1.0
    ax.plot([0, hi], [0, hi], "k:", label="perfect calibration")
    ax.set_xlim(0, hi)
    ax.set_ylim(0, hi)
    ax.set_aspect("equal")
    ax.set(title=title, xlabel="mean predicted probability (quantile bin)",
           ylabel="observed positive rate (95% interval)")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)
