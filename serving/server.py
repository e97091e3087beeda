"""A TF-Serving-compatible model server (``python -m pipeline serve`` runs it: ``pipeline/stages/serve.py``).

``ModelServer`` wires one ``ModelStore`` (polling ``<base>/<model_name>/<version>/``, loading
with the TF1 session loader, warmup before a version is served, latest-version policy; or
the models of a ``models.config``, TF Serving's ``--model_config_file``, with their version
policies and labels) to a REST front end (``serving.rest``, default port 8501) and a gRPC
front end (``serving.grpc_service``, default 8500). With
``model_config_file_poll_wait_seconds`` > 0 the config file is read again at that interval
and applied (``ModelStore.reload_config``; a bad or refused config is logged and changes
nothing), as TF Serving's flag of that name does. ``enable_batching`` (TF Serving's
``--enable_batching``) wraps every loaded version in ``serving.batching.BatchingModel``, so
concurrent requests of one signature run as one batch, with the ``BatchingParameters`` of
``batching_parameters_file`` (``--batching_parameters_file``) or TF Serving's defaults; the file
without ``enable_batching`` is refused as TF Serving refuses it. The serve stage starts it and
serves until Ctrl-C or SIGTERM. Ports: ``--rest-port``/``--grpc-port`` override ``serving.rest_port``/``grpc_port``;
on the command line 0 disables that front end, while the ``ModelServer`` class treats 0 as
"pick a free port" (what tests use).
"""
from __future__ import annotations

import logging
import threading

from core.errors import ConfigError, ServingError
from serving.api import ServingApi
from serving.batching import BatchingModel, BatchingOptions, BatchingParameters, read_batching_parameters
from serving.model_config import ModelConfigError, read_model_config
from serving.model_store import ModelStore
from serving.session_model import SessionModel

log = logging.getLogger("serving.server")

DEFAULT_BATCH_THREAD_POOL = "model_server_batch_threads"  # server.cc: the pool name of the default parameters


def batching_parameters(enable_batching: bool, batching_parameters_file: str | None = None):
    """The ``BatchingParameters`` message TF Serving's ``server.cc`` serves with, or None
    (no batching): ``--enable_batching`` alone gives the default parameters (every field
    unset but the thread pool's name: max_batch_size 1000, batch_timeout_micros 0,
    max_enqueued_batches 10, ``serving.batching.BatchingOptions``); with
    ``--batching_parameters_file`` the file's (``read_batching_parameters``: ``ConfigError``
    naming the file for a bad one). The file without ``--enable_batching`` is a
    ``ConfigError``, TF Serving's INVALID_ARGUMENT at startup."""
    if not enable_batching:
        if batching_parameters_file:
            raise ConfigError("--batching_parameters_file is set without setting --enable_batching to true "
                              f"(file: {batching_parameters_file})")
        return None
    if batching_parameters_file:
        return read_batching_parameters(batching_parameters_file)
    params = BatchingParameters()
    params.thread_pool_name.value = DEFAULT_BATCH_THREAD_POOL
    return params


def batching_loader(loader, params):
    """``loader`` whose models are wrapped in ``BatchingModel(model, params)``: a version
    directory -> a loaded model batching its concurrent ``run`` calls."""

    def load(path: str):
        model = loader(path)
        try:
            return BatchingModel(model, params)
        except BaseException:
            model.close()
            raise

    return load


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
      model_config_file: a models.config (``serving.model_config``); ``base_dir`` is then
        ignored. A bad file or a refused version label raises ``ConfigError``.
      model_config_file_poll_wait_seconds: > 0: re-read the config file at this interval.
      allow_version_labels_for_unavailable_models, enable_signature_method_name_check: TF
        Serving's flags (``ModelStore``, ``ServingApi``).
      enable_batching, batching_parameters_file: TF Serving's flags (``batching_parameters``):
        ``loader``'s models are wrapped in ``BatchingModel``; a bad file, or the file without
        ``enable_batching``, raises ``ConfigError``. ``batching`` is then the
        ``BatchingOptions`` served with (defaults filled in), else None.
    The limits' defaults are ``core.config.ServingConfig``'s (``serving.*`` keys).
    """

    def __init__(self, base_dir: str | None, host: str = "127.0.0.1", rest_port: int | None = 8501,
                 grpc_port: int | None = 8500, poll_seconds: float = 2.0, max_batch_size: int = 1024,
                 loader=SessionModel, *, max_body_bytes: int = 4 << 20, header_timeout_seconds: float = 10.0,
                 body_timeout_seconds: float = 30.0, worker_threads: int = 16, max_connections: int = 256,
                 model_config_file: str | None = None, model_config_file_poll_wait_seconds: float = 0.0,
                 allow_version_labels_for_unavailable_models: bool = False,
                 enable_signature_method_name_check: bool = False, enable_batching: bool = False,
                 batching_parameters_file: str | None = None):
        if rest_port is None and grpc_port is None:
            raise ValueError("at least one of rest_port and grpc_port must be set. Received: both None")
        if model_config_file_poll_wait_seconds < 0:
            raise ValueError("model_config_file_poll_wait_seconds must be >= 0. Received: "
                             f"model_config_file_poll_wait_seconds={model_config_file_poll_wait_seconds}")
        params = batching_parameters(enable_batching, batching_parameters_file)
        self.batching = None if params is None else BatchingOptions.from_parameters(params)
        if params is not None:
            loader = batching_loader(loader, params)
        models = None
        if model_config_file:  # an empty file serves nothing until the file names models
            models = read_model_config(model_config_file) or []
        self.store = ModelStore(None if models is not None else base_dir, poll_seconds, loader=loader, models=models,
                                allow_version_labels_for_unavailable_models=allow_version_labels_for_unavailable_models)
        self.api = ServingApi(self.store, max_batch_size, method_name_check=enable_signature_method_name_check)
        self._config_file = model_config_file
        self._config_poll = model_config_file_poll_wait_seconds
        self._config_stop = threading.Event()
        self._config_thread: threading.Thread | None = None
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
        if self._config_file and self._config_poll > 0:
            self._config_thread = threading.Thread(target=self._watch_config, name="model-config-poll", daemon=True)
            self._config_thread.start()
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

    def reload_config_file(self) -> str | None:
        """Reads the config file again and applies it; returns the error message (logged by
        the caller) when the file is bad or the config refused, else None."""
        try:
            self.store.reload_config(read_model_config(self._config_file))
        except ModelConfigError as e:
            return str(e)
        return None

    def _watch_config(self) -> None:
        last = None
        while not self._config_stop.wait(self._config_poll):
            error = self.reload_config_file()
            if error and error != last:
                log.error("reloading %s failed (keeping the current config): %s", self._config_file, error)
            elif not error and last:
                log.info("reloaded %s", self._config_file)
            last = error

    def stop(self) -> None:
        self._config_stop.set()
        if self._config_thread is not None:
            self._config_thread.join(timeout=10)
        if self.rest:
            self.rest.stop()
        if self.grpc:
            self.grpc.stop()
        self.store.stop()
