"""The distill stage end to end: scores, students of every size, table, the AUC-vs-serving-cost
frontier and its plot (on a tiny generated and preprocessed run: the frontier exports every
student with the run's TF Transform front end), and the export of ``best_under_budget``."""
import argparse
import glob
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from models import model_io
from models.inputs import make_dataset
from pipeline import distillation as distill
from core.config import load_config
from core.run_dir import Summary
from pipeline.stages import run_stage
from tests.fakes.transformed_run import REPO, TINY, make_fake_run
from pipeline.stages.distill import run as run_distill

FAST = TINY + ["preprocess.beam.direct_running_mode=in_memory", "preprocess.beam.direct_num_workers=1",
               "distill.student.embedding_dim=2", "distill.student.bottom_units=[4]", "distill.student.tower_units=[2]"]
# A real (tiny) generated and preprocessed run, for the stages that need its TF Transform output;
# with the default config's two list features (the history and the token-weighted tags).
GENERATED = [o for o in FAST if o != "data.lists=[]"] + ["synthetic.rows=3000", "synthetic.chunk_rows=1000", "synthetic.num_users=200",
                    "synthetic.num_items=100", "model.cross_layers=0", "export.min_auc={}", "export.max_auc_drop=1.0",
                    # the student halved without the two list features, and doubled
                    "distill.sizes=[{name: small, embedding_dim: 1, bottom_units: [2], tower_units: [1], features: "
                    "[user_id, item_id, item_category, device, hour, price, user_activity, user_tenure_days, "
                    "item_popularity, item_rating]}, {name: large, embedding_dim: 4, bottom_units: [8], "
                    "tower_units: [4]}]",
                    "distill.size_epochs=1", "distill.latency_batch_size=16",
                    "distill.latency_calls=20"]
DISTILL = ["distill.seeds=[1, 2]", "distill.ablation=true", "distill.feature_alignment_weight=0.1"]


def _count(pattern):
    return sum(1 for f in glob.glob(pattern) for _ in tf.data.TFRecordDataset(f, compression_type="GZIP"))


@pytest.fixture(scope="module")
def trained_teacher(tmp_path_factory):
    """A run directory with fake transformed data and a tiny trained teacher."""
    from pipeline.stages.train import train_role

    root = str(tmp_path_factory.mktemp("distill") / "run")
    run_dir, info = make_fake_run(root, sizes=(640, 192, 192))
    cfg = load_config(os.path.join(REPO, "configs", "default.yaml"), FAST)
    train_role(cfg, run_dir)
    return run_dir


def _generated_config(*overrides):
    return load_config(os.path.join(REPO, "configs", "default.yaml"), GENERATED + list(overrides))


@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    """(run_dir, distill's StageResult): generate, preprocess, train and distill (``DISTILL``) on
    3,000 synthetic rows; a ``students/`` directory of a size no longer configured is there before."""
    from core.run_dir import RunDir

    run_dir = RunDir(str(tmp_path_factory.mktemp("distilled") / "run"))
    cfg = _generated_config(*DISTILL)
    opts = argparse.Namespace(model=None, input=None, output=None, format=None)
    for stage in ("generate", "preprocess", "train"):
        run_stage(stage, cfg, run_dir, opts)
    os.makedirs(os.path.join(run_dir.student_size_dir("medium"), "serving_model"))
    return run_dir, run_stage("distill", cfg, run_dir, opts)


@pytest.mark.slow
def test_distill_stage_writes_student_scores_and_table(distilled):
    run_dir, result = distilled

    # the scoring job: one output row per input row, per split
    for split in ("train", "validation"):
        n_in = _count(run_dir.split_pattern(split))
        assert _count(os.path.join(run_dir.scores_output, f"{split}-*.tfrecord.gz")) == n_in
        assert result.metrics["scoring"][split] == {"rows_in": n_in, "rows_scored": n_in, "rows_dead_letter": 0}

    # the saved student is the KD student of the first seed, without adaptors
    student = model_io.load_serving_model(run_dir.model_dir("student"), run_dir.role_stage("student"))
    names = [v.name for v in student.variables]
    assert names and not [n for n in names if "adaptor" in n]
    assert sorted(student.output_names) == sorted(["click_logit", "click_probability", "conversion_logit",
                                                   "conversion_probability"])
    model_cfg, _, _, _ = model_io.load_model_config(run_dir.model_dir("student"), run_dir.role_stage("student"))
    assert model_cfg.embedding_dim == 2 and model_cfg.bottom_units == [4]
    # each extra size's KD student, saved beside it; a size no longer configured is gone
    for size, (emb, bottom, towers) in {"small": (1, [2], [1]), "large": (4, [8], [4])}.items():
        size_cfg, _, _, _ = model_io.load_model_config(run_dir.student_size_dir(size), "distill")
        assert (size_cfg.embedding_dim, size_cfg.bottom_units, size_cfg.tower_units) == (emb, bottom, towers)
        assert sorted(model_io.load_serving_model(run_dir.student_size_dir(size), "distill").output_names) == \
            sorted(student.output_names)
    assert not os.path.exists(run_dir.student_size_dir("medium"))
    assert not os.path.exists(run_dir.latency_exports_dir)  # the timed exports are scratch

    m = result.metrics
    table = m["table"]
    assert set(table) == {"teacher", "student_kd", "student_no_kd", "student_label_smoothing", "student_reweight"}
    assert table["student_kd"]["seeds"] == 2 and table["teacher"]["seeds"] == 1
    for task in ("click", "conversion"):
        cell = table["student_kd"][task]
        assert 0.0 <= cell["auc_mean"] <= 1.0 and cell["auc_std"] >= 0.0 and cell["logloss_mean"] > 0
        assert table["teacher"][task]["auc_std"] is None  # one seed: no spread to report
    assert m["params"]["teacher"] > m["params"]["student_kd"] > 0
    assert m["latency_ms"]["teacher"] > 0 and m["latency_ms"]["student_kd"] > 0
    assert m["latency_ms_batch"]["teacher"] > 0 and table["student_kd"]["latency_ms_batch"] > 0
    assert set(m["gap_closed"]) == {"click", "conversion"}

    summary = Summary(run_dir).load()
    assert set(summary["models"]["student"]) == {"click", "conversion"}
    assert "auc" in summary["models"]["student"]["click"]
    assert "plots/distillation.png" in summary["plots"]
    assert os.path.getsize(os.path.join(run_dir.root, "plots", "distillation.png")) > 1000
    assert "student_kd" in summary["stages"]["distill"]["report"]


@pytest.mark.slow
def test_distill_records_the_auc_vs_serving_cost_frontier(distilled):
    run_dir, result = distilled
    m = result.metrics
    f = m["frontier"]
    assert (f["batch_size"], f["calls"], f["threads"], f["signature"]) == (16, 20, 1, "serving_default")
    models = {e["name"]: e for e in f["models"]}
    assert list(models) == ["teacher", "small_kd", "small_no_kd", "student_kd", "student_no_kd", "large_kd",
                            "large_no_kd"]
    for e in models.values():
        assert 0 < e["p50_ms"] <= e["p90_ms"] <= e["p99_ms"] and e["n"] == 20
        assert set(e["auc"]) == {"click", "conversion"} and isinstance(e["pareto"], bool)
    for size in ("small", "student", "large"):  # one architecture, one timing
        kd, no = models[f"{size}_kd"], models[f"{size}_no_kd"]
        assert (kd["p50_ms"], kd["params"]) == (no["p50_ms"], no["params"]) and (kd["mode"], no["mode"]) == ("kd", "none")
        assert no["model_dir"] is None
    assert models["small_kd"]["params"] < models["student_kd"]["params"] < models["large_kd"]["params"] \
        < models["teacher"]["params"]
    assert models["student_kd"]["params"] == m["params"]["student_kd"]
    assert [models[n]["model_dir"] for n in ("teacher", "small_kd", "student_kd", "large_kd")] == \
        ["teacher", "students/small", "student", "students/large"]
    assert (models["small_kd"]["epochs"], models["student_kd"]["epochs"]) == (1, 1)
    # the small size skips the list features: recorded, and its saved model has no input for them
    assert models["small_kd"]["skipped_features"] == ["hist_items", "item_tags"]
    assert models["student_kd"]["skipped_features"] == [] == models["teacher"]["skipped_features"]
    small = model_io.load_serving_model(run_dir.student_size_dir("small"), "distill")
    assert not [k for k in small.input_names if k.startswith(("hist_items", "item_tags"))]
    # the configured student's point is the saved model (the first seed), as summary.json's student
    saved = Summary(run_dir).load()["models"]["student"]
    assert models["student_kd"]["auc"]["click"] == pytest.approx(saved["click"]["auc"], abs=1e-5)
    front = [e for e in f["models"] if e["pareto"]]
    assert front and not any(o["p50_ms"] < e["p50_ms"] and o["auc_mean"] > e["auc_mean"]
                             for e in front for o in f["models"] if o["auc_mean"] is not None)

    b = m["serving_breakdown"]
    assert set(b["batches"]) == {"1", "64", "512"}
    for per in b["batches"].values():
        assert set(per) == {"teacher", "student"} and all(r["total_ms"] > 0 for r in per.values())
    report = Summary(run_dir).load()["stages"]["distill"]["report"]
    assert "Test AUC against serving cost" in report and "![AUC vs serving p50](plots/distill_frontier.png)" in report
    assert "| 512 | student |" in report and "batch 16" in report
    assert os.path.getsize(os.path.join(run_dir.root, "plots", "distill_frontier.png")) > 10_000
    assert "plots/distill_frontier.png" in Summary(run_dir).load()["plots"]


@pytest.mark.slow
def test_export_best_under_budget_publishes_the_chosen_student(distilled):
    from core.errors import ExportError
    from serving import versions
    from serving.export import best_under_budget

    run_dir, result = distilled
    models = result.metrics["frontier"]["models"]
    kd = [e for e in models if e["kd"]]
    budget = sorted(e["p50_ms"] for e in kd)[1]  # the two fastest KD students are under it
    expected, _ = best_under_budget(models, budget)
    opts = argparse.Namespace(model=None, input=None, output=None, format=None)
    cfg = _generated_config(*DISTILL, "export.serve_model=best_under_budget", f"export.latency_budget_ms={budget}")
    out = run_stage("export", cfg, run_dir, opts)
    blessing = json.load(open(os.path.join(out.artifacts["version_dir"], versions.BLESSED_FILE)))
    assert blessing["role"] == "student" and blessing["trained_model"] == expected["model_dir"]
    sel = blessing["selection"]
    assert sel["chosen"] == expected["name"] and sel["latency_budget_ms"] == budget and sel["batch_size"] == 16
    assert set(sel["under_budget"]) == {e["name"] for e in kd if e["p50_ms"] <= budget}
    assert out.metrics["student_size"] == expected["size"] and expected["size"] in out.report
    # the published export is that student's model (its variables' shapes), with the gate's checks
    exported = tf.saved_model.load(out.artifacts["version_dir"])
    trained = model_io.load_serving_model(run_dir.path(expected["model_dir"]), "distill")
    assert sorted(tuple(v.shape) for v in exported.model.variables) == sorted(tuple(v.shape) for v in trained.variables)
    assert blessing["checks"]["skew"]["max_abs_diff"] <= cfg.export.skew_tolerance

    published = versions.list_versions(os.path.dirname(out.artifacts["version_dir"]))
    too_tight = min(e["p50_ms"] for e in kd) / 2
    cfg = _generated_config(*DISTILL, "export.serve_model=best_under_budget", f"export.latency_budget_ms={too_tight}")
    with pytest.raises(ExportError, match=rf"within export\.latency_budget_ms={too_tight:g} ms; the fastest"):
        run_stage("export", cfg, run_dir, opts)
    assert versions.list_versions(os.path.dirname(out.artifacts["version_dir"])) == published  # nothing published


def test_frozen_teacher_reproduces_the_saved_teacher(trained_teacher):
    run_dir = trained_teacher  # the validation split, not scores/: no other test needs to run first
    teacher = distill.load_frozen_teacher(run_dir)
    saved = model_io.load_serving_model(run_dir.model_dir("teacher"), run_dir.role_stage("teacher"))
    info = model_io.load_feature_info(run_dir.feature_info_file)
    batch = next(iter(make_dataset(run_dir.split_pattern("validation"), info, 32)))
    inputs = {n: batch[n] for n in info.model_inputs}
    np.testing.assert_allclose(teacher(inputs)["click_logit"].numpy(), saved(inputs)["click_logit"].numpy(),
                               rtol=1e-5, atol=1e-5)
    assert not teacher.trainable_variables


def test_distill_without_a_teacher_names_the_stage_to_run(tmp_path):
    from core.errors import InputError

    run_dir, _ = make_fake_run(str(tmp_path / "run"), sizes=(8, 8, 8))
    cfg = load_config(os.path.join(REPO, "configs", "default.yaml"), FAST)
    with pytest.raises(InputError, match="pipeline train"):
        run_distill(cfg, run_dir, None)
