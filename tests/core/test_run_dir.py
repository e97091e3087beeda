"""core/run_dir.py: stale outputs of a failed or unfinished stage are refused (``require``,
``check_stage``), and what a kill between the two renames of ``atomic_dir`` leaves is
cleaned up by the next run."""
import os

import pytest

from core.errors import InputError
from core.run_dir import RunDir, Summary, atomic_dir


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


# --- interrupted publishes (a kill between or after atomic_dir's two renames)


def _leftover(parent: str, name: str, suffix: str, text: str) -> str:
    old = os.path.join(parent, f".old-{name}-{suffix}")
    _write(os.path.join(old, "part.txt"), text)
    return old


def test_kill_between_the_renames_previous_output_is_restored_by_the_next_publish(tmp_path):
    final = str(tmp_path / "out")
    old = _leftover(str(tmp_path), "out", "k1ll3d", "previous")  # final renamed away, new one never renamed in
    assert not os.path.exists(final)
    with pytest.raises(RuntimeError):  # the next attempt fails: the previous output is back, nothing lost
        with atomic_dir(final) as tmp:
            _write(os.path.join(tmp, "part.txt"), "half")
            raise RuntimeError("stage failed")
    assert _read(os.path.join(final, "part.txt")) == "previous" and not os.path.exists(old)
    with atomic_dir(final) as tmp:  # and a successful one replaces it
        _write(os.path.join(tmp, "part.txt"), "new")
    assert _read(os.path.join(final, "part.txt")) == "new"
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_kill_after_the_renames_old_copy_is_removed_by_the_next_publish(tmp_path):
    final = str(tmp_path / "out")
    _write(os.path.join(final, "part.txt"), "current")
    _leftover(str(tmp_path), "out", "abc123", "superseded")
    _leftover(str(tmp_path), "out-2", "abc123", "another output's")  # not ours: kept
    with atomic_dir(final) as tmp:
        _write(os.path.join(tmp, "part.txt"), "new")
    assert _read(os.path.join(final, "part.txt")) == "new"
    assert sorted(os.listdir(tmp_path)) == [".old-out-2-abc123", "out"]


def test_recover_publish_keeps_the_newest_copy_when_final_is_missing(tmp_path):
    from core.run_dir import recover_publish

    final = str(tmp_path / "out")
    older = _leftover(str(tmp_path), "out", "aaa", "older")
    newer = _leftover(str(tmp_path), "out", "bbb", "newer")
    os.utime(older, (1, 1))
    assert recover_publish(final) == final
    assert _read(os.path.join(final, "part.txt")) == "newer"
    assert not os.path.exists(older) and not os.path.exists(newer)
    assert recover_publish(final) is None


def test_failed_second_rename_keeps_the_previous_output(tmp_path, monkeypatch):
    final = str(tmp_path / "out")
    _write(os.path.join(final, "part.txt"), "current")
    real = os.replace

    def replace(src, dst):
        if os.path.basename(src).startswith(".tmp-out-"):
            raise OSError(28, "No space left on device", dst)
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError):
        with atomic_dir(final) as tmp:
            _write(os.path.join(tmp, "part.txt"), "new")
    assert _read(os.path.join(final, "part.txt")) == "current"
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_sweep_removes_superseded_copies_anywhere_in_the_run_dir(tmp_path):
    from core.run_dir import remove_publish_leftovers

    rd = RunDir(str(tmp_path / "run"))
    _write(rd.path("teacher", "serving_model", "saved_model.pb"), "x")
    done = _leftover(rd.path("teacher"), "serving_model", "x1", "superseded")  # killed after both renames
    _write(rd.path("data", "raw", "part-00000.csv"), "a")
    raw_done = _leftover(rd.path("data"), "raw", "y2", "superseded")
    between = _leftover(rd.root, "preprocess", "z3", "previous")  # killed between: preprocess/ missing
    removed = remove_publish_leftovers(rd.root)
    assert sorted(removed) == sorted([done, raw_done])
    assert not os.path.exists(done) and not os.path.exists(raw_done)
    assert os.path.isdir(between)  # left for preprocess's own next publish (recover_publish)
