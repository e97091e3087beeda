"""The console of a small ``python -m pipeline run`` (DirectRunner with two worker processes,
as by default): progress lines while preprocess runs, none of the start-up chatter of
TensorFlow and Beam's workers, no deprecation warning from the project's own calls, and one
summary line per stage, then the stage table and the commands to serve and query."""
import os
import re
import subprocess
import sys

import pytest

from pipeline import console
from tests.conftest import REPO

pytestmark = pytest.mark.slow

SMALL = ["synthetic.rows=2000", "synthetic.chunk_rows=1000", "synthetic.num_users=200", "synthetic.num_items=100",
         "preprocess.beam.direct_num_workers=2", "model.embedding_dim=4", "model.bottom_units=[16]",
         "model.tower_units=[8]", "training.epochs=1", "training.batch_size=256", "export.min_auc={}",
         "distill.sizes=[]", "distill.latency_calls=10", "export.warmup_examples=4"]
NOT_NEWS = [*console.NOISE, r"is deprecated and will be removed", r"Compiled the loaded model",
            r"Traceback \(most recent call last\)"]


def test_a_small_run_prints_progress_no_noise_and_one_summary_line_per_stage(tmp_path):
    run_dir = str(tmp_path / "run")
    args = [sys.executable, "-m", "pipeline", "run", "--run-dir", run_dir]
    for o in SMALL:
        args += ["--set", o]
    env = dict(os.environ, PIPELINE_PROGRESS_SECONDS="2", PYTHONUNBUFFERED="1")
    env.pop("PIPELINE_RAW_STDERR", None)
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    out, err = done.stdout, done.stderr
    assert done.returncode == 0, (out + err)[-4000:]
    lines = out.splitlines() + err.splitlines()

    progress = [line for line in err.splitlines() if re.search(r"preprocess: [\d,]+ rows read over its 2 passes", line)]
    assert progress, err[-3000:]
    noise = [line for line in lines if any(re.search(p, line) for p in NOT_NEWS)]
    assert noise == [], "\n".join(noise[:10])

    stages = ["generate", "preprocess", "train", "distill", "evaluate", "export", "predict"]
    summary = re.compile(r"^(\w+): .+ \(\d+(\.\d)? (s|min)\)$")
    ended = [m.group(1) for m in map(summary.match, out.splitlines()) if m]
    assert ended == stages, out
    assert "train: teacher, " in out and "evaluate: test AUC teacher click " in out and "-> " in out
    table = out[out.index("stage  "):]
    for name in stages:
        assert re.search(rf"^{name}\s+ok\s+[\d.]+ s", table, re.M), table
    assert "serve it:   python -m pipeline serve --run-dir " + run_dir in out
    assert out.rstrip().endswith(f"report:  {os.path.join(run_dir, 'report.md')}")
