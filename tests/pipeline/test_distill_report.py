"""The AUC-vs-serving-cost frontier of the distill report (pipeline/distill_report.py):
entries, the Pareto flags, the plot and the table, on hand-made frontiers."""
import math

import pytest

from pipeline import distill_report

TASKS = ["click", "conversion"]


def _entry(size, kd, p50, click, conversion, params=100, emb=4, skipped=()):
    return distill_report.frontier_entry(
        size, kd, None if kd is None else ("kd" if kd else "none"), params,
        {"p50_ms": p50, "p90_ms": p50 * 1.2, "p99_ms": p50 * 1.5, "n": 200},
        {"click": {"auc": click, "logloss": 0.3}, "conversion": {"auc": conversion, "logloss": 0.1}}, TASKS,
        {"embedding_dim": emb, "bottom_units": [emb * 8], "tower_units": [emb * 2],
         "skipped_features": list(skipped)}, 2,
        None if kd is None else (f"students/{size}" if kd else None))


def _frontier():
    return distill_report.mark_pareto([
        _entry(None, None, 3.0, 0.82, 0.93, params=130_000, emb=16),
        _entry("small", True, 1.0, 0.78, 0.90, params=3_000, emb=2),
        _entry("small", False, 1.0, 0.75, 0.89, params=3_000, emb=2),
        _entry("student", True, 1.2, 0.80, 0.91, params=8_000, emb=4),
        _entry("student", False, 1.2, 0.77, 0.90, params=8_000, emb=4),
        _entry("large", True, 1.5, 0.79, 0.905, params=20_000, emb=8),  # slower and worse than student KD
        _entry("large", False, 1.5, 0.78, 0.90, params=20_000, emb=8),
    ])


def test_frontier_entry_names_the_model_and_averages_the_defined_aucs():
    e = _entry("small", True, 1.0, 0.8, 0.9)
    assert e["name"] == "small_kd" and e["kd"] is True and e["model_dir"] == "students/small"
    assert e["auc_mean"] == pytest.approx(0.85) and (e["p50_ms"], e["n"]) == (1.0, 200)
    assert _entry("small", False, 1.0, 0.8, 0.9)["name"] == "small_no_kd"
    assert _entry(None, None, 1.0, 0.8, 0.9)["name"] == "teacher"
    undefined = _entry("small", True, 1.0, float("nan"), 0.9)  # one class in the test labels: AUC undefined
    assert undefined["auc"]["click"] is None and undefined["auc_mean"] == pytest.approx(0.9)
    assert _entry("small", True, 1.0, None, None)["auc_mean"] is None


def test_pareto_flags_the_models_nothing_beats_on_both_p50_and_mean_auc():
    flags = {e["name"]: e["pareto"] for e in _frontier()}
    assert flags == {"teacher": True, "small_kd": True, "student_kd": True, "small_no_kd": False,
                     "student_no_kd": False, "large_kd": False, "large_no_kd": False}
    # equal on both: neither dominates the other
    twins = distill_report.mark_pareto([_entry("a", True, 1.0, 0.8, 0.8), _entry("b", True, 1.0, 0.8, 0.8)])
    assert [e["pareto"] for e in twins] == [True, True]
    assert distill_report.mark_pareto([_entry("a", True, 1.0, None, None)])[0]["pareto"] is False


def test_frontier_plot_draws_every_model_in_one_panel_per_task(tmp_path, monkeypatch):
    drawn = {}
    real_save = distill_report.save_figure

    def capture(fig, path):
        drawn["fig"] = fig
        panels = []
        for ax in fig.axes:
            points = [tuple(p) for c in ax.collections for p in c.get_offsets()]
            panels.append({"points": points, "xlim": ax.get_xlim(), "xlabel": ax.get_xlabel(),
                           "ylabel": ax.get_ylabel()})
        drawn["panels"] = panels
        drawn["legend"] = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
        return real_save(fig, path)

    monkeypatch.setattr(distill_report, "save_figure", capture)
    entries = _frontier()
    settings = {"batch_size": 64, "calls": 200, "threads": 1}
    path = distill_report.frontier_plot(entries, TASKS, str(tmp_path / "plots" / "frontier.png"), settings)
    assert path.endswith("frontier.png") and (tmp_path / "plots" / "frontier.png").stat().st_size > 10_000
    assert len(drawn["panels"]) == 2
    for task, panel in zip(TASKS, drawn["panels"]):
        expected = sorted((round(e["p50_ms"], 6), round(e["auc"][task], 6)) for e in entries)
        assert sorted((round(float(x), 6), round(float(y), 6)) for x, y in panel["points"]) == expected
        assert panel["xlim"][0] == 0.0 and panel["xlim"][1] > 3.0  # latency from 0: ratios read true
        assert "batch 64" in panel["xlabel"] and "TF1 session" in panel["xlabel"] and "1 thread" in panel["xlabel"]
        assert task in panel["ylabel"]
    legend = " ".join(drawn["legend"])
    assert "teacher" in legend and "with KD" in legend and "without KD" in legend
    for size, emb in (("small", 2), ("student", 4), ("large", 8)):
        assert f"{size} (emb {emb}" in legend


def test_frontier_plot_leaves_out_a_task_whose_auc_is_undefined(tmp_path, monkeypatch):
    counts = []
    real_save = distill_report.save_figure
    monkeypatch.setattr(distill_report, "save_figure", lambda fig, path: (
        counts.extend(sum(len(c.get_offsets()) for c in ax.collections) for ax in fig.axes), real_save(fig, path))[1])
    entries = distill_report.mark_pareto([_entry(None, None, 2.0, 0.8, 0.9), _entry("s", True, 1.0, float("nan"), 0.85),
                                          _entry("s", False, 1.0, 0.7, 0.8)])
    distill_report.frontier_plot(entries, TASKS, str(tmp_path / "f.png"), {"batch_size": 8, "calls": 10, "threads": 1})
    assert counts == [2, 3]


def test_frontier_markdown_has_one_row_per_model_and_the_kd_gain_per_size():
    entries = _frontier()
    text = distill_report.frontier_markdown(entries, TASKS, {"calls": 200, "warmup": 10, "batch_size": 64,
                                                              "path": "TF1 session"})
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| model")]
    assert len(rows) == len(entries)
    assert rows[0].startswith("| teacher |")
    assert [r.split(" | ")[0].strip("| ") for r in rows[1:]] == ["small", "small", "student", "student", "large",
                                                                 "large"]
    assert "| student | kd | 4 | [32] | [8] | all | 2 | 8,000 | 1.200 | 1.440 | 0.8000 | 0.9100 | 0.8550 | yes |" in text
    assert "KD minus no-KD mean test AUC per size: small +0.0200, student +0.0200, large +0.0075." in text
    assert "batch 64" in text and "TF1 session" in text
    assert not math.isnan(entries[0]["auc_mean"])


def test_a_size_that_skips_features_says_which_in_the_table():
    entries = [_entry(None, None, 2.0, 0.82, 0.93, params=100_000, emb=16),
               _entry("lean", True, 0.9, 0.78, 0.90, params=3_000, emb=2, skipped=["hist_items"]),
               _entry("lean", False, 0.9, 0.76, 0.89, params=3_000, emb=2, skipped=["hist_items"])]
    text = distill_report.frontier_markdown(entries, TASKS, {"calls": 200, "warmup": 10, "batch_size": 64,
                                                              "path": "TF1 session"})
    assert "| lean | kd | 2 | [16] | [4] | without hist_items | 2 | 3,000 |" in text
    assert "| teacher | teacher | 16 | [128] | [32] | all |" in text
    assert "without hist_items" in distill_report._size_label(entries[1])


def test_a_metric_over_one_seed_is_printed_without_a_spread():
    """One seed has no spread: the table says "1 seed" instead of "± 0.0000"; two seeds get their std."""
    runs = {"teacher": [{"click": {"auc": 0.71, "logloss": 0.30}}],
            "student_kd": [{"click": {"auc": 0.70, "logloss": 0.31}}, {"click": {"auc": 0.68, "logloss": 0.33}}]}
    table = distill_report.distillation_table(runs, ["click"], {}, {}, {})
    assert table["teacher"]["click"]["auc_std"] is None
    assert table["student_kd"]["click"]["auc_std"] == pytest.approx(0.01414, abs=1e-5)
    text = distill_report.markdown(table, ["click"], {"click": None}, "student_kd", "teacher")
    teacher_row = next(line for line in text.splitlines() if line.startswith("| teacher "))
    assert "0.7100 (1 seed)" in teacher_row and "±" not in teacher_row
    assert "0.6900 ± 0.0141" in text
