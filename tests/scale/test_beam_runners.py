"""Teacher scoring and batch prediction on the DirectRunner in multi_processing mode with 2
worker processes (catches pickling and module-state faults a single process hides; issue 7:
Beam runners). Preprocessing under the same runner: tests/scale/test_fault_preprocess.py."""
import glob
import json
import os
import types

import numpy as np
import pandas as pd
import pytest

from core import fs
from pipeline.beam_options import beam_flags, pipeline_options
from core.config import BeamConfig
from pipeline.teacher_scoring import TeacherModelHandler, score_splits
from tests.pipeline.test_teacher_scoring import DTYPES, _example, _read, _tiny_teacher, _write
from pipeline.stages.predict import run as run_predict

MP = ["preprocess.beam.direct_running_mode=multi_processing", "preprocess.beam.direct_num_workers=2"]


def test_multi_processing_options_reach_beam():
    flags = beam_flags(BeamConfig(direct_running_mode="multi_processing", direct_num_workers=2))
    assert "--direct_running_mode=multi_processing" in flags and "--direct_num_workers=2" in flags
    flags = beam_flags(BeamConfig(runner="FlinkRunner", extra_args=["--flink_master=localhost:8081"]))
    assert flags[0] == "--runner=FlinkRunner" and flags[-1] == "--flink_master=localhost:8081"
    assert not any(f.startswith("--direct") for f in flags)  # other runners get only their own flags


@pytest.mark.slow
def test_teacher_scoring_on_two_worker_processes(tmp_path):
    path = str(tmp_path / "teacher")
    model = _tiny_teacher(path)
    data = tmp_path / "data"
    data.mkdir()
    for shard in range(2):
        _write(str(data / f"train-0000{shard}-of-00002.tfrecord.gz"), [_example(i) for i in range(shard, 60, 2)])
    _write(str(data / "validation-00000-of-00001.tfrecord.gz"), [_example(i, with_num=i % 4 != 0) for i in range(12)])
    handler = TeacherModelHandler(path, DTYPES, {"click": "click_logit", "conversion": "conversion_logit"}, batch_size=8)
    out = str(tmp_path / "scores")
    options = pipeline_options(BeamConfig(direct_running_mode="multi_processing", direct_num_workers=2))
    counts = score_splits({"train": str(data / "train-*.tfrecord.gz"),
                           "validation": str(data / "validation-*.tfrecord.gz")}, out, handler, options=options)
    assert counts == {"train": {"rows_in": 60, "rows_scored": 60, "rows_dead_letter": 0},
                      "validation": {"rows_in": 12, "rows_scored": 9, "rows_dead_letter": 3}}
    rows = _read(os.path.join(fs.published(out), "train-*.tfrecord.gz"))
    cats = np.array([e.features.feature["cat"].int64_list.value[0] for e in rows])
    nums = np.array([e.features.feature["num"].float_list.value[0] for e in rows], np.float32)
    expected = model({"cat": cats, "num": nums})
    got = [e.features.feature["teacher_logit_click"].float_list.value[0] for e in rows]
    np.testing.assert_allclose(got, expected["click_logit"].numpy(), rtol=1e-5, atol=1e-6)
    dead = [json.loads(line) for p in glob.glob(os.path.join(fs.published(out), "dead_letters", "*")) for line in open(p)]
    assert len(dead) == 3 and all("num" in d["error"] for d in dead)


@pytest.mark.slow
def test_batch_predict_on_two_worker_processes(exported_run, tmp_path):
    from tests.fakes.serving_models import serving_config

    cfg = serving_config(*MP)
    run_dir = exported_run
    raw = pd.read_csv(glob.glob(os.path.join(run_dir.raw_data_output, "*.csv"))[0]).head(40)
    raw = raw.drop(columns=["click", "conversion"]).astype({"price": object})
    raw.loc[5, "price"] = "twelve"
    src = tmp_path / "in.csv"
    raw.to_csv(src, index=False)
    out = tmp_path / "out"
    result = run_predict(cfg, run_dir, types.SimpleNamespace(input=str(src), output=str(out), format="csv"))
    m = result.metrics
    assert (m["rows_read"], m["predicted"], m["dead_lettered"]) == (40, 39, 1)
    rows = [json.loads(line) for p in glob.glob(fs.join(fs.published(str(out)), "predictions*.jsonl")) for line in open(p)]
    assert sorted(r["impression_id"] for r in rows) == sorted(set(raw["impression_id"]) - {raw.loc[5, "impression_id"]})
    assert all(0.0 < r["click_probability"] < 1.0 for r in rows)
