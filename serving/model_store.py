"""The server's model manager: polls the model directories, loads, warms up, swaps and unloads.

Layout watched (as TF Serving's file-system source does)::

    <base_path>/<version>/saved_model.pb     integer versions; anything else ignored

Which models: without a config, every ``<base>/<model_name>/`` directory is a model with
base path ``<base>/<model_name>``, served with the latest-version policy. With a
``models.config`` (``serving.model_config``: TF Serving's ``--model_config_file``), exactly
the listed models, each with its base path, version policy (``latest {num_versions}``,
``all``, ``specific {versions}``) and version labels.

Each poll applies a model's policy to the versions on disk (its *aspired* versions). An
aspired version is loaded with the TF1 session loader (``SessionModel``) and its warmup
requests are replayed before it becomes AVAILABLE; versions are loaded highest first. A
version no longer aspired is unloaded as TF Serving's ``AvailabilityPreservingPolicy``
does: once an aspired version is AVAILABLE (or when none is aspired), never leaving the
model without a served version while a new one loads or after it failed. Unloading waits
for the version's in-flight requests (so a request never sees a closed session). A version
that fails to load or warm up is reported (state END with its error) and the served ones
keep serving. Every state change happens under one lock; requests take a reference
(``acquire``) and run unlocked. A request for the latest version gets the highest
AVAILABLE one; a specific version must be AVAILABLE (TF Serving's ``Servable not found for
request: Latest(m)`` / ``Specific(m, 3)``, NOT_FOUND, otherwise).

Version labels (``version_labels`` of the config: ``stable -> 1``, ``canary -> 2``) resolve
to their version (``acquire(name, label=...)``); an unknown label is INVALID_ARGUMENT
``Unrecognized servable version label: x``. As TF Serving by default, a label can only be
assigned to a version that is AVAILABLE when the config is (re)loaded: a config assigning
one to a version not loaded yet is refused (``ModelConfigError``, FAILED_PRECONDITION:
TF Serving's "Request to assign label to version N of model M, which is not currently
available for inference"), at startup too; ``allow_version_labels_for_unavailable_models``
(TF Serving's flag of that name) admits a label not assigned yet to any version.
``reload_config`` applies a new config (the server's ``--model_config_file_poll_wait_seconds``
and ModelService.HandleReloadConfigRequest): models left out are unloaded, new ones
loaded; a refused config changes nothing.

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
import threading
from dataclasses import dataclass, field

from core import fs
from serving import versions
from serving.model_config import ModelConfig, ModelConfigError, discovered, label_refused
from serving.session_model import SessionModel
from serving.status import invalid, not_found, redact_paths
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
    """Sorted (relative path, size, mtime) of every file and directory (size -1) under
    ``path`` (any filesystem); None if something vanished while it was being listed."""
    out = []
    try:
        out += [(rel, -1, 0.0) for rel in fs.walk_dirs(path)]
        for rel in fs.walk_files(path):
            full = fs.join(path, rel)
            out.append((rel, fs.size(full), fs.mtime(full)))
    except Exception:  # noqa: BLE001  a file removed between the listing and its stat
        return None
    return tuple(sorted(out))


class ModelStore:
    """Loads and serves model versions (module docstring).

    Args:
      base_dir: the directory holding ``<model_name>/<version>/`` SavedModels (every
        subdirectory a model, latest version served); None when ``models`` is given.
      poll_seconds: how often the background thread looks for new versions (``start``).
      loader: builds a loaded model from a version directory (default ``SessionModel``);
        tests inject a failing loader here.
      warmup: replay ``assets.extra/tf_serving_warmup_requests`` before serving a version.
      models: the ``ModelConfig``s of a models.config: serve exactly these (policies,
        labels); ``ModelConfigError`` when a label is refused (module docstring).
      allow_version_labels_for_unavailable_models: TF Serving's flag: a label not assigned
        yet may name a version that is not loaded yet.
    """

    def __init__(self, base_dir: str | None, poll_seconds: float = 2.0, loader=SessionModel, warmup: bool = True,
                 *, models: list[ModelConfig] | None = None, allow_version_labels_for_unavailable_models: bool = False):
        if poll_seconds <= 0:
            raise ValueError(f"poll_seconds must be > 0. Received: poll_seconds={poll_seconds}")
        if base_dir is None and models is None:
            raise ValueError("one of base_dir and models must be given. Received: both None")
        self.base_dir = fs.absolute(base_dir) if base_dir else None
        self.poll_seconds = poll_seconds
        self._loader = loader
        self._warmup = warmup
        self._allow_unavailable_labels = allow_version_labels_for_unavailable_models
        self._lock = threading.Lock()
        self._models: dict[str, dict[int, _Servable]] = {}
        self._aspired: dict[str, set] = {}  # model -> versions its policy serves (last poll)
        self._configs: dict[str, ModelConfig] | None = None  # None: every directory under base_dir
        self._labels: dict[str, dict[str, int]] = {}
        self._missing: set = set()  # models whose base path was missing at the last poll (logged once)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if models is not None:
            self.reload_config(models)

    # ------------------------------------------------------------------ config
    def reload_config(self, models: list[ModelConfig] | None) -> None:
        """Serves ``models`` from the next poll on (TF Serving's ReloadConfig);
        ``ModelConfigError`` and nothing changed when a name repeats or a version label is
        refused. None (an empty ``ModelServerConfig``) changes nothing, as in TF Serving; a
        later non-empty config is applied."""
        if models is None:
            log.info("Taking no action for empty config.")
            return
        names = [m.name for m in models]
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise ModelConfigError(f"Illegal to list model {dup} multiple times in config list")
        with self._lock:
            labels = self._label_map(models)
            self._configs = {m.name: m for m in models}
            self._labels = labels
        for m in models:
            if m.labels:
                log.info("%s version labels: %s", m.name, ", ".join(f"{k} -> {v}" for k, v in sorted(m.labels.items())))

    def _label_map(self, models) -> dict:
        """Model -> label -> version of ``models`` after TF Serving's UpdateModelVersionLabelMap
        checks (under the lock)."""
        out: dict = {}
        for m in models:
            known = self._models.get(m.name, {})
            for label, version in sorted(m.labels.items()):  # a deterministic order (TF Serving's: the map's)
                allow = False
                if self._allow_unavailable_labels:
                    existing = self._labels.get(m.name, {}).get(label)
                    allow = existing is None or existing == version
                s = known.get(version)
                if not allow and (s is None or s.state != AVAILABLE):
                    raise label_refused(version, m.name)
                out.setdefault(m.name, {})[label] = version
        return out

    def _model_list(self) -> list[ModelConfig]:
        if self._configs is None:
            return discovered(self.base_dir)
        return list(self._configs.values())

    # ------------------------------------------------------------------ polling
    def model_names(self) -> list[str]:
        return sorted(m.name for m in self._model_list())

    def poll_once(self) -> None:
        """One look at every model directory: each aspired version is noted (START) when new
        or changed since a failed load, loaded once it is unchanged since the last look, and
        served if the load succeeds; versions no longer aspired are unloaded."""
        configs = self._model_list()
        for cfg in configs:
            self._poll_model(cfg)
        if self._configs is None:
            return
        listed = {c.name for c in configs}
        with self._lock:
            dropped = [n for n in self._models if n not in listed]  # left out of a reloaded config
            for name in dropped:
                self._aspired[name] = set()
        for name in dropped:
            self._retire(name)

    def _poll_model(self, cfg: ModelConfig) -> None:
        name = cfg.name
        if not fs.isdir(cfg.base_path):
            if name not in self._missing:
                self._missing.add(name)
                log.warning("Could not find base path %s for servable %s", cfg.base_path, name)
            return  # as TF Serving's source: nothing changes until it appears
        self._missing.discard(name)
        aspired = cfg.aspired(versions.list_versions(cfg.base_path))
        with self._lock:
            known = self._models.setdefault(name, {})
            self._aspired[name] = set(aspired)
            for v in [v for v, x in known.items() if x.state == START and v not in aspired]:
                del known[v]  # superseded (or deleted) before it ever settled
            pending = [v for v in aspired if v not in known or known[v].state in (START, END)]
        fps = {v: fingerprint(versions.version_dir(cfg.base_path, v)) for v in pending}
        to_load = []
        with self._lock:
            for v in sorted(pending, reverse=True):
                fp, s = fps[v], known.get(v)
                if s is None:
                    known[v] = _Servable(v, fingerprint=fp)
                    log.info("%s version %d found; loading it once its files are unchanged for a poll", name, v)
                    continue
                if s.state == END and s.model is None:
                    if s.error and fp != s.fingerprint:
                        log.info("%s version %d changed since it failed to load; retrying once it is stable", name, v)
                    elif s.error:
                        continue
                    else:
                        log.info("%s version %d is aspired again; loading it once its files are unchanged", name, v)
                    s.state, s.error, s.fingerprint = START, "", fp
                    continue
                if s.state != START:
                    continue
                if fp is None or fp != s.fingerprint:  # still being written
                    s.fingerprint = fp
                    continue
                s.state = LOADING
                to_load.append((v, fp))
        for v, fp in to_load:
            self._load(cfg, v, fp)
        self._retire(name)

    def _retire_locked(self, name: str) -> list[_Servable]:
        """Marks UNLOADING the AVAILABLE versions that are no longer aspired, as
        AvailabilityPreservingPolicy allows (under the lock); returns them."""
        known = self._models.get(name, {})
        aspired = self._aspired.get(name, set())
        managed = [s for v, s in known.items() if v in aspired]
        unaspired = sorted((s for v, s in known.items() if v not in aspired and s.state == AVAILABLE),
                           key=lambda s: s.version)
        if not managed or any(s.state == AVAILABLE for s in managed):
            retire = unaspired
        else:  # an aspired version is still loading (or failed): keep the highest old one serving
            retire = unaspired[:-1]
        for s in retire:
            s.state = UNLOADING
        return retire

    def _retire(self, name: str) -> None:
        with self._lock:
            retire = self._retire_locked(name)
        for r in retire:
            threading.Thread(target=self._unload, args=(name, r), daemon=True).start()

    def _load(self, cfg: ModelConfig, version: int, fp: tuple | None = None) -> None:
        name = cfg.name
        path = versions.version_dir(cfg.base_path, version)
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
                                                                    fs.dirname(cfg.base_path)), after
            return
        with self._lock:
            s = self._models[name][version]
            s.model, s.state = model, AVAILABLE
            retire = self._retire_locked(name)
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
                log.exception("polling %s failed", self.base_dir or "the configured models")

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
    def acquire(self, name: str, version: int | None = None, label: str | None = None):
        """Yields ``(version, model)`` of the latest, the given or the labelled version; the
        version stays loaded until the block exits. Errors as TF Serving's ServerCore: an
        empty name or both a version and a label, or an unknown label, is INVALID_ARGUMENT;
        no AVAILABLE version to serve NOT_FOUND."""
        with self._lock:
            s = self._find(name, version, label)
            with s.done:
                s.in_flight += 1
            model, v = s.model, s.version
        try:
            yield v, model
        finally:
            with s.done:
                s.in_flight -= 1
                s.done.notify_all()

    def _find(self, name: str, version: int | None, label: str | None) -> _Servable:
        if not name:
            raise invalid("ModelSpec has no name specified.")
        if label is not None:
            if version is not None:
                raise invalid(f"Both model version ({version}) and model version label ({label}) cannot be supplied.")
            version = self._labels.get(name, {}).get(label)
            if version is None:
                raise invalid(f"Unrecognized servable version label: {label}")
        known = self._models.get(name, {})
        if version is None:
            available = [s for s in known.values() if s.state == AVAILABLE]
            if not available:
                raise not_found(f"Servable not found for request: Latest({name})")
            return max(available, key=lambda s: s.version)
        s = known.get(version)
        if s is None or s.state != AVAILABLE:
            raise not_found(f"Servable not found for request: Specific({name}, {version})")
        return s

    def labels(self, name: str) -> dict:
        """Label -> version of model ``name`` (empty without labels)."""
        with self._lock:
            return dict(self._labels.get(name, {}))

    def status(self, name: str, version: int | None = None) -> list[dict]:
        """``[{"version", "state", "error"}]`` like TF Serving's GetModelStatus, highest
        version first; NOT_FOUND with its messages for an unknown model or version."""
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
        """Polls until ``version`` of ``name`` is AVAILABLE (tests and scripts)."""
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                s = self._models.get(name, {}).get(version)
                if s is not None and s.state == AVAILABLE:
                    return True
            time.sleep(0.05)
        return False
