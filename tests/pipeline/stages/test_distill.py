"""The distill stage end to end on fake transformed data: scores, student, table, plot."""
import glob
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


@pytest.mark.slow
def test_distill_stage_writes_student_scores_and_table(trained_teacher):
    run_dir = trained_teacher
    cfg = load_config(os.path.join(REPO, "configs", "default.yaml"),
                      FAST + ["distill.seeds=[1, 2]", "distill.ablation=true", "distill.feature_alignment_weight=0.1"])
    result = run_stage("distill", cfg, run_dir, None)

    # the scoring job: one output row per input row, per split
    for split in ("train", "validation"):
        n_in = _count(run_dir.split_pattern(split))
        assert _count(os.path.join(run_dir.scores_dir, f"{split}-*.tfrecord.gz")) == n_in
        assert result.metrics["scoring"][split] == {"rows_in": n_in, "rows_scored": n_in, "rows_dead_letter": 0}

    # the saved student is the KD student of the first seed, without adaptors
    student = model_io.load_serving_model(run_dir.model_dir("student"), run_dir.role_stage("student"))
    names = [v.name for v in student.variables]
    assert names and not [n for n in names if "adaptor" in n]
    assert sorted(student.output_names) == sorted(["click_logit", "click_probability", "conversion_logit",
                                                   "conversion_probability"])
    model_cfg, _, _, _ = model_io.load_model_config(run_dir.model_dir("student"), run_dir.role_stage("student"))
    assert model_cfg.embedding_dim == 2 and model_cfg.bottom_units == [4]

    m = result.metrics
    table = m["table"]
    assert set(table) == {"teacher", "student_kd", "student_no_kd", "student_label_smoothing", "student_reweight"}
    assert table["student_kd"]["seeds"] == 2 and table["teacher"]["seeds"] == 1
    for task in ("click", "conversion"):
        cell = table["student_kd"][task]
        assert 0.0 <= cell["auc_mean"] <= 1.0 and cell["auc_std"] >= 0.0 and cell["logloss_mean"] > 0
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
