"""A training process SIGKILLed mid-epoch resumes from BackupAndRestore: the finished
epoch is not run again, no epoch is skipped (issue 7: faults), and the run's metrics.json is
the one an uninterrupted run writes (it lost epoch 1 and the resumed epochs read other data)."""
import json
import os
import re
import time

import numpy as np
import pytest

from models import model_io
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
    straight_dir, _ = make_fake_run(str(tmp_path / "straight"))
    straight = procs.run_cli(procs.cli_args("train", straight_dir.root, OVERRIDES), timeout=240,
                             env={"PYTHONUNBUFFERED": "1"})
    assert straight.returncode == 0, (straight.stdout + straight.stderr)[-3000:]
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
    assert not model_io.has_serving_model(run_dir.model_dir("teacher"))

    resumed = procs.run_cli(args, timeout=240, env={"PYTHONUNBUFFERED": "1"})
    log = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, log[-3000:]
    started = [int(e) for e in re.findall(rf"^Epoch (\d+)/{EPOCHS}$", resumed.stdout, flags=re.M)]
    finished = [int(e) for e in re.findall(rf"teacher epoch (\d+)/{EPOCHS}:", log)]
    assert started == [2, 3], f"resumed run must start at epoch 2 (not redo epoch 1), started {started}"
    assert finished == [2, 3]
    for epoch in (2, 3):  # each resumed epoch counts its own steps (a resume printed twice as many)
        assert _progress_in_epoch(resumed.stdout, epoch) == STEPS, resumed.stdout[-3000:]
    assert f"{2 * STEPS}/" not in resumed.stdout
    metrics = json.load(open(run_dir.path("teacher", "metrics.json")))
    assert len(metrics["history"]["loss"]) == EPOCHS  # epoch 1 from the backup, epochs 2 and 3 each once
    expected = json.load(open(straight_dir.path("teacher", "metrics.json")))
    assert sorted(metrics["history"]) == sorted(expected["history"])
    for key, values in expected["history"].items():  # the uninterrupted run's numbers, every epoch
        np.testing.assert_allclose(metrics["history"][key], values, rtol=0, atol=1e-6, err_msg=key)
    assert (metrics["best_epoch"], metrics["rows"]) == (expected["best_epoch"], expected["rows"])
    assert metrics["rows"] == EPOCHS * STEPS * 16
    assert metrics["best_metrics"] == pytest.approx(expected["best_metrics"], abs=1e-6)
    assert model_io.has_serving_model(run_dir.model_dir("teacher"))
    assert not os.path.exists(run_dir.path("teacher", "backup", "chief"))  # removed after a finished run
