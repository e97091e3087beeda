"""The server's model manager: polls the base directory, loads, warms up, swaps and unloads.

Layout watched (as TF Serving's file-system source does)::

    <base>/<model_name>/<version>/saved_model.pb     integer versions; anything else ignored

Policy: latest version. When a higher version appears, it is loaded with the TF1 session
loader (``SessionModel``), its warmup requests are replayed, and only then does it become
the served version; the previous version is unloaded after its in-flight requests finish
(so a request never sees a closed session). A version that fails to load or warm up is
reported (state END with its error) and the current version keeps serving. Every state
change happens under one lock; requests take a reference (``acquire``) and run unlocked.

Versions copied in file by file (rsync, ``gsutil cp``, a slow ``cp -r``) rather than renamed
into place: a version is loaded only once its contents (file names, sizes and mtimes, the
``fingerprint``) are the same on two consecutive polls, i.e. unchanged for a poll interval
(state START meanwhile); if they change while it loads, the load is discarded and the
version waits again. A version that failed is retried when its contents change, so a copy
that completes after a failed attempt, or a corrupt version replaced by a good one under
the same number, is loaded then. (TF Serving retries failed loads too:
``--max_num_load_retries``.) Error messages name files relative to the base directory.

States follow TF Serving's ``ModelVersionStatus``: START, LOADING, AVAILABLE, UNLOADING, END.
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
from dataclasses import dataclass, field

from serving import versions
from serving.session_model import SessionModel
from serving.status import not_found, redact_paths
from serving.warmup import replay_warmup

log = logging.getLogger("serving.model_store")

START, LOADING, AVAILABLE, UNLOADING, END = "START", "LOADING", "AVAILABLE", "UNLOADING", "END"


@dataclass
class _Servable:
    version: int
    state: str = START
    error: str = ""
    model: SessionModel | None = None
    in_flight: int = 0
    done: threading.Condition = field(default_factory=threading.Condition)
    fingerprint: tuple | None = None  # contents when last looked at (START) or loaded (failed or not)


def fingerprint(path: str) -> tuple | None:
    """Sorted (relative path, size, mtime_ns) of every file and directory (size -1) under
    ``path``; None if something vanished while it was being listed."""
    out = []
    try:
        for root, dirs, files in os.walk(path, onerror=_raise):
            for name, is_dir in [(d, True) for d in dirs] + [(f, False) for f in files]:
                full = os.path.join(root, name)
                st = os.stat(full)
                out.append((os.path.relpath(full, path), -1 if is_dir else st.st_size, st.st_mtime_ns))
    except OSError:
        return None
    return tuple(sorted(out))


def _raise(error: OSError):
    raise error


class ModelStore:
    """Loads and serves the latest version of every model under ``base_dir``.

    Args:
      base_dir: the directory holding ``<model_name>/<version>/`` SavedModels.
      poll_seconds: how often the background thread looks for new versions (``start``).
      loader: builds a loaded model from a version directory (default ``SessionModel``);
        tests inject a failing loader here.
      warmup: replay ``assets.extra/tf_serving_warmup_requests`` before serving a version.
    """

    def __init__(self, base_dir: str, poll_seconds: float = 2.0, loader=SessionModel, warmup: bool = True):
        if poll_seconds <= 0:
            raise ValueError(f"poll_seconds must be > 0. Received: poll_seconds={poll_seconds}")
        self.base_dir = os.path.abspath(base_dir)
        self.poll_seconds = poll_seconds
        self._loader = loader
        self._warmup = warmup
        self._lock = threading.Lock()
        self._models: dict[str, dict[int, _Servable]] = {}
        self._current: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ polling
    def model_names(self) -> list[str]:
        if not os.path.isdir(self.base_dir):
            return []
        return sorted(n for n in os.listdir(self.base_dir)
                      if not n.startswith(".") and os.path.isdir(os.path.join(self.base_dir, n)))

    def poll_once(self) -> None:
        """One look at the base directory: the latest version of each model is noted (START)
        when new or changed since a failed load, loaded once it is unchanged since the last
        look, and served if the load succeeds; superseded versions are unloaded."""
        for name in self.model_names():
            on_disk = versions.list_versions(os.path.join(self.base_dir, name))
            if not on_disk:
                continue
            latest = on_disk[-1]
            fp = fingerprint(versions.version_dir(os.path.join(self.base_dir, name), latest))
            with self._lock:
                known = self._models.setdefault(name, {})
                for v in [v for v, x in known.items() if x.state == START and v != latest]:
                    del known[v]  # superseded (or deleted) before it ever settled
                s = known.get(latest)
                if s is None:
                    known[latest] = _Servable(latest, fingerprint=fp)
                    log.info("%s version %d found; loading it once its files are unchanged for a poll",
                             name, latest)
                    continue
                if s.state == END and s.error and s.model is None and fp != s.fingerprint:
                    log.info("%s version %d changed since it failed to load; retrying once it is stable",
                             name, latest)
                    s.state, s.error, s.fingerprint = START, "", fp
                    continue
                if s.state != START:
                    continue
                if fp is None or fp != s.fingerprint:  # still being written
                    s.fingerprint = fp
                    continue
                s.state = LOADING
            self._load(name, latest, fp)

    def _load(self, name: str, version: int, fp: tuple | None = None) -> None:
        path = versions.version_dir(os.path.join(self.base_dir, name), version)
        log.info("loading %s version %d from %s", name, version, path)
        model = None
        try:
            model = self._loader(path)
            n = replay_warmup(model, path) if self._warmup else 0
        except Exception as e:  # noqa: BLE001  (a bad version must not stop the server)
            error = e
        else:
            error = None
        after = fingerprint(path)
        if fp is not None and after != fp:  # files changed while loading: wait until they settle
            log.info("%s version %d changed while loading; loading it again once it is stable", name, version)
            if model is not None:
                model.close()
            with self._lock:
                s = self._models[name][version]
                s.state, s.error, s.fingerprint = START, "", after
            return
        if error is not None:
            log.error("%s version %d failed to load: %s", name, version, error)
            if model is not None:
                model.close()
            with self._lock:
                s = self._models[name][version]
                s.state, s.error, s.fingerprint = END, redact_paths(f"{type(error).__name__}: {error}",
                                                                    self.base_dir), after
            return
        with self._lock:
            s = self._models[name][version]
            s.model, s.state = model, AVAILABLE
            old = self._current.get(name)
            if old is not None and old > version:
                s.state = UNLOADING
                retire = [s]
            else:
                self._current[name] = version
                retire = [v for k, v in self._models[name].items() if k != version and v.state == AVAILABLE]
                for r in retire:
                    r.state = UNLOADING
        log.info("%s version %d available (%d warmup requests replayed)", name, version, n)
        for r in retire:
            threading.Thread(target=self._unload, args=(name, r), daemon=True).start()

    def _unload(self, name: str, s: _Servable) -> None:
        while True:
            with s.done:
                s.done.wait_for(lambda: s.in_flight == 0, timeout=1.0)
            with self._lock:  # acquire() counts in-flight requests under this lock too
                if s.in_flight == 0:
                    model, s.model, s.state = s.model, None, END
                    break
        if model is not None:
            model.close()
        log.info("%s version %d unloaded", name, s.version)

    def start(self) -> "ModelStore":
        """Polls once now, then every ``poll_seconds`` in a daemon thread (so the versions on
        disk at start are loaded at the second poll, once seen unchanged)."""
        self.poll_once()
        self._thread = threading.Thread(target=self._run, name="model-store-poll", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001  (keep polling whatever a pass hit)
                log.exception("polling %s failed", self.base_dir)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            servables = [s for vs in self._models.values() for s in vs.values() if s.model is not None]
        for s in servables:
            s.model.close()
            s.model, s.state = None, END

    # ------------------------------------------------------------------ requests
    @contextlib.contextmanager
    def acquire(self, name: str, version: int | None = None):
        """Yields ``(version, model)``; the version stays loaded until the block exits."""
        with self._lock:
            if version is None:
                v = self._current.get(name)
                s = self._models.get(name, {}).get(v) if v is not None else None
                if s is None or s.model is None:
                    raise not_found(f"Servable not found for request: Latest({name})")
            else:
                s = self._models.get(name, {}).get(version)
                if s is None or s.model is None or s.state not in (AVAILABLE, UNLOADING):
                    raise not_found(f"Servable not found for request: Specific({name}, {version})")
            with s.done:
                s.in_flight += 1
            model, v = s.model, s.version
        try:
            yield v, model
        finally:
            with s.done:
                s.in_flight -= 1
                s.done.notify_all()

    def status(self, name: str, version: int | None = None) -> list[dict]:
        """``[{"version", "state", "error"}]`` like TF Serving's GetModelStatus."""
        with self._lock:
            known = self._models.get(name)
            if not known:
                raise not_found(f"Could not find any versions of model {name}")
            items = sorted(known.values(), key=lambda s: s.version, reverse=True)
            if version is not None:
                items = [s for s in items if s.version == version]
                if not items:
                    raise not_found(f"Could not find version {version} of model {name}")
            return [{"version": s.version, "state": s.state, "error": s.error} for s in items]

    def all_status(self) -> dict:
        """Model name -> ``status(name)`` for every model seen so far."""
        with self._lock:
            names = [n for n, vs in self._models.items() if vs]
        return {n: self.status(n) for n in names}

    def wait_for_version(self, name: str, version: int, timeout: float = 60.0) -> bool:
        """Polls until ``version`` of ``name`` is the served one (tests and scripts)."""
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self._current.get(name) == version:
                    return True
            time.sleep(0.05)
        return False
