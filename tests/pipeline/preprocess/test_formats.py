"""JSON lines, Parquet and TFRecord inputs read the same records as CSV (gzip CSV too)."""
import gzip
import json

import apache_beam as beam
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from pipeline.beam_options import pipeline_options
from core.errors import InputError
from pipeline.preprocess.raw_io import ReadRawRecords, check_inputs
from pipeline.preprocess.validation import ValidateRecords
from tests.fakes import raw_records as fx

N = 30


def _typed(row: dict) -> dict:
    """Types one CSV-string row like the files do: ints, floats, strings."""
    out = {}
    for k, v in row.items():
        if k in ("hour", "click", "conversion", "user_tenure_days"):
            out[k] = int(v)
        elif k in ("price", "user_activity", "item_popularity", "item_rating", "p_click", "p_conversion"):
            out[k] = float(v)
        else:
            out[k] = v
    return out


def _example(row: dict) -> bytes:
    feats = {}
    for k, v in _typed(row).items():
        if isinstance(v, int):
            feats[k] = tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))
        elif isinstance(v, float):
            feats[k] = tf.train.Feature(float_list=tf.train.FloatList(value=[v]))
        else:
            feats[k] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode()]))
    return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("formats")
    rows = fx.good_rows(N, seed=3)
    paths = {"csv": fx.write_csv(d / "a.csv", rows)}
    with open(paths["csv"], "rb") as f, gzip.open(d / "a.csv.gz", "wb") as g:
        g.write(f.read())
    paths["csv.gz"] = str(d / "a.csv.gz")
    with open(d / "a.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(_typed(r)) + "\n")
    paths["jsonl"] = str(d / "a.jsonl")
    pd.DataFrame([_typed(r) for r in rows]).to_parquet(d / "a.parquet")
    paths["parquet"] = str(d / "a.parquet")
    with tf.io.TFRecordWriter(str(d / "a.tfrecord.gz"), options="GZIP") as w:
        for r in rows:
            w.write(_example(r))
    paths["tfrecord"] = str(d / "a.tfrecord.gz")
    return d, paths


def _read_all(paths: dict, out_dir) -> dict:
    cfg = fx.files_config(paths["csv"])
    p = beam.Pipeline(options=pipeline_options(cfg.preprocess.beam))
    pcolls = {}
    for name, path in paths.items():
        fmt = name.split(".")[0]
        checked = p | f"Read[{name}]" >> ReadRawRecords(path, fmt, cfg) | f"Validate[{name}]" >> ValidateRecords(cfg)
        pcolls[name] = checked.valid | f"Features[{name}]" >> beam.Map(
            lambda r: [r["values"]["impression_id"], r["features"]])
        pcolls[name + "_dead"] = checked.dead_letters
    collected, _ = fx.run_and_collect(p, pcolls, out_dir)
    return collected


def _as_float32(features: dict) -> dict:
    return {k: (np.float32(v) if isinstance(v, float) else v) for k, v in features.items()}


def test_every_format_reads_the_same_records(inputs):
    d, paths = inputs
    got = _read_all(paths, d / "out")
    expected = {k: _as_float32(v) for k, v in got["csv"]}
    assert len(expected) == N
    for name in paths:
        assert got[name + "_dead"] == [], name
        records = {k: _as_float32(v) for k, v in got[name]}
        assert records == expected, name


def test_missing_input_files_raise_input_error(tmp_path):
    cfg = fx.files_config(str(tmp_path / "none-*.csv"))
    with pytest.raises(InputError, match="no input files match"):
        check_inputs(str(tmp_path / "none-*.csv"), "csv", cfg, ["user_id"])


def test_csv_header_lacking_a_column_is_named(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text("user_id,price\nu1,2.0\n")
    cfg = fx.files_config(str(path))
    with pytest.raises(InputError, match=r"lacks configured column\(s\) \['item_id'"):
        check_inputs(str(path), "csv", cfg, ["user_id", "item_id", "price"])
