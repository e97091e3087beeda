"""core/fs.py on three filesystems: local, TF's ``ram://`` (no directory rename, through
``tf.io.gfile``) and ``gs://`` on a local GCS emulator (through Beam's ``FileSystems``).

The publication contract: a committed output is read through its ``_COMMITTED`` marker; an
attempt without one (killed, failed) is never read and is removed by the next publish; a
failed attempt leaves the previous output published.
"""
import json
import uuid

import pytest

from core import fs


@pytest.fixture(params=["local", "ram", "gs"])
def root(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "root")
    if request.param == "ram":
        return f"ram://test-fs-{uuid.uuid4().hex[:8]}/root"
    return request.getfixturevalue("gcs").url(f"root-{uuid.uuid4().hex[:8]}")


def test_the_client_is_chosen_by_scheme(root):
    assert fs._beam(root) == root.startswith("gs://")  # gs:// with STORAGE_EMULATOR_HOST set: Beam's client


def test_files_roundtrip_list_and_delete(root):
    fs.write_atomic(fs.join(root, "a", "x.json"), json.dumps({"v": 1}))
    fs.write_bytes(fs.join(root, "a", "b", "y.bin"), b"\x00\x01")
    fs.write_atomic(fs.join(root, "a", "x.json"), json.dumps({"v": 2}))  # replaced whole
    assert fs.read_json(fs.join(root, "a", "x.json")) == {"v": 2}
    assert fs.read_bytes(fs.join(root, "a", "b", "y.bin")) == b"\x00\x01"
    assert fs.exists(fs.join(root, "a")) and fs.isdir(fs.join(root, "a")) and not fs.isdir(fs.join(root, "a", "x.json"))
    assert fs.isfile(fs.join(root, "a", "x.json")) and not fs.isfile(fs.join(root, "a"))
    assert fs.listdir(fs.join(root, "a")) == ["b", "x.json"]
    assert fs.glob(fs.join(root, "a", "*.json")) == [fs.join(root, "a", "x.json")]
    assert fs.walk_files(root) == ["a/b/y.bin", "a/x.json"]
    assert fs.size(fs.join(root, "a", "b", "y.bin")) == 2
    assert [n for n in fs.listdir(fs.join(root, "a")) if n.startswith(".tmp-")] == []  # no temp file left
    fs.rmtree(fs.join(root, "a"))
    assert not fs.exists(fs.join(root, "a", "x.json")) and fs.listdir(root) == []
    fs.rmtree(fs.join(root, "absent"))  # no error
    fs.remove(fs.join(root, "absent.txt"))


def test_copy_tree_copies_the_named_files_last(root, monkeypatch):
    src, dst = fs.join(root, "src"), fs.join(root, "dst")
    for rel in ("saved_model.pb", "variables/variables.index", "assets/vocab.txt"):
        fs.write_bytes(fs.join(src, rel), rel.encode())
    order = []
    real = fs.copy_file
    monkeypatch.setattr(fs, "copy_file", lambda s, d: (order.append(fs.relative(d, dst)), real(s, d)))
    fs.copy_tree(src, dst, last=("saved_model.pb",))
    assert order[-1] == "saved_model.pb" and sorted(order) == fs.walk_files(src)
    assert fs.read_bytes(fs.join(dst, "variables", "variables.index")) == b"variables/variables.index"


def _publish(final: str, text: str) -> str:
    with fs.publish_dir(final) as attempt:
        fs.write_bytes(fs.join(attempt, "part.txt"), text.encode())
    return fs.published(final)


def test_publish_commits_with_the_marker_and_readers_follow_it(root):
    final = fs.join(root, "out")
    assert fs.published(final) == final and not fs.is_published(final)  # nothing yet
    first = _publish(final, "one")
    assert fs.read_text(fs.join(first, "part.txt")) == "one"
    assert fs.listdir(final) == sorted([fs.basename(first), fs.COMMITTED])
    second = _publish(final, "two")
    assert second != first and fs.read_text(fs.join(fs.published(final), "part.txt")) == "two"
    assert fs.listdir(final) == sorted([fs.basename(second), fs.COMMITTED])  # the superseded attempt is gone


def test_a_failed_attempt_leaves_the_previous_output_published(root):
    final = fs.join(root, "out")
    before = _publish(final, "good")
    with pytest.raises(RuntimeError):
        with fs.publish_dir(final) as attempt:
            fs.write_bytes(fs.join(attempt, "part.txt"), b"half")
            raise RuntimeError("stage failed")
    assert fs.published(final) == before and fs.read_text(fs.join(before, "part.txt")) == "good"
    assert fs.listdir(final) == sorted([fs.basename(before), fs.COMMITTED])


def test_a_killed_attempt_is_never_read_and_the_next_publish_removes_it(root):
    final = fs.join(root, "out")
    killed = fs.join(final, f"{fs.ATTEMPT_PREFIX}killed")  # what a SIGKILL mid-write leaves: files, no marker
    fs.write_bytes(fs.join(killed, "part.txt"), b"half")
    assert fs.published(final) == final and not fs.exists(fs.join(fs.published(final), "part.txt"))
    before = _publish(final, "good")
    killed2 = fs.join(final, f"{fs.ATTEMPT_PREFIX}killed2")  # killed after an earlier commit
    fs.write_bytes(fs.join(killed2, "part.txt"), b"half")
    assert fs.published(final) == before  # the marker still names the committed attempt
    after = _publish(final, "new")
    assert fs.listdir(final) == sorted([fs.basename(after), fs.COMMITTED])


def test_a_marker_naming_something_else_is_ignored(root):
    final = fs.join(root, "out")
    fs.write_atomic(fs.join(final, fs.COMMITTED), json.dumps({"attempt": "../elsewhere"}))
    assert fs.committed_attempt(final) is None and fs.published(final) == final
