"""``python -m pipeline serve``: the TF-Serving-compatible server (``serving.server``) over the
serving base directory (or the models of ``--model_config_file``) until Ctrl-C or SIGTERM.

TF Serving's flags of the same names: ``--model_config_file`` (a ModelServerConfig text
proto: models, base paths, version policies, version labels; ``serving/tfserving/models.config``),
``--model_config_file_poll_wait_seconds`` (re-read it at that interval; 0: once),
``--allow_version_labels_for_unavailable_models``, ``--enable_signature_method_name_check``,
``--enable_batching`` (batch concurrent requests: ``serving.batching``) and
``--batching_parameters_file`` (a BatchingParameters text proto,
``serving/tfserving/batching_parameters.txt``; without it TF Serving's defaults). A bad config
or batching file, the batching file without ``--enable_batching``, or a version label on a
version that is not loaded (without the flag allowing it), is one ``error:`` line.
"""
from __future__ import annotations

import logging
import signal
import threading

from core import fs
from core.errors import ConfigError, ServingError
from core.run_dir import RunDir
from pipeline.stages.base import StageResult, stage

log = logging.getLogger("pipeline.stages.serve")


def _arguments(p) -> None:
    p.add_argument("--model-base", metavar="DIR",
                   help="directory holding <model_name>/<version>/ SavedModels (default: export.base_dir)")
    p.add_argument("--rest-port", type=int, help="REST port (default: serving.rest_port; 0 disables REST)")
    p.add_argument("--grpc-port", type=int, help="gRPC port (default: serving.grpc_port; 0 disables gRPC)")
    p.add_argument("--model_config_file", "--model-config-file", dest="model_config_file", metavar="FILE",
                   help="TF Serving's models.config (ModelServerConfig text proto): serve exactly its models, with "
                        "their version policies and labels (--model-base is then ignored)")
    p.add_argument("--model_config_file_poll_wait_seconds", "--model-config-file-poll-wait-seconds", type=float,
                   dest="model_config_file_poll_wait_seconds", metavar="S", default=0.0,
                   help="re-read --model_config_file every S seconds (default 0: read once)")
    p.add_argument("--allow_version_labels_for_unavailable_models", "--allow-version-labels-for-unavailable-models",
                   dest="allow_version_labels_for_unavailable_models", action="store_true",
                   help="a new version label may name a version that is not loaded yet (TF Serving's flag)")
    p.add_argument("--enable_signature_method_name_check", "--enable-signature-method-name-check",
                   dest="enable_signature_method_name_check", action="store_true",
                   help="Predict/Classify/Regress check the signature's method_name (TF Serving's flag)")
    p.add_argument("--enable_batching", "--enable-batching", dest="enable_batching", action="store_true",
                   help="batch concurrent requests of a signature into one model run (TF Serving's flag; default "
                        "parameters unless --batching_parameters_file)")
    p.add_argument("--batching_parameters_file", "--batching-parameters-file", dest="batching_parameters_file",
                   metavar="FILE", help="BatchingParameters text proto for --enable_batching (TF Serving's flag; "
                                        "e.g. serving/tfserving/batching_parameters.txt)")


@stage("serve", "serve exported models with TF Serving's REST and gRPC APIs", arguments=_arguments, in_run=False)
def run(cfg, run_dir: RunDir, opts) -> StageResult:
    from serving.server import ModelServer

    config_file = getattr(opts, "model_config_file", None)
    poll_config = getattr(opts, "model_config_file_poll_wait_seconds", 0.0) or 0.0
    if poll_config < 0:
        raise ConfigError(f"--model_config_file_poll_wait_seconds: must be >= 0, got {poll_config:g}")
    base = getattr(opts, "model_base", None) or run_dir.serving_base(cfg.export.base_dir)
    if config_file:
        base = None
    elif not fs.isdir(base):
        raise ServingError(f"model base directory {base} not found; run `python -m pipeline export` first "
                           "or pass --model-base (or --model_config_file)")
    rest_port = getattr(opts, "rest_port", None)
    grpc_port = getattr(opts, "grpc_port", None)
    rest_port = cfg.serving.rest_port if rest_port is None else rest_port
    grpc_port = cfg.serving.grpc_port if grpc_port is None else grpc_port
    if not rest_port and not grpc_port:
        raise ConfigError("--rest-port and --grpc-port: both are 0 (disabled); enable at least one")
    s = cfg.serving
    tf_serving_flags = {k: v for k, v in (
        ("model_config_file", config_file), ("model_config_file_poll_wait_seconds", poll_config),
        ("allow_version_labels_for_unavailable_models", getattr(opts, "allow_version_labels_for_unavailable_models",
                                                                False)),
        ("enable_signature_method_name_check", getattr(opts, "enable_signature_method_name_check", False)),
        ("enable_batching", getattr(opts, "enable_batching", False)),
        ("batching_parameters_file", getattr(opts, "batching_parameters_file", None))) if v}
    server = ModelServer(base, s.host, rest_port or None, grpc_port or None, s.poll_seconds, s.max_batch_size,
                         max_body_bytes=s.max_body_bytes, header_timeout_seconds=s.header_timeout_seconds,
                         body_timeout_seconds=s.body_timeout_seconds, worker_threads=s.worker_threads,
                         max_connections=s.max_connections, **tf_serving_flags).start()
    names = server.store.model_names()
    status = server.store.all_status()
    log.info("serving %s from %s (poll every %.1f s, max batch %d)", names or "no models yet", config_file or base,
             cfg.serving.poll_seconds, cfg.serving.max_batch_size)
    log.info("limits: body %d bytes, header/body timeouts %g/%g s, %d worker threads, %d connections "
             "(serving.max_body_bytes, ...; README 'Server limits')", s.max_body_bytes, s.header_timeout_seconds,
             s.body_timeout_seconds, s.worker_threads, s.max_connections)
    b = getattr(server, "batching", None)
    if b is not None:
        log.info("batching on: max_batch_size %d, batch_timeout_micros %d, max_enqueued_batches %d, "
                 "num_batch_threads %d%s", b.max_batch_size, b.batch_timeout_micros, b.max_enqueued_batches,
                 b.num_batch_threads, f", allowed_batch_sizes {list(b.allowed_batch_sizes)}"
                 if b.allowed_batch_sizes else "")
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
    return StageResult(metrics={"models": len(names)}, message="serve: server stopped")
