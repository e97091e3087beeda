"""The run directory: where each stage writes and where the next stage reads.

One class names every artifact path, so stages never build paths of their own:

    <run>/
      config.yaml            the config used (after --set overrides)
      summary.json           per stage: status, wall time, counts, metrics, artifacts
      report.md, plots/      the readable report and its PNGs
      data/raw/              generated synthetic logs (generate)
      preprocess/            TFRecord splits, TFT transform output, stats, dead letters
      teacher/, student/     trained Keras models, checkpoints, backups, TensorBoard logs
      scores/                training data with the teacher's logits (distill)
      serving_models/<name>/<version>/   SavedModels as TF Serving watches them (export)
      predictions/           batch predictions (predict)

Artifacts are written to a temporary sibling and renamed into place (``atomic_dir``,
``write_json_atomic``), so a killed stage never leaves a half-written output.
"""
from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import tempfile
import time
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
    scratch directories of earlier killed attempts are removed first. One writer per
    ``final`` at a time.
    """
    parent = os.path.dirname(os.path.abspath(final))
    os.makedirs(parent, exist_ok=True)
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
        old = tempfile.mkdtemp(prefix=f".old-{os.path.basename(final)}-", dir=parent)
        os.rmdir(old)
        os.replace(final, old)
    os.replace(tmp, final)
    if old:
        shutil.rmtree(old, ignore_errors=True)


# The stage that writes each role's model directory (``RunDir.model_dir(role)``).
ROLE_STAGES = {"teacher": "train", "student": "distill"}


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
    def scores_dir(self) -> str:
        return self.path("scores")

    # --- export / predict
    def serving_base(self, base_dir: str = "") -> str:
        return os.path.abspath(base_dir) if base_dir else self.path("serving_models")

    @property
    def predictions_dir(self) -> str:
        return self.path("predictions")

    def require(self, path: str, stage: str) -> str:
        """Raises ``InputError`` naming the stage to run when ``path`` does not exist."""
        if not os.path.exists(path):
            raise InputError(f"{path} not found; run `python -m pipeline {stage}` for this run directory first")
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

    def record_stage(self, name: str, status: str, wall_seconds: float, result: dict | None = None) -> dict:
        result = dict(result or {})

        def mutate(data):
            entry = {"status": status, "wall_seconds": round(wall_seconds, 3), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
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
