"""configs/every_feature_kind.yaml end to end at a tiny size: hashed ids, a cross, PLE numerics,
a behaviour sequence with attention and weighted tags through preprocess, training, distillation
(a student without the sequence), evaluation and the gated export of both models."""
import argparse
import json
import os

import pytest

from core.config import load_config
from core.run_dir import RunDir
from pipeline.stages import run_stage
from serving import versions
from tests.conftest import REPO


@pytest.mark.slow
def test_every_feature_kind_runs_through_every_stage(tmp_path):
    from models import model_io

    cfg = load_config(os.path.join(REPO, "configs", "every_feature_kind.yaml"), [
        "synthetic.rows=3000", "synthetic.chunk_rows=1500", "synthetic.num_users=200", "synthetic.num_items=100",
        "preprocess.beam.direct_running_mode=in_memory", "model.embedding_dim=4", "model.bottom_units=[16]",
        "model.tower_units=[8]", "model.cross_layers=0", "training.epochs=1", "training.batch_size=256",
        "export.min_auc={}", "export.max_auc_drop=1.0"])
    run_dir = RunDir(str(tmp_path / "run"))
    opts = argparse.Namespace(model=None, input=None, output=None, format=None)
    for stage in ("generate", "preprocess", "train", "distill", "evaluate", "export"):
        run_stage(stage, cfg, run_dir, opts)
    run_stage("export", cfg, run_dir, argparse.Namespace(model="teacher", input=None, output=None, format=None))

    info = model_io.load_feature_info(run_dir.feature_info_file)
    assert info.categorical["user_id"] == 4096  # hashed: the bucket count, no vocabulary
    assert info.categorical["item_category_x_device"] == 256
    assert info.lists["hist_items"].table == "item_id" and info.lists["hist_items"].pooling == "attention"
    assert info.lists["item_tags"].weighted
    assert info.piecewise == {f"{n}_ple": 8 for n in cfg.data.numeric}
    stats = json.load(open(run_dir.stats_file))
    assert stats["rows_read"] == 3000 == stats["valid"] + stats["dead_lettered"]
    assert set(stats["truncated"]) >= {"hist_items"}

    _, _, _, student_info = model_io.load_model_config(run_dir.model_dir("student"), "distill")
    assert "hist_items" not in student_info.model_inputs and "item_tags" in student_info.model_inputs
    summary = json.load(open(run_dir.summary_file))
    assert set(summary["models"]) >= {"teacher", "student"}
    for version in ("1", "2"):  # the student, then the teacher: both passed the gate's skew check
        blessed = json.load(open(os.path.join(run_dir.serving_base(), "ranker", version, versions.BLESSED_FILE)))
        assert blessed["checks"]["skew"]["max_abs_diff"] <= cfg.export.skew_tolerance
