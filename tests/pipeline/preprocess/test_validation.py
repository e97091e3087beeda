"""Validation and dead letters: every kind of bad record gets exactly its reason, counters agree."""
import collections
import io

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter

from core import raw_formats
from pipeline.beam_options import pipeline_options
from core.config import CsvConfig
from core.features import MISSING_CATEGORY
from pipeline.preprocess.raw_io import ReadRawRecords
from core.records import InvalidRecord, RecordSchema
from pipeline.preprocess.validation import ValidateRecords
from tests.conftest import make_config
from tests.fakes import raw_records as fx


def _census_like_config():
    return make_config(
        data={"source": "files", "path": "x.csv", "categorical": ["sex"], "numeric": ["age"],
              "tasks": [{"name": "income", "label": "income", "positive_values": ["50000+."]},
                        {"name": "marital", "label": "marital_stat", "positive_values": ["Never married"]}]})


def test_positive_values_label_is_one_iff_stripped_value_listed():
    schema = RecordSchema(_census_like_config())
    typed = schema.typed({"sex": None, "age": "38", "income": " 50000+. ", "marital_stat": "Married"})
    assert typed == {"sex": MISSING_CATEGORY, "age": 38.0, "income": 1.0, "marital_stat": 0.0}
    assert schema.typed({"sex": "F", "age": "2", "income": "- 50000.", "marital_stat": "Never married"})["income"] == 0.0


def test_missing_numeric_names_the_field():
    with pytest.raises(InvalidRecord, match="'age' is missing") as e:
        RecordSchema(_census_like_config()).typed({"sex": "F", "income": "x", "marital_stat": "y"})
    assert e.value.reason == "missing_value"


def test_unlabelled_schema_checks_features_only(tiny_config):
    schema = RecordSchema(tiny_config, require_labels=False)
    row = fx.good_rows(1)[0]
    del row["click"], row["conversion"]
    typed = schema.typed(row)
    assert set(typed) == set(tiny_config.data.categorical + tiny_config.data.numeric)


def test_csv_reader_handles_quoting_missing_values_and_line_numbers():
    text = 'a,b,c\n1,"x, y",?\n\n2,"multi\nline",z\n3,only-two\n'
    cfg = CsvConfig(missing_values=["?", ""])
    recs = list(raw_formats.read_csv(io.BytesIO(text.encode()), "f.csv", cfg))
    assert [r["position"] for r in recs] == [2, 4, 6]
    assert recs[0]["values"] == {"a": "1", "b": "x, y", "c": None}
    assert recs[1]["values"]["b"] == "multi\nline"
    assert recs[2]["error"] == ("wrong_column_count", "expected 3 columns, got 2")
    assert recs[2]["raw"] == "3,only-two"


def test_csv_reader_uses_configured_names_without_header():
    cfg = CsvConfig(header=False, column_names=["a", "b"], delimiter=";")
    recs = list(raw_formats.read_csv(io.BytesIO(b"1; x\n"), "f.csv", cfg))
    assert recs[0]["values"] == {"a": "1", "b": "x"} and recs[0]["position"] == 1


def test_every_bad_record_is_dead_lettered_with_its_reason(tmp_path):
    good = fx.good_rows(40)
    good[5]["device"] = ""  # a missing categorical is valid
    path = fx.write_csv(tmp_path / "logs.csv", good, [line for line, _ in fx.bad_lines()])
    cfg = fx.files_config(path)
    p = beam.Pipeline(options=pipeline_options(cfg.preprocess.beam))
    checked = p | ReadRawRecords(path, "csv", cfg) | ValidateRecords(cfg)
    seen, result = fx.run_and_collect(p, {"dead": checked.dead_letters, "valid": checked.valid}, tmp_path / "out")

    assert collections.Counter(d["reason"] for d in seen["dead"]) == fx.expected_reason_counts()
    assert len(seen["valid"]) == 40
    lines = open(path, encoding="utf-8").read().splitlines()
    for d in seen["dead"]:
        assert d["source"].endswith("logs.csv")
        assert lines[d["position"] - 1] == d["record"]  # position is the 1-based line number
        assert d["detail"]
    by_id = {r["values"]["impression_id"]: r for r in seen["valid"]}
    assert by_id["imp5"]["features"]["device"] == MISSING_CATEGORY
    price = next(d for d in seen["dead"] if "price" in d["detail"] and d["reason"] == "unparsable_value")
    assert "'abc'" in price["detail"]

    counters = {c.key.metric.name: c.committed for c in
                result.metrics().query(MetricsFilter().with_namespace("preprocess"))["counters"]}
    assert counters["records_read"] == 40 + len(fx.bad_lines())
    assert counters["records_valid"] == 40
    for reason, n in fx.expected_reason_counts().items():
        assert counters[f"dead_letter_{reason}"] == n
