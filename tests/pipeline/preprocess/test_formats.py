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


# ----------------------------------------------------------------------------- damaged files


def _damaged(d, kind: str) -> tuple[str, str, str]:
    """(path, format, what the error must say) of one damaged input file."""
    import bz2

    rows = fx.good_rows(400, seed=5)
    plain = open(fx.write_csv(d / f"{kind}-plain.csv", rows), "rb").read()
    if kind == "truncated_gzip_csv":
        data = gzip.compress(plain)
        (d / "t.csv.gz").write_bytes(data[: len(data) // 2])
        return str(d / "t.csv.gz"), "csv", "truncated or corrupt gzip"
    if kind == "corrupt_gzip_csv":  # a flipped byte: CRC or deflate error
        data = bytearray(gzip.compress(plain))
        data[len(data) // 2] ^= 0x55
        (d / "c.csv.gz").write_bytes(bytes(data))
        return str(d / "c.csv.gz"), "csv", "truncated or corrupt gzip"
    if kind == "not_gzip_csv":
        (d / "n.csv.gz").write_bytes(plain)
        return str(d / "n.csv.gz"), "csv", "Not a gzipped file"
    if kind == "truncated_bzip2_csv":
        data = bz2.compress(plain)
        (d / "t.csv.bz2").write_bytes(data[: len(data) - 40])
        return str(d / "t.csv.bz2"), "csv", "truncated or corrupt bzip2"
    if kind == "truncated_gzip_jsonl":
        data = gzip.compress(b"".join(json.dumps(_typed(r)).encode() + b"\n" for r in rows))
        (d / "t.jsonl.gz").write_bytes(data[: len(data) // 2])
        return str(d / "t.jsonl.gz"), "jsonl", "truncated or corrupt gzip"
    if kind in ("corrupt_tfrecord", "truncated_tfrecord", "truncated_tfrecord_gz"):
        gz = kind.endswith("_gz")
        path = str(d / ("t.tfrecord.gz" if gz else "t.tfrecord"))
        with tf.io.TFRecordWriter(path, options="GZIP" if gz else None) as w:
            for r in rows:
                w.write(_example(r))
        data = bytearray(open(path, "rb").read())
        if kind == "corrupt_tfrecord":
            data[len(data) // 2] ^= 0x55  # a record's payload no longer matches its CRC
        else:
            data = data[: len(data) // 2]
        open(path, "wb").write(bytes(data))
        return path, "tfrecord", "corrupt or truncated TFRecord"
    if kind == "corrupt_parquet":
        pd.DataFrame([_typed(r) for r in rows]).to_parquet(d / "c.parquet")
        data = (d / "c.parquet").read_bytes()
        (d / "c.parquet").write_bytes(data[: len(data) // 2])
        return str(d / "c.parquet"), "parquet", "cannot be read as parquet"
    raise KeyError(kind)


DAMAGED = ["truncated_gzip_csv", "corrupt_gzip_csv", "not_gzip_csv", "truncated_bzip2_csv", "truncated_gzip_jsonl",
           "corrupt_tfrecord", "truncated_tfrecord", "truncated_tfrecord_gz", "corrupt_parquet"]


@pytest.mark.parametrize("kind", DAMAGED)
def test_a_damaged_file_is_an_input_error_naming_it(tmp_path, kind):
    """Beam's compressed reader stopped quietly at a cut; Python's decompressors raise."""
    from core import raw_formats

    path, fmt, says = _damaged(tmp_path, kind)
    with pytest.raises(InputError, match="input file ") as e:
        list(raw_formats.read_file(path, fmt, fx.files_config(path, fmt).data.csv))
    assert path in str(e.value) and says in str(e.value)


def test_a_gzip_file_read_whole_still_gives_every_record(tmp_path):
    """Multi-member gzip (concatenated .gz files) and bzip2 read completely."""
    import bz2

    from core import raw_formats

    rows = fx.good_rows(50, seed=8)
    plain = open(fx.write_csv(tmp_path / "p.csv", rows), "rb").read()
    header, body = plain.split(b"\n", 1)
    half = body.index(b"\n", len(body) // 2) + 1
    (tmp_path / "m.csv.gz").write_bytes(gzip.compress(header + b"\n" + body[:half]) + gzip.compress(body[half:]))
    (tmp_path / "b.csv.bz2").write_bytes(bz2.compress(plain))
    cfg = fx.files_config(str(tmp_path / "p.csv"))
    for name in ("m.csv.gz", "b.csv.bz2"):
        recs = list(raw_formats.read_file(str(tmp_path / name), "csv", cfg.data.csv))
        assert [r["values"]["impression_id"] for r in recs] == [r["impression_id"] for r in rows], name


def test_read_raw_records_reports_a_truncated_file_and_reads_the_others(tmp_path):
    """file_errors="output": the truncated file is reported (the stage fails on it after the
    run, without any worker raising); "raise" fails the pipeline with the same one error."""
    from pipeline.preprocess.raw_io import FILE_ERRORS, pipeline_errors, raise_file_errors, write_file_errors

    d = tmp_path / "in"
    d.mkdir()
    path, _, _ = _damaged(d, "truncated_gzip_csv")
    rows = fx.good_rows(N, seed=4)
    with open(fx.write_csv(d / "good.csv", rows), "rb") as f, gzip.open(d / "good.csv.gz", "wb") as g:
        g.write(f.read())
    pattern = str(d / "*.csv.gz")
    cfg = fx.files_config(pattern)
    p = beam.Pipeline(options=pipeline_options(cfg.preprocess.beam))
    read = p | ReadRawRecords(pattern, "csv", cfg, file_errors="output")
    errors_file = str(tmp_path / "file_errors.jsonl")
    _ = write_file_errors(read[FILE_ERRORS], errors_file)
    got, _ = fx.run_and_collect(p, {"records": read["records"]}, tmp_path / "out")
    good = [r for r in got["records"] if r["source"].endswith("good.csv.gz")]
    assert len(good) == N  # the good file is read completely
    with pytest.raises(InputError, match="truncated or corrupt gzip") as e:
        raise_file_errors(errors_file)
    assert path in str(e.value) and "while running" not in str(e.value)

    p = beam.Pipeline(options=pipeline_options(cfg.preprocess.beam))
    _ = p | ReadRawRecords(path, "csv", cfg)
    with pytest.raises(InputError, match="truncated or corrupt gzip") as e:
        with pipeline_errors():
            p.run().wait_until_finish()
    assert str(e.value).startswith(f"input file {path} ") and "while running" not in str(e.value)


def test_pipeline_errors_are_found_in_what_runners_raise():
    """The in-memory DirectRunner re-raises the error with a step annotation; the
    multi-processing one and portable runners raise a RuntimeError with the worker's traceback."""
    from core.errors import DataValidationError
    from pipeline.preprocess.raw_io import pipeline_error_of

    annotated = InputError("input file /x.csv.gz is truncated [while running 'A/ReadFiles'] [while running 'B']")
    assert str(pipeline_error_of(annotated)) == "input file /x.csv.gz is truncated"
    worker = RuntimeError("Traceback (most recent call last):\n  File \"x.py\", line 1, in f\n"
                          "core.errors.DataValidationError: too many [while running 'ReadFiles']\n\n"
                          "During handling of the above exception, another exception occurred:\n")
    found = pipeline_error_of(worker)
    assert isinstance(found, DataValidationError) and str(found) == "too many"
    assert pipeline_error_of(RuntimeError("Traceback ...\nValueError: a bug")) is None


def test_a_csv_header_the_csv_module_rejects_is_an_input_error(tmp_path):
    import csv

    path = tmp_path / "h.csv"
    path.write_text("user_id," + "x" * (csv.field_size_limit() + 1) + "\nu1,2\n")
    cfg = fx.files_config(str(path))
    with pytest.raises(InputError, match=r"h\.csv: the CSV header cannot be parsed"):
        check_inputs(str(path), "csv", cfg, ["user_id"])
