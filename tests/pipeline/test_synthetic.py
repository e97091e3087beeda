"""The synthetic click/conversion generator (pipeline/synthetic/generator.py, click_model.py; the generate stage)."""
import glob
import math
import os

import numpy as np
import pandas as pd
import pytest

from pipeline.synthetic import generator as synthetic
from core.config import load_config
from core.errors import ConfigError
from core.run_dir import RunDir, read_json
from pipeline.synthetic.click_model import COLUMNS, World
from tests.conftest import REPO
from pipeline.stages.generate import run as run_generate

SMALL = ["synthetic.num_users=200", "synthetic.num_items=100"]


def _cfg(*overrides):
    return load_config(os.path.join(REPO, "configs", "default.yaml"), [*SMALL, *overrides])


def _write(tmp_path, name, *overrides):
    cfg = _cfg(*overrides)
    out = tmp_path / name
    out.mkdir()
    counts = synthetic.generate(cfg.synthetic, str(out))
    return out, counts


def _read_all(directory, fmt="csv"):
    files = sorted(glob.glob(os.path.join(directory, f"part-*.{fmt}")))
    read = pd.read_csv if fmt == "csv" else pd.read_parquet
    return pd.concat([read(f) for f in files], ignore_index=True), files


def _bytes(directory):
    out = {}
    for path in sorted(glob.glob(os.path.join(directory, "part-*"))):
        with open(path, "rb") as f:
            out[os.path.basename(path)] = f.read()
    return out


def test_same_seed_gives_identical_files_and_another_seed_does_not(tmp_path):
    a, _ = _write(tmp_path, "a", "synthetic.rows=3000", "synthetic.chunk_rows=1000")
    b, _ = _write(tmp_path, "b", "synthetic.rows=3000", "synthetic.chunk_rows=1000")
    c, _ = _write(tmp_path, "c", "synthetic.rows=3000", "synthetic.chunk_rows=1000", "synthetic.seed=8")
    assert list(_bytes(a)) == ["part-00000.csv", "part-00001.csv", "part-00002.csv"]
    assert _bytes(a) == _bytes(b)
    assert all(_bytes(a)[name] != _bytes(c)[name] for name in _bytes(a))


def test_chunked_output_equals_unchunked_output(tmp_path):
    # 7,000-row chunks cut across the generator's 10,000-row blocks.
    chunked, counts = _write(tmp_path, "chunked", "synthetic.rows=25000", "synthetic.chunk_rows=7000")
    whole, _ = _write(tmp_path, "whole", "synthetic.rows=25000", "synthetic.chunk_rows=25000")
    left, files = _read_all(chunked)
    right, whole_files = _read_all(whole)
    assert len(files) == math.ceil(25000 / 7000) == len(counts["files"])
    assert [len(pd.read_csv(f)) for f in files] == [7000, 7000, 7000, 4000]
    assert len(whole_files) == 1
    pd.testing.assert_frame_equal(left, right)


def test_columns_and_value_contract(tmp_path):
    out, counts = _write(tmp_path, "d", "synthetic.rows=4000", "synthetic.chunk_rows=4000")
    df, _ = _read_all(out)
    assert list(df.columns) == COLUMNS
    assert counts["rows"] == len(df) == 4000
    assert df["impression_id"].is_unique
    assert df["user_id"].str.fullmatch(r"u\d+").all() and df["item_id"].str.fullmatch(r"i\d+").all()
    assert df["item_category"].str.fullmatch(r"c\d+").all()
    assert set(df["device"]) <= {"android", "ios", "web", "tablet"}
    assert df["hour"].between(0, 23).all() and df["hour"].dtype == np.int64
    assert (df["price"] > 0).all()
    assert df[["p_click", "p_conversion"]].apply(lambda c: c.between(0, 1).all()).all()
    assert (df["p_conversion"] <= df["p_click"]).all()
    assert set(df["click"]) <= {0, 1} and set(df["conversion"]) <= {0, 1}


def test_no_conversion_without_a_click(tmp_path):
    out, _ = _write(tmp_path, "f", "synthetic.rows=20000", "synthetic.chunk_rows=20000")
    df, _ = _read_all(out)
    assert df["conversion"].sum() > 0
    assert not ((df["conversion"] == 1) & (df["click"] == 0)).any()


def test_label_rates_match_the_oracle_probabilities_and_defaults():
    # Default user/item counts and rates, 50,000 rows: the shipped data's actual rates.
    cfg = load_config(os.path.join(REPO, "configs", "default.yaml"), ["synthetic.rows=50000", "synthetic.chunk_rows=50000"])
    (df,) = list(synthetic.iter_chunks(cfg.synthetic))
    for label, prob in (("click", "p_click"), ("conversion", "p_conversion")):
        p = df[prob].to_numpy()
        tolerance = 4 * math.sqrt((p * (1 - p)).sum()) / len(p)  # 4 binomial standard deviations
        assert abs(df[label].mean() - p.mean()) < tolerance, label
    assert 0.01 <= df["conversion"].mean() <= 0.03
    assert 0.05 <= df["click"].mean() <= 0.10
    # The calibrated biases hit the configured targets on the true probabilities.
    assert df["p_click"].mean() == pytest.approx(cfg.synthetic.click_rate, rel=0.05)
    assert df["p_conversion"].mean() == pytest.approx(cfg.synthetic.conversion_rate, rel=0.05)


def _logit(p):
    return np.log(p) - np.log1p(-p)


def test_task_correlation_knob_moves_how_related_the_tasks_are():
    def corr(rho):
        s = _cfg(f"synthetic.task_correlation={rho}").synthetic
        cols = World.create(s).impressions(0)
        p_cvr = cols["p_conversion"] / cols["p_click"]
        return np.corrcoef(_logit(cols["p_click"]), _logit(p_cvr))[0, 1]

    low, high = corr(0.0), corr(1.0)
    assert high > low + 0.3, (low, high)


def test_parquet_output_is_readable(tmp_path):
    out, _ = _write(tmp_path, "p", "synthetic.rows=2500", "synthetic.chunk_rows=1000", "synthetic.format=parquet")
    df, files = _read_all(out, "parquet")
    assert len(files) == 3 and len(df) == 2500
    assert list(df.columns) == COLUMNS
    csv_out, _ = _write(tmp_path, "c", "synthetic.rows=2500", "synthetic.chunk_rows=1000")
    csv_df, _ = _read_all(csv_out)
    pd.testing.assert_series_equal(df["impression_id"], csv_df["impression_id"])
    pd.testing.assert_series_equal(df["click"], csv_df["click"])


def test_stage_writes_marker_plot_report_and_then_resumes(tmp_path):
    cfg = _cfg("synthetic.rows=3000", "synthetic.chunk_rows=1000")
    run_dir = RunDir(str(tmp_path / "run"))
    first = run_generate(cfg, run_dir, None)
    assert first.rows == 3000 and not first.extra["skipped"]
    assert set(first.metrics) == {"click_rate", "conversion_rate", "conversion_given_click"}
    assert 0 < first.metrics["conversion_rate"] < first.metrics["click_rate"] < 1
    assert first.plots == ["plots/synthetic_probabilities.png"]
    assert os.path.getsize(os.path.join(run_dir.root, first.plots[0])) > 1000
    marker = read_json(os.path.join(run_dir.raw_data_dir, synthetic.SUCCESS_FILE))
    assert marker["rows"] == 3000 and marker["synthetic"]["rows"] == 3000
    assert "click rate" in first.report
    pattern, fmt = run_dir.raw_input(cfg)
    assert fmt == "csv" and len(glob.glob(pattern)) == 3

    mtime = os.path.getmtime(os.path.join(run_dir.raw_data_dir, "part-00000.csv"))
    again = run_generate(cfg, run_dir, None)
    assert again.extra["skipped"] and again.rows == 3000 and again.metrics == first.metrics
    assert os.path.getmtime(os.path.join(run_dir.raw_data_dir, "part-00000.csv")) == mtime

    changed = run_generate(_cfg("synthetic.rows=2000", "synthetic.chunk_rows=1000"), run_dir, None)
    assert not changed.extra["skipped"] and changed.rows == 2000
    assert len(glob.glob(pattern)) == 2  # the old 3-file output was replaced, not mixed in


def test_a_failed_generation_leaves_the_previous_output_untouched(tmp_path, monkeypatch):
    cfg = _cfg("synthetic.rows=2000", "synthetic.chunk_rows=1000")
    run_dir = RunDir(str(tmp_path / "run"))
    run_generate(cfg, run_dir, None)
    before = _bytes(run_dir.raw_data_dir)
    calls = []

    def failing_write(frame, directory, index, fmt):
        calls.append(index)
        if index == 1:
            raise OSError("disk full")
        return real_write(frame, directory, index, fmt)

    real_write = synthetic.write_part
    monkeypatch.setattr(synthetic, "write_part", failing_write)
    with pytest.raises(OSError, match="disk full"):
        run_generate(_cfg("synthetic.rows=2000", "synthetic.chunk_rows=1000", "synthetic.seed=9"), run_dir, None)
    assert calls == [0, 1]
    assert _bytes(run_dir.raw_data_dir) == before
    assert not [d for d in os.listdir(os.path.dirname(run_dir.raw_data_dir)) if d.startswith(".tmp")]


def test_stage_refuses_file_sources(tmp_path):
    cfg = _cfg("data.source=files", "data.path=/nowhere/x.csv")
    with pytest.raises(ConfigError, match="generate: data.source is 'files'"):
        run_generate(cfg, RunDir(str(tmp_path / "run")), None)
