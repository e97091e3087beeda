"""Broken artifacts end as one ``error: <file>: ...`` line from the CLI, not a traceback
(issue 7: faults): a truncated or corrupt TFRecord shard, a missing vocabulary file, and a
model directory without a SavedModel."""
import os
import shutil

import pytest

from core import artifact_checks
from pipeline.cli import main
from core.errors import InputError
from tests.fakes.transformed_run import TINY, make_fake_run
from tests.fakes import procs


def _cli_error(capsys, argv) -> str:
    """Runs the CLI in-process; asserts exit code 2 and exactly one ``error:`` line; returns it."""
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(lines) == 1, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    return lines[0]


def _truncate(path: str) -> None:
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])


def _corrupt(path: str) -> None:
    with open(path, "r+b") as f:
        f.seek(40)
        f.write(b"\x00garbage\xff" * 8)


def _train_argv(run_dir):
    return ["train", "--run-dir", run_dir.root] + [a for o in TINY + ["training.steps_per_epoch=2"] for a in ("--set", o)]


@pytest.mark.parametrize("damage", [_truncate, _corrupt])
def test_damaged_training_shard_is_named(tmp_path, capsys, damage):
    run_dir, _ = make_fake_run(str(tmp_path / "run"))
    shard = sorted(os.listdir(os.path.dirname(run_dir.split_pattern("train"))))[1]
    path = os.path.join(os.path.dirname(run_dir.split_pattern("train")), shard)
    damage(path)
    line = _cli_error(capsys, _train_argv(run_dir))
    assert path in line and "corrupt or truncated TFRecord" in line


@pytest.mark.slow
def test_truncated_validation_shard_is_named_when_fit_reads_it(tmp_path):
    run_dir, _ = make_fake_run(str(tmp_path / "run"))
    path = run_dir.split_pattern("validation").replace("*", "00000-of-00001")
    _truncate(path)
    # A fresh process, as a user runs it (in-process after the Beam/serving tests of this
    # directory, fit was once seen to finish without reading the damaged shard to the end).
    done = procs.run_cli([procs.PYTHON, "-m", "pipeline", *_train_argv(run_dir)], timeout=180)
    lines = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert path in lines[0] and "corrupt or truncated TFRecord" in lines[0]


def test_intact_shards_are_not_blamed(tmp_path):
    run_dir, _ = make_fake_run(str(tmp_path / "run"), sizes=(40, 10, 10))
    original = RuntimeError("something else")
    assert artifact_checks.shard_error([run_dir.split_pattern("train")], original) is original


def _copy(run_dir, tmp_path):
    from core.run_dir import RunDir

    root = str(tmp_path / "copy")
    shutil.copytree(run_dir.root, root)
    return RunDir(root)


@pytest.mark.slow
def test_missing_vocabulary_file_is_named_by_export(exported_run, tmp_path, capsys):
    run_dir = _copy(exported_run, tmp_path)
    vocab = os.path.join(run_dir.transform_output_dir, "transform_fn", "assets", "user_id")
    os.remove(vocab)
    published = sorted(os.listdir(os.path.join(run_dir.serving_base(), "ranker")))
    line = _cli_error(capsys, ["export", "--run-dir", run_dir.root, "--set", "export.min_auc={}"])
    assert vocab in line and "vocabulary file missing" in line
    assert sorted(os.listdir(os.path.join(run_dir.serving_base(), "ranker"))) == published  # nothing new published


@pytest.mark.slow
def test_model_directory_without_savedmodel_is_named(exported_run, tmp_path, capsys):
    run_dir = _copy(exported_run, tmp_path)
    model_dir = run_dir.path("teacher", "serving_model")
    os.remove(os.path.join(model_dir, "saved_model.pb"))
    line = _cli_error(capsys, ["export", "--run-dir", run_dir.root, "--set", "export.min_auc={}"])
    assert model_dir in line and "no SavedModel" in line
    from models import model_io

    with pytest.raises(InputError, match="no SavedModel"):
        model_io.load_serving_model(run_dir.model_dir("teacher"), run_dir.role_stage("teacher"))  # evaluate and distill load through this


def test_saved_model_check_names_missing_directory(tmp_path):
    with pytest.raises(InputError, match=f"{tmp_path}/nope: model directory not found"):
        artifact_checks.require_saved_model(str(tmp_path / "nope"), "train")


# --- disk full (ENOSPC) and other OSErrors while a stage writes: one `error:` line, exit 7

GENERATE_TINY = ["synthetic.rows=2000", "synthetic.chunk_rows=1000", "synthetic.num_users=100", "synthetic.num_items=50"]


def _disk_full_generate(monkeypatch):
    """``generate`` writes half a file into its scratch directory, then the disk is full."""
    import errno

    def generate(s, out_dir):
        path = os.path.join(out_dir, "part-00000.csv")
        with open(path, "w", encoding="utf-8") as f:
            f.write("user_id,item_id\n1,")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    monkeypatch.setattr("pipeline.synthetic.generator.generate", generate)  # the stage imports it when it runs


def test_disk_full_in_a_stage_is_one_error_line_and_nothing_is_published(tmp_path, monkeypatch, capsys):
    import json

    from core.errors import StorageError

    run = tmp_path / "run"
    _disk_full_generate(monkeypatch)
    code = main(["generate", "--run-dir", str(run), *[a for o in GENERATE_TINY for a in ("--set", o)]])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == StorageError.exit_code == 7 and len(lines) == 1 and lines[-1] == err.strip().splitlines()[-1], err
    assert "Traceback" not in err
    line = lines[0]
    assert line.startswith("error: generate: No space left on device (ENOSPC): ")
    assert "part-00000.csv" in line and f"re-run `python -m pipeline generate --run-dir {run}`" in line
    assert not os.path.exists(run / "data" / "raw")  # nothing half-written is visible
    assert not [d for d in os.listdir(run / "data") if d.startswith(".tmp-")]  # the scratch directory is gone
    entry = json.load(open(run / "summary.json"))["stages"]["generate"]
    assert entry["status"] == "failed" and "No space left on device" in entry["error"]

    with pytest.raises(StorageError) as e:  # --debug: the exception (and its traceback) propagate
        main(["generate", "--debug", "--run-dir", str(run), *[a for o in GENERATE_TINY for a in ("--set", o)]])
    assert isinstance(e.value.__cause__, OSError) and e.value.__cause__.errno == 28


def test_disk_full_recording_the_failure_still_ends_as_one_line(tmp_path, monkeypatch, capsys):
    """The disk is full for summary.json too: the stage's error is still what the user sees."""
    import errno

    from core import run_dir as run_dir_module

    run = tmp_path / "run"
    _disk_full_generate(monkeypatch)
    real = run_dir_module.write_json_atomic
    calls = {"n": 0}

    def write_json_atomic(path, obj):
        calls["n"] += 1
        if calls["n"] > 2:  # the config and the stage's start are recorded; then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        return real(path, obj)

    monkeypatch.setattr(run_dir_module, "write_json_atomic", write_json_atomic)
    code = main(["generate", "--run-dir", str(run), *[a for o in GENERATE_TINY for a in ("--set", o)]])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 7 and len(lines) == 1 and "Traceback" not in err, err
    assert "part-00000.csv" in lines[0]
    monkeypatch.setattr(run_dir_module, "write_json_atomic", real)
    from core.run_dir import RunDir, Summary

    assert Summary(RunDir(str(run))).load()["stages"]["generate"]["status"] == "running"  # later stages refuse it


@pytest.mark.slow
@pytest.mark.parametrize("where", ["savedmodel", "blessing"])
def test_disk_full_during_export_is_one_error_line_and_publishes_nothing(exported_run, tmp_path, monkeypatch, capsys, where):
    import errno
    import json

    import tensorflow as tf

    run_dir = _copy(exported_run, tmp_path)
    model_dir = os.path.join(run_dir.serving_base(), "ranker")
    published = sorted(os.listdir(model_dir))
    if where == "savedmodel":  # TensorFlow reports a full disk as an OpError, not an OSError
        def save(module, build):
            os.makedirs(os.path.join(build, "variables"), exist_ok=True)
            raise tf.errors.UnknownError(None, None, f"{build}/variables/variables.data-00000-of-00001.tempstate; "
                                                     "No space left on device")

        monkeypatch.setattr("serving.export.save_serving_module", save)
    else:  # the gate passed; writing BLESSED fails
        from serving import export as export_module

        real = export_module.write_json_atomic

        def write_json_atomic(path, obj):
            if os.path.basename(path) == "BLESSED":
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
            return real(path, obj)

        monkeypatch.setattr(export_module, "write_json_atomic", write_json_atomic)
    code = main(["export", "--run-dir", run_dir.root, "--set", "export.min_auc={}", "--set", "data.lists=[]"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 7 and len(lines) == 1 and "Traceback" not in err, err[-3000:]
    assert lines[0].startswith("error: export: No space left on device (ENOSPC)")
    assert sorted(os.listdir(model_dir)) == published  # no new version, no build directory left
    entry = json.load(open(run_dir.summary_file))["stages"]["export"]
    assert entry["status"] == "failed" and "No space left on device" in entry["error"]
