"""A TF-Serving-compatible model server (``python -m pipeline serve`` runs it: ``pipeline/stages/serve.py``).

``ModelServer`` wires one ``ModelStore`` (polling ``<base>/<model_name>/<version>/``, loading
with the TF1 session loader, warmup before a version is served, latest-version policy) to a
REST front end (``serving.rest``, default port 8501) and a gRPC front end
(``serving.grpc_service``, default 8500). The serve stage starts it and serves until Ctrl-C or
SIGTERM. Ports: ``--rest-port``/``--grpc-port`` override ``serving.rest_port``/``grpc_port``;
on the command line 0 disables that front end, while the ``ModelServer`` class treats 0 as
"pick a free port" (what tests use).
"""
from __future__ import annotations

import logging

from core.errors import ServingError
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
      max_body_bytes: largest REST body (larger: 413, never read) and gRPC message.
      header_timeout_seconds, body_timeout_seconds: REST read timeouts (``serving.rest.RestServer``).
      worker_threads: request threads of each front end.
      max_connections: open REST connections (beyond: 503).
    The limits' defaults are ``core.config.ServingConfig``'s (``serving.*`` keys).
    """

    def __init__(self, base_dir: str, host: str = "127.0.0.1", rest_port: int | None = 8501,
                 grpc_port: int | None = 8500, poll_seconds: float = 2.0, max_batch_size: int = 1024,
                 loader=SessionModel, *, max_body_bytes: int = 4 << 20, header_timeout_seconds: float = 10.0,
                 body_timeout_seconds: float = 30.0, worker_threads: int = 16, max_connections: int = 256):
        if rest_port is None and grpc_port is None:
            raise ValueError("at least one of rest_port and grpc_port must be set. Received: both None")
        self.store = ModelStore(base_dir, poll_seconds, loader=loader)
        self.api = ServingApi(self.store, max_batch_size)
        self.host = host
        self._rest_port, self._grpc_port = rest_port, grpc_port
        self._rest_limits = {"max_body_bytes": max_body_bytes, "header_timeout_seconds": header_timeout_seconds,
                             "body_timeout_seconds": body_timeout_seconds, "worker_threads": worker_threads,
                             "max_connections": max_connections}
        from serving.rest import check_limits

        check_limits(**self._rest_limits)  # a bad limit fails here, not at start()
        self._grpc_limits = {"max_workers": worker_threads, "max_message_bytes": max_body_bytes}
        self.rest = self.grpc = None

    def start(self) -> "ModelServer":
        from serving.grpc_service import GrpcServer
        from serving.rest import RestServer

        self.store.start()
        try:
            if self._rest_port is not None:
                self.rest = RestServer(self.api, self.host, self._rest_port, **self._rest_limits).start()
            if self._grpc_port is not None:
                self.grpc = GrpcServer(self.api, self.host, self._grpc_port, **self._grpc_limits).start()
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
