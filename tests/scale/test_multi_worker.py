"""Two worker processes on loopback train together under MultiWorkerMirroredStrategy and
export the same serving format as a single-process run (issue 7: distributed training)."""
import json
import os
import re
import time

import pytest
import tensorflow as tf

from models import model_io
from core.config import load_config
from pipeline.stages.train import run as run_train
from tests.fakes.transformed_run import REPO, TINY, make_fake_run
from tests.fakes import procs

STEPS = ["training.steps_per_epoch=3", "training.epochs=2", "training.early_stopping_patience=5"]


def _signature(path: str) -> dict:
    """Input and output names, dtypes and shapes of a SavedModel's serving_default signature."""
    sig = tf.saved_model.load(path).signatures["serving_default"]
    _, inputs = sig.structured_input_signature
    spec = lambda s: (s.dtype.name, s.shape.as_list())  # noqa: E731
    return {"inputs": {k: spec(v) for k, v in inputs.items()},
            "outputs": {k: spec(v) for k, v in sig.structured_outputs.items()}}


@pytest.mark.slow
def test_two_workers_on_loopback_train_and_export_like_one_process(tmp_path):
    run_dir, info = make_fake_run(str(tmp_path / "run"))
    cluster = {"worker": [f"127.0.0.1:{procs.free_port()}" for _ in range(2)]}
    overrides = TINY + STEPS + ["training.distribute.strategy=multi_worker"]
    workers = []
    try:
        for i in range(2):
            tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
            workers.append(procs.start(procs.cli_args("train", run_dir.root, overrides),
                                       str(tmp_path / f"worker{i}.log"), env={"TF_CONFIG": tf_config}))
        # Meanwhile (the workers spend their first seconds importing), the single-process reference.
        single_dir, _ = make_fake_run(str(tmp_path / "single"))
        cfg = load_config(os.path.join(REPO, "configs", "default.yaml"), TINY + STEPS)
        run_train(cfg, single_dir, None)
        codes = procs.wait_all(workers, timeout=240)
    finally:
        for w in workers:
            procs.kill(w)
    logs = [procs.read_log(w) for w in workers]
    assert codes == [0, 0], "\n\n".join(log[-3000:] for log in logs)
    for log in logs:  # both workers ran both epochs, in step
        assert "teacher epoch 1/2" in log and "teacher epoch 2/2" in log
    assert "worker 1 done; the chief wrote the artifacts" in logs[1]

    teacher = run_dir.model_dir("teacher")
    assert {"saved_model.pb", "variables"} <= set(os.listdir(model_io.serving_model_dir(teacher)))
    assert not [d for d in os.listdir(teacher) if d.startswith(("worker", ".tmp"))], os.listdir(teacher)
    assert len(os.listdir(os.path.join(teacher, "logs", "train"))) == 1  # the chief's TensorBoard events only
    metrics = json.load(open(os.path.join(teacher, "metrics.json")))
    assert len(metrics["history"]["loss"]) == 2
    # Epoch metrics are read across both workers, not summed over them (an AUC of 1.06 was logged that way).
    aucs = {k: v for k, v in metrics["history"].items() if "auc" in k}
    assert {"click_auc", "val_click_auc", "val_conversion_auc"} <= set(aucs)
    assert all(0.0 <= a <= 1.0 for values in aucs.values() for a in values), aucs
    train_entry = json.load(open(run_dir.summary_file))["stages"]["train"]
    assert train_entry["status"] == "ok" and "best_epoch" in train_entry["metrics"]  # the chief's, not worker 1's
    assert json.load(open(os.path.join(teacher, "model_config.json")))["feature_info"] == info.to_dict()

    distributed = _signature(model_io.serving_model_dir(teacher))
    single = _signature(model_io.serving_model_dir(single_dir.path("teacher")))
    assert distributed == single
    assert set(distributed["inputs"]) == set(info.model_inputs)
    assert {"click_probability", "click_logit", "conversion_probability", "conversion_logit"} <= set(distributed["outputs"])


@pytest.mark.slow
def test_two_workers_killed_mid_epoch_resume_from_the_chiefs_backup(tmp_path):
    """Both workers SIGKILLed in epoch 2 (a dead worker stalls the other's collectives, so a
    cluster restarts as a whole, as on Vertex AI or a Kubernetes Job); restarted, they resume
    at epoch 2 from the chief's BackupAndRestore state, written through core.fs, and the
    summary records the chief's attempt only."""
    from core import fs

    run_dir, _ = make_fake_run(str(tmp_path / "run"))
    epochs = ["training.steps_per_epoch=120", "training.epochs=3", "training.early_stopping_patience=5",
              "training.batch_size=16"]
    overrides = TINY + epochs + ["training.distribute.strategy=multi_worker"]

    def start_cluster(tag):
        cluster = {"worker": [f"127.0.0.1:{procs.free_port()}" for _ in range(2)]}
        return [procs.start(procs.cli_args("train", run_dir.root, overrides), str(tmp_path / f"{tag}{i}.log"),
                            env={"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}),
                                 "PYTHONUNBUFFERED": "1"})
                for i in range(2)]

    first = start_cluster("first")
    try:
        deadline = time.monotonic() + 240
        backup = fs.join(run_dir.model_dir("teacher"), "backup", "chief")
        while "checkpoint" not in fs.walk_files(backup):  # epoch 1 backed up (the last callback of its end)
            assert all(w.poll() is None for w in first), procs.read_log(first[0])[-3000:]
            assert time.monotonic() < deadline, "epoch 1 was never backed up:\n" + procs.read_log(first[0])[-3000:]
            time.sleep(0.05)
    finally:
        for w in first:
            procs.kill(w)
    killed = procs.read_log(first[0])
    assert "teacher epoch 1/3" in killed and "teacher epoch 2/3" not in killed, "the kill must land inside epoch 2"
    assert fs.walk_files(fs.join(run_dir.model_dir("teacher"), "backup", "chief")), "no backup after epoch 1"
    assert fs.read_json(run_dir.summary_file)["stages"]["train"]["status"] == "running"

    second = start_cluster("second")
    try:
        codes = procs.wait_all(second, timeout=300)
    finally:
        for w in second:
            procs.kill(w)
    logs = [procs.read_log(w) for w in second]
    assert codes == [0, 0], "\n\n".join(log[-3000:] for log in logs)
    for log in logs:
        finished = [int(e) for e in re.findall(r"teacher epoch (\d+)/3:", log)]
        assert finished == [2, 3], f"resumed workers must run epochs 2 and 3 only, ran {finished}"
    metrics = fs.read_json(fs.join(run_dir.model_dir("teacher"), "metrics.json"))
    assert len(metrics["history"]["loss"]) == 3  # epoch 1 from the backup
    assert model_io.has_serving_model(run_dir.model_dir("teacher"))
    entry = fs.read_json(run_dir.summary_file)["stages"]["train"]
    assert entry["status"] == "ok"
