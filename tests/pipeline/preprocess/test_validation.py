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
              "tasks": [{"name": "income", "label": "income", "positive_values": ["50000+."],
                         "negative_values": ["- 50000."]},
                        {"name": "marital", "label": "marital_stat", "positive_values": ["Never married"],
                         "negative_values": "any"}]})


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
    from core.features import raw_feature_columns
    assert set(typed) == set(raw_feature_columns(tiny_config))  # categorical, numeric and list columns
    assert typed["hist_items"] == [] and typed["item_tags"] == []  # absent lists are empty


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


def test_a_label_in_neither_positive_nor_negative_values_is_not_allowed():
    schema = RecordSchema(_census_like_config())
    with pytest.raises(InvalidRecord, match=r"label 'income': '50000\+' is in neither") as e:
        schema.typed({"sex": "F", "age": "40", "income": "50000+", "marital_stat": "Widowed"})
    assert e.value.reason == "label_not_allowed" and "50000+." in e.value.detail
    # negative_values: any: every other marital status is a negative
    assert schema.typed({"sex": "F", "age": "40", "income": "- 50000.", "marital_stat": "Widowed"})["marital_stat"] == 0.0


@pytest.mark.parametrize("raw", ["1e308", "-1e39", "3.5e38"])
def test_a_number_beyond_float32_is_not_finite(raw):
    """Finite as a Python float, but inf in the float32 training data."""
    with pytest.raises(InvalidRecord, match=r"'age'.*not finite as float32") as e:
        RecordSchema(_census_like_config()).typed({"sex": "F", "age": raw, "income": "- 50000.", "marital_stat": "x"})
    assert e.value.reason == "non_finite_value"


def test_float32_limits_pass():
    schema = RecordSchema(_census_like_config())
    for raw in ("3.4028234e38", "-3.4028235e38", "1e-50"):
        assert schema.typed({"sex": "F", "age": raw, "income": "- 50000.", "marital_stat": "x"})["age"] == float(raw)


def test_csv_lines_the_csv_module_rejects_are_dead_letters_and_reading_goes_on():
    """A field over csv.field_size_limit() and a bare CR used to raise _csv.Error out of the reader."""
    import csv

    huge = "x" * (csv.field_size_limit() + 1)
    text = ("a,b,c\n1,2,3\n" + f"4,{huge},6\n" + "7,8,9\n" + "1,x\ry,3\n" + "2,3,4\n"
            + "5,\x00,6\n" + "6,7,8\n")
    recs = list(raw_formats.read_csv(io.BytesIO(text.encode()), "f.csv", CsvConfig()))
    assert [r["position"] for r in recs] == [2, 3, 4, 5, 6, 7, 8]
    assert [r.get("error", (None,))[0] for r in recs] == [
        None, "unparsable_record", None, "unparsable_record", None, "invalid_encoding", None]
    assert "longer than 131072 characters" in recs[1]["error"][1] and recs[1]["raw"] == f"4,{huge},6"
    assert "carriage return" in recs[3]["error"][1] and recs[3]["raw"] == "1,x\ry,3"
    assert "NUL byte" in recs[5]["error"][1]
    assert [recs[i]["values"]["a"] for i in (0, 2, 4, 6)] == ["1", "7", "2", "6"]


def test_jsonl_nul_bytes_and_control_characters_are_dead_letters():
    text = b'{"a": 1}\n{"a": "x\x00"}\n{"a": "x\ry"}\n{"a": 2}\n'
    recs = list(raw_formats.read_jsonl(io.BytesIO(text), "f.jsonl"))
    assert [r.get("error", (None,))[0] for r in recs] == [None, "invalid_encoding", "unparsable_record", None]
