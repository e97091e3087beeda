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


def reliability_diagram(curves: dict, path: str, title: str) -> str:
    """``curves``: label -> ``metrics.reliability`` dict; one line per model, log-log axes."""
    fig, ax = plt.subplots(figsize=(5, 5))
    lo, hi = 1.0, 0.0
    for name, c in curves.items():
        pts = [(p, r) for p, r in zip(c["mean_prediction"], c["observed_rate"]) if p > 0]
        if not pts:
            continue
        xs, ys = zip(*pts)
        ax.plot(xs, [max(y, 1e-5) for y in ys], marker="o", label=name)
        lo, hi = min(lo, min(xs)), max(hi, max(xs), max(ys))
    lo = max(lo, 1e-5)
    ax.plot([lo, hi], [lo, hi], "k:", label="perfect calibration")
    if hi / lo > 20:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set(title=title, xlabel="mean predicted probability (quantile bin)", ylabel="observed rate")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)
