"""``python -m pipeline generate``: the synthetic click/conversion logs into the run directory
(reused when the directory already holds them for the same synthetic config)."""
from __future__ import annotations

import logging

from core.errors import ConfigError
from core.figures import pyplot, save_figure
from core import fs
from core.run_dir import RunDir, publish_dir, read_json, write_json_atomic
from pipeline.stages.base import StageResult, stage

log = logging.getLogger("pipeline.stages.generate")


@stage("generate", "write the synthetic click/conversion logs (source: synthetic)")
def run(cfg, run_dir: RunDir, opts) -> StageResult:
    from pipeline.synthetic.generator import SUCCESS_FILE, generate, synthetic_signature  # numpy, pandas

    """Writes ``cfg.synthetic.rows`` rows into ``run_dir.raw_data_dir`` (or reuses them)."""
    if cfg.data.source != "synthetic":
        raise ConfigError(
            f"generate: data.source is {cfg.data.source!r}; the generate stage only writes synthetic data "
            "(set data.source=synthetic, or skip this stage and run preprocess on data.path)"
        )
    s = cfg.synthetic
    out_dir = fs.published(run_dir.raw_data_dir)
    marker_path = fs.join(out_dir, SUCCESS_FILE)
    signature = synthetic_signature(s)
    skipped = False
    marker = read_json(marker_path, "generate marker") if fs.exists(marker_path) else None
    if marker and marker.get("synthetic") == signature and all(
        fs.exists(fs.join(out_dir, f)) for f in marker.get("files", [])
    ):
        skipped = True
        log.info("generate: %s already holds %d rows for this synthetic config; skipping", out_dir, marker["rows"])
        plots = marker.get("plots", [])
    else:
        log.info("generate: writing %d rows in chunks of %d into %s", s.rows, s.chunk_rows, out_dir)
        with publish_dir(run_dir.raw_data_dir) as tmp:
            counts = generate(s, tmp)
            sample = counts.pop("sample")
            n = len(sample["p_click"])
            oracle = _oracle_auc(sample)
            plots = [_plot(sample, run_dir)]
            marker = {
                "synthetic": signature, "rows": counts["rows"], "files": counts["files"],
                "metrics": _metrics(counts), "oracle_auc_sample": oracle, "oracle_sample_rows": n,
                "plots": plots,
            }
            write_json_atomic(fs.join(tmp, SUCCESS_FILE), marker)
        out_dir = fs.published(run_dir.raw_data_dir)
    m = marker["metrics"]
    verb = "reused" if skipped else "wrote"
    return StageResult(
        rows=marker["rows"],
        metrics={k: m[k] for k in ("click_rate", "conversion_rate", "conversion_given_click")},
        artifacts={"raw_data": out_dir, "files": len(marker["files"])},
        report=_report(s, marker, skipped),
        plots=plots,
        message=(f"generate: {verb} {marker['rows']:,} rows in {len(marker['files'])} file(s) under {out_dir} "
                 f"(click rate {m['click_rate']:.4f}, conversion rate {m['conversion_rate']:.4f})"),
        extra={"skipped": skipped},
    )


def _metrics(counts: dict) -> dict:
    rows, clicks, conversions = counts["rows"], counts["clicks"], counts["conversions"]
    return {
        "click_rate": clicks / rows,
        "conversion_rate": conversions / rows,
        "conversion_given_click": conversions / clicks if clicks else 0.0,
        "clicks": clicks,
        "conversions": conversions,
        "distinct_users": counts["distinct_users"],
        "distinct_items": counts["distinct_items"],
    }


def _plot(sample: dict, run_dir: RunDir) -> str:
    """Histogram of the true probabilities; returns its path relative to the run directory."""
    fig, axes = pyplot().subplots(1, 2, figsize=(10, 3.5))
    for ax, key in zip(axes, ("p_click", "p_conversion")):
        values = sample[key]
        ax.hist(values, bins=60, color="#4477aa")
        ax.set_yscale("log")
        ax.set_title(f"{key} (mean {values.mean():.4f}, n={len(values):,})")
        ax.set_xlabel("true probability")
    axes[0].set_ylabel("impressions")
    fig.tight_layout()
    path = save_figure(fig, fs.join(run_dir.plots_dir, "synthetic_probabilities.png"), dpi=80)
    return fs.relative(path, run_dir.root)


def _oracle_auc(sample: dict) -> dict:
    """AUC of the true probability against the drawn label (the Bayes-optimal ranking)."""
    from sklearn.metrics import roc_auc_score

    out = {}
    for task, key in (("click", "p_click"), ("conversion", "p_conversion")):
        y = sample[task]
        out[task] = float(roc_auc_score(y, sample[key])) if 0 < y.sum() < len(y) else float("nan")
    return out


def _report(s, marker: dict, skipped: bool) -> str:
    m = marker["metrics"]
    lines = [
        ("Reused the existing output (same synthetic config). " if skipped else "")
        + f"{marker['rows']:,} impressions in {len(marker['files'])} {s.format} file(s), seed {s.seed}.",
        "",
        "| quantity | value |",
        "|---|---|",
        f"| users / items / categories (configured) | {s.num_users:,} / {s.num_items:,} / {s.num_categories} |",
        f"| distinct users / items seen | {m['distinct_users']:,} / {m['distinct_items']:,} |",
        f"| click rate (target) | {m['click_rate']:.4f} ({s.click_rate}) |",
        f"| conversion rate per impression (target) | {m['conversion_rate']:.4f} ({s.conversion_rate}) |",
        f"| conversion given click | {m['conversion_given_click']:.4f} |",
        f"| task correlation / interaction scale / latent dim | {s.task_correlation} / {s.interaction_scale} / {s.latent_dim} |",
    ]
    for task, auc in marker.get("oracle_auc_sample", {}).items():
        lines.append(f"| oracle AUC {task} (first {marker['oracle_sample_rows']:,} rows) | {auc:.4f} |")
    return "\n".join(lines)
