"""core/run_dir.py: stale outputs of a failed or unfinished stage are refused (``require``,
``check_stage``); publication itself is tested in tests/core/test_fs.py."""
import os

import pytest

from core.errors import InputError
from core.run_dir import RunDir, Summary


def _write(path: str, text: str) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


@pytest.fixture
def run_dir(tmp_path):
    rd = RunDir(str(tmp_path / "run"))
    _write(rd.feature_info_file, "{}")  # an earlier, complete preprocess output
    return rd


def test_require_refuses_the_output_of_a_failed_attempt(run_dir):
    Summary(run_dir).record_stage("preprocess", "ok", 1.0)
    assert run_dir.require(run_dir.feature_info_file, "preprocess") == run_dir.feature_info_file
    Summary(run_dir).record_stage("preprocess", "failed", 2.0,
                                  {"error": "DataValidationError: 9.1% of records dead-lettered"})
    with pytest.raises(InputError) as e:
        run_dir.require(run_dir.feature_info_file, "preprocess")
    msg = str(e.value)
    assert msg.startswith(f"{run_dir.feature_info_file}: the last `preprocess` attempt failed at ")
    assert "DataValidationError: 9.1% of records dead-lettered" in msg
    assert msg.endswith(f"re-run `python -m pipeline preprocess --run-dir {run_dir.root}`")


def test_require_refuses_the_output_of_an_attempt_that_never_finished(run_dir):
    Summary(run_dir).update(lambda d: d["stages"].__setitem__("preprocess", {  # what a SIGKILLed stage leaves
        "status": "running", "started_at": "2024-05-01T10:00:00+0000", "pid": 4242, "host": "worker-1"}))
    with pytest.raises(InputError, match=r"the last `preprocess` attempt \(started at 2024-05-01T10:00:00\+0000 by pid "
                                         r"4242 on worker-1\) did not "
                                         r"finish: it was killed or is still running.*re-run `python -m pipeline "
                                         r"preprocess --run-dir"):
        run_dir.require(run_dir.feature_info_file, "preprocess")
    with pytest.raises(InputError, match="did not finish"):
        run_dir.check_stage("preprocess")


def test_missing_path_after_a_failed_attempt_names_the_failure(tmp_path):
    rd = RunDir(str(tmp_path / "run"))
    Summary(rd).record_stage("train", "failed", 1.0, {"error": "ValueError: boom"})
    with pytest.raises(InputError, match=r"teacher/serving_model not found: the last `train` attempt failed at .*boom"):
        rd.require(rd.path("teacher", "serving_model"), "train")


def test_unrecorded_or_successful_producers_are_accepted(run_dir):
    run_dir.require(run_dir.feature_info_file, "preprocess")  # no summary.json: a hand-built run directory
    Summary(run_dir).record_start("preprocess")
    Summary(run_dir).record_stage("preprocess", "ok", 1.0)
    entry = run_dir.last_attempt("preprocess")
    assert entry["status"] == "ok" and entry["started_at"] and entry["finished_at"]
    run_dir.check_stage("preprocess")
    run_dir.require(run_dir.feature_info_file, "preprocess")
    # A missing path of an unrecorded stage keeps the plain message.
    with pytest.raises(InputError, match=r"not found; run `python -m pipeline train` for this run directory first"):
        run_dir.require(run_dir.path("teacher"), "train")
