"""Which process writes in multi-worker training (models/multi_worker.py)."""
import json
import os

import pytest

from models import multi_worker
from core.errors import ConfigError

CLUSTER = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}


def _tf_config(monkeypatch, kind, index, cluster=CLUSTER):
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": kind, "index": index}}))


def test_single_process_is_the_chief_and_writes_in_place(monkeypatch, tmp_path):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert multi_worker.is_chief() and multi_worker.task() == (None, 0)
    with multi_worker.write_dir(str(tmp_path / "final")) as d:
        assert d == str(tmp_path / "final")


@pytest.mark.parametrize("kind,index,cluster,chief", [
    ("worker", 0, CLUSTER, True),
    ("worker", 1, CLUSTER, False),
    ("worker", 0, {**CLUSTER, "chief": ["127.0.0.1:3"]}, False),  # an explicit chief task takes the role
    ("chief", 0, {**CLUSTER, "chief": ["127.0.0.1:3"]}, True),
])
def test_chief_is_worker_zero_unless_the_cluster_names_one(monkeypatch, kind, index, cluster, chief):
    _tf_config(monkeypatch, kind, index, cluster)
    assert multi_worker.is_chief() is chief
    assert multi_worker.task() == (kind, index)


def test_other_workers_write_to_a_temp_dir_that_is_removed(monkeypatch, tmp_path):
    _tf_config(monkeypatch, "worker", 1)
    final = str(tmp_path / "final")
    with multi_worker.write_dir(final) as d:
        assert d != final and os.path.isdir(d)
        open(os.path.join(d, "saved_model.pb"), "w").close()
    assert not os.path.exists(d) and not os.path.exists(final)


def test_malformed_tf_config_is_a_config_error(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ConfigError, match="TF_CONFIG"):
        multi_worker.is_chief()
