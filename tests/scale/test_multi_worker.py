"""Two worker processes on loopback train together under MultiWorkerMirroredStrategy and
export the same serving format as a single-process run (issue 7: distributed training)."""
import json
import os

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
