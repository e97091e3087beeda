"""A preprocessing job SIGKILLed mid-way leaves no visible partial output; the re-run (on the
DirectRunner in multi_processing mode with 2 worker processes) accounts for every row once
(issue 7: faults and Beam runners)."""
import glob
import json
import os
import time

import pytest
import tensorflow as tf

from core import fs
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
    raw = sorted(glob.glob(os.path.join(run_dir.raw_data_output, "*.csv")))
    with open(raw[0], "a", encoding="utf-8") as f:  # known bad rows: they must end as dead letters
        f.write("\n".join(BAD) + "\n")

    first = procs.start(procs.cli_args("preprocess", run_dir.root, SMALL + ["preprocess.beam.direct_running_mode=in_memory"]),
                        str(tmp_path / "killed.log"))
    try:
        procs.wait_for_line(first, "input file(s) matching", timeout=180)
        deadline = time.monotonic() + 120
        while not glob.glob(os.path.join(run_dir.preprocess_dir, fs.ATTEMPT_PREFIX + "*", "**", "*"), recursive=True):
            assert first.poll() is None, procs.read_log(first)[-3000:]
            assert time.monotonic() < deadline, "the job never started writing"
            time.sleep(0.1)
        time.sleep(1.0)  # inside the pipeline now
        assert first.poll() is None, "the job finished before it could be killed"
    finally:
        procs.kill(first)
    assert not fs.is_published(run_dir.preprocess_dir), "a killed job must not publish preprocess/"
    assert not os.path.exists(run_dir.feature_info_file)
    killed = [d for d in os.listdir(run_dir.preprocess_dir) if d.startswith(fs.ATTEMPT_PREFIX)]
    assert killed and os.listdir(run_dir.preprocess_dir) == killed  # an uncommitted attempt only, no marker

    rerun = procs.run_cli(procs.cli_args("preprocess", run_dir.root, SMALL + [
        "preprocess.beam.direct_running_mode=multi_processing", "preprocess.beam.direct_num_workers=2"]), timeout=400)
    assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-3000:]
    stats = json.load(open(run_dir.stats_file))
    assert stats["rows_read"] == ROWS + len(BAD)
    assert stats["valid"] + stats["dead_lettered"] == stats["rows_read"]
    assert stats["dead_lettered"] == len(BAD) and stats["by_reason"] == fx.expected_reason_counts()
    assert sum(stats["rows_per_split"].values()) == stats["valid"]
    assert not set(killed) & set(os.listdir(run_dir.preprocess_dir))  # the killed attempt is gone
    for split, n in stats["rows_per_split"].items():
        assert _records(run_dir.split_pattern(split)) == n, split
    dead = [json.loads(line) for p in glob.glob(os.path.join(run_dir.dead_letter_dir, "*")) for line in open(p)]
    assert len(dead) == len(BAD)


# --- a failed or killed preprocess: its old output is refused by every later stage

TRAIN_TINY = ["model.embedding_dim=4", "model.bottom_units=[16]", "model.tower_units=[8]", "training.epochs=1",
              "training.steps_per_epoch=2", "training.batch_size=64", "training.verbose=0"]


def _cli(capsys, argv):
    """(exit code, the one `error:` line) of an in-process CLI run that failed with a usage/input error."""
    from pipeline.cli import main

    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return code, lines[0]


@pytest.mark.parametrize("attempt", ["failed", "killed"])
def test_later_stages_refuse_the_output_left_by_a_failed_or_killed_preprocess(tmp_path, capsys, attempt):
    from core.run_dir import Summary
    from tests.fakes.transformed_run import make_fake_run

    run_dir, _ = make_fake_run(str(tmp_path / "run"))  # a complete, earlier preprocess output
    summary = Summary(run_dir)
    summary.update(lambda d: d["stages"].__setitem__("preprocess", {  # what a stage that is killed leaves
        "status": "running", "started_at": "2024-05-01T10:00:00+0000", "pid": 4242, "host": "h"}))
    if attempt == "failed":  # e.g. above the dead-letter threshold: preprocess/ is the previous output
        summary.record_stage("preprocess", "failed", 3.0, {"error": "DataValidationError: 12.5% of the records "
                                                                    "were dead-lettered (max 1%)"})
    for stage in ("train", "evaluate", "export", "distill"):
        code, line = _cli(capsys, [stage, "--run-dir", run_dir.root] + [a for o in TRAIN_TINY for a in ("--set", o)])
        assert code == 2, line
        assert line.startswith(f"error: {stage}: cannot use {run_dir.preprocess_dir}: the last `preprocess` attempt ")
        if attempt == "failed":
            assert "failed at " in line and "12.5% of the records were dead-lettered" in line
        else:
            assert "did not finish: it was killed or is still running" in line
        assert line.endswith(f"re-run `python -m pipeline preprocess --run-dir {run_dir.root}`, then `{stage}`")
        assert stage not in summary.load()["stages"]  # a refused stage records nothing and touches nothing
    assert not os.path.exists(run_dir.model_dir("teacher"))


def test_a_stage_marks_its_outputs_running_until_it_ends(tmp_path, monkeypatch):
    """What a SIGKILL leaves: the entry written when the stage started."""
    from core.run_dir import Summary
    from pipeline.synthetic import generator

    run_dir = RunDir(str(tmp_path / "run"))
    seen = {}
    real = generator.generate

    def generate(s, out_dir):
        seen["during"] = dict(Summary(run_dir).load()["stages"].get("generate") or {})
        return real(s, out_dir)

    monkeypatch.setattr(generator, "generate", generate)  # the stage imports it when it runs
    cfg = load_config(os.path.join(REPO, "configs", "default.yaml"), SMALL)
    run_stage("generate", cfg, run_dir, None)
    assert seen["during"].get("status") == "running" and seen["during"]["pid"] == os.getpid()
    after = Summary(run_dir).load()["stages"]["generate"]
    assert after["status"] == "ok" and after["started_at"] == seen["during"]["started_at"]


@pytest.mark.slow
def test_preprocess_above_the_dead_letter_threshold_makes_train_refuse_its_old_output(tmp_path, capsys):
    from pipeline.cli import main
    from pipeline.stages.base import check_inputs

    run_dir = RunDir(str(tmp_path / "run"))
    small = SMALL + ["preprocess.beam.direct_running_mode=in_memory"]
    assert main(["generate", "--run-dir", run_dir.root, *[a for o in small for a in ("--set", o)]]) == 0
    assert main(["preprocess", "--run-dir", run_dir.root]) == 0  # the run's recorded config
    good_stats = json.load(open(run_dir.stats_file))
    raw = sorted(glob.glob(os.path.join(run_dir.raw_data_output, "*.csv")))
    with open(raw[0], "a", encoding="utf-8") as f:  # ~0.3% bad rows
        f.write("\n".join(BAD) + "\n")
    capsys.readouterr()

    code, line = _cli(capsys, ["preprocess", "--run-dir", run_dir.root, "--set", "preprocess.max_dead_letter_fraction=0.001"])
    assert code == 3 and "dead" in line, line  # DataValidationError
    assert json.load(open(run_dir.stats_file)) == good_stats  # the previous output is still there ...
    code, line = _cli(capsys, ["train", "--run-dir", run_dir.root])
    assert code == 2 and "the last `preprocess` attempt failed at " in line, line  # ... and refused
    assert "DataValidationError" in line
    assert line.endswith(f"re-run `python -m pipeline preprocess --run-dir {run_dir.root}`, then `train`")

    assert main(["preprocess", "--run-dir", run_dir.root, "--set", "preprocess.max_dead_letter_fraction=0.5"]) == 0
    check_inputs("train", load_config(run_dir.config_file), run_dir, None)  # accepted again
    assert json.load(open(run_dir.stats_file))["dead_lettered"] == len(BAD)
