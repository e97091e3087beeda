"""serving/versions.py on a filesystem without a directory rename (TF's ``ram://``): a version
is copied in with saved_model.pb last, only complete versions are listed, and the server
loads and serves it from there."""
import uuid

import pytest

from core import fs
from serving import versions
from serving.model_store import ModelStore
from tests.fakes.serving_models import publish_tiny, tiny_example


@pytest.fixture
def ram_base():
    return f"ram://versions-{uuid.uuid4().hex[:8]}/serving_models"


def test_publish_without_rename_copies_saved_model_pb_last(ram_base, monkeypatch):
    copied = []
    real = fs.copy_file
    monkeypatch.setattr(fs, "copy_file", lambda src, dst: (copied.append(fs.basename(dst)), real(src, dst)))
    final = publish_tiny(ram_base, 1, 1.0)
    model_dir = fs.join(ram_base, "tiny")
    assert final == fs.join(model_dir, "1") and copied[-1] == "saved_model.pb" and len(copied) > 2
    assert fs.listdir(model_dir) == ["1"]  # the .tmp-1 build is gone
    assert versions.list_versions(model_dir) == [1]


def test_a_version_being_copied_in_is_not_listed_and_its_number_is_skipped(ram_base):
    model_dir = fs.join(ram_base, "tiny")
    publish_tiny(ram_base, 1, 1.0)
    fs.write_bytes(fs.join(model_dir, "2", "variables", "variables.index"), b"half")  # a copy cut short
    assert versions.list_versions(model_dir) == [1] and versions.next_version(model_dir) == 3


def test_the_server_loads_and_serves_a_version_from_ram(ram_base):
    publish_tiny(ram_base, 1, 1.0)
    store = ModelStore(ram_base, warmup=False)
    store.poll_once()
    store.poll_once()
    assert [s["state"] for s in store.status("tiny")] == ["AVAILABLE"]
    with store.acquire("tiny") as (version, model):
        assert version == 1
        assert model.run("", {"examples": [tiny_example(0.0)]})["click_probability"][0] == pytest.approx(0.5)
    store.stop()
