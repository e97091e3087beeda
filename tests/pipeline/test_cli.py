"""The command line (pipeline/cli.py), run as a user would: ``python -m pipeline ...`` in a subprocess."""
import json
import os
import subprocess
import sys
import time

import pytest

from core.run_dir import RunDir
from tests.conftest import REPO

TINY = ["--set", "synthetic.rows=2000", "--set", "synthetic.chunk_rows=1000",
        "--set", "synthetic.num_users=100", "--set", "synthetic.num_items=50"]


def _run(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def _assert_one_line_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    # One error line, last; before it at most the stage's INFO log lines.
    assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


def test_help_lists_the_stages_and_answers_fast():
    start = time.monotonic()
    proc = _run("--help")
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - start < 20
    for stage in ("run", "generate", "preprocess", "train", "evaluate", "distill", "export", "predict", "serve"):
        assert stage in proc.stdout
    assert "--set" in proc.stdout


def test_building_the_parser_imports_neither_tensorflow_nor_beam():
    code = (
        "import sys\n"
        "from pipeline.cli import build_parser\n"
        "p = build_parser()\n"
        "p.format_help()\n"
        "p.parse_args(['generate', '--run-dir', 'x'])\n"
        "heavy = [m for m in ('tensorflow', 'apache_beam', 'tf_keras', 'tensorflow_transform') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "print('clean')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "clean"


def test_wrong_flag_is_a_one_line_usage_error():
    proc = _run("generate", "--no-such-flag")
    _assert_one_line_error(proc, "--no-such-flag")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_unknown_command_is_a_one_line_usage_error():
    _assert_one_line_error(_run("frobnicate"), "frobnicate")


def test_missing_config_file_is_named(tmp_path):
    missing = os.path.join(str(tmp_path), "missing.yaml")
    _assert_one_line_error(_run("generate", "--config", missing, "--run-dir", str(tmp_path / "r")), missing)


@pytest.mark.parametrize(
    "override, key",
    [("synthetic.rows=lots", "synthetic.rows"), ("synthetic.rowz=5", "synthetic.rowz"), ("training.epochs", "training.epochs")],
)
def test_bad_set_value_names_the_key(tmp_path, override, key):
    _assert_one_line_error(_run("generate", "--run-dir", str(tmp_path / "r"), "--set", override), key)
    assert not os.path.exists(tmp_path / "r" / "data")


def test_debug_shows_the_traceback(tmp_path):
    proc = _run("generate", "--debug", "--run-dir", str(tmp_path / "r"), "--set", "synthetic.rows=0")
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "ConfigError" in proc.stderr


def test_generate_on_a_files_config_is_a_config_error(tmp_path):
    census = os.path.join(REPO, "configs", "census_income.yaml")
    proc = _run("generate", "--config", census, "--run-dir", str(tmp_path / "r"))
    _assert_one_line_error(proc, "generate: data.source is 'files'")
    summary = json.load(open(tmp_path / "r" / "summary.json"))
    assert summary["stages"]["generate"]["status"] == "failed"


def test_generate_writes_data_summary_and_report_then_resumes(tmp_path):
    run = tmp_path / "run"
    proc = _run("generate", "--run-dir", str(run), *TINY)
    assert proc.returncode == 0, proc.stderr
    assert "generate: wrote 2,000 rows in 2 file(s)" in proc.stdout
    assert "chunk 2/2 written" in proc.stderr  # progress is logged per chunk
    assert sorted(os.listdir(RunDir(str(run)).raw_data_output)) == ["_SUCCESS", "part-00000.csv", "part-00001.csv"]
    summary = json.load(open(run / "summary.json"))
    stage = summary["stages"]["generate"]
    assert stage["status"] == "ok" and stage["rows"] == 2000 and stage["wall_seconds"] > 0
    assert stage["skipped"] is False
    assert 0 < stage["metrics"]["conversion_rate"] < stage["metrics"]["click_rate"]
    assert summary["config"]["synthetic"]["rows"] == 2000
    assert "plots/synthetic_probabilities.png" in summary["plots"]
    assert (run / "plots" / "synthetic_probabilities.png").exists()
    report = (run / "report.md").read_text()
    assert "| generate | ok |" in report and "## generate" in report and "synthetic_probabilities.png" in report
    assert (run / "config.yaml").exists()

    mtime = os.path.getmtime(os.path.join(RunDir(str(run)).raw_data_output, "part-00000.csv"))
    again = _run("generate", "--run-dir", str(run), *TINY)
    assert again.returncode == 0, again.stderr
    assert "generate: reused 2,000 rows" in again.stdout
    assert "skipping" in again.stderr
    assert os.path.getmtime(os.path.join(RunDir(str(run)).raw_data_output, "part-00000.csv")) == mtime
    stage = json.load(open(run / "summary.json"))["stages"]["generate"]
    assert stage["status"] == "ok" and stage["skipped"] is True and stage["rows"] == 2000


# --- which config a command uses on an existing run directory (in-process; stages replaced)

CENSUS = os.path.join(REPO, "configs", "census_income.yaml")
DEFAULT = os.path.join(REPO, "configs", "default.yaml")


def _recorded_run(tmp_path, config=CENSUS):
    """A run directory whose config.yaml and summary.json record ``config`` (as a run writes them)."""
    import yaml

    from core.config import config_to_dict, load_config
    from core.run_dir import RunDir, Summary

    run = tmp_path / "recorded_run"
    run.mkdir()
    data = config_to_dict(load_config(config))
    with open(run / "config.yaml", "w", encoding="utf-8") as f:
        yaml.safe_dump(data, f, sort_keys=False)
    Summary(RunDir(str(run))).update(lambda d: d.__setitem__("config", data))
    return run


@pytest.fixture
def stage_calls(monkeypatch):
    """Replaces ``run_stage``: records (stage, cfg) instead of running the stage."""
    calls = []
    monkeypatch.setattr("pipeline.stages.run_stage", lambda name, cfg, run_dir, opts: calls.append((name, cfg)))
    return calls


def _recorded(run):
    import yaml

    with open(run / "config.yaml", encoding="utf-8") as f:
        return yaml.safe_load(f), json.load(open(run / "summary.json"))["config"]


def test_a_command_on_an_existing_run_dir_uses_its_recorded_config(tmp_path, stage_calls):
    from pipeline.cli import main

    run = _recorded_run(tmp_path)  # the README's `train --run-dir RUN --set model.backbone=mmoe` on census data
    assert main(["train", "--run-dir", str(run), "--set", "model.backbone=mmoe"]) == 0
    (name, cfg), = stage_calls
    assert name == "train" and cfg.name == "census_income" and cfg.task_names == ["income", "marital"]
    assert cfg.model.backbone == "mmoe"
    config, summary_config = _recorded(run)  # the override is recorded on top of the recorded config
    for recorded in (config, summary_config):
        assert recorded["name"] == "census_income" and recorded["model"]["backbone"] == "mmoe"
        assert [t["name"] for t in recorded["data"]["tasks"]] == ["income", "marital"]


def test_the_serve_hint_does_not_replace_the_recorded_config(tmp_path, stage_calls):
    from pipeline.cli import main

    run = _recorded_run(tmp_path)
    before = (run / "config.yaml").read_bytes(), _recorded(run)[1]
    assert main(["serve", "--run-dir", str(run)]) == 0  # what the end of `export` prints
    assert stage_calls[0][1].export.model_name == "census_ranker"
    assert ((run / "config.yaml").read_bytes(), _recorded(run)[1]) == before


def test_set_overrides_are_recorded_and_kept_by_later_commands(tmp_path, stage_calls):
    from pipeline.cli import main

    run = _recorded_run(tmp_path)
    assert main(["train", "--run-dir", str(run), "--set", "training.epochs=3"]) == 0
    assert main(["evaluate", "--run-dir", str(run)]) == 0
    assert [c.training.epochs for _, c in stage_calls] == [3, 3]
    assert stage_calls[1][1].task_names == ["income", "marital"]
    assert _recorded(run)[0]["training"]["epochs"] == 3


def test_a_different_explicit_config_is_refused_unless_forced(tmp_path, stage_calls, capsys):
    from pipeline.cli import main

    run = _recorded_run(tmp_path)
    before = (run / "config.yaml").read_bytes()
    code = main(["train", "--config", DEFAULT, "--run-dir", str(run)])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    line = lines[0]
    assert f"--config {DEFAULT} differs from the config this run directory was made with" in line
    assert "name: recorded 'census_income', now 'default'" in line
    assert "drop --config" in line and "new --run-dir" in line and "--force" in line
    assert stage_calls == [] and (run / "config.yaml").read_bytes() == before

    assert main(["train", "--config", DEFAULT, "--run-dir", str(run), "--force"]) == 0
    assert stage_calls[0][1].name == "default"
    config, summary_config = _recorded(run)
    assert config["name"] == summary_config["name"] == "default"


def test_the_recorded_config_given_explicitly_is_accepted(tmp_path, stage_calls):
    from pipeline.cli import main

    run = _recorded_run(tmp_path)
    assert main(["evaluate", "--config", CENSUS, "--run-dir", str(run), "--set", "training.epochs=2"]) == 0
    assert stage_calls[0][1].training.epochs == 2 and _recorded(run)[0]["training"]["epochs"] == 2


def test_an_unexpected_error_in_a_stage_is_one_error_line_and_its_traceback_only_with_debug(
        tmp_path, monkeypatch, capsys):
    """A bug (an exception that is no PipelineError) must not print a traceback to a user:
    one ``error:`` line naming the exception and its first message line, exit status 1;
    ``--debug`` re-raises it."""
    from pipeline.cli import main

    def broken(name, cfg, run_dir, opts):
        raise RuntimeError("graph execution error:\n\nDetected at node StringToNumber")

    monkeypatch.setattr("pipeline.stages.run_stage", broken)
    run = _recorded_run(tmp_path)
    assert main(["train", "--run-dir", str(run)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("error: internal error (RuntimeError: graph execution error:); re-run with --debug for the "
                       "traceback and report it"), err
    assert not any("Traceback" in line for line in err)
    with pytest.raises(RuntimeError, match="StringToNumber"):
        main(["train", "--run-dir", str(run), "--debug"])
