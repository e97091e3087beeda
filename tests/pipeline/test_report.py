"""report.md from summary.json: staleness marks on sections whose inputs were re-produced after
them, and a "rows" column that says what it counts."""
from pipeline import report
from pipeline.report import render


def _at(minute: int, second: int = 0) -> str:
    return f"2026-11-02T10:{minute:02d}:{second:02d}+0000"


def _summary(**finished) -> dict:
    """Stages finished at the given minutes, with a report section and the rows they record."""
    metrics = {"evaluate": {"roles": ["teacher"]}, "export": {"role": "teacher"}}
    rows = {"preprocess": 1000, "train": 2400, "evaluate": 100, "distill": 4800, "export": 100}
    stages = {name: {"status": "ok", "wall_seconds": 1.0, "finished_at": _at(m), "rows": rows.get(name, 1),
                     "metrics": metrics.get(name, {}), "report": f"{name} section text"}
              for name, m in finished.items()}
    if "evaluate" in stages:
        stages["evaluate"]["report"] += "\n\n![calibration click: teacher](plots/calibration_click.png)"
    return {"config": {"name": "t"}, "stages": stages,
            "models": {"teacher": {"click": {"auc": 0.7, "logloss": 0.5}}},
            "plots": ["plots/teacher_training.png", "plots/calibration_click.png"]}


def test_a_section_is_stale_when_an_upstream_stage_ran_after_it():
    s = _summary(preprocess=0, train=10, evaluate=11, export=12)
    s["stages"]["train"]["finished_at"] = _at(20)  # train re-ran after evaluate and export
    assert report.staleness(s["stages"]) == {"evaluate": "train ran after this", "export": "train ran after this"}
    text = render(s, "t")
    assert "## evaluate (stale: train ran after this)" in text
    assert "> **Stale**: train ran after this (this section: 2026-11-02T10:11:00+0000)" in text
    assert "Re-run `python -m pipeline evaluate` to refresh it." in text
    assert "## train\n" in text and "## preprocess\n" in text  # fresh sections carry no mark
    # the evaluate row of the stage table, the teacher's metrics (written by evaluate) and its plot
    assert "| evaluate | ok | 1.0 | 100 | test examples (each model) | 2026-11-02T10:11:00+0000 | **stale**: train ran after this |" in text
    assert "| teacher | click | 0.7000 | 0.5000 | stale (evaluate: train ran after this) |" in text
    # the calibration plot is shown once, in the stale evaluate section; the others under Plots
    section = text.split("## evaluate (stale: train ran after this)")[1].split("\n## ")[0]
    assert text.count("(plots/calibration_click.png)") == 1 and "(plots/calibration_click.png)" in section
    assert "## Plots\n\n![teacher_training](plots/teacher_training.png)" in text


def test_staleness_is_transitive_and_follows_what_export_published():
    s = _summary(preprocess=0, train=10, distill=11, export=12)
    s["stages"]["preprocess"]["finished_at"] = _at(30)
    assert set(report.staleness(s["stages"])) == {"train", "distill", "export"}
    s = _summary(preprocess=0, train=10, distill=11, export=12)  # export published the teacher
    s["stages"]["distill"]["finished_at"] = _at(30)
    assert report.staleness(s["stages"]) == {}
    s["stages"]["export"]["metrics"]["role"] = "student"
    assert report.staleness(s["stages"]) == {"export": "distill ran after this"}


def test_evaluate_before_distill_says_the_student_came_later():
    """`run` evaluates before distill: the evaluate section does not cover the student."""
    s = _summary(preprocess=0, train=10, evaluate=11, distill=15)
    s["models"]["student"] = {"click": {"auc": 0.6, "logloss": 0.6}}  # written by distill
    assert report.staleness(s["stages"]) == {"evaluate": "distill ran after this"}
    text = render(s, "t")
    assert "## evaluate (stale: distill ran after this)" in text
    # the teacher's metrics do not depend on the student: its row is current
    models = text.split("## Models (test split)")[1].split("## ")[0]
    assert "| teacher | click | 0.7000 | 0.5000 |" in models and "stale" not in models


def test_an_unfinished_or_failed_rerun_upstream_marks_it_too():
    s = _summary(preprocess=0, train=10, evaluate=11)
    s["stages"]["train"] = {"status": "running", "started_at": _at(20)}
    assert report.staleness(s["stages"]) == {"evaluate": "train is being re-run (running)"}
    s["stages"]["train"] = {"status": "failed", "finished_at": _at(21), "error": "boom"}
    assert report.staleness(s["stages"]) == {"evaluate": "train was re-run after this and failed"}


def test_fresh_run_has_no_marks_and_same_second_is_not_after():
    s = _summary(preprocess=0, train=10, evaluate=11, distill=12, export=13)
    s["stages"]["evaluate"]["metrics"]["roles"] = ["teacher", "student"]
    s["stages"]["evaluate"]["finished_at"] = s["stages"]["distill"]["finished_at"] = _at(12, 5)
    assert report.staleness(s["stages"]) == {}
    text = render(s, "t")
    assert "stale" not in text.lower()
    assert "| preprocess | ok | 1.0 | 1,000 | records read |" in text


def test_rows_column_says_what_each_stage_counts():
    s = _summary(preprocess=0, train=10, evaluate=11, distill=12, export=13)
    s["stages"]["predict"] = {"status": "ok", "wall_seconds": 2.0, "finished_at": _at(14), "rows": 50}
    s["stages"]["custom"] = {"status": "ok", "finished_at": _at(14), "rows": 7, "rows_unit": "widgets"}
    text = render(s, "t")
    assert "| stage | status | wall time (s) | rows | rows counted | finished at | up to date |" in text
    for row in ("| train | ok | 1.0 | 2,400 | examples x epochs |", "| distill | ok | 1.0 | 4,800 | examples x epochs (all students) |",
                "| export | ok | 1.0 | 100 | test examples (gate) |", "| predict | ok | 2.0 | 50 | records read |",
                "| custom | ok |  | 7 | widgets |"):
        assert row in text
    s["stages"]["failed_one"] = {"status": "failed", "finished_at": _at(15), "error": "ValueError: x"}
    assert "| failed_one | failed |  |  |  | 2026-11-02T10:15:00+0000 |  |" in render(s, "t")
