"""The run directory: where each stage writes and where the next stage reads.

One class names every artifact path, so stages never build paths of their own:

    <run>/
      config.yaml            the config used (after --set overrides)
      summary.json           per stage: status, wall time, counts, metrics, artifacts
      report.md, plots/      the readable report and its PNGs
      data/raw/              generated synthetic logs (generate)
      preprocess/            TFRecord splits, TFT transform output, stats, dead letters
      teacher/, student/     trained Keras models, checkpoints, backups, TensorBoard logs
      students/<size>/       the KD student of each extra size of distill.sizes (distill)
      scores/                training data with the teacher's logits (distill)
      serving_models/<name>/<version>/   SavedModels as TF Serving watches them (export)
      predictions/           batch predictions (predict)

The root may be local or on any filesystem ``core.fs`` reaches (``gs://``, ``ram://``, ...).
A directory output is published without a rename (``core.fs.publish_dir``: a fresh attempt
directory, then a ``_COMMITTED`` marker written last) and read through its marker (the
properties below resolve it), so a killed stage never leaves a half-written output that a
later stage reads; single files are written with ``core.fs.write_atomic``.

An older output of a stage whose last attempt failed or never finished is never used:
``run_stage`` records ``"status": "running"`` in summary.json when a stage starts (so a kill
leaves that mark), then ``"ok"`` or ``"failed"``; ``RunDir.require``/``check_stage`` refuse a
producer's outputs (``STAGE_OUTPUTS``) unless its last attempt is ``ok`` (or unrecorded),
with an ``InputError`` naming the command to re-run.
"""
from __future__ import annotations

import json
import os
import time

from core import fs
from core.errors import InputError
from core.fs import publish_dir, read_json, write_atomic, write_json_atomic  # noqa: F401  (re-exported)


def write_text_atomic(path: str, text: str) -> None:
    """Writes ``text`` to ``path`` atomically (``core.fs.write_atomic``)."""
    write_atomic(path, text)


# The stage that writes each role's model directory (``RunDir.model_dir(role)``).
ROLE_STAGES = {"teacher": "train", "student": "distill"}

# What each stage writes in the run directory (relative paths). While a stage runs, and after
# it failed or was killed, these are stale: ``RunDir.require``/``check_stage`` refuse them.
# ``export`` is absent on purpose: it publishes each numbered version whole (serving/versions.py), a failed
# export publishes nothing and the versions already published stay valid (TF Serving keeps
# serving them). ``evaluate`` writes only summary.json entries.
STAGE_OUTPUTS = {
    "generate": ("data/raw",),
    "preprocess": ("preprocess",),
    "train": ("teacher",),
    "distill": ("student", "scores", "students"),
    "predict": ("predictions",),
    "pareto": ("pareto",),
}

# Where each preprocess artifact lies inside the committed preprocess output.
PREPROCESS_LAYOUT = {
    "transform_output": "transform_output",
    "data": "data",
    "feature_info": "feature_info.json",
    "raw_feature_spec": "raw_feature_spec.json",
    "stats": "stats.json",
    "dead_letters": "dead_letters",
}

# A stage attempt's ``status`` in summary.json: "running" from its start (so a kill leaves
# it), then "ok" or "failed".
RUNNING, OK, FAILED = "running", "ok", "failed"


class RunDir:
    """Names every artifact of one pipeline run under ``root``."""

    def __init__(self, root: str):
        self.root = fs.absolute(root)

    def path(self, *parts: str) -> str:
        return fs.join(self.root, *parts)

    # --- whole run
    @property
    def config_file(self) -> str:
        return self.path("config.yaml")

    @property
    def summary_file(self) -> str:
        return self.path("summary.json")

    @property
    def report_file(self) -> str:
        return self.path("report.md")

    @property
    def plots_dir(self) -> str:
        return self.path("plots")

    # --- generate
    @property
    def raw_data_dir(self) -> str:
        return self.path("data", "raw")

    @property
    def raw_data_output(self) -> str:
        """The committed generate output (``part-NNNNN.<csv|parquet>``, ``_SUCCESS``)."""
        return fs.published(self.raw_data_dir)

    def raw_input(self, cfg) -> tuple[str, str]:
        """(path or glob, format) of the raw records a run reads: the configured files, or
        the synthetic logs the generate stage wrote into this run directory."""
        if cfg.data.source == "synthetic":
            ext = "csv" if cfg.synthetic.format == "csv" else "parquet"
            return fs.join(self.raw_data_output, f"part-*.{ext}"), cfg.synthetic.format
        return cfg.data.path, cfg.data.format

    # --- preprocess
    @property
    def preprocess_dir(self) -> str:
        """Where preprocess publishes (``core.fs.publish_dir``); read through ``preprocess_output``."""
        return self.path("preprocess")

    @property
    def preprocess_output(self) -> str:
        """The committed preprocess output (laid out as ``PREPROCESS_LAYOUT``)."""
        return fs.published(self.preprocess_dir)

    def _preprocessed(self, name: str, *parts: str) -> str:
        return fs.join(self.preprocess_output, PREPROCESS_LAYOUT[name], *parts)

    @property
    def transform_output_dir(self) -> str:
        """A ``tft.TFTransformOutput`` directory (transform_fn/, transformed_metadata/)."""
        return self._preprocessed("transform_output")

    def split_pattern(self, split: str) -> str:
        """Glob of the gzip TFRecord shards of transformed examples for a split."""
        return self._preprocessed("data", f"{split}-*.tfrecord.gz")

    @property
    def feature_info_file(self) -> str:
        """JSON: categorical cardinalities, numeric names, tasks, passthrough columns."""
        return self._preprocessed("feature_info")

    @property
    def raw_feature_spec_file(self) -> str:
        return self._preprocessed("raw_feature_spec")

    @property
    def stats_file(self) -> str:
        return self._preprocessed("stats")

    def split_rows(self, split: str) -> int | None:
        """Examples in a split as preprocess counted them (``stats.json``); None if unrecorded."""
        try:
            rows = json.loads(fs.read_text(self.stats_file)).get("rows_per_split", {}).get(split)
        except Exception:  # noqa: BLE001  absent or unreadable: unrecorded
            return None
        return int(rows) if isinstance(rows, int) else None

    @property
    def dead_letter_dir(self) -> str:
        return self._preprocessed("dead_letters")

    @property
    def rejected_dir(self) -> str:
        """Dead letters and stats of a preprocess run that failed validation (never read by later stages)."""
        return self.path("preprocess_rejected")

    # --- train / distill
    @staticmethod
    def role_stage(role: str) -> str:
        """The stage that writes a role's model directory ('teacher': train, 'student': distill)."""
        return ROLE_STAGES[role]

    def model_dir(self, role: str) -> str:
        """``role`` is 'teacher' or 'student'; holds saved_model/, backup/, logs/, metrics.json."""
        return self.path(role)

    @property
    def students_dir(self) -> str:
        """``students/``: the model directories of distill's extra student sizes."""
        return self.path("students")

    def student_size_dir(self, name: str) -> str:
        """The model directory of the KD student of the extra size ``name`` (``distill.sizes``):
        ``students/<name>``, laid out like ``model_dir`` (serving_model/, model_config.json, ...).
        The configured student stays ``model_dir('student')``."""
        return fs.join(self.students_dir, name)

    @property
    def latency_exports_dir(self) -> str:
        """Scratch SavedModels (TF Transform front end + serving model) that distill times in
        TF Serving's path; removed once measured."""
        return fs.join(self.students_dir, ".latency_exports")

    @property
    def scores_dir(self) -> str:
        """Where distill publishes the training data with the teacher's logits; read through
        ``scores_output``."""
        return self.path("scores")

    @property
    def scores_output(self) -> str:
        return fs.published(self.scores_dir)

    # --- export / predict
    def serving_base(self, base_dir: str = "") -> str:
        return fs.absolute(base_dir) if base_dir else self.path("serving_models")

    @property
    def predictions_dir(self) -> str:
        """Where predict publishes by default; read through ``core.fs.published``."""
        return self.path("predictions")

    def stage_outputs(self, stage: str) -> list[str]:
        """Absolute paths ``stage`` writes (``STAGE_OUTPUTS``; empty for export, evaluate, serve)."""
        return [self.path(p) for p in STAGE_OUTPUTS.get(stage, ())]

    def last_attempt(self, stage: str) -> dict | None:
        """The summary.json entry of ``stage``'s last attempt (``status``, ``started_at``,
        ``finished_at``, ``error`` ...), or None when this run directory has no record of it."""
        if not fs.exists(self.summary_file):
            return None
        entry = Summary(self).load()["stages"].get(stage)
        return entry if isinstance(entry, dict) else None

    def stage_problem(self, stage: str) -> str | None:
        """Why ``stage``'s outputs must not be used (its last attempt failed, or started and
        never finished), naming the command to re-run; None when they may be used (the last
        attempt succeeded, or there is no record, e.g. hand-built outputs)."""
        entry = self.last_attempt(stage)
        status = entry.get("status") if entry else None
        if status in (None, OK):
            return None
        rerun = f"re-run `python -m pipeline {stage} --run-dir {self.root}`"
        if status == FAILED:
            error = str(entry.get("error") or "").strip().splitlines()
            why = f" ({error[0][:300]})" if error else ""
            return (f"the last `{stage}` attempt failed at {entry.get('finished_at', '?')}{why}, so its "
                    f"output is stale; {rerun}")
        if status == RUNNING:
            who = f"pid {entry['pid']} on {entry.get('host', '?')}" if entry.get("pid") else "a process"
            return (f"the last `{stage}` attempt (started at {entry.get('started_at', '?')} by {who}) did not "
                    f"finish: it was killed or is still running, so its output is not usable; "
                    f"wait for it, or {rerun}")
        return f"the last `{stage}` attempt ended with status {status!r}; {rerun}"

    def check_stage(self, stage: str, path: str | None = None) -> None:
        """Raises ``InputError`` (``<path>: <stage_problem>``) when ``stage``'s outputs are stale."""
        problem = self.stage_problem(stage)
        if problem:
            what = path or (self.stage_outputs(stage) or [self.root])[0]
            raise InputError(f"{what}: {problem}")

    def require(self, path: str, stage: str) -> str:
        """``path``, written by ``stage``: ``InputError`` naming the stage to (re-)run when
        ``path`` does not exist, or when ``stage``'s last attempt failed or never finished
        (``stage_problem``: its leftover output is stale)."""
        problem = self.stage_problem(stage)
        if not fs.exists(path):
            if problem:
                raise InputError(f"{path} not found: {problem}")
            raise InputError(f"{path} not found; run `python -m pipeline {stage}` for this run directory first")
        if problem:
            raise InputError(f"{path}: {problem}")
        return path


class Summary:
    """Reads and atomically updates ``summary.json``.

    Layout: ``{"config": {...}, "stages": {name: {"status", "wall_seconds", "rows",
    "metrics", "artifacts", ...}}, "models": {name: {task: {metric: value}}}, "plots": [...]}``.
    """

    def __init__(self, run_dir: RunDir):
        self.file = run_dir.summary_file

    def load(self) -> dict:
        if not fs.exists(self.file):
            return {"config": {}, "stages": {}, "models": {}, "plots": []}
        data = read_json(self.file, "summary.json")
        for key, default in (("config", {}), ("stages", {}), ("models", {}), ("plots", [])):
            data.setdefault(key, default)
        return data

    def update(self, mutate) -> dict:
        data = self.load()
        mutate(data)
        write_json_atomic(self.file, data)
        return data

    def record_start(self, name: str) -> dict:
        """Marks ``name``'s outputs in-progress: its entry becomes ``{"status": "running",
        "started_at", "pid", "host"}`` (the previous entry's metrics described outputs this
        attempt replaces). A kill leaves it so; ``record_stage`` ends it."""
        import socket

        entry = {"status": RUNNING, "started_at": _now(), "pid": os.getpid(), "host": socket.gethostname()}
        return self.update(lambda data: data["stages"].__setitem__(name, entry))

    def record_stage(self, name: str, status: str, wall_seconds: float, result: dict | None = None) -> dict:
        result = dict(result or {})

        def mutate(data):
            previous = data["stages"].get(name)
            started = previous.get("started_at") if isinstance(previous, dict) and previous.get("status") == RUNNING else None
            entry = {"status": status, "wall_seconds": round(wall_seconds, 3), "finished_at": _now()}
            if started:
                entry["started_at"] = started
            models = result.pop("models", None) or {}
            plots = result.pop("plots", None) or []
            entry.update(result)
            data["stages"][name] = entry
            for model_name, metrics in models.items():
                data["models"][model_name] = metrics
            for p in plots:
                if p not in data["plots"]:
                    data["plots"].append(p)

        return self.update(mutate)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
