"""Who writes what in multi-worker training: the chief writes, the other workers write to temp dirs.

TensorFlow's multi-worker save pattern: every worker must take part in saving (the save
may run collective ops), but only the chief's copy is kept; the others save into a
temporary directory that is removed afterwards. ``TF_CONFIG`` names the task:
``{"cluster": {"worker": [...], "chief"?: [...]}, "task": {"type": "worker", "index": 1}}``.
The chief is task ``chief`` when the cluster has one, else ``worker`` 0. Without
``TF_CONFIG`` (a single process) this process is the chief.

Example::

    with multi_worker.write_dir(final_dir) as path:   # final_dir on the chief
        model.save(path)
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Iterator

from core import fs
from core.errors import ConfigError


def task() -> tuple[str | None, int]:
    """(task type, task index) from ``$TF_CONFIG``; ``(None, 0)`` without a cluster."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None, 0
    try:
        spec = json.loads(raw)
        t = spec.get("task") or {}
        return t.get("type"), int(t.get("index", 0))
    except (ValueError, TypeError, AttributeError) as e:
        raise ConfigError(f"TF_CONFIG: expected JSON with a 'task' of type and index ({e})") from None


def is_chief() -> bool:
    """True for a single process, the ``chief`` task, or worker 0 of a cluster without a chief."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return True
    kind, index = task()
    if kind is None:
        return True
    if kind == "chief":
        return True
    cluster = json.loads(raw).get("cluster") or {}
    return kind == "worker" and index == 0 and "chief" not in cluster


@contextlib.contextmanager
def write_dir(final: str) -> Iterator[str]:
    """Yields ``final`` on the chief; on another worker a temp dir, removed on exit."""
    if is_chief():
        yield final
        return
    kind, index = task()
    tmp = tempfile.mkdtemp(prefix=f"{kind}{index}-")
    try:
        yield tmp
    finally:
        fs.rmtree(tmp)
