"""The ``serve`` stage: a TF-Serving-compatible model server on loopback.

``ModelServer`` wires one ``ModelStore`` (polling ``<base>/<model_name>/<version>/``, loading
with the TF1 session loader, warmup before a version is served, latest-version policy) to a
REST front end (``serving.rest``, default port 8501) and a gRPC front end
(``serving.grpc_service``, default 8500). ``run_stage`` starts it and serves until Ctrl-C or
SIGTERM. Ports: ``--rest-port``/``--grpc-port`` override ``serving.rest_port``/``grpc_port``;
on the command line 0 disables that front end, while the ``ModelServer`` class treats 0 as
"pick a free port" (what tests use).
"""
from __future__ import annotations

import logging
import os
import signal
import threading

from pipeline.errors import ConfigError, ServingError
from pipeline.run_dir import RunDir
from serving.api import ServingApi
from serving.model_store import ModelStore
from serving.session_model import SessionModel

log = logging.getLogger("serving.server")


class ModelServer:
    """Model store + REST + gRPC. ``rest_port``/``grpc_port`` None disables; 0 picks a free port.

    Args:
      base_dir: directory holding ``<model_name>/<version>/`` SavedModels.
      host: interface to bind (loopback by default).
      poll_seconds: how often to look for new versions.
      max_batch_size: largest batch a request may carry (larger: 400 / INVALID_ARGUMENT).
      loader: builds a loaded model from a version directory (tests inject fakes).
    """

    def __init__(self, base_dir: str, host: str = "127.0.0.1", rest_port: int | None = 8501,
                 grpc_port: int | None = 8500, poll_seconds: float = 2.0, max_batch_size: int = 1024,
                 loader=SessionModel):
        if rest_port is None and grpc_port is None:
            raise ValueError("at least one of rest_port and grpc_port must be set. Received: both None")
        self.store = ModelStore(base_dir, poll_seconds, loader=loader)
        self.api = ServingApi(self.store, max_batch_size)
        self.host = host
        self._rest_port, self._grpc_port = rest_port, grpc_port
        self.rest = self.grpc = None

    def start(self) -> "ModelServer":
        from serving.grpc_service import GrpcServer
        from serving.rest import RestServer

        self.store.start()
        try:
            if self._rest_port is not None:
                self.rest = RestServer(self.api, self.host, self._rest_port).start()
            if self._grpc_port is not None:
                self.grpc = GrpcServer(self.api, self.host, self._grpc_port).start()
        except OSError as e:
            self.stop()
            raise ServingError(f"cannot bind {self.host}: {e}") from None
        return self

    @property
    def rest_port(self) -> int | None:
        return self.rest.port if self.rest else None

    @property
    def grpc_port(self) -> int | None:
        return self.grpc.port if self.grpc else None

    def stop(self) -> None:
        if self.rest:
            self.rest.stop()
        if self.grpc:
            self.grpc.stop()
        self.store.stop()


def run_stage(cfg, run_dir: RunDir, opts) -> dict:
    base = getattr(opts, "model_base", None) or run_dir.serving_base(cfg.export.base_dir)
    if not os.path.isdir(base):
        raise ServingError(f"model base directory {base} not found; run `python -m pipeline export` first "
                           "or pass --model-base")
    rest_port = getattr(opts, "rest_port", None)
    grpc_port = getattr(opts, "grpc_port", None)
    rest_port = cfg.serving.rest_port if rest_port is None else rest_port
    grpc_port = cfg.serving.grpc_port if grpc_port is None else grpc_port
    if not rest_port and not grpc_port:
        raise ConfigError("--rest-port and --grpc-port: both are 0 (disabled); enable at least one")
    server = ModelServer(base, cfg.serving.host, rest_port or None, grpc_port or None,
                         cfg.serving.poll_seconds, cfg.serving.max_batch_size).start()
    names = server.store.model_names()
    status = server.store.all_status()
    log.info("serving %s from %s (poll every %.1f s, max batch %d)", names or "no models yet", base,
             cfg.serving.poll_seconds, cfg.serving.max_batch_size)
    for n, st in status.items():
        log.info("model %s: %s", n, ", ".join(f"v{s['version']} {s['state']}" for s in st))
    if server.rest_port:
        log.info("REST on http://%s:%d/v1/models/<name>", cfg.serving.host, server.rest_port)
    if server.grpc_port:
        log.info("gRPC on %s:%d (PredictionService, ModelService)", cfg.serving.host, server.grpc_port)
    log.info("press Ctrl-C to stop")
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        log.info("interrupted; shutting down")
    finally:
        server.stop()
    return {"metrics": {"models": len(names)}, "message": "server stopped"}
