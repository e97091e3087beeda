"""A preprocessing job SIGKILLed mid-way leaves no visible partial output; the re-run (on the
DirectRunner in multi_processing mode with 2 worker processes) accounts for every row once
(issue 7: faults and Beam runners)."""
import glob
import json
import os
import time

import pytest
import tensorflow as tf

from core.config import load_config
from core.run_dir import RunDir
from pipeline.stages import run_stage
from tests.conftest import REPO
from tests.fakes import raw_records as fx
from tests.fakes import procs

ROWS = 3000
SMALL = ["synthetic.rows=3000", "synthetic.chunk_rows=1500", "synthetic.num_users=200", "synthetic.num_items=100",
         "preprocess.num_shards=2"]
BAD = [line for line, _ in fx.bad_lines()]


def _records(pattern: str) -> int:
    return sum(1 for _ in tf.data.TFRecordDataset(sorted(glob.glob(pattern)), compression_type="GZIP"))


@pytest.mark.slow
def test_killed_preprocess_leaves_nothing_visible_and_rerun_counts_every_row_once(tmp_path):
    run_dir = RunDir(str(tmp_path / "run"))
    run_stage("generate", load_config(os.path.join(REPO, "configs", "default.yaml"), SMALL), run_dir, None)
    raw = sorted(glob.glob(os.path.join(run_dir.raw_data_dir, "*.csv")))
    with open(raw[0], "a", encoding="utf-8") as f:  # known bad rows: they must end as dead letters
        f.write("\n".join(BAD) + "\n")

    first = procs.start(procs.cli_args("preprocess", run_dir.root, SMALL + ["preprocess.beam.direct_running_mode=in_memory"]),
                        str(tmp_path / "killed.log"))
    try:
        procs.wait_for_line(first, "input file(s) matching", timeout=180)
        deadline = time.monotonic() + 120
        while not glob.glob(os.path.join(run_dir.root, ".tmp-preprocess-*", "**", "*"), recursive=True):
            assert first.poll() is None, procs.read_log(first)[-3000:]
            assert time.monotonic() < deadline, "the job never started writing"
            time.sleep(0.1)
        time.sleep(1.0)  # inside the pipeline now
        assert first.poll() is None, "the job finished before it could be killed"
    finally:
        procs.kill(first)
    assert not os.path.exists(run_dir.preprocess_dir), "a killed job must not publish preprocess/"
    assert not os.path.exists(run_dir.feature_info_file)
    assert [d for d in os.listdir(run_dir.root) if d.startswith(".tmp-preprocess-")]  # hidden scratch only

    rerun = procs.run_cli(procs.cli_args("preprocess", run_dir.root, SMALL + [
        "preprocess.beam.direct_running_mode=multi_processing", "preprocess.beam.direct_num_workers=2"]), timeout=400)
    assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-3000:]
    stats = json.load(open(run_dir.stats_file))
    assert stats["rows_read"] == ROWS + len(BAD)
    assert stats["valid"] + stats["dead_lettered"] == stats["rows_read"]
    assert stats["dead_lettered"] == len(BAD) and stats["by_reason"] == fx.expected_reason_counts()
    assert sum(stats["rows_per_split"].values()) == stats["valid"]
    assert not [d for d in os.listdir(run_dir.root) if d.startswith(".tmp-preprocess-")]  # the killed scratch is gone
    for split, n in stats["rows_per_split"].items():
        assert _records(run_dir.split_pattern(split)) == n, split
    dead = [json.loads(line) for p in glob.glob(os.path.join(run_dir.dead_letter_dir, "*")) for line in open(p)]
    assert len(dead) == len(BAD)
