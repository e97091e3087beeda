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

Artifacts are written to a temporary sibling and renamed into place (``atomic_dir``,
``write_json_atomic``), so a killed stage never leaves a half-written output.

An older output of a stage whose last attempt failed or never finished is never used:
``run_stage`` records ``"status": "running"`` in summary.json when a stage starts (so a kill
leaves that mark), then ``"ok"`` or ``"failed"``; ``RunDir.require``/``check_stage`` refuse a
producer's outputs (``STAGE_OUTPUTS``) unless its last attempt is ``ok`` (or unrecorded),
with an ``InputError`` naming the command to re-run.
"""
from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import tempfile
import time
import uuid
from typing import Any, Iterator

from core.errors import InputError


def write_json_atomic(path: str, obj: Any) -> None:
    """Writes JSON to ``path`` via a temporary file and ``os.replace``."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, sort_keys=False, default=_json_default)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def write_text_atomic(path: str, text: str) -> None:
    """Writes ``text`` to ``path`` via a temporary file and ``os.replace`` (``write_json_atomic``)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def _json_default(o):
    if hasattr(o, "item"):  # numpy scalars
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def read_json(path: str, what: str = "file") -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise InputError(f"{what} not found: {path}") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{what} is not valid JSON: {path} ({e})") from None


@contextlib.contextmanager
def atomic_dir(final: str) -> Iterator[str]:
    """Yields a temporary directory beside ``final``; on success replaces ``final`` with it.

    On an exception the temporary directory is removed and ``final`` is left untouched;
    scratch directories of earlier killed attempts are removed first, and so is the
    ``.old-*`` copy a kill between the two renames of an earlier publish left behind (put
    back as ``final`` when ``final`` is missing: ``recover_publish``). One writer per
    ``final`` at a time.
    """
    parent = os.path.dirname(os.path.abspath(final))
    os.makedirs(parent, exist_ok=True)
    recover_publish(final)
    prefix = f".tmp-{os.path.basename(final)}-"
    # A killed earlier attempt (SIGKILL skips the cleanup below) leaves its scratch directory;
    # it was never visible under ``final`` and is removed before the new attempt starts.
    for stale in glob.glob(os.path.join(parent, glob.escape(prefix) + "*")):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = tempfile.mkdtemp(prefix=prefix, dir=parent)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if os.path.exists(final):
        # A fresh name, never created empty first (no window in which a sweep could see an
        # empty ``.old-*`` beside ``final``). A kill between the two renames leaves ``final``
        # missing and the previous output under ``old``: the next ``recover_publish`` of
        # ``final`` puts it back; a kill after them leaves ``old`` beside ``final``: removed.
        old = os.path.join(parent, f"{OLD_PREFIX}{os.path.basename(final)}-{uuid.uuid4().hex[:12]}")
        os.replace(final, old)
    try:
        os.replace(tmp, final)
    except BaseException:
        if old:
            os.replace(old, final)  # the previous output stays published
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old:
        shutil.rmtree(old, ignore_errors=True)


OLD_PREFIX = ".old-"


def _old_copies(final: str) -> list[str]:
    """``.old-<name>-*`` directories beside ``final`` (previous outputs of interrupted publishes), newest first."""
    parent, name = os.path.split(os.path.abspath(final))
    found = [p for p in glob.glob(os.path.join(glob.escape(parent), glob.escape(f"{OLD_PREFIX}{name}-") + "*"))
             if os.path.basename(p)[len(OLD_PREFIX):].rsplit("-", 1)[0] == name and os.path.isdir(p)]
    return sorted(found, key=lambda p: os.stat(p).st_mtime, reverse=True)


def recover_publish(final: str) -> str | None:
    """Repairs what a kill in the middle of ``atomic_dir``'s publish left beside ``final``.

    ``final`` present: every ``.old-*`` copy is a superseded output whose removal was cut
    short; they are deleted. ``final`` missing: the kill fell between the two renames; the
    newest copy (the last published output) is renamed back to ``final`` and the rest
    deleted. Only the writer of ``final`` calls this (``atomic_dir``); returns the restored
    path or None.
    """
    olds = _old_copies(final)
    restored = None
    if olds and not os.path.exists(final):
        os.replace(olds.pop(0), final)
        restored = final
    for old in olds:
        shutil.rmtree(old, ignore_errors=True)
    return restored


def remove_publish_leftovers(root: str, max_depth: int = 3) -> list[str]:
    """Deletes ``.old-*`` directories under ``root`` (to ``max_depth`` levels) whose ``final``
    exists beside them: leftovers of a publish killed after its renames. A copy whose
    ``final`` is missing is left for that output's writer (``recover_publish``). Safe while
    other stages publish (``atomic_dir`` never shows an ``.old-*`` beside ``final`` before its
    renames). Returns what was removed."""
    removed = []

    def walk(d: str, depth: int) -> None:
        try:
            entries = list(os.scandir(d))
        except OSError:
            return
        for e in entries:
            if not e.is_dir(follow_symlinks=False):
                continue
            if e.name.startswith(OLD_PREFIX) and "-" in e.name[len(OLD_PREFIX):]:
                final = os.path.join(d, e.name[len(OLD_PREFIX):].rsplit("-", 1)[0])
                if os.path.exists(final):
                    shutil.rmtree(e.path, ignore_errors=True)
                    removed.append(e.path)
            elif depth < max_depth and not e.name.startswith("."):
                walk(e.path, depth + 1)

    if os.path.isdir(root):
        walk(root, 1)
    return removed


# The stage that writes each role's model directory (``RunDir.model_dir(role)``).
ROLE_STAGES = {"teacher": "train", "student": "distill"}

# What each stage writes in the run directory (relative paths). While a stage runs, and after
# it failed or was killed, these are stale: ``RunDir.require``/``check_stage`` refuse them.
# ``export`` is absent on purpose: it publishes numbered versions by one rename each, a failed
# export publishes nothing and the versions already published stay valid (TF Serving keeps
# serving them). ``evaluate`` writes only summary.json entries.
STAGE_OUTPUTS = {
    "generate": (os.path.join("data", "raw"),),
    "preprocess": ("preprocess",),
    "train": ("teacher",),
    "distill": ("student", "scores", "students"),
    "predict": ("predictions",),
    "pareto": ("pareto",),
}

# A stage attempt's ``status`` in summary.json: "running" from its start (so a kill leaves
# it), then "ok" or "failed".
RUNNING, OK, FAILED = "running", "ok", "failed"


class RunDir:
    """Names every artifact of one pipeline run under ``root``."""

    def __init__(self, root: str):
        self.root = os.path.abspath(root)

    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

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

    def raw_input(self, cfg) -> tuple[str, str]:
        """(path or glob, format) of the raw records a run reads: the configured files, or
        the synthetic logs the generate stage wrote into this run directory."""
        if cfg.data.source == "synthetic":
            ext = "csv" if cfg.synthetic.format == "csv" else "parquet"
            return os.path.join(self.raw_data_dir, f"part-*.{ext}"), cfg.synthetic.format
        return cfg.data.path, cfg.data.format

    # --- preprocess
    @property
    def preprocess_dir(self) -> str:
        return self.path("preprocess")

    @property
    def transform_output_dir(self) -> str:
        """A ``tft.TFTransformOutput`` directory (transform_fn/, transformed_metadata/)."""
        return self.path("preprocess", "transform_output")

    def split_pattern(self, split: str) -> str:
        """Glob of the gzip TFRecord shards of transformed examples for a split."""
        return self.path("preprocess", "data", f"{split}-*.tfrecord.gz")

    @property
    def feature_info_file(self) -> str:
        """JSON: categorical cardinalities, numeric names, tasks, passthrough columns."""
        return self.path("preprocess", "feature_info.json")

    @property
    def raw_feature_spec_file(self) -> str:
        return self.path("preprocess", "raw_feature_spec.json")

    @property
    def stats_file(self) -> str:
        return self.path("preprocess", "stats.json")

    def split_rows(self, split: str) -> int | None:
        """Examples in a split as preprocess counted them (``stats.json``); None if unrecorded."""
        try:
            with open(self.stats_file) as f:
                rows = json.load(f).get("rows_per_split", {}).get(split)
        except (OSError, ValueError):
            return None
        return int(rows) if isinstance(rows, int) else None

    @property
    def dead_letter_dir(self) -> str:
        return self.path("preprocess", "dead_letters")

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
        return os.path.join(self.students_dir, name)

    @property
    def latency_exports_dir(self) -> str:
        """Scratch SavedModels (TF Transform front end + serving model) that distill times in
        TF Serving's path; removed once measured."""
        return os.path.join(self.students_dir, ".latency_exports")

    @property
    def scores_dir(self) -> str:
        return self.path("scores")

    # --- export / predict
    def serving_base(self, base_dir: str = "") -> str:
        return os.path.abspath(base_dir) if base_dir else self.path("serving_models")

    @property
    def predictions_dir(self) -> str:
        return self.path("predictions")

    def stage_outputs(self, stage: str) -> list[str]:
        """Absolute paths ``stage`` writes (``STAGE_OUTPUTS``; empty for export, evaluate, serve)."""
        return [self.path(p) for p in STAGE_OUTPUTS.get(stage, ())]

    def last_attempt(self, stage: str) -> dict | None:
        """The summary.json entry of ``stage``'s last attempt (``status``, ``started_at``,
        ``finished_at``, ``error`` ...), or None when this run directory has no record of it."""
        if not os.path.exists(self.summary_file):
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
        if not os.path.exists(path):
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
        if not os.path.exists(self.file):
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
