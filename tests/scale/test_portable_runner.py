"""Preprocess, teacher scoring and batch predict on Beam's portable runner path (a Python job
service and an external SDK worker pool, each its own process: the Job API + Fn API path of
Flink, Spark and Dataflow Runner v2), compared with the DirectRunner: stats, vocabularies
and integer features exactly, floats within 1e-5."""
import glob
import json
import types

import numpy as np
import pytest
import tensorflow as tf

from core import fs
from core.config import BeamConfig
from core.run_dir import RunDir
from pipeline.beam_options import beam_flags, pipeline_options
from tests.fakes.portable_runner import PortableBeam

pytestmark = pytest.mark.slow

DIRECT = ["preprocess.beam.runner=DirectRunner", "preprocess.beam.direct_running_mode=in_memory"]


@pytest.fixture(scope="module")
def portable(tmp_path_factory):
    with PortableBeam(str(tmp_path_factory.mktemp("portable"))) as p:
        yield p


def test_portable_flags_reach_beam(portable):
    flags = beam_flags(portable.beam_config())
    assert flags[0] == "--runner=PortableRunner" and "--environment_type=EXTERNAL" in flags
    assert not any(f.startswith("--direct") for f in flags)


def _examples(pattern: str) -> dict:
    """{feature: values} of every transformed example under ``pattern``, keyed by its integer
    features and its floats rounded to 1e-4 (transformed examples carry no id; the order of
    records across shards is the runner's)."""
    out = {}
    files = fs.glob(pattern)
    assert files, f"no shards match {pattern}"
    for raw in tf.data.TFRecordDataset(files, compression_type="GZIP").as_numpy_iterator():
        ex = tf.train.Example.FromString(raw)
        feats = {}
        for name, f in ex.features.feature.items():
            kind = f.WhichOneof("kind")
            feats[name] = (kind, list(getattr(f, kind).value))
        key = tuple(sorted((n, tuple(round(x, 4) if k == "float_list" else x for x in v))
                           for n, (k, v) in feats.items()))
        assert key not in out, "two transformed examples alike"
        out[key] = feats
    return out


def _assert_same_examples(a: dict, b: dict, where: str) -> None:
    assert sorted(a) == sorted(b), f"{where}: different impressions"
    for key in a:
        assert sorted(a[key]) == sorted(b[key]), f"{where} {key!r}: different features"
        for name, (kind, values) in a[key].items():
            kind_b, values_b = b[key][name]  # the same key: ints equal, floats within 1e-4
            assert kind == kind_b, f"{where} {key!r} {name}"
            if kind == "float_list":
                np.testing.assert_allclose(values, values_b, rtol=1e-5, atol=1e-6, err_msg=f"{where} {key!r} {name}")
            else:
                assert values == values_b, f"{where} {key!r} {name}"


def _stats(run_dir: RunDir) -> dict:
    stats = fs.read_json(run_dir.stats_file)
    return {k: v for k, v in stats.items() if k not in ("wall_seconds", "rows_per_second", "input")}


def _vocabularies(run_dir: RunDir) -> dict:
    assets = fs.join(run_dir.transform_output_dir, "transform_fn", "assets")
    return {name: fs.read_bytes(fs.join(assets, name)) for name in fs.listdir(assets)}


def test_preprocess_on_the_portable_runner_matches_the_direct_runner(portable, tmp_path, tiny_config):
    from core.config import config_from_dict, config_to_dict
    from pipeline.stages import STAGES

    runs = {}
    for name, beam in (("direct", BeamConfig(direct_running_mode="in_memory")), ("portable", portable.beam_config())):
        data = config_to_dict(tiny_config)
        data["synthetic"]["rows"] = 1500
        data["preprocess"]["beam"] = {"runner": beam.runner, "direct_running_mode": beam.direct_running_mode,
                                      "extra_args": list(beam.extra_args)}
        cfg = config_from_dict(data)
        rd = RunDir(str(tmp_path / name))
        STAGES.get("generate").run(cfg, rd, types.SimpleNamespace())
        jobs = portable.completed_jobs()
        STAGES.get("preprocess").run(cfg, rd, types.SimpleNamespace())
        assert portable.completed_jobs() == jobs + (name == "portable")  # it ran there, and only there
        runs[name] = rd
    direct, port = runs["direct"], runs["portable"]
    assert _stats(port) == _stats(direct) and _stats(direct)["rows_read"] == 1500
    assert fs.read_json(port.feature_info_file) == fs.read_json(direct.feature_info_file)
    vocab = _vocabularies(direct)
    assert vocab and _vocabularies(port) == vocab
    for split in ("train", "validation", "test"):
        _assert_same_examples(_examples(direct.split_pattern(split)), _examples(port.split_pattern(split)), split)


def test_teacher_scoring_on_the_portable_runner_matches_the_direct_runner(portable, tmp_path):
    from pipeline.teacher_scoring import TeacherModelHandler, score_splits
    from tests.pipeline.test_teacher_scoring import DTYPES, _example, _read, _tiny_teacher, _write

    path = str(tmp_path / "teacher")
    _tiny_teacher(path)
    data = tmp_path / "data"
    data.mkdir()
    for shard in range(2):
        _write(str(data / f"train-0000{shard}-of-00002.tfrecord.gz"), [_example(i) for i in range(shard, 50, 2)])
    _write(str(data / "validation-00000-of-00001.tfrecord.gz"), [_example(i, with_num=i % 4 != 0) for i in range(50, 62)])
    patterns = {"train": str(data / "train-*.tfrecord.gz"), "validation": str(data / "validation-*.tfrecord.gz")}
    handler = TeacherModelHandler(path, DTYPES, {"click": "click_logit", "conversion": "conversion_logit"}, batch_size=8)
    scored = {}
    for name, beam in (("direct", BeamConfig(direct_running_mode="in_memory")), ("portable", portable.beam_config())):
        out = str(tmp_path / f"scores_{name}")
        jobs = portable.completed_jobs()
        counts = score_splits(patterns, out, handler, options=pipeline_options(beam))
        assert portable.completed_jobs() == jobs + (name == "portable")
        assert counts == {"train": {"rows_in": 50, "rows_scored": 50, "rows_dead_letter": 0},
                          "validation": {"rows_in": 12, "rows_scored": 9, "rows_dead_letter": 3}}
        rows = _read(fs.join(fs.published(out), "*-*.tfrecord.gz"))
        scored[name] = {round(e.features.feature["num"].float_list.value[0], 4): e for e in rows}
    assert sorted(scored["direct"]) == sorted(scored["portable"]) and len(scored["direct"]) == 59
    for key, ex in scored["direct"].items():
        other = scored["portable"][key]
        for task in ("click", "conversion"):
            np.testing.assert_allclose(other.features.feature[f"teacher_logit_{task}"].float_list.value,
                                       ex.features.feature[f"teacher_logit_{task}"].float_list.value, rtol=1e-5, atol=1e-6)
        assert other.features.feature["cat"].int64_list.value == ex.features.feature["cat"].int64_list.value


def test_batch_predict_on_the_portable_runner_matches_the_direct_runner(portable, exported_run, tmp_path):
    import pandas as pd

    from pipeline.stages.predict import run as run_predict
    from tests.fakes.serving_models import serving_config

    raw_files = fs.glob(fs.join(fs.published(exported_run.raw_data_dir), "*.csv"))
    raw = pd.read_csv(raw_files[0]).head(60).drop(columns=["click", "conversion"]).astype({"price": object})
    raw.loc[7, "price"] = "not a price"
    src = tmp_path / "in.csv"
    raw.to_csv(src, index=False)
    predictions = {}
    for name, overrides in (("direct", DIRECT), ("portable", portable.overrides())):
        out = str(tmp_path / f"predictions_{name}")
        jobs = portable.completed_jobs()
        result = run_predict(serving_config(*overrides), exported_run,
                             types.SimpleNamespace(input=str(src), output=out, format="csv"))
        assert portable.completed_jobs() == jobs + (name == "portable")
        m = result.metrics
        assert (m["rows_read"], m["predicted"], m["dead_lettered"]) == (60, 59, 1)
        lines = [line for p in glob.glob(fs.join(fs.published(out), "predictions*.jsonl")) for line in open(p)]
        predictions[name] = {r["impression_id"]: r for r in map(json.loads, lines)}
    direct, port = predictions["direct"], predictions["portable"]
    assert sorted(direct) == sorted(port) and len(direct) == 59
    for key, row in direct.items():
        for field, value in row.items():
            if isinstance(value, float):
                np.testing.assert_allclose(port[key][field], value, rtol=1e-5, atol=1e-6)
            else:
                assert port[key][field] == value
