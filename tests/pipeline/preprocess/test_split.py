"""The hash split: deterministic, close to the configured fractions, independent of workers."""
import collections
import hashlib

import apache_beam as beam
import pytest

from pipeline.beam_options import beam_flags, pipeline_options
from core.config import BeamConfig
from core.errors import ConfigError
from pipeline.preprocess.raw_io import ReadRawRecords
from core.splits import SPLITS, assign_split, fingerprint_fraction, split_columns, split_key
from pipeline.preprocess.split import SplitRecords
from pipeline.preprocess.validation import ValidateRecords
from tests.fakes import raw_records as fx


def test_fingerprint_is_sha256_not_python_hash():
    expected = int.from_bytes(hashlib.sha256(b"imp42").digest()[:8], "big") / 2.0**64
    assert fingerprint_fraction("imp42") == expected


def test_fractions_are_respected_on_many_keys():
    counts = collections.Counter(assign_split(f"k{i}", (0.7, 0.2, 0.1)) for i in range(20_000))
    assert abs(counts[0] / 20_000 - 0.7) < 0.015
    assert abs(counts[1] / 20_000 - 0.2) < 0.015
    assert abs(counts[2] / 20_000 - 0.1) < 0.015


def test_zero_fraction_split_gets_nothing():
    assert {assign_split(f"k{i}", (0.9, 0.0, 0.1)) for i in range(2000)} == {0, 2}


def test_empty_keys_use_every_column(default_config):
    assert split_columns(default_config, ["a", "b"]) == ["impression_id"]
    default_config.preprocess.split.keys = []
    assert split_columns(default_config, ["a", "b"]) == ["a", "b"]
    assert split_key({"a": "1", "b": None}, ["a", "b"]) == "1\x1f"


def test_split_rejects_bad_fractions():
    with pytest.raises(ValueError, match="fractions"):
        SplitRecords(["a"], (0.5, 0.1, 0.1))


def test_beam_flags_default_to_one_worker_per_core_and_pass_extra_args():
    flags = beam_flags(BeamConfig(extra_args=["--project=p"]))
    assert "--runner=pipeline.beam_options.InProcessDirectRunner" in flags  # the DirectRunner, without Prism
    assert "--direct_running_mode=multi_processing" in flags
    assert any(f.startswith("--direct_num_workers=") and int(f.split("=")[1]) >= 1 for f in flags)
    assert flags[-1] == "--project=p"
    dataflow = beam_flags(BeamConfig(runner="DataflowRunner", extra_args=["--region=r"]))
    assert dataflow == ["--runner=DataflowRunner", "--region=r"]
    with pytest.raises(ConfigError, match="extra_args"):
        beam_flags(BeamConfig(extra_args=["project=p"]))


def _split_assignment(path, tmp_path, name, *overrides) -> dict:
    cfg = fx.files_config(path, "csv", *overrides)
    p = beam.Pipeline(options=pipeline_options(cfg.preprocess.beam))
    valid = (p | ReadRawRecords(path, "csv", cfg) | ValidateRecords(cfg)).valid
    parts = valid | SplitRecords(split_columns(cfg, []), (0.8, 0.1, 0.1))
    ids = {s: parts[s] | f"Id[{s}]" >> beam.Map(lambda r: r["values"]["impression_id"]) for s in SPLITS}
    collected, _ = fx.run_and_collect(p, ids, tmp_path / name)
    return {s: sorted(v) for s, v in collected.items()}


def test_split_is_identical_across_runs(tmp_path):
    path = fx.write_csv(tmp_path / "logs.csv", fx.good_rows(200, seed=5))
    first = _split_assignment(path, tmp_path, "a")
    second = _split_assignment(path, tmp_path, "b")
    assert first == second
    assert sum(len(v) for v in first.values()) == 200
    assert first["test"] == sorted(f"imp{i}" for i in range(200) if assign_split(f"imp{i}", (0.8, 0.1, 0.1)) == 2)


@pytest.mark.slow
def test_split_is_identical_for_one_and_two_worker_processes(tmp_path):
    path = fx.write_csv(tmp_path / "logs.csv", fx.good_rows(300, seed=6))
    mp = "preprocess.beam.direct_running_mode=multi_processing"
    one = _split_assignment(path, tmp_path, "one", mp, "preprocess.beam.direct_num_workers=1")
    two = _split_assignment(path, tmp_path, "two", mp, "preprocess.beam.direct_num_workers=2")
    assert one == two
    assert sum(len(v) for v in one.values()) == 300


def test_the_direct_runner_name_runs_the_fn_api_runner_and_never_prism(monkeypatch, caplog):
    """Beam's DirectRunner would first try Prism (a download); the project's runs the FnApiRunner,
    logged once per configuration."""
    import logging

    import apache_beam as beam
    from apache_beam.runners.portability import prism_runner
    from apache_beam.testing.util import assert_that, equal_to

    from pipeline import beam_options

    def no_prism(*args, **kwargs):
        raise AssertionError("Prism was tried")

    monkeypatch.setattr(prism_runner.PrismRunner, "run_pipeline", no_prism)
    monkeypatch.setattr(beam_options, "_logged", set())
    cfg = BeamConfig(direct_running_mode="in_memory")
    with caplog.at_level(logging.INFO, logger="pipeline.beam_options"):
        for _ in range(2):
            options = pipeline_options(cfg)
            with beam.Pipeline(options=options) as p:
                assert type(p.runner) is beam_options.InProcessDirectRunner
                assert_that(p | beam.Create([1, 2, 3]) | beam.Map(lambda x: x * 10), equal_to([10, 20, 30]))
    lines = [r.getMessage() for r in caplog.records if r.name == "pipeline.beam_options"]
    assert lines == ["beam: runner DirectRunner runs on the FnApiRunner (in_memory, 1 worker; Prism is not tried)"]
