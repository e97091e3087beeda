"""Fuzzing the preprocess stage: seeded mixes of good rows and malformed records of every kind.

Every record must end up valid or dead-lettered with the reason its fault calls for, the
counts must add up (read = valid + dead-lettered, exactly), and nothing may stop the stage:
only whole-file failures do (tested in test_formats.py / test_stage.py). The fast tests run
the stage's own read -> validate -> split -> count transforms (``ReadValidSplits``,
``CountRecords``, ``build_stats``) on the in-memory DirectRunner; the slow one runs the whole
stage through the CLI, as a user would.
"""
import collections
import glob
import json
import os

import apache_beam as beam
import pytest

from core.run_dir import RunDir
from core.records import INVALID_LIST_VALUE, INVALID_LIST_WEIGHT, LIST_TOO_LONG, LIST_WEIGHT_MISMATCH, REASONS
from core.run_dir import read_json
from pipeline.beam_options import pipeline_options
from pipeline.cli import main
from pipeline.preprocess import stats as preprocess_stats
from pipeline.preprocess.job import ReadValidSplits
from pipeline.preprocess.raw_io import FILE_ERRORS, raise_file_errors, write_file_errors
from tests.fakes import raw_records as fx

LIST_REASONS = {INVALID_LIST_VALUE, LIST_TOO_LONG, INVALID_LIST_WEIGHT, LIST_WEIGHT_MISMATCH}

FUZZERS = {"csv": fx.fuzz_csv, "jsonl": fx.fuzz_jsonl}


def _run_checks(path: str, fmt: str, out_dir) -> tuple[dict, list[dict]]:
    """stats (as the stage computes them) and the dead letters of one fuzzed file."""
    cfg = fx.files_config(path, fmt, *fx.fuzz_overrides())
    p = beam.Pipeline(options=pipeline_options(cfg.preprocess.beam))
    data = p | "Read" >> ReadValidSplits(path, fmt, cfg)
    counts = os.path.join(str(out_dir), "counts.jsonl")
    file_errors = os.path.join(str(out_dir), "file_errors.jsonl")
    _ = data | "Count" >> preprocess_stats.CountRecords(counts)
    _ = write_file_errors(data[FILE_ERRORS], file_errors)
    got, _ = fx.run_and_collect(p, {"dead": data["dead_letters"]}, out_dir)
    raise_file_errors(file_errors)  # no whole-file failure here
    stats = preprocess_stats.build_stats(preprocess_stats.read_counts(counts), 1.0, {"pattern": path})
    return stats, got["dead"]


@pytest.mark.parametrize("fmt,seed", [("csv", 0), ("jsonl", 1)])
def test_fuzzed_records_are_each_valid_or_dead_lettered_with_their_reason(tmp_path, fmt, seed):
    path, expected = FUZZERS[fmt](tmp_path / f"fuzz.{fmt}", n_good=250, n_bad=120, seed=seed)
    stats, dead = _run_checks(path, fmt, tmp_path / "out")

    assert stats["rows_read"] == expected["read"] == stats["valid"] + stats["dead_lettered"]
    assert stats["valid"] == expected["valid"]
    assert stats["by_reason"] == expected["by_reason"]
    assert sum(stats["rows_per_split"].values()) == stats["valid"]
    assert set(stats["by_reason"]) <= set(REASONS)
    # every fault kind was injected, and every reason a record can have occurred
    assert len(expected["kinds"]) == len(fx._CSV_FAULTS if fmt == "csv" else fx._JSONL_FAULTS)
    # (the list reasons need list columns, which this schema has not: see test_lists.py)
    kinds = set(REASONS) - LIST_REASONS - ({"wrong_column_count"} if fmt == "jsonl" else set())
    assert set(stats["by_reason"]) == kinds
    # the dead letters themselves: one per bad record, each with its source, position and a detail
    assert collections.Counter(d["reason"] for d in dead) == collections.Counter(expected["by_reason"])
    assert len({(d["source"], d["position"]) for d in dead}) == len(dead)
    for d in dead:
        assert d["source"].endswith(f"fuzz.{fmt}") and d["position"] >= 1 and d["detail"]
    huge = [d for d in dead if "longer than 131072" in d["detail"]]
    assert (len(huge) > 0) == (fmt == "csv" and "huge_field" in expected["kinds"])


@pytest.mark.slow
def test_the_stage_on_a_fuzzed_file_accounts_for_every_record_without_a_traceback(tmp_path, capfd, caplog):
    path, expected = fx.fuzz_csv(tmp_path / "fuzz.csv", n_good=250, n_bad=120, seed=7)
    run_dir = str(tmp_path / "run")
    sets = ["data.source=files", f"data.path={path}", "data.lists=[]", "preprocess.beam.direct_running_mode=in_memory",
            "preprocess.num_shards=1", "preprocess.max_dead_letter_fraction=0.5", *fx.fuzz_overrides()]
    code = main(["preprocess", "--run-dir", run_dir, *[a for s in sets for a in ("--set", s)]])
    err = capfd.readouterr().err

    assert code == 0, err
    assert "Traceback" not in err and "Traceback" not in caplog.text
    stats = read_json(RunDir(run_dir).stats_file)
    assert stats["rows_read"] == expected["read"] == stats["valid"] + stats["dead_lettered"]
    assert stats["valid"] == expected["valid"] and stats["by_reason"] == expected["by_reason"]
    letters = [json.loads(line) for f in glob.glob(os.path.join(RunDir(run_dir).dead_letter_dir, "*.jsonl"))
               for line in open(f, encoding="utf-8") if line.strip()]
    assert collections.Counter(d["reason"] for d in letters) == collections.Counter(expected["by_reason"])
