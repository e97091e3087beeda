"""A training process SIGKILLed mid-epoch resumes from BackupAndRestore: the finished
epoch is not run again and no epoch is skipped (issue 7: faults)."""
import json
import os
import re
import time

import pytest

from tests.fakes.transformed_run import TINY, make_fake_run
from tests.fakes import procs

EPOCHS = 3
STEPS = 150
OVERRIDES = TINY + [f"training.epochs={EPOCHS}", f"training.steps_per_epoch={STEPS}", "training.batch_size=16",
                    "training.early_stopping_patience=5", "training.verbose=1"]


def _progress_in_epoch(log: str, epoch: int) -> int:
    """The last batch count Keras' progress bar logged for ``epoch`` (1-based), 0 if none."""
    marker = f"Epoch {epoch}/{EPOCHS}"
    if marker not in log:
        return 0
    tail = log.split(marker, 1)[1]
    counts = [int(n) for n in re.findall(rf"^\s*(\d+)/{STEPS} \[", tail, flags=re.M)]
    return counts[-1] if counts else 0


@pytest.mark.slow
def test_sigkilled_training_resumes_at_the_interrupted_epoch(tmp_path):
    run_dir, _ = make_fake_run(str(tmp_path / "run"))
    args = procs.cli_args("train", run_dir.root, OVERRIDES)
    first = procs.start(args, str(tmp_path / "first.log"), env={"PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 180
        while _progress_in_epoch(procs.read_log(first), 2) < 5:
            assert first.poll() is None, procs.read_log(first)[-3000:]
            assert time.monotonic() < deadline, "epoch 2 never started:\n" + procs.read_log(first)[-3000:]
            time.sleep(0.05)
    finally:
        procs.kill(first)  # SIGKILL: no callback, no cleanup runs
    killed_log = procs.read_log(first)
    done_batches = _progress_in_epoch(killed_log, 2)
    assert 5 <= done_batches < STEPS, f"the kill must land inside epoch 2 (at batch {done_batches})"
    assert "teacher epoch 1/3" in killed_log and "teacher epoch 2/3" not in killed_log
    assert os.listdir(run_dir.path("teacher", "backup")), "BackupAndRestore wrote nothing after epoch 1"
    assert not os.path.exists(run_dir.path("teacher", "serving_model"))

    resumed = procs.run_cli(args, timeout=240, env={"PYTHONUNBUFFERED": "1"})
    log = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, log[-3000:]
    started = [int(e) for e in re.findall(rf"^Epoch (\d+)/{EPOCHS}$", resumed.stdout, flags=re.M)]
    finished = [int(e) for e in re.findall(rf"teacher epoch (\d+)/{EPOCHS}:", log)]
    assert started == [2, 3], f"resumed run must start at epoch 2 (not redo epoch 1), started {started}"
    assert finished == [2, 3]
    metrics = json.load(open(run_dir.path("teacher", "metrics.json")))
    assert len(metrics["history"]["loss"]) == 2  # epochs 2 and 3, each once
    assert os.path.isdir(run_dir.path("teacher", "serving_model"))
    assert not os.path.exists(run_dir.path("teacher", "backup", "chief"))  # removed after a finished run
