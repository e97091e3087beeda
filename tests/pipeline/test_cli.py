"""The command line (pipeline/cli.py), run as a user would: ``python -m pipeline ...`` in a subprocess."""
import json
import os
import subprocess
import sys
import time

import pytest

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
    assert sorted(os.listdir(run / "data" / "raw")) == ["_SUCCESS", "part-00000.csv", "part-00001.csv"]
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

    mtime = os.path.getmtime(run / "data" / "raw" / "part-00000.csv")
    again = _run("generate", "--run-dir", str(run), *TINY)
    assert again.returncode == 0, again.stderr
    assert "generate: reused 2,000 rows" in again.stdout
    assert "skipping" in again.stderr
    assert os.path.getmtime(run / "data" / "raw" / "part-00000.csv") == mtime
    stage = json.load(open(run / "summary.json"))["stages"]["generate"]
    assert stage["status"] == "ok" and stage["skipped"] is True and stage["rows"] == 2000
