"""Census-income (KDD) test file: every one of its 99,762 rows is read and ends up valid or dead-lettered."""
import os

import apache_beam as beam
import pytest

from pipeline.beam_options import pipeline_options
from core.config import load_config
from core.features import raw_columns
from pipeline.preprocess.raw_io import ReadRawRecords, check_inputs
from pipeline.preprocess.validation import ValidateRecords
from tests.conftest import REPO
from tests.fakes import raw_records as fx

CENSUS_ROWS = 99_762


@pytest.mark.slow
@pytest.mark.census
def test_census_rows_are_all_accounted_for(census_path, tmp_path):
    cfg = load_config(os.path.join(REPO, "configs", "census_income.yaml"),
                      [f"data.path={census_path}", "preprocess.beam.direct_running_mode=in_memory"])
    assert len(check_inputs(census_path, "csv", cfg, raw_columns(cfg))) == 1
    p = beam.Pipeline(options=pipeline_options(cfg.preprocess.beam))
    records = p | ReadRawRecords(census_path, "csv", cfg, reshuffle=False)
    checked = records | ValidateRecords(cfg)
    counts = {
        "read": records | "CountRead" >> beam.combiners.Count.Globally(),
        "valid": checked.valid | "CountValid" >> beam.combiners.Count.Globally(),
        "positives": checked.valid | "Positives" >> beam.Map(lambda r: [r["features"]["income"], r["features"]["marital_stat"]])
        | "Sum" >> beam.CombineGlobally(lambda rows: [sum(c) for c in zip(*rows)] if rows else [0, 0]),
        "dead": checked.dead_letters | "Reason" >> beam.Map(lambda d: d["reason"]) | beam.combiners.Count.PerElement(),
    }
    got, _ = fx.run_and_collect(p, counts, tmp_path)
    read, valid = got["read"][0], got["valid"][0]
    dead = sum(n for _, n in got["dead"])
    assert read == CENSUS_ROWS == valid + dead
    assert dead == 0, got["dead"]
    income_pos, never_married = got["positives"][0]
    assert 0.05 < income_pos / valid < 0.08  # ~6.2% earn 50000+ in the test file
    assert 0.35 < never_married / valid < 0.50
