"""The TF Serving model directory: ``<base>/<model_name>/<version>/`` with integer versions.

A version is built in a hidden directory (``.tmp-<version>``, which TF Serving ignores since
it is not an integer) and published under its number only when complete (``publish``):

* Local filesystem (and any with an atomic directory rename): one rename of the build
  directory, so a watcher never sees a half-written or unvalidated version.
* Object stores (``gs://``, ``s3://``: no rename): the finished build is copied file by file
  into ``<version>/`` with ``saved_model.pb`` copied last, then the build is removed. A
  version directory holding a ``saved_model.pb`` is complete; this module (``list_versions``)
  and the project's server only ever list such directories. TF Serving may see the numeric
  prefix while the copy runs: its load fails on the missing ``saved_model.pb`` and is retried
  (``--max_num_load_retries``, default 5, every ``--load_retry_interval_micros``, default
  60 s); by then the copy is complete.

Each published version carries ``assets.extra/metrics.json`` (its test metrics, for the next
gate's AUC-drop check) and ``BLESSED`` (the gate's checks and numbers).
"""
from __future__ import annotations

from core import fs
from core.fs import read_json

METRICS_FILE = "assets.extra/metrics.json"
BLESSED_FILE = "BLESSED"
SAVED_MODEL_FILE = "saved_model.pb"


def list_versions(model_dir: str) -> list[int]:
    """Published versions (integer directory names holding a saved_model.pb), ascending."""
    return sorted(int(n) for n in fs.listdir(model_dir)
                  if n.isdigit() and fs.exists(fs.join(model_dir, n, SAVED_MODEL_FILE)))


def next_version(model_dir: str) -> int:
    """One more than the largest integer directory (published or not), starting at 1."""
    taken = [int(n) for n in fs.listdir(model_dir) if n.isdigit()]
    return max(taken, default=0) + 1


def build_dir(model_dir: str, version: int) -> str:
    return fs.join(model_dir, f".tmp-{version}")


def version_dir(model_dir: str, version: int) -> str:
    return fs.join(model_dir, str(version))


def published_metrics(model_dir: str) -> tuple[int | None, dict | None]:
    """(version, task metrics) of the latest published version, or (None, None)."""
    versions = list_versions(model_dir)
    if not versions:
        return None, None
    path = fs.join(version_dir(model_dir, versions[-1]), METRICS_FILE)
    if not fs.exists(path):
        return versions[-1], None
    return versions[-1], read_json(path, "published metrics")


def publish(build: str, model_dir: str, version: int) -> str:
    """Publishes the finished build directory as version ``version`` (see the module
    docstring: one rename locally; on an object store a copy with saved_model.pb last)."""
    final = version_dir(model_dir, version)
    if fs.exists(final):
        raise FileExistsError(f"version directory already exists: {final}")
    if fs.is_local(final):
        import tensorflow as tf

        tf.io.gfile.rename(build, final)
        return final
    fs.copy_tree(build, final, last=(SAVED_MODEL_FILE,))
    fs.rmtree(build)
    return final
