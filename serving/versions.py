"""The TF Serving model directory: ``<base>/<model_name>/<version>/`` with integer versions.

A version directory is published by renaming a hidden build directory
(``.tmp-<version>``, which TF Serving ignores since it is not an integer) into place, so a
watcher never sees a half-written or unvalidated version. Each published version carries
``assets.extra/metrics.json`` (its test metrics, for the next gate's AUC-drop check) and
``BLESSED`` (the gate's checks and numbers).
"""
from __future__ import annotations

import os

from core.run_dir import read_json

METRICS_FILE = os.path.join("assets.extra", "metrics.json")
BLESSED_FILE = "BLESSED"


def list_versions(model_dir: str) -> list[int]:
    """Published versions (integer directory names holding a saved_model.pb), ascending."""
    if not os.path.isdir(model_dir):
        return []
    out = []
    for name in os.listdir(model_dir):
        if name.isdigit() and os.path.exists(os.path.join(model_dir, name, "saved_model.pb")):
            out.append(int(name))
    return sorted(out)


def next_version(model_dir: str) -> int:
    """One more than the largest integer directory (published or not), starting at 1."""
    taken = [int(n) for n in os.listdir(model_dir) if n.isdigit()] if os.path.isdir(model_dir) else []
    return max(taken, default=0) + 1


def build_dir(model_dir: str, version: int) -> str:
    return os.path.join(model_dir, f".tmp-{version}")


def version_dir(model_dir: str, version: int) -> str:
    return os.path.join(model_dir, str(version))


def published_metrics(model_dir: str) -> tuple[int | None, dict | None]:
    """(version, task metrics) of the latest published version, or (None, None)."""
    versions = list_versions(model_dir)
    if not versions:
        return None, None
    path = os.path.join(version_dir(model_dir, versions[-1]), METRICS_FILE)
    if not os.path.exists(path):
        return versions[-1], None
    return versions[-1], read_json(path, "published metrics")


def publish(build: str, model_dir: str, version: int) -> str:
    """Renames the build directory to its version directory (atomic on one filesystem)."""
    final = version_dir(model_dir, version)
    if os.path.exists(final):
        raise FileExistsError(f"version directory already exists: {final}")
    os.rename(build, final)
    return final
