"""``python -m pipeline preprocess``: the Beam + TF Transform job (``pipeline/preprocess/job.py``)
into ``run_dir.preprocess_dir``, published only when the dead-letter fraction is within bounds
and the training split is not empty. A truncated or corrupt input file, or an input without
records, fails the stage with one ``InputError`` naming it."""
from __future__ import annotations

from core import feature_specs, fs
from core.run_dir import RunDir, publish_dir, write_json_atomic
from core.splits import SPLITS
from pipeline.stages.base import StageResult, add_beam_arguments, stage


@stage("preprocess", "validate, split and transform raw records with Beam + TF Transform",
       arguments=add_beam_arguments,
       reads=("generate",))
def run(cfg, run_dir: RunDir, opts) -> StageResult:
    """``python -m pipeline preprocess``: see ``pipeline/preprocess/job.py``."""
    from pipeline.preprocess import stats as preprocess_stats
    from pipeline.preprocess.job import PreprocessLayout, feature_info_from_output, run_pipeline

    pattern, fmt = run_dir.raw_input(cfg)
    with publish_dir(run_dir.preprocess_dir) as root:
        stats = run_pipeline(cfg, pattern, fmt, run_dir, root)
        layout = PreprocessLayout(root)
        try:
            preprocess_stats.check_dead_letter_fraction(stats, cfg.preprocess.max_dead_letter_fraction, layout.dead_letters)
            preprocess_stats.check_training_records(stats, pattern)
        except Exception:
            if stats["rows_read"]:
                _publish_rejected(layout, run_dir)
                # the same check again, naming where the dead letters are kept
                preprocess_stats.check_dead_letter_fraction(
                    stats, cfg.preprocess.max_dead_letter_fraction,
                    fs.join(fs.published(run_dir.rejected_dir), "dead_letters"))
            raise
        info = feature_info_from_output(cfg, layout.transform_output)
        write_json_atomic(layout.feature_info, info.to_dict())
        write_json_atomic(layout.raw_feature_spec, feature_specs.feature_spec_to_json(feature_specs.serving_feature_spec(cfg)))
    fs.rmtree(run_dir.rejected_dir)
    plot = preprocess_stats.plot_counts(stats, fs.join(run_dir.plots_dir, "preprocess_counts.png"))
    artifacts = {
        "transform_output": run_dir.transform_output_dir,
        "feature_info": run_dir.feature_info_file,
        "raw_feature_spec": run_dir.raw_feature_spec_file,
        "stats": run_dir.stats_file,
        "dead_letters": run_dir.dead_letter_dir,
        **{f"{s}_data": run_dir.split_pattern(s) for s in SPLITS},
    }
    metrics = {k: stats[k] for k in ("valid", "dead_lettered", "by_reason", "rows_per_split", "rows_per_second")}
    metrics["cardinalities"] = dict(info.categorical)
    if info.lists:
        metrics["list_cardinalities"] = {n: li.cardinality for n, li in info.lists.items()}
        metrics["truncated"] = stats.get("truncated", {})
    return StageResult(
        rows=stats["rows_read"],
        metrics=metrics,
        artifacts=artifacts,
        plots=[fs.relative(plot, run_dir.root)],
        report=preprocess_stats.report_markdown(stats, info.to_dict()),
        message=(f"preprocess: {stats['rows_read']} records read, {stats['valid']} valid "
                 f"({', '.join(f'{s} {n}' for s, n in stats['rows_per_split'].items())}), "
                 f"{stats['dead_lettered']} dead-lettered"
                 + (f", truncated lists {stats['truncated']}" if stats.get("truncated") else "")
                 + f" -> {run_dir.preprocess_output}"),
    )


def _publish_rejected(layout, run_dir: RunDir) -> None:
    with publish_dir(run_dir.rejected_dir) as tmp:
        fs.copy_tree(layout.dead_letters, fs.join(tmp, "dead_letters"))
        fs.copy_file(layout.stats, fs.join(tmp, "stats.json"))
