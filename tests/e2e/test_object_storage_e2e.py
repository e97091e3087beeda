"""The whole pipeline with its run directory on a filesystem without a directory rename
(TF's ``ram://``, registered with Beam by tests/fakes/ram_filesystem.py), and Beam's ``gs://``
IO against a local GCS emulator for the inputs and the Beam-written outputs.

``ram://`` lives in this process, so every stage runs here (Beam in_memory). TF's own GCS
client cannot be pointed at an emulator: the TF-side artifacts (SavedModels, checkpoints,
TF Transform output) are proven on ``ram://`` through the same ``tf.io.gfile`` calls TF makes
on ``gs://``; the emulator test keeps the run directory local and puts the raw input and the
predictions on ``gs://``.
"""
import json
import os
import types
import uuid

import numpy as np
import pytest

import tests.fakes.ram_filesystem as ram_filesystem
from core import fs
from core.config import load_config
from core.run_dir import RunDir
from pipeline.stages import run_stage
from tests.conftest import REPO

pytestmark = pytest.mark.slow

SMALL = ["synthetic.rows=2000", "synthetic.chunk_rows=1000", "synthetic.num_users=200", "synthetic.num_items=100",
         "preprocess.beam.direct_running_mode=in_memory", "model.embedding_dim=4", "model.bottom_units=[16]",
         "model.tower_units=[8]", "training.epochs=2", "training.batch_size=256", "training.verbose=0",
         "export.min_auc={}", "distill.sizes=[]", "distill.seeds=[1]", "distill.latency_calls=10",
         "export.warmup_examples=4"]
STAGES = ("generate", "preprocess", "train", "distill", "evaluate", "export", "predict")


def _config(*extra):
    return load_config(os.path.join(REPO, "configs", "default.yaml"), SMALL + list(extra))


def _every_attempt_committed(root: str) -> list[str]:
    """Attempt directories under ``root`` that no ``_COMMITTED`` marker names (should be none)."""
    stray = []
    for rel in fs.walk_files(root):
        parts = rel.split("/")
        for i, part in enumerate(parts):
            if part.startswith(fs.ATTEMPT_PREFIX):
                final = fs.join(root, *parts[:i]) if i else root
                if fs.committed_attempt(final) != fs.join(final, part):
                    stray.append(fs.join(final, part))
    return sorted(set(stray))


def test_the_whole_pipeline_runs_with_its_run_directory_on_ram(tmp_path):
    cfg = _config()
    run_dir = RunDir(f"ram://run-{uuid.uuid4().hex[:8]}/run")
    with ram_filesystem.directory_renames_copy() as renames:
        for stage in STAGES:
            run_stage(stage, cfg, run_dir, types.SimpleNamespace(model=None, input=None, output=None, format=None))
    # Only TF Transform renamed directories (into its transform_output); the project never does.
    assert renames and all("/transform_output/" in dst for _, dst in renames), renames
    summary = fs.read_json(run_dir.summary_file)
    assert [summary["stages"][s]["status"] for s in STAGES] == ["ok"] * len(STAGES)
    assert summary["stages"]["preprocess"]["rows"] == 2000
    assert not os.path.exists("ram:")  # no path was taken for a local one
    # Every published output is found through its marker, and nothing uncommitted is left.
    for final in (run_dir.raw_data_dir, run_dir.preprocess_dir, run_dir.scores_dir, run_dir.predictions_dir,
                  fs.join(run_dir.model_dir("teacher"), "serving_model"),
                  fs.join(run_dir.model_dir("student"), "serving_model")):
        assert fs.is_published(final), final
    assert _every_attempt_committed(run_dir.root) == []
    version = fs.join(run_dir.serving_base(), cfg.export.model_name, "1")
    assert fs.exists(fs.join(version, "saved_model.pb")) and fs.exists(fs.join(version, "BLESSED"))
    assert not [n for n in fs.listdir(fs.join(run_dir.serving_base(), cfg.export.model_name)) if n.startswith(".")]
    counts = fs.read_json(fs.join(fs.published(run_dir.predictions_dir), "counts.json"))
    assert counts["rows_read"] == counts["predicted"] + counts["dead_lettered"] and counts["predicted"] > 0
    assert fs.exists(run_dir.report_file) and fs.glob(fs.join(run_dir.plots_dir, "*.png"))
    # The published version serves from ram://: TF loads it and scores serialized raw examples.
    import tensorflow as tf

    loaded = tf.saved_model.load(version)
    assert "serving_default" in loaded.signatures


def test_training_killed_on_ram_resumes_at_the_interrupted_epoch(tmp_path):
    """An interrupted train (an exception in epoch 2: no callback or cleanup of the run) resumes
    from the BackupAndRestore state it wrote to ram://, and ends with the uninterrupted run's
    history."""
    import tf_keras as keras

    cfg = _config("training.epochs=3", "training.steps_per_epoch=6", "training.early_stopping_patience=5")
    runs = {}
    for name in ("straight", "killed"):
        rd = RunDir(f"ram://resume-{uuid.uuid4().hex[:8]}/{name}")
        with ram_filesystem.directory_renames_copy():
            for stage in ("generate", "preprocess"):
                run_stage(stage, cfg, rd, types.SimpleNamespace())
        runs[name] = rd

    run_stage("train", cfg, runs["straight"], types.SimpleNamespace())

    class Interrupt(Exception):
        pass

    class KillInEpoch2(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 1:  # the first batch (or steps_per_execution group) of epoch 2
                raise Interrupt("killed")

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

    from models import training

    real = training.make_callbacks

    def with_kill(*args, **kwargs):
        return real(*args, **kwargs) + [KillInEpoch2()]

    rd = runs["killed"]
    training.make_callbacks = with_kill
    try:
        with pytest.raises(Interrupt):
            run_stage("train", cfg, rd, types.SimpleNamespace())
    finally:
        training.make_callbacks = real
    backup = fs.join(rd.model_dir("teacher"), "backup")
    assert fs.walk_files(backup), "BackupAndRestore wrote nothing to ram:// after epoch 1"
    assert not fs.is_published(fs.join(rd.model_dir("teacher"), "serving_model"))
    run_stage("train", cfg, rd, types.SimpleNamespace())
    got = fs.read_json(fs.join(rd.model_dir("teacher"), "metrics.json"))
    want = fs.read_json(fs.join(runs["straight"].model_dir("teacher"), "metrics.json"))
    assert len(got["history"]["loss"]) == 3
    for key, values in want["history"].items():
        np.testing.assert_allclose(got["history"][key], values, rtol=0, atol=1e-6, err_msg=key)
    assert not fs.exists(fs.join(backup, "chief"))  # removed once the run finished


def test_beam_reads_inputs_from_and_writes_predictions_to_gcs(gcs, exported_fake_run, tmp_path):
    """Preprocess reads its raw CSV from gs:// and batch predict writes its predictions there
    (Beam's GCS client against the emulator), published with the same marker protocol."""
    from pipeline.stages.predict import run as run_predict
    from tests.fakes.serving_models import serving_config

    run_dir = exported_fake_run.run_dir
    local_raw = fs.published(run_dir.raw_data_dir)
    for name in fs.listdir(local_raw):
        if name.endswith(".csv"):
            fs.copy_file(fs.join(local_raw, name), gcs.url("raw", name))
    pattern = gcs.url("raw", "*.csv")
    assert fs.glob(pattern)

    # preprocess from gs://, into a local run directory
    from core.config import config_to_dict, config_from_dict

    data = config_to_dict(serving_config("preprocess.beam.direct_running_mode=in_memory"))
    data["data"].update(source="files", path=pattern, format="csv")
    cfg = config_from_dict(data)
    rd = RunDir(str(tmp_path / "run"))
    run_stage("preprocess", cfg, rd, types.SimpleNamespace())
    stats = fs.read_json(rd.stats_file)
    assert stats["input"]["pattern"] == pattern and stats["rows_read"] > 0
    assert stats["rows_read"] == stats["valid"] + stats["dead_lettered"]

    # predict into gs://
    out = gcs.url("predictions")
    result = run_predict(serving_config("preprocess.beam.direct_running_mode=in_memory"), run_dir,
                         types.SimpleNamespace(input=pattern, output=out, format="csv"))
    m = result.metrics
    assert m["rows_read"] == m["predicted"] + m["dead_lettered"] and m["predicted"] > 0
    published = fs.published(out)
    assert published != out and fs.is_published(out)
    rows = [json.loads(line) for p in fs.glob(fs.join(published, "predictions*.jsonl"))
            for line in fs.read_text(p).splitlines() if line.strip()]
    assert len(rows) == m["predicted"] and all(0.0 < r["click_probability"] < 1.0 for r in rows)
    assert fs.read_json(fs.join(published, "counts.json"))["predicted"] == m["predicted"]
    assert fs.listdir(out) == sorted([fs.basename(published), fs.COMMITTED])
